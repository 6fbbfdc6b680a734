/**
 * The admin listener: statistics and health for operators and orchestrators. It runs on the
 * Node.js event loop, never on the request path, and reads the engine's counters on demand.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { toPrometheus } from './metrics.js';

/** What the admin server needs from a gateway. */
export interface AdminSource {
  stats(): object;
  readonly draining: boolean;
}

export interface AdminServer {
  /** `host:port` actually bound. */
  readonly address: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function handle(source: AdminSource, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, JSON.stringify({ error: 'method not allowed' }));
    return;
  }
  switch (path) {
    case '/stats':
      send(res, 200, `${JSON.stringify(source.stats(), null, 2)}\n`);
      return;
    case '/metrics':
      send(res, 200, toPrometheus(source.stats() as Record<string, unknown>), 'text/plain; version=0.0.4');
      return;
    case '/healthz':
      if (source.draining) send(res, 503, '{"status":"draining"}\n');
      else send(res, 200, '{"status":"ok"}\n');
      return;
    default:
      send(res, 404, JSON.stringify({ error: 'not found', endpoints: ['/stats', '/metrics', '/healthz'] }));
  }
}

/** Starts the admin listener on `address` (`host:port`). */
export async function startAdmin(address: string, source: AdminSource): Promise<AdminServer> {
  const sep = address.lastIndexOf(':');
  const host = address.slice(0, sep).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(sep + 1));
  const server: Server = createServer((req, res) => handle(source, req, res));
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
  return {
    address: shown,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
