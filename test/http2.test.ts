/**
 * HTTP/2 downstream: h2c with prior knowledge on a plain listener, translated to HTTP/1.1
 * upstream; stream and header limits; rapid-reset and CONTINUATION floods from raw clients (the
 * proxy answers with GOAWAY or closes, and stays responsive to others); GOAWAY on shutdown.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { connect as h2connect, constants, type ClientHttp2Session, type IncomingHttpHeaders as H2Headers, type OutgoingHttpHeaders } from 'node:http2';
import { delay, send, until } from './helpers/client.js';
import { ERROR, FLAG, FRAME, frame, hpackLiteral, rawH2, requestBlock, rstStream, type RawH2 } from './helpers/h2raw.js';
import { endlessBody, sha256, startOrigin, type Origin, type SeenRequest } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { exchange } from './helpers/rawclose.js';

/** A timer that does not keep the process alive (for races). */
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

const big = randomBytes(1024 * 1024);
const bigSha = sha256(big);

interface Seen extends SeenRequest {
  httpVersion: string;
}

interface H2Origin extends Origin {
  seen: Seen[];
  peak: number;
}

/**
 * An origin that records what it saw (with the HTTP version): `/big` answers 1 MiB, `/echo`
 * answers the body's length and hash, `/slow` waits `slowMs`, anything else answers a JSON summary.
 */
async function h2Origin(t: ExecutionContext, slowMs = 300): Promise<H2Origin> {
  let concurrent = 0;
  const extra = { seen: [] as Seen[], peak: 0 };
  const origin = await startOrigin((req, res, seen) => {
    const s: Seen = { ...seen, httpVersion: req.httpVersion };
    extra.seen.push(s);
    concurrent += 1;
    extra.peak = Math.max(extra.peak, concurrent);
    const done = () => (concurrent -= 1);
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': big.length });
      res.end(big, done);
    } else if (req.url?.startsWith('/slow')) {
      setTimeout(() => res.end('slow done', done), slowMs);
    } else {
      const body = JSON.stringify(req.url?.startsWith('/echo') ? { length: s.bodyLength, sha: s.bodySha256 } : s);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body, done);
    }
  });
  t.teardown(() => origin.close());
  return Object.assign(origin, extra) as H2Origin;
}

async function proxyFor(t: ExecutionContext, origin: Origin, overrides: Parameters<typeof proxyConfig>[1] = {}): Promise<TestProxy> {
  const proxy = await startProxy(proxyConfig([origin.url], overrides));
  t.teardown(() => proxy.close());
  return proxy;
}

function h2session(t: ExecutionContext, url: string): Promise<ClientHttp2Session> {
  const session = h2connect(url);
  t.teardown(() => session.destroy());
  session.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

interface H2Reply {
  status: number;
  headers: H2Headers;
  body: Buffer;
}

function h2request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': body ? 'POST' : 'GET', ...headers });
    const chunks: Buffer[] = [];
    let head: H2Headers = {};
    stream.on('response', (h) => (head = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) }));
    stream.on('error', reject);
    stream.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// h2c end to end

