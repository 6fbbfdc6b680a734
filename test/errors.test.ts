/**
 * Statuses the proxy makes itself (502, 504, 413, 431, 408, 404) and the client-side timeouts
 * (slowloris, keep-alive idle), checked as a client sees them: status, a short body that names no
 * internal address, the connection closed where the request cannot be trusted any further.
 */
import test, { type ExecutionContext } from 'ava';
import { request as httpRequest } from 'node:http';
import { closedPort, echo, endlessBody, startOrigin, type Handler, type Origin, type SeenRequest } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { RawConn, open, raw, statuses } from './helpers/raw.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(url: string, options: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${options.path ?? '/'}`, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

/** The first response in raw bytes from the server. */
function parse(text: string): Reply {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0), headers, body: end < 0 ? '' : text.slice(end + 4) };
}

/** Error bodies are short and never leak where the origins are. */
function assertShortBody(t: ExecutionContext, reply: Reply, expected: string, origins: { port: number }[] = []): void {
  t.is(reply.body, expected);
  t.true(reply.body.length < 100, 'short body');
  t.false(reply.body.includes('127.0.0.1'), 'no internal address in the body');
  for (const o of origins) t.false(reply.body.includes(String(o.port)), 'no origin port in the body');
}

async function withProxy(t: ExecutionContext, config: GatehouseConfigInput): Promise<TestProxy> {
  const proxy = await startProxy(config);
  t.teardown(() => proxy.close());
  return proxy;
}

async function withOrigin(t: ExecutionContext, handler?: Handler): Promise<Origin> {
  const origin = await startOrigin(handler);
  t.teardown(() => origin.close());
  return origin;
}

/** An origin answering `ok` with Content-Length, so responses on a raw connection are easy to count. */
const ok: Handler = (_req, res) => {
  res.writeHead(200, { 'content-length': '2' });
  res.end('ok');
};
const answered = (text: string): number => text.split('\r\n\r\nok').length - 1;

// Upstream failures.

test('502 when the backend port is closed', async (t) => {
  const port = await closedPort();
  const proxy = await withProxy(t, proxyConfig([`http://127.0.0.1:${port}`]));
  const r = await send(proxy.url, { path: '/x' });
  t.is(r.status, 502);
  t.regex(String(r.headers['content-type']), /^text\/plain/);
  assertShortBody(t, r, 'Bad Gateway\n', [{ port }]);
});

test('502 when the origin resets the connection mid-request', async (t) => {
  const origin = await withOrigin(t, (req) => req.socket.destroy());
  const proxy = await withProxy(t, proxyConfig([origin.url]));
  const r = await send(proxy.url, { method: 'POST', path: '/reset', headers: { 'content-length': '5' }, body: 'hello' });
  t.is(r.status, 502);
  assertShortBody(t, r, 'Bad Gateway\n', [origin]);
  t.true(origin.heads >= 1, 'the origin did get the request before resetting');
});

test('504 when the origin is slower than timeouts.response', async (t) => {
  const timers = new Set<NodeJS.Timeout>();
  t.teardown(() => timers.forEach(clearTimeout));
  const origin = await withOrigin(t, (_req, res) => {
    const timer = setTimeout(() => {
      if (!res.destroyed) res.end('late');
    }, 1000);
    timers.add(timer);
  });
  const proxy = await withProxy(t, proxyConfig([origin.url], {
    upstreams: { app: { backends: [{ url: origin.url }], timeouts: { response: '200ms' } } },
  }));
  const r = await send(proxy.url, { path: '/slow' });
  t.is(r.status, 504, 'answered by the proxy, not with the origin\'s late 200');
  assertShortBody(t, r, 'Gateway Timeout\n', [origin]);
  t.is(origin.heads, 1);
});

