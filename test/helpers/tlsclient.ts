/** TLS clients for the TLS, HTTP/2 and WebSocket tests, and typed views of the TLS parts of `/stats`. */
import { request as httpsRequest, type Agent } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { Gateway } from '../../ts/index.js';

export interface TlsStatsView {
  handshakes: number;
  failures: number;
  failure_reasons: Record<string, number>;
  resumed: number;
  versions: { 'TLSv1.2': number; 'TLSv1.3': number };
  certificates: { listener: string; names: string[]; file: string; not_after: string; expires_in_days: number; expiring_soon: boolean }[];
}

export interface UpgradeStatsView {
  active: number;
  total: number;
}

/** The `tls` section of the gateway's stats (not in the `GatewayStats` type). */
export function tlsStats(gateway: Gateway): TlsStatsView {
  return (gateway.stats() as unknown as { tls: TlsStatsView }).tls;
}

export function upgradeStats(gateway: Gateway): UpgradeStatsView {
  return (gateway.stats() as unknown as { upgrades: UpgradeStatsView }).upgrades;
}

/** Accepts any name: to look at the certificate a server presents for a name it does not cover. */
export const anyName = (): undefined => undefined;

/**
 * Completes a TLS handshake with 127.0.0.1:port; rejects on any handshake error. The socket stays
 * open (the caller destroys it). TLS sessions/tickets the server sends are collected in `sessions`.
 */
export function handshake(port: number, options: ConnectionOptions = {}): Promise<TLSSocket & { sessions: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ...options }) as TLSSocket & { sessions: Buffer[] };
    socket.sessions = [];
    socket.on('session', (s: Buffer) => socket.sessions.push(s));
    socket.once('secureConnect', () => {
      socket.removeListener('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
    socket.once('error', (e) => {
      socket.destroy();
      reject(e);
    });
  });
}

/**
 * Ends a TLS connection cleanly (our last handshake flight is flushed, then FIN) and waits for it
 * to close. `destroy()` right after 'secureConnect' can drop the client's Finished, which the
 * server rightly counts as a failed handshake.
 */
export function closeGracefully(socket: TLSSocket, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.resume();
    socket.end();
  });
}

/** The presented certificate of a name: handshake, read, close. */
export async function peerCertificate(port: number, options: ConnectionOptions = {}): Promise<PeerCertificate & { protocol: string | null; authorized: boolean }> {
  const socket = await handshake(port, options);
  const cert = socket.getPeerCertificate();
  const result = Object.assign(cert, { protocol: socket.getProtocol(), authorized: socket.authorized });
  await closeGracefully(socket);
  return result;
}

export interface HttpsReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** SHA-256 fingerprint of the certificate the server presented on this connection. */
  fingerprint256: string;
  protocol: string | null;
  alpn: string | false | null;
  /** Whether the request went on a kept-alive connection. */
  reusedSocket: boolean;
  socket: TLSSocket;
}

export interface HttpsOptions {
  ca: string;
  servername?: string;
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  agent?: Agent | false;
  tls?: ConnectionOptions;
}

/** One HTTPS request to 127.0.0.1:port (a fresh connection unless an agent is given). */
export function httpsGet(port: number, options: HttpsOptions): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(options.servername ? { host: options.servername } : {}), ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: options.path ?? '/',
        method: options.method ?? 'GET',
        headers,
        ca: options.ca,
        ...(options.servername ? { servername: options.servername } : {}),
        agent: options.agent ?? false,
        ...options.tls,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const fingerprint256 = socket.getPeerCertificate().fingerprint256;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            fingerprint256,
            protocol: socket.getProtocol(),
            alpn: socket.alpnProtocol,
            reusedSocket: req.reusedSocket,
            socket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}
