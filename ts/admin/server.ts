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
  backends(): object[];
  setWeights(upstream: string, weights: Record<string, number>): void;
  /** Purges the cache (everything, or one URL or path); returns how many responses went. */
  purgeCache(url?: string): number;
  readonly draining: boolean;
}

const MAX_BODY = 64 * 1024;

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown);
      } catch {
        reject(new Error('body is not JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** `PUT /upstreams/<name>/weights` with `{ "<backend url>": weight, … }`, applied atomically. */
async function putWeights(source: AdminSource, upstream: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let body: unknown;
  try {
    body = await readJson(req);
  } catch (e) {
    send(res, 400, JSON.stringify({ error: (e as Error).message }));
    return;
  }
  if (!body || typeof body !== 'object' || Array.isArray(body) || !Object.values(body).every((w) => typeof w === 'number')) {
    send(res, 400, JSON.stringify({ error: 'expected { "<backend url>": <weight>, ... }' }));
    return;
  }
  try {
    source.setWeights(upstream, body as Record<string, number>);
  } catch (e) {
    send(res, 400, JSON.stringify({ error: (e as Error).message }));
    return;
  }
  send(res, 200, `${JSON.stringify({ backends: source.backends().filter((b) => (b as { upstream?: string }).upstream === upstream) }, null, 2)}\n`);
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

const WEIGHTS = /^\/upstreams\/([^/]+)\/weights$/;

function handle(source: AdminSource, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  if (path === '/cache' && req.method === 'DELETE') {
    const url = new URL(req.url ?? '/', 'http://admin').searchParams.get('url') ?? undefined;
    try {
      send(res, 200, `${JSON.stringify({ purged: source.purgeCache(url) })}\n`);
    } catch (e) {
      send(res, 400, JSON.stringify({ error: (e as Error).message }));
    }
    return;
  }
  const weights = WEIGHTS.exec(path);
  if (weights && req.method === 'PUT') {
    void putWeights(source, decodeURIComponent(weights[1] ?? ''), req, res);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, JSON.stringify({ error: 'method not allowed' }));
    return;
  }
  switch (path) {
    case '/backends':
      send(res, 200, `${JSON.stringify({ backends: source.backends() }, null, 2)}\n`);
      return;
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
      send(res, 404, JSON.stringify({ error: 'not found', endpoints: ['/stats', '/metrics', '/healthz', '/backends', 'PUT /upstreams/<name>/weights', 'DELETE /cache[?url=]'] }));
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