test('timeouts.response holds for every request on a kept-alive connection, after one timed out as after one that did not', async (t) => {
  const timers = new Set<NodeJS.Timeout>();
  t.teardown(() => timers.forEach(clearTimeout));
  const origin = await withOrigin(t, (req, res) => {
    const delay = req.url === '/slow' ? 1000 : req.url === '/almost' ? 250 : 0;
    timers.add(setTimeout(() => {
      if (!res.destroyed) res.end(`done ${req.url}`);
    }, delay));
  });
  const proxy = await withProxy(t, proxyConfig([origin.url], {
    upstreams: { app: { backends: [{ url: origin.url }], timeouts: { response: '400ms' } } },
  }));
  const conn = await RawConn.open(t, proxy.port);
  // Each request waits for the one before: fast, slow (504), one that needs most of its own
  // 400 ms, slow again (504), fast. All on one client connection.
  const paths = ['/fast', '/slow', '/almost', '/slow', '/fast'];
  for (const [i, path] of paths.entries()) {
    conn.write(`GET ${path} HTTP/1.1\r\nHost: app.test\r\n\r\n`);
    t.true(await conn.until(() => statuses(conn.text).length === i + 1, 3000), `an answer to ${path}`);
  }
  t.deepEqual(statuses(conn.text), [200, 504, 200, 504, 200]);
  t.true(conn.text.includes('done /almost'), 'the 250 ms response came through whole');
  t.is(proxy.gateway.stats().connections.total, 1, 'one client connection throughout');
});

// Client errors: each closes the connection, since the rest of the request is unread.

test('413 for a Content-Length over limits.max_body_size, before any body is read', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { max_body_size: '1kb' } }));
  // Only the head is sent: the answer must not wait for the body.
  const r = await raw(proxy.port, 'POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4096\r\n\r\n', { waitMs: 3000 });
  t.deepEqual(r.statuses, [413]);
  t.true(r.closed);
  assertShortBody(t, parse(r.text), 'Payload Too Large\n', [origin]);
  t.is(origin.heads, 0);
  // A body at the limit still goes through.
  const fits = await send(proxy.url, { method: 'POST', path: '/fits', headers: { 'content-length': '1024' }, body: 'a'.repeat(1024) });
  t.is(fits.status, 200);
});

test('413 for a small chunked body that grows past limits.max_body_size; the origin is never contacted', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { max_body_size: '1kb' } }));
  const chunk = `190\r\n${'a'.repeat(400)}\r\n`;
  const r = await raw(proxy.port, ['POST /grow HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n', chunk, chunk, chunk, chunk, '0\r\n\r\n'], { pauseMs: 30, waitMs: 3000 });
  t.deepEqual(r.statuses, [413]);
  t.true(r.closed);
  assertShortBody(t, parse(r.text), 'Payload Too Large\n', [origin]);
  await sleep(200);
  t.is(origin.heads, 0);
});

test('413 for a streamed chunked body that grows past limits.max_body_size; the origin never gets it whole', async (t) => {
  // Over the 64 KiB the proxy buffers, the body streams to the origin as it arrives.
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { max_body_size: '100kb' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('POST /stream HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n');
  // 8 KiB at a time, stopping as soon as the proxy answers (at most 320 KiB).
  for (let i = 0; i < 40 && !conn.closed && conn.text === ''; i++) {
    conn.write(`2000\r\n${'a'.repeat(8192)}\r\n`);
    await sleep(10);
  }
  t.true(await conn.until(() => conn.closed, 5000), 'the proxy closes the connection');
  t.deepEqual(statuses(conn.text), [413]);
  assertShortBody(t, parse(conn.text), 'Payload Too Large\n', [origin]);
  await sleep(200);
  t.is(origin.requests.length, 0, 'no complete request reached the origin');
});

test('431 for headers over limits.max_header_size', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { max_header_size: '2kb' } }));
  const under = await raw(proxy.port, `GET /h HTTP/1.1\r\nHost: app.test\r\nX-Big: ${'a'.repeat(1000)}\r\nConnection: close\r\n\r\n`);
  t.deepEqual(under.statuses, [200], 'a head under the limit is proxied');
  // Just over the limit, and far over it (past the read buffer too).
  for (const size of [2500, 20_000]) {
    const r = await raw(proxy.port, `GET /h HTTP/1.1\r\nHost: app.test\r\nX-Big: ${'a'.repeat(size)}\r\n\r\n`, { waitMs: 3000 });
    t.deepEqual(r.statuses, [431], `${size} bytes`);
    t.true(r.closed, `${size} bytes: closed`);
    const reply = parse(r.text);
    t.true(reply.body.length < 100);
    t.false(reply.body.includes('127.0.0.1'));
  }
  t.is(origin.requests.length, 1, 'only the request under the limit reached the origin');
});

