/**
 * What origins send, as the proxy's HTTP/1.1 client reads it: every way a response body can be
 * delimited, interim responses, heads the proxy must refuse, and when a connection may carry
 * the next request. The origins are raw TCP servers, so that they can send what Node's HTTP
 * server never would.
 */
import test, { type ExecutionContext } from 'ava';
import type { Socket } from 'node:net';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { send } from './helpers/client.js';
import { raw, rawOrigin, type RawOrigin } from './helpers/raw.js';

interface Scripted extends RawOrigin {
  /** Request heads it read, over all connections. */
  heads: string[];
}

/**
 * An origin that answers each request head with `answer(head, socket)`. Request bodies are
 * read and ignored unless `answer` pauses the socket.
 */
async function scriptedOrigin(t: ExecutionContext, answer: (head: string, socket: Socket) => void): Promise<Scripted> {
  const heads: string[] = [];
  const origin = await rawOrigin(t, (socket) => {
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0 || !/^[A-Z]+ \//.test(buffered)) {
        if (end >= 0) buffered = '';
        return;
      }
      const head = buffered.slice(0, end);
      buffered = '';
      heads.push(head);
      answer(head, socket);
    });
  });
  return Object.assign(origin, { heads });
}

async function proxyTo(t: ExecutionContext, origin: Scripted): Promise<TestProxy> {
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(() => proxy.close());
  return proxy;
}

test('a chunked response (extensions, trailers, split across writes) is decoded, and its connection is reused', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    const parts = ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel', 'lo\r\n6\r', '\n world\r\n0\r\nx-sum: 1\r\n', '\r\n'];
    parts.forEach((part, i) => setTimeout(() => socket.write(part), i * 20));
  });
  const proxy = await proxyTo(t, origin);
  for (const path of ['/a', '/b']) {
    const r = await send(`${proxy.url}${path}`);
    t.is(r.status, 200);
    t.is(r.body, 'hello world');
  }
  t.is(origin.connections, 1, 'the second request reused the connection');
});

test('a body delimited by the end of the connection reaches the client whole', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ');
    setTimeout(() => socket.end('the end'), 20);
  });
  const proxy = await proxyTo(t, origin);
  const r = await send(`${proxy.url}/`);
  t.is(r.status, 200);
  t.is(r.body, 'until the end');
});

// Each origin answers two requests well; how it answers decides whether the proxy may send the
// second on the first one's connection.
const reuse: [string, string, number][] = [
  ['Content-Length, HTTP/1.1', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', 1],
  ['HTTP/1.0 with Connection: keep-alive', 'HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok', 1],
  ['Connection: close', 'HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok', 2],
  ['HTTP/1.0 without keep-alive', 'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok', 2],
  ['bytes after the response', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n', 2],
  ['Content-Length and Transfer-Encoding both', 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 2],
];
for (const [what, response, connections] of reuse) {
  test(`connection reuse after a response with ${what}: ${connections === 1 ? 'reused' : 'not reused'}`, async (t) => {
    const origin = await scriptedOrigin(t, (_head, socket) => socket.write(response));
    const proxy = await proxyTo(t, origin);
    for (const path of ['/one', '/two']) {
      const r = await send(`${proxy.url}${path}`);
      t.is(r.status, 200);
      t.is(r.body, 'ok');
    }
    t.is(origin.connections, connections);
  });
}

test('interim responses (103 Early Hints, 100 Continue) are passed over for the final one', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    socket.write('HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n');
    socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone');
  });
  const proxy = await proxyTo(t, origin);
  const r = await send(`${proxy.url}/`);
  t.is(r.status, 201);
  t.is(r.body, 'done');
});

test("an origin's own reason phrase reaches the client", async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => socket.write('HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n'));
  const proxy = await proxyTo(t, origin);
  const r = await raw(proxy.port, 'GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.regex(r.text, /^HTTP\/1\.1 200 Fine Thanks\r\n/);
});

