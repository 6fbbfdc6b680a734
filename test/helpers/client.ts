/**
 * Clients and small utilities shared by the balancing, resilience, health and policy tests:
 * requests on fresh connections (optionally from another loopback address), polling, named
 * origins that count what they served, and restarting an origin on a port it had before.
 */
import { createServer, request, type Agent, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { startOrigin, type Origin } from './origin.js';

export interface Reply {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Source address of the client socket, e.g. '127.0.0.5' (any 127/8 address works on Linux). */
  localAddress?: string;
  /** A keep-alive agent; by default every request has a connection of its own (`agent: false`). */
  agent?: Agent;
}

/** One request; resolves with the whole response, rejects on a socket error. */
export function send(url: string, options: SendOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers = { ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = request(
      url,
      {
        method: options.method ?? 'GET',
        headers,
        agent: options.agent ?? false,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `condition` every 10 ms until it holds; throws after `timeoutMs`. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** Runs `count` requests with at most `concurrency` in flight, returning replies in order. */
export async function many(count: number, concurrency: number, one: (i: number) => Promise<Reply>): Promise<Reply[]> {
  const replies: Reply[] = new Array<Reply>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      replies[i] = await one(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return replies;
}

/** How many replies have each body. */
export function tally(replies: Reply[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of replies) counts[r.body] = (counts[r.body] ?? 0) + 1;
  return counts;
}

export interface Named extends Origin {
  name: string;
  /** Requests other than health checks (path `/health`). */
  traffic(): number;
}

/**
 * An origin that answers its name (`A`, `B`, …) to everything, optionally after `delayMs`;
 * `/health` answers 200 unless `health.ok` is false.
 */
export async function namedOrigin(name: string, options: { delayMs?: number; health?: { ok: boolean } } = {}): Promise<Named> {
  const origin = (await startOrigin((req, res) => {
    if (req.url === '/health') {
      const ok = options.health?.ok ?? true;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok' : 'down');
      return;
    }
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(name) });
      res.end(name);
    };
    if (options.delayMs) setTimeout(answer, options.delayMs);
    else answer();
  })) as Named;
  origin.name = name;
  origin.traffic = () => origin.requests.filter((r) => r.url !== '/health').length;
  return origin;
}

/** A bare origin on a given port (to restart one where it was); counts requests and open sockets. */
export interface PortOrigin {
  port: number;
  requests: { url: string; headers: IncomingHttpHeaders }[];
  sockets: Set<Socket>;
  close(): Promise<void>;
}

export async function listenOn(port: number, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<PortOrigin> {
  const origin: PortOrigin = { port, requests: [], sockets: new Set(), close: async () => undefined };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      origin.requests.push({ url: req.url ?? '', headers: req.headers });
      handler(req, res);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    origin.sockets.add(s);
    s.on('close', () => origin.sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  origin.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return origin;
}

/** Parsed JSON body of an admin GET. */
export async function adminJson<T>(adminAddress: string | undefined, path: string): Promise<T> {
  const r = await send(`http://${adminAddress}${path}`);
  if (r.status !== 200) throw new Error(`admin ${path} answered ${r.status}: ${r.body}`);
  return JSON.parse(r.body) as T;
}