test('h2c with prior knowledge: concurrent streams on one connection, translated to HTTP/1.1, bodies intact both ways', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin);
  const session = await h2session(t, proxy.url);
  const authority = 'app.test';
  const small = randomBytes(300 * 1024);
  const large = randomBytes(1024 * 1024);
  const gets = Array.from({ length: 8 }, (_, i) =>
    h2request(session, { ':path': `/item/${i}?q=${i}`, ':authority': authority, te: 'trailers', 'x-custom': `v${i}` }),
  );
  const bigs = [h2request(session, { ':path': '/big', ':authority': authority }), h2request(session, { ':path': '/big', ':authority': authority })];
  const posts = [
    h2request(session, { ':path': '/echo/small', ':authority': authority, 'content-type': 'application/octet-stream' }, small),
    h2request(session, { ':path': '/echo/large', ':authority': authority }, large),
  ];
  const [items, bigReplies, postReplies] = await Promise.all([Promise.all(gets), Promise.all(bigs), Promise.all(posts)]);
  items.forEach((r, i) => {
    t.is(r.status, 200);
    t.is((JSON.parse(r.body.toString()) as Seen).url, `/item/${i}?q=${i}`, 'each stream got its own response');
  });
  for (const r of bigReplies) {
    t.is(r.status, 200);
    t.is(r.body.length, big.length);
    t.is(sha256(r.body), bigSha, 'the 1 MiB response body is intact');
  }
  t.deepEqual(JSON.parse(postReplies[0]?.body.toString() ?? '{}'), { length: small.length, sha: sha256(small) });
  t.deepEqual(JSON.parse(postReplies[1]?.body.toString() ?? '{}'), { length: large.length, sha: sha256(large) });

  t.is(origin.seen.length, 12);
  for (const s of origin.seen) {
    t.is(s.httpVersion, '1.1', 'the origin speaks HTTP/1.1');
    t.is(s.headers.host, authority, 'Host comes from :authority');
    t.is(s.headers['x-forwarded-proto'], 'http');
    t.is(s.headers.te, undefined, 'no te');
    t.is(s.headers.connection, undefined, 'no connection header');
    t.is(s.headers['transfer-encoding'] === undefined || s.headers['transfer-encoding'] === 'chunked', true);
    const names = s.rawHeaders.filter((_, i) => i % 2 === 0);
    t.false(names.some((n) => n.startsWith(':')), `no pseudo-header leaks: ${names.join(', ')}`);
    t.is(names.filter((n) => n.toLowerCase() === 'host').length, 1, 'exactly one Host');
  }
  const item3 = origin.seen.find((s) => s.url === '/item/3?q=3');
  t.is(item3?.headers['x-custom'], 'v3', 'ordinary headers pass');
  t.is(item3?.method, 'GET');
  const posted = origin.seen.filter((s) => s.url.startsWith('/echo'));
  t.true(posted.every((s) => s.method === 'POST'));
  t.is(proxy.gateway.stats().connections.total, 1, 'all of it on one client connection');

  // The proxy keeps the connection's first authority's Host value: another authority on the
  // same connection still gets its own, before and after.
  for (const name of ['other.test', authority]) {
    const r = await h2request(session, { ':path': `/host/${name}`, ':authority': name });
    t.is(r.status, 200);
    const seen = origin.seen.at(-1);
    t.is(seen?.url, `/host/${name}`);
    t.is(seen?.headers.host, name, 'Host is the stream\'s own :authority');
    t.is(seen?.headers['x-forwarded-host'], name);
  }
});

test('HTTP/1.1 still works on the h2c listener, including a request whose first bytes trickle in', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin);
  const r = await send(`${proxy.url}/h1`, { headers: { host: 'app.test' } });
  t.is(r.status, 200);
  t.is((JSON.parse(r.body) as Seen).httpVersion, '1.1');
  const post = await send(`${proxy.url}/echo/post`, { method: 'POST', body: 'hello' });
  t.deepEqual(JSON.parse(post.body), { length: 5, sha: sha256('hello') });
  // "P" could start the h2 preface ("PRI * HTTP/2.0"): the proxy must wait for more before deciding.
  const slow = await exchange(proxy.port, ['P', 'UT /echo/put HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'], { pauseMs: 50 });
  t.deepEqual(slow.statuses, [200]);
  t.true(slow.text.includes(sha256('abc')));
});