test('408 when the client stalls mid-body longer than limits.body_timeout', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { body_timeout: '300ms' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('POST /stall HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789');
  t.true(await conn.until(() => conn.closed, 5000), 'the proxy closes the stalled connection');
  t.deepEqual(statuses(conn.text), [408]);
  assertShortBody(t, parse(conn.text), 'Request Timeout\n', [origin]);
  t.is(origin.requests.length, 0);
  t.deepEqual(proxy.gateway.stats().timeouts, { header: 0, body: 1, send: 0, tunnel: 0 }, 'counted as a body timeout');
});

test('a client that stops reading a response is closed after limits.send_timeout, and the origin connection with it', async (t) => {
  let originClosed = false;
  const origin = await withOrigin(t, (_req, res) => endlessBody(res, () => (originClosed = true)));
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { send_timeout: '500ms' } }));
  const client = await open(proxy.port);
  t.teardown(() => client.destroy());
  client.pause(); // reads nothing: the proxy's writes fill the socket and block
  client.write('GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n');
  const deadline = Date.now() + 8000;
  while (!originClosed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.true(originClosed, "the response's origin connection was closed");
  t.is(proxy.gateway.stats().timeouts.send, 1, 'counted as a send timeout');
});

// Client-side idle timers.

test('slowloris: a stalled partial request head is disconnected after limits.header_timeout', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { header_timeout: '300ms' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('GET /slow HTTP/1.1\r\nHost: app.test\r\n');
  t.true(await conn.until(() => conn.closed, 5000), 'closed');
  // A close, or a 408 then a close (PRODUCT.md: "408 where a response is possible").
  t.true([[], [408]].some((s) => JSON.stringify(s) === JSON.stringify(statuses(conn.text))), conn.text);
  t.is(origin.heads, 0);
  t.is(origin.requests.length, 0);
  t.deepEqual(proxy.gateway.stats().timeouts, { header: 1, body: 0, send: 0, tunnel: 0 }, 'counted as a header timeout');
});

test('slowloris: trickling header bytes does not extend limits.header_timeout', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { header_timeout: '300ms' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('GET /slow HTTP/1.1\r\nHost: app.test\r\n');
  // One new header line every 100 ms, for up to 5 s.
  for (let i = 0; i < 50 && !conn.closed; i++) {
    await sleep(100);
    conn.write(`X-Drip-${i}: ${i}\r\n`);
  }
  t.true(conn.closed, 'closed although bytes kept arriving');
  t.is(origin.heads, 0);
});

test('a connection that never sends a byte is closed after limits.header_timeout', async (t) => {
  const origin = await withOrigin(t);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { header_timeout: '300ms', keepalive_timeout: '60s' } }));
  const conn = await RawConn.open(t, proxy.port);
  t.true(await conn.until(() => conn.closed, 5000), 'closed');
  t.is(origin.connections, 0);
  t.is(proxy.gateway.stats().timeouts.header, 1, 'counted as a header timeout');
});

