/**
 * For the cache tests: a proxy with the cache enabled in front of an origin whose answer is
 * chosen per request by the test (it sees how many times its path was asked for), and a client
 * that keeps bodies as bytes (to compare hashes) and reads `X-Cache-Status` and `Age`.
 */
import type { ExecutionContext } from 'ava';
import { request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { startOrigin, type Origin, type SeenRequest } from './origin.js';
import { proxyConfig, startProxy, type TestProxy } from './proxy.js';
import type { GatehouseConfigInput } from '../../ts/config/schema.js';

export interface CacheReply {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as UTF-8 text. */
  body: string;
  /** The body as received. */
  bytes: Buffer;
  /** `X-Cache-Status`, or undefined when absent. */
  cache: string | undefined;
  /** `Age` as a number, or undefined when absent. */
  age: number | undefined;
}

export interface FetchOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
}

/** One request on a fresh connection (`agent: false`). */
export function fetchRaw(url: string, options: FetchOptions = {}): Promise<CacheReply> {
  return new Promise((resolve, reject) => {
    const headers = { ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = request(url, { method: options.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const cache = res.headers['x-cache-status'];
        const age = res.headers.age;
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: bytes.toString('utf8'),
          bytes,
          cache: typeof cache === 'string' ? cache : undefined,
          age: age === undefined ? undefined : Number(age),
        });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The test's answer for one origin request; `n` counts the requests for this path (1-based). */
export type CacheHandler = (req: IncomingMessage, res: ServerResponse, n: number, seen: SeenRequest) => void;

export interface CacheSetup {
  proxy: TestProxy;
  origin: Origin;
  /** A request to the proxy, `path` starting with `/`. */
  get(path: string, options?: FetchOptions): Promise<CacheReply>;
  /** Origin requests for `path` (any method unless `method` is given). */
  hits(path: string, method?: string): number;
  /** The origin requests for `path`, in order. */
  seen(path: string): SeenRequest[];
  /** `gateway.stats().cache`. */
  stats(): NonNullable<ReturnType<TestProxy['gateway']['stats']>['cache']>;
}

/**
 * An origin and a proxy with the cache on (closed at teardown). `overrides` go into the
 * proxy's configuration (`cache` is merged over `{ enabled: true }`).
 */
export async function cacheSetup(
  t: ExecutionContext,
  handler: CacheHandler,
  overrides: Partial<GatehouseConfigInput> = {},
): Promise<CacheSetup> {
  const counts = new Map<string, number>();
  const origin = await startOrigin((req, res, seen) => {
    const n = (counts.get(seen.url) ?? 0) + 1;
    counts.set(seen.url, n);
    handler(req, res, n, seen);
  });
  const { cache, ...rest } = overrides;
  const proxy = await startProxy(proxyConfig([origin.url], { ...rest, cache: { enabled: true, ...cache } }));
  t.teardown(async () => {
    await proxy.close();
    await origin.close();
  });
  return {
    proxy,
    origin,
    get: (path, options) => fetchRaw(`${proxy.url}${path}`, options),
    hits: (path, method) => origin.requests.filter((r) => r.url === path && (method === undefined || r.method === method)).length,
    seen: (path) => origin.requests.filter((r) => r.url === path),
    stats: () => {
      const stats = proxy.gateway.stats().cache;
      if (!stats) throw new Error('the cache is not enabled');
      return stats;
    },
  };
}

/** Answers `status` with `body` and `headers` (a `Content-Length` is added unless `chunked`). */
export function reply(res: ServerResponse, status: number, headers: Record<string, string | string[]>, body: string | Buffer = '', chunked = false): void {
  const all: Record<string, string | string[] | number> = { 'content-type': 'text/plain', ...headers };
  if (!chunked && status !== 304 && status !== 204) all['content-length'] = Buffer.byteLength(body);
  res.writeHead(status, all);
  res.end(status === 304 ? undefined : body);
}