test('h2c: trailers from a chunked HTTP/1.1 origin reach the HTTP/2 client; hop-by-hop response headers do not', async (t) => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum', 'keep-alive': 'timeout=5', connection: 'keep-alive' });
    res.write('part one, ');
    res.addTrailers({ 'x-checksum': 'abc123' });
    res.end('part two');
  });
  t.teardown(() => origin.close());
  const proxy = await proxyFor(t, origin);
  const session = await h2session(t, proxy.url);
  const result = await new Promise<{ headers: H2Headers; trailers: H2Headers; body: string }>((resolve, reject) => {
    const stream = session.request({ ':path': '/trailers', te: 'trailers' });
    let headers: H2Headers = {};
    let trailers: H2Headers = {};
    let body = '';
    stream.on('response', (h) => (headers = h));
    stream.on('trailers', (h) => (trailers = h));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ headers, trailers, body }));
    stream.on('error', reject);
  });
  t.is(Number(result.headers[':status']), 200);
  t.is(result.body, 'part one, part two');
  t.is(result.trailers['x-checksum'], 'abc123');
  t.is(result.headers['keep-alive'], undefined);
  t.is(result.headers.connection, undefined);
  t.is(result.headers['transfer-encoding'], undefined);
});

test('h2c: a request body over limits.max_body_size gets 413, with or without content-length, and the connection goes on', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin, { limits: { max_body_size: '100kb' } });
  const session = await h2session(t, proxy.url);
  const body = randomBytes(1024 * 1024);
  const declared = await h2request(session, { ':path': '/echo/declared', 'content-length': String(body.length) }, body).catch((e: Error) => e);
  const streamed = await h2request(session, { ':path': '/echo/streamed' }, body).catch((e: Error) => e);
  for (const r of [declared, streamed]) {
    if (r instanceof Error) t.fail(`stream failed instead of a 413: ${r.message}`);
    else t.is(r.status, 413);
  }
  const ok = await h2request(session, { ':path': '/echo/small' }, Buffer.from('small'));
  t.is(ok.status, 200, 'the same connection still serves');
  t.deepEqual(origin.seen.map((s) => s.url), ['/echo/small'], 'oversized bodies never reached the origin');
});

// ---------------------------------------------------------------------------------------------
// Limits

test('limits: SETTINGS_MAX_CONCURRENT_STREAMS is 128, and streams beyond it are refused while 128 proceed', async (t) => {
  const origin = await h2Origin(t, 400);
  const proxy = await proxyFor(t, origin, { upstreams: { app: { backends: [{ url: origin.url }], pool: { max_connections: 512 } } } });
  const session = h2connect(proxy.url);
  t.teardown(() => session.destroy());
  await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
  t.is(session.remoteSettings.maxConcurrentStreams, 128);
  t.is(session.remoteSettings.maxHeaderListSize, 16 * 1024, 'the header list limit follows limits.max_header_size');

  // A raw client ignores the setting and opens 200 streams at once.
  const c = await rawH2(proxy.port);
  t.teardown(() => c.destroy());
  await c.write(Buffer.concat(Array.from({ length: 200 }, (_, i) => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 2 * i + 1, requestBlock('app.test', '/slow')))));
  await until(() => c.frames.filter((f) => f.type === FRAME.DATA && f.flags & FLAG.END_STREAM).length === 128, '128 streams to complete', 8000);
  const resets = c.frames.filter((f) => f.type === FRAME.RST_STREAM);
  t.is(resets.length, 72, 'the 72 excess streams are reset');
  t.true(resets.every((f) => f.payload.readUInt32BE(0) === 0x7), 'with REFUSED_STREAM');
  t.true(origin.peak <= 128, `the origin saw at most 128 at once (${origin.peak})`);
  t.is(c.goaway, undefined, 'the connection itself is fine');
  t.false(c.closed);
});