// The watchdog must notice the connection going idle (not only the deadline it computed at accept).
test('an idle keep-alive connection is closed after limits.keepalive_timeout', async (t) => {
  const origin = await withOrigin(t, ok);
  // header_timeout stays at its 10 s default: a close within 5 s is the keep-alive timer's.
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { keepalive_timeout: '500ms' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n');
  t.true(await conn.until(() => answered(conn.text) === 1, 3000), 'first response');
  t.deepEqual(statuses(conn.text), [200]);
  t.true(await conn.until(() => conn.closed, 5000), 'closed when idle');
  t.deepEqual(statuses(conn.text), [200], 'closed without another response');
});

test('keep-alive idleness is governed by keepalive_timeout, not by a shorter header_timeout', async (t) => {
  const origin = await withOrigin(t, ok);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { header_timeout: '300ms', keepalive_timeout: '1500ms' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n');
  t.true(await conn.until(() => answered(conn.text) === 1, 3000), 'first response');
  // Idle for longer than header_timeout but well within keepalive_timeout.
  await sleep(800);
  t.false(conn.closed, 'still open after 800 ms idle (header_timeout is 300 ms)');
  conn.write('GET /two HTTP/1.1\r\nHost: app.test\r\n\r\n');
  t.true(await conn.until(() => answered(conn.text) === 2, 3000), 'second response on the same connection');
  t.deepEqual(statuses(conn.text), [200, 200]);
  t.is(origin.requests.length, 2);
  // Now idle past keepalive_timeout (with generous slack).
  t.true(await conn.until(() => conn.closed, 5000), 'closed once idle past keepalive_timeout');
  t.deepEqual(statuses(conn.text), [200, 200]);
});

// A head started on an idle keep-alive connection is timed by header_timeout, not keepalive_timeout.
test('slowloris on a kept-alive connection: a stalled second head is cut after limits.header_timeout', async (t) => {
  const origin = await withOrigin(t, ok);
  const proxy = await withProxy(t, proxyConfig([origin.url], { limits: { header_timeout: '300ms', keepalive_timeout: '10s' } }));
  const conn = await RawConn.open(t, proxy.port);
  conn.write('GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n');
  t.true(await conn.until(() => answered(conn.text) === 1, 3000), 'first response');
  // Idle past the first header_timeout window, then start a head and stall.
  await sleep(700);
  t.false(conn.closed, 'an idle connection within keepalive_timeout stays open');
  conn.write('GET /slow HTTP/1.1\r\nHost: app.test\r\n');
  t.true(await conn.until(() => conn.closed, 3000), 'the stalled head is cut well before keepalive_timeout (10 s)');
  t.is(origin.heads, 1, 'only the first request reached the origin');
});

// Routing.

test('routes pick the upstream by Host and path; no match is 404', async (t) => {
  const api = await withOrigin(t, echo);
  const web = await withOrigin(t, echo);
  const proxy = await withProxy(t, {
    ...proxyConfig([]),
    upstreams: { api: { backends: [{ url: api.url }] }, web: { backends: [{ url: web.url }] } },
    routes: [
      { host: 'api.example.com', upstream: 'api' },
      { host: '*.example.com', path_prefix: '/v1', upstream: 'web' },
    ],
  });
  const get = (host: string, path: string) => send(proxy.url, { path, headers: { host } });
  const urlOf = (r: Reply) => (JSON.parse(r.body) as SeenRequest).url;

  const exact = await get('api.example.com', '/anything');
  t.is(exact.status, 200);
  t.is(urlOf(exact), '/anything');
  t.is(api.requests.length, 1, 'exact host goes to api');
  const casedWithPort = await get('API.Example.COM:8080', '/v1/x');
  t.is(casedWithPort.status, 200, 'host match ignores case and port; the first matching route wins');
  t.is(api.requests.length, 2);
  const wildcard = await get('www.example.com', '/v1/items');
  t.is(wildcard.status, 200);
  t.is(urlOf(wildcard), '/v1/items');
  t.is(web.requests.length, 1, 'one-label wildcard with the path prefix goes to web');

  const misses: [string, string, string][] = [
    ['www.example.com', '/v2/items', 'path outside the prefix'],
    ['www.example.com', '/V1/items', 'the prefix is case-sensitive'],
    ['a.b.example.com', '/v1/items', 'the wildcard matches exactly one label'],
    ['example.com', '/v1/items', 'the wildcard needs a label'],
    ['other.org', '/v1/items', 'unknown host'],
  ];
  for (const [host, path, why] of misses) {
    const r = await get(host, path);
    t.is(r.status, 404, `${host}${path}: ${why}`);
    assertShortBody(t, r, 'Not Found\n', [api, web]);
  }
  t.is(api.requests.length, 2, 'no miss reached api');
  t.is(web.requests.length, 1, 'no miss reached web');
});
