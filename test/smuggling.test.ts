/**
 * Request smuggling: requests whose framing or header syntax two HTTP parsers could read
 * differently. Each is answered 400, the connection is closed, and nothing reaches the origin
 * (PRODUCT.md, "Rulings on the seed's contradictions"). Sent over raw sockets, since an HTTP
 * client library refuses to produce most of them.
 */
import test from 'ava';
import { startOrigin, sha256, type Origin } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { raw } from './helpers/raw.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HEAD = 'POST /smuggle HTTP/1.1\r\nHost: app.test\r\n';
/**
 * Pipelined after every attack: if the proxy read the attack's framing differently from what it
 * forwarded, or kept the connection open after the 400, the origin would see this request.
 */
const TAIL = 'GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n';

async function setup(t: { teardown(fn: () => Promise<void>): void }): Promise<{ origin: Origin; proxy: TestProxy }> {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => {
    await proxy.close();
    await origin.close();
  });
  return { origin, proxy };
}

const rejected = test.macro(async (t, request: string | Buffer) => {
  const { origin, proxy } = await setup(t);
  const bytes = Buffer.concat([typeof request === 'string' ? Buffer.from(request, 'latin1') : request, Buffer.from(TAIL)]);
  const r = await raw(proxy.port, bytes, { waitMs: 3000 });
  t.deepEqual(r.statuses, [400], `answer was ${JSON.stringify(r.text.slice(0, 160))}`);
  t.true(r.closed, 'the proxy closes the connection after the 400');
  t.false(r.text.includes('127.0.0.1'), 'the error body names no internal address');
  // Anything forwarded would be in flight by now.
  await sleep(200);
  t.is(origin.heads, 0, 'the origin saw no request head');
  t.is(origin.requests.length, 0, 'the origin saw no request');
});

// The positive controls: the same raw path is proxied when well formed, and keeps the connection
// open, so every assertion of the negative cases can fail.

test('control: a well-formed chunked request is proxied with its body', async (t) => {
  const { origin, proxy } = await setup(t);
  const r = await raw(proxy.port, `${HEAD}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`);
  t.deepEqual(r.statuses, [200]);
  t.is(origin.heads, 1);
  t.is(origin.requests.length, 1);
  t.is(origin.requests[0]?.url, '/smuggle');
  t.is(origin.requests[0]?.bodySha256, sha256('hello world'));
});

test('control: a chunked request followed by a pipelined one gets two answers on one open connection', async (t) => {
  const { origin, proxy } = await setup(t);
  const r = await raw(proxy.port, `${HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n${TAIL}`, { waitMs: 1000 });
  t.deepEqual(r.statuses, [200, 200]);
  t.false(r.closed, 'a well-formed exchange leaves the connection open');
  t.deepEqual(origin.requests.map((s) => s.url), ['/smuggle', '/smuggled']);
  t.is(origin.requests[0]?.bodySha256, sha256('hello'));
});

test('control: optional whitespace around "chunked" is not obfuscation, and the body is decoded as chunked', async (t) => {
  // RFC 9110 §5.5: OWS (SP / HTAB) around a field value is not part of it. The point here is
  // that proxy and origin agree on where the body ends: the origin gets exactly "hello", and the
  // pipelined request after it is a request, not body bytes.
  const { origin, proxy } = await setup(t);
  const r = await raw(proxy.port, `${HEAD}Transfer-Encoding:\tchunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n${TAIL}`, { waitMs: 1000 });
  t.deepEqual(r.statuses, [200, 200]);
  t.deepEqual(origin.requests.map((s) => s.url), ['/smuggle', '/smuggled']);
  t.is(origin.requests[0]?.bodySha256, sha256('hello'));
});

// Content-Length and Transfer-Encoding together. hyper drops the Content-Length header when
// Transfer-Encoding is present, so these are caught by the engine's framing audit
// (crates/engine/src/audit.rs), in either order.
test('Content-Length before Transfer-Encoding: chunked is rejected', rejected,
  `${HEAD}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
test('Transfer-Encoding: chunked before Content-Length is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n`);
test('Content-Length with a tab-separated "Transfer-Encoding:\\tchunked" is rejected', rejected,
  `${HEAD}Content-Length: 6\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n`);

// Content-Length disagreements.
test('two differing Content-Length headers are rejected', rejected,
  `${HEAD}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`);
test('a Content-Length list with differing values is rejected', rejected,
  `${HEAD}Content-Length: 5, 6\r\n\r\nhello!`);

// Obfuscated Transfer-Encoding.
test('Transfer-Encoding: xchunked is rejected', rejected,
  `${HEAD}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`);
test('Transfer-Encoding: chunked, identity is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`);
test('Transfer-Encoding: chunked sent twice is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
test('Transfer-Encoding: "chunked\\t,\\tchunked" (a tab-separated list hyper accepts) is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked\t,\tchunked\r\n\r\n0\r\n\r\n`);
test('Transfer-Encoding with a vertical tab before chunked is rejected', rejected,
  `${HEAD}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n`);

// Header syntax that parsers disagree on.
test('obs-fold (a line starting with a space continues the previous header) is rejected', rejected,
  `${HEAD}X-Note: first\r\n second\r\nContent-Length: 0\r\n\r\n`);
test('obs-fold continuing Transfer-Encoding is rejected', rejected,
  `${HEAD}Content-Length: 6\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n`);
test('whitespace between the header name and the colon ("Transfer-Encoding : chunked") is rejected', rejected,
  `${HEAD}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`);
test('a tab between the header name and the colon is rejected', rejected,
  `${HEAD}Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n`);
test('a NUL byte in a header value is rejected', rejected,
  `${HEAD}X-Note: a\0b\r\nContent-Length: 0\r\n\r\n`);
test('a bare CR in a header value is rejected', rejected,
  `${HEAD}X-Note: a\rb\r\nContent-Length: 0\r\n\r\n`);

// Chunked body syntax.
test('a bad chunk size ("zz") is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`);
test('a bad chunk size after a valid chunk is rejected', rejected,
  `${HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n0\r\n\r\n`);

// Host.
test('a missing Host on HTTP/1.1 is rejected', rejected,
  'POST /smuggle HTTP/1.1\r\nContent-Length: 0\r\n\r\n');
test('two Host headers are rejected', rejected,
  'POST /smuggle HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\nContent-Length: 0\r\n\r\n');
