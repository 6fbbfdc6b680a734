/** Test origins: real HTTP servers on 127.0.0.1 with OS-assigned ports that record what reaches them. */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Raw header lines as received, to check order and exact names. */
  rawHeaders: string[];
  bodyLength: number;
  bodySha256: string;
  /** Which origin connection (1-based) carried it. */
  connection: number;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => void;

export interface Origin {
  url: string;
  port: number;
  /** Requests whose bodies were read completely. */
  requests: SeenRequest[];
  /** Request heads seen, including ones whose bodies never completed. */
  heads: number;
  /** TCP connections accepted. */
  connections: number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

export const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** Echo handler: 200 with a JSON summary of the request. */
export const echo: Handler = (_req, res, seen) => {
  const body = JSON.stringify(seen);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
};

/**
 * Answers a 256 MiB body, written as fast as the connection takes it (for clients that stop
 * reading); `onClose` runs when the origin's connection closes.
 */
export function endlessBody(res: ServerResponse, onClose: () => void): void {
  const size = 256 << 20;
  res.socket?.once('close', onClose);
  res.writeHead(200, { 'content-length': String(size) });
  const chunk = Buffer.alloc(64 << 10);
  let sent = 0;
  const pump = (): void => {
    while (sent < size && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

/** Starts an origin. The handler runs after the request body has been read whole. */
export async function startOrigin(handler: Handler = echo, options: { streamBody?: boolean } = {}): Promise<Origin> {
  const origin = { requests: [] as SeenRequest[], heads: 0, connections: 0, sockets: new Set<Socket>() } as Origin;
  const connectionIds = new WeakMap<Socket, number>();
  const server: Server = createServer((req, res) => {
    origin.heads += 1;
    const hash = createHash('sha256');
    let length = 0;
    const seen = (): SeenRequest => ({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyLength: length,
      bodySha256: hash.copy().digest('hex'),
      connection: connectionIds.get(req.socket) ?? 0,
    });
    if (options.streamBody) {
      handler(req, res, seen());
      return;
    }
    req.on('data', (chunk: Buffer) => {
      length += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => {
      const s = seen();
      origin.requests.push(s);
      handler(req, res, s);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (socket: Socket) => {
    origin.connections += 1;
    connectionIds.set(socket, origin.connections);
    origin.sockets.add(socket);
    socket.on('close', () => origin.sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  origin.port = port;
  origin.url = `http://127.0.0.1:${port}`;
  origin.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return origin;
}

/**
 * Lowest port the OS hands out for port 0 (Linux's ephemeral range), so that a port picked below
 * it is never given to another test's listener in the meantime.
 */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
    return Number.isInteger(low) && low > 11_000 ? low : 0;
  } catch {
    return 0;
  }
}

function listenOnce(port: number): Promise<number | null> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as AddressInfo).port;
      server.close(() => resolve(bound));
    });
  });
}

/**
 * A port with nothing listening on it (bound, then released). Taken below the ephemeral range
 * where there is one: a port released inside it could be handed to a listener another test
 * starts on port 0 before this test uses it (seen: a "closed" backend answering 503).
 */
export async function closedPort(): Promise<number> {
  const low = ephemeralLow();
  for (let attempt = 0; low > 0 && attempt < 50; attempt++) {
    const port = await listenOnce(10_000 + Math.floor(Math.random() * (low - 10_000)));
    if (port !== null) return port;
  }
  const port = await listenOnce(0);
  if (port === null) throw new Error('cannot find a free port');
  return port;
}