test('limits: a header list over 16 KiB gets 431 on its stream; the connection and the origin are spared', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin);
  const c = await rawH2(proxy.port);
  t.teardown(() => c.destroy());
  const block = Buffer.concat([requestBlock('app.test', '/huge'), hpackLiteral('x-big', 'b'.repeat(20_000))]);
  await c.write(Buffer.concat([frame(FRAME.HEADERS, FLAG.END_STREAM, 1, block.subarray(0, 16_000)), frame(FRAME.CONTINUATION, FLAG.END_HEADERS, 1, block.subarray(16_000))]));
  await until(() => c.frames.some((f) => f.stream === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM)), 'an answer on stream 1');
  const answer = c.frames.find((f) => f.stream === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM));
  if (answer?.type === FRAME.HEADERS) {
    // ":status: 431" as h2 encodes it: literal with incremental indexing of static entry 8, Huffman "431".
    t.is(answer.payload.subarray(0, 5).toString('hex'), '48836990ff', 'a 431 response');
  } else {
    t.is(answer?.type, FRAME.RST_STREAM, 'or a stream reset');
  }
  await c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock('app.test', '/after')));
  await until(() => c.frames.some((f) => f.stream === 3 && f.type === FRAME.DATA && f.flags & FLAG.END_STREAM), 'the next stream to be answered');
  t.deepEqual(origin.seen.map((s) => s.url), ['/after'], 'the oversized request never reached the origin');
});

// ---------------------------------------------------------------------------------------------
// Floods