// Heads the proxy cannot pass on: the client gets 502, never the origin's bytes, and the
// connection is not used again.
const refused: [string, string][] = [
  ['conflicting Content-Length values', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok'],
  ['a 101 nobody asked for', 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n'],
  ['a status line that is not HTTP', 'SSH-2.0-OpenSSH_9.2\r\n\r\n'],
  ['a head over 64 KiB', `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}\r\ncontent-length: 2\r\n\r\nok`],
  ['a NUL byte in a field value', 'HTTP/1.1 200 OK\r\nx-bad: a\0b\r\ncontent-length: 2\r\n\r\nok'],
  ['a transfer coding other than chunked', 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
];
for (const [what, response] of refused) {
  test(`502 for a response with ${what}`, async (t) => {
    const origin = await scriptedOrigin(t, (_head, socket) => socket.write(response));
    const proxy = await proxyTo(t, origin);
    const first = await send(`${proxy.url}/one`);
    t.is(first.status, 502);
    t.false(first.body.includes('ok'));
    t.is((await send(`${proxy.url}/two`)).status, 502);
    t.is(origin.connections, 2, 'the connection was dropped, not reused');
  });
}

test('a body the origin cuts short cuts the client response short: the client sees the connection end', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b'));
  const proxy = await proxyTo(t, origin);
  const r = await raw(proxy.port, 'GET / HTTP/1.1\r\nhost: x\r\n\r\n', { waitMs: 3000 });
  t.true(r.closed, 'the proxy closed the client connection');
  // hyper's server may close before it has flushed the head: the client then has nothing. What
  // it must never have is a response that looks complete.
  const [head = '', body = ''] = r.text.split('\r\n\r\n');
  if (r.text !== '') {
    t.regex(head, /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 100/);
  }
  t.true('only ten b'.startsWith(body), `no more than what came: ${JSON.stringify(body)}`);
});

test('an origin that goes quiet mid-body for longer than timeouts.body: the client response is cut short and the origin connection closed', async (t) => {
  let originClosed = false;
  const origin = await scriptedOrigin(t, (_head, socket) => {
    socket.once('close', () => (originClosed = true));
    // Pauses shorter than the timeout are waited out; then the origin stalls with the connection open.
    socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst ');
    setTimeout(() => socket.write('second '), 250);
    setTimeout(() => socket.write('third'), 500);
  });
  const proxy = await startProxy(proxyConfig([origin.url], { upstreams: { app: { backends: [{ url: origin.url }], timeouts: { body: '400ms' } } } }));
  t.teardown(() => proxy.close());
  const started = Date.now();
  const r = await raw(proxy.port, 'GET / HTTP/1.1\r\nhost: x\r\n\r\n', { waitMs: 5000 });
  t.true(r.closed, 'the proxy closed the client connection');
  t.true(Date.now() - started < 4000, 'cut at the timeout, not left hanging');
  t.regex(r.text, /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 100\r\n[^]*\r\n\r\nfirst second third$/);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.true(originClosed, 'the stalled origin connection was closed');
});

test('timeouts.body: 0 sets no limit: a body with a long pause arrives whole', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nfirst ');
    setTimeout(() => socket.write('second'), 300);
  });
  const proxy = await startProxy(proxyConfig([origin.url], { upstreams: { app: { backends: [{ url: origin.url }], timeouts: { body: 0 } } } }));
  t.teardown(() => proxy.close());
  const r = await send(proxy.url);
  t.is(r.status, 200);
  t.is(r.body, 'first second');
});

test('an origin that answers 413 and stops reading an upload: the client gets the 413', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    // Reads no more of the body: the proxy's writes stall once the socket buffers are full.
    socket.pause();
    socket.write('HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!');
    setTimeout(() => socket.destroy(), 100);
  });
  const proxy = await startProxy(proxyConfig([origin.url], { limits: { max_body_size: '64mb' } }));
  t.teardown(() => proxy.close());
  const size = 32 * 1024 * 1024;
  const head = `POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`;
  const body = Buffer.alloc(size, 0x61);
  const r = await raw(proxy.port, [head, body], { waitMs: 5000 });
  t.deepEqual(r.statuses, [413]);
  t.true(r.text.endsWith('too big!'));
  t.is(origin.heads.length, 1);
});

test('an origin that answers 413 and stops reading, but keeps the connection open: the client gets the 413 at once', async (t) => {
  const origin = await scriptedOrigin(t, (_head, socket) => {
    // Neither reads the rest of the upload nor closes: a proxy that sent the whole body before
    // reading would wait for timeouts.response.
    socket.pause();
    socket.write('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!');
  });
  // timeouts.response is 30 s by default.
  const proxy = await startProxy(proxyConfig([origin.url], { limits: { max_body_size: '64mb' } }));
  t.teardown(() => proxy.close());
  const size = 32 * 1024 * 1024;
  const head = `POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`;
  const started = Date.now();
  const r = await raw(proxy.port, [head, Buffer.alloc(size, 0x61)], { waitMs: 8000 });
  t.deepEqual(r.statuses, [413]);
  t.true(r.text.includes('\r\n\r\ntoo big!'));
  t.true(Date.now() - started < 8000, 'answered well before the response timeout');
});

test('a malformed chunk-size line ends the body as broken, not as complete, and the connection is not reused', async (t) => {
  let answered = 0;
  const origin = await scriptedOrigin(t, (_head, socket) => {
    answered += 1;
    // An empty line where the next chunk size should be: lenient parsers read it as the last
    // chunk and take what follows for the next response.
    if (answered === 1) socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n');
    else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  const proxy = await proxyTo(t, origin);
  const r = await raw(proxy.port, 'GET /one HTTP/1.1\r\nhost: x\r\n\r\n', { waitMs: 3000 });
  t.true(r.closed, 'the client connection was cut');
  t.false(r.text.includes('\r\n0\r\n\r\n'), 'no terminating chunk: the client knows the body is broken');
  t.false(r.text.includes('world'));
  const second = await send(`${proxy.url}/two`);
  t.is(second.body, 'ok');
  t.is(origin.connections, 2, 'the broken connection was not reused');
});