/** Well-behaved traffic (HTTP/1.1 and h2c) until `stop()`; every status it got. */
function bystander(proxy: TestProxy): { stop(): Promise<number[]> } {
  let stopped = false;
  const statuses: number[] = [];
  const loop = (async () => {
    const session = h2connect(proxy.url);
    session.on('error', () => undefined);
    try {
      while (!stopped) {
        statuses.push((await send(`${proxy.url}/bystander/h1`)).status);
        statuses.push((await h2request(session, { ':path': '/bystander/h2' })).status);
      }
    } catch {
      statuses.push(0);
    } finally {
      session.destroy();
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return statuses;
    },
  };
}

/** After a flood: a new client gets 200 over both protocols. */
async function stillServes(t: ExecutionContext, proxy: TestProxy): Promise<void> {
  t.is((await send(`${proxy.url}/after/h1`)).status, 200);
  const session = await h2session(t, proxy.url);
  t.is((await h2request(session, { ':path': '/after/h2' })).status, 200);
  session.close();
}

// Serial: its synchronous loop would stall the event loop under other tests' timers.
test.serial('rapid reset (node:http2): 5,000 streams opened and cancelled at once get GOAWAY; other clients are served', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin);
  const others = bystander(proxy);
  const session = h2connect(proxy.url);
  t.teardown(() => session.destroy());
  session.on('error', () => undefined);
  const goaway = new Promise<number>((resolve) => session.on('goaway', (code) => resolve(code)));
  const closed = new Promise<void>((resolve) => session.on('close', () => resolve()));
  await new Promise<void>((resolve) => session.once('connect', () => resolve()));
  let opened = 0;
  for (let i = 0; i < 5000 && !session.closed && !session.destroyed; i++) {
    const stream = session.request({ ':path': `/reset/${i}` });
    stream.on('error', () => undefined);
    stream.close(constants.NGHTTP2_CANCEL);
    opened += 1;
  }
  const outcome = await Promise.race([goaway.then((code) => `goaway ${code}`), closed.then(() => 'closed'), sleep(10_000).then(() => 'nothing')]);
  t.not(outcome, 'nothing', 'the proxy reacted to the flood');
  if (outcome.startsWith('goaway')) t.is(outcome, `goaway ${constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
  await until(() => session.closed || session.destroyed, 'the flooding session to end', 5000);
  const statuses = await others.stop();
  t.true(statuses.length > 0);
  t.true(statuses.every((s) => s === 200), `the other client got ${JSON.stringify(statuses.filter((s) => s !== 200))}`);
  await stillServes(t, proxy);
  const reset = origin.seen.filter((s) => s.url.startsWith('/reset/')).length;
  t.true(reset < opened / 10, `${reset} of ${opened} cancelled streams reached the origin`);
});

test('rapid reset (raw frames): HEADERS+RST_STREAM pairs get GOAWAY ENHANCE_YOUR_CALM or a close; other clients are served', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin);
  const others = bystander(proxy);
  const c: RawH2 = await rawH2(proxy.port);
  t.teardown(() => c.destroy());
  let sent = 0;
  while (sent < 5000 && !c.goaway && !c.closed) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 20; i++, sent++) {
      const id = 2 * sent + 1;
      batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock('app.test', `/reset/${sent}`)), rstStream(id, ERROR.CANCEL));
    }
    await c.write(Buffer.concat(batch));
    // Let the server's frames in between batches (a GOAWAY is then read before the close).
    await delay(1);
  }
  t.true(await c.goawayOrClose(10_000), 'GOAWAY or close');
  if (c.goaway) t.is(c.goaway.code, ERROR.ENHANCE_YOUR_CALM);
  t.true(sent < 5000, `the proxy stopped the flood after ${sent} streams`);
  const statuses = await others.stop();
  t.true(statuses.length > 0);
  t.true(statuses.every((s) => s === 200), `the other client got ${JSON.stringify(statuses.filter((s) => s !== 200))}`);
  await stillServes(t, proxy);
  const reset = origin.seen.filter((s) => s.url.startsWith('/reset/')).length;
  t.true(reset < 100, `${reset} of ${sent} reset streams reached the origin`);
});

for (const kind of ['1 KiB junk fields', 'empty fragments'] as const) {
  test(`CONTINUATION flood (${kind}): HEADERS without END_HEADERS then endless CONTINUATION get GOAWAY or a close`, async (t) => {
    const origin = await h2Origin(t);
    const proxy = await proxyFor(t, origin);
    const others = bystander(proxy);
    const c = await rawH2(proxy.port);
    t.teardown(() => c.destroy());
    await c.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock('app.test', '/continuation')));
    let frames = 0;
    let bytes = 0;
    // Up to 4 MiB of header block (or 100,000 empty frames): far beyond the 16 KiB limit.
    while (frames < 100_000 && bytes < 4 * 1024 * 1024 && !c.goaway && !c.closed) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 100; i++, frames++) {
        const fragment = kind === 'empty fragments' ? Buffer.alloc(0) : hpackLiteral(`x-junk-${frames}`, 'j'.repeat(1000));
        bytes += fragment.length;
        batch.push(frame(FRAME.CONTINUATION, 0, 1, fragment));
      }
      if (!(await c.write(Buffer.concat(batch)))) break;
      await delay(1);
    }
    t.true(await c.goawayOrClose(10_000), 'GOAWAY or close');
    if (c.goaway) t.is(c.goaway.code, ERROR.ENHANCE_YOUR_CALM);
    t.true(frames < 100_000 && bytes < 4 * 1024 * 1024, `stopped after ${frames} frames, ${bytes} bytes`);
    const statuses = await others.stop();
    t.true(statuses.every((s) => s === 200), `the other client got ${JSON.stringify(statuses.filter((s) => s !== 200))}`);
    await stillServes(t, proxy);
    t.is(origin.seen.filter((s) => s.url === '/continuation').length, 0, 'the endless request never reached the origin');
  });
}

// ---------------------------------------------------------------------------------------------
// Idle connections

test('keepalive_timeout: a stream longer than the idle timeout completes; the connection closes once idle', async (t) => {
  const origin = await h2Origin(t, 2000);
  const proxy = await proxyFor(t, origin, { limits: { keepalive_timeout: '1s' } });
  // The request goes out with the connection preface: no idle gap before it.
  const session = h2connect(proxy.url);
  t.teardown(() => session.destroy());
  const closed = new Promise<void>((resolve) => session.on('close', () => resolve()));
  const r = await h2request(session, { ':path': '/slow/long' });
  t.is(r.status, 200);
  t.is(r.body.toString(), 'slow done', 'not cut off by the idle timer');
  const outcome = await Promise.race([closed.then(() => 'closed'), sleep(5000).then(() => 'open')]);
  t.is(outcome, 'closed', 'the idle connection is closed');
});

test('send_timeout: a stream the client leaves without flow-control window frees its origin connection; the connection goes on', async (t) => {
  let originClosed = false;
  const origin = await startOrigin((req, res) => {
    if (req.url === '/endless') endlessBody(res, () => (originClosed = true));
    else res.end('other');
  });
  t.teardown(() => origin.close());
  const proxy = await proxyFor(t, origin, { limits: { send_timeout: '500ms' } });
  const session = await h2session(t, proxy.url);
  // Node.js grants a stream window only as its data is read: a paused stream gets none, while
  // the connection (its window, its socket) carries on.
  const stream = session.request({ ':path': '/endless' });
  stream.pause();
  stream.on('error', () => undefined);
  const closed = new Promise<number | undefined>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
  const backend = () => proxy.gateway.stats().upstreams.app?.backends[0];
  await until(() => backend()?.active === 1, 'the stream to be in flight');
  await until(() => originClosed, "the starved stream's origin connection to be closed", 8000);
  await until(() => backend()?.active === 0 && backend()?.pool.active === 0, 'the backend to count nothing in flight');
  t.is(proxy.gateway.stats().timeouts.send, 1, 'counted as a send timeout');
  const other = await h2request(session, { ':path': '/other' });
  t.is(other.status, 200, 'another stream on the same connection is served');
  t.is(other.body.toString(), 'other');
  // Reading again, the client learns its response was cut short: a reset, not an end.
  stream.resume();
  t.is(await closed, constants.NGHTTP2_INTERNAL_ERROR);
});

test('send_timeout on HTTP/2 streams: an origin pausing mid-body longer than it is the origin’s wait, not a stall', async (t) => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'content-length': '10' });
    res.write('first');
    setTimeout(() => res.end('-last'), 1500);
  });
  t.teardown(() => origin.close());
  const proxy = await proxyFor(t, origin, { limits: { send_timeout: '300ms' } });
  const session = await h2session(t, proxy.url);
  const r = await h2request(session, { ':path': '/pausing' });
  t.is(r.status, 200);
  t.is(r.body.toString(), 'first-last', 'the whole body, after the pause');
});

// RFC 9113 §9.1: an idle HTTP/2 connection is closed with a GOAWAY, so a client that sends a
// request as it closes can tell whether it was processed. A graceful GOAWAY may first carry the
// maximum stream id (§6.8) before the final one.
test('keepalive_timeout: an idle HTTP/2 connection gets a GOAWAY before it is closed', async (t) => {
  const origin = await h2Origin(t);
  const proxy = await proxyFor(t, origin, { limits: { keepalive_timeout: '500ms' } });
  const c = await rawH2(proxy.port);
  t.teardown(() => c.destroy());
  await c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('app.test', '/one')));
  await until(() => c.frames.some((f) => f.type === FRAME.DATA && f.flags & FLAG.END_STREAM), 'the response');
  t.true(await c.goawayOrClose(5000), 'the idle connection ends');
  await until(() => c.closed, 'the close', 5000);
  t.truthy(c.goaway, 'a GOAWAY came first');
  t.true(c.goaway?.lastStream === 1 || c.goaway?.lastStream === 2 ** 31 - 1, `last stream ${c.goaway?.lastStream}`);
});

// ---------------------------------------------------------------------------------------------
// Shutdown

test('graceful shutdown: close() sends GOAWAY and lets the in-flight stream complete', async (t) => {
  const origin = await h2Origin(t, 600);
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(() => proxy.close());
  const session = await h2session(t, proxy.url);
  const goaway = new Promise<number>((resolve) => session.on('goaway', (code) => resolve(code)));
  const inFlight = h2request(session, { ':path': '/slow/inflight' });
  await until(() => origin.heads === 1, 'the request to reach the origin');
  const closing = proxy.gateway.close();
  const code = await Promise.race([goaway, sleep(5000).then(() => -1)]);
  t.is(code, constants.NGHTTP2_NO_ERROR, 'GOAWAY (NO_ERROR) before the stream finished');
  const r = await inFlight;
  t.is(r.status, 200);
  t.is(r.body.toString(), 'slow done', 'the in-flight stream completed');
  await closing;
  await until(() => session.closed || session.destroyed, 'the session to close', 5000);
});
