/**
 * Idle HTTP/1.1 connections give their buffers back ("parking", docs/performance.md): after
 * 250 ms without a request the engine drops hyper's connection state, and a plain connection
 * leaves its task for the engine's parking lot (one epoll set for every idle socket). Checked as
 * a client sees it: the same connection keeps working afterwards, whatever arrives next and
 * however it arrives, on any worker, and the timers, the connection cap and the smuggling checks
 * carry on.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { createTestCerts, type TestCerts } from './helpers/certs.js';
import { echo, sha256, startOrigin, type Origin } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { RawConn, statuses } from './helpers/raw.js';
import { upgradeStats } from './helpers/tlsclient.js';
import { acceptFor, encodeFrame, OP, startWsOrigin } from './helpers/ws.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';

let certs: TestCerts;
test.before(async () => {
  certs = await createTestCerts();
});
test.after.always(async () => {
  await certs?.remove();
});

async function setup(t: ExecutionContext, overrides: Partial<GatehouseConfigInput> = {}): Promise<{ proxy: TestProxy; origin: Origin }> {
  const origin = await startOrigin(echo);
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], overrides));
  t.teardown(() => proxy.close());
  return { proxy, origin };
}

const parked = (proxy: TestProxy): number => proxy.gateway.stats().connections.parked;

/** Complete responses in `text` (the echo origin's bodies are JSON objects). */
const responses = (text: string): number => statuses(text).length;

async function waitParked(t: ExecutionContext, proxy: TestProxy, conn: RawConn, count = 1): Promise<void> {
  t.true(await conn.until(() => parked(proxy) === count, 3000), `parked: ${parked(proxy)}`);
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: app.test\r\n\r\n`;

test('an idle keep-alive connection is parked and serves its next request on the same socket', async (t) => {
  const { proxy, origin } = await setup(t);
  const conn = await RawConn.open(t, proxy.port);
  conn.write(GET('/one'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  t.is(parked(proxy), 0, 'not parked while a response was just sent');
  await waitParked(t, proxy, conn);
  conn.write(GET('/two'));
  t.true(await conn.until(() => responses(conn.text) === 2, 3000), conn.text);
  t.deepEqual(statuses(conn.text), [200, 200]);
  t.false(conn.closed);
  t.deepEqual(origin.requests.map((r) => r.url), ['/one', '/two']);
  const stats = proxy.gateway.stats().connections;
  t.is(stats.total, 1, 'one client connection throughout');
  // And it parks again once idle.
  await waitParked(t, proxy, conn);
});

test('after parking: pipelined requests, a head in pieces and a request body all arrive intact', async (t) => {
  const { proxy, origin } = await setup(t);
  const conn = await RawConn.open(t, proxy.port);
  conn.write(GET('/first'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  await waitParked(t, proxy, conn);
  // Two requests in one write: the second is read along with the first.
  conn.write(GET('/a') + GET('/b'));
  t.true(await conn.until(() => responses(conn.text) === 3, 3000), conn.text);
  await waitParked(t, proxy, conn);
  // A head in three pieces, then a body.
  conn.write('POST /c HTTP/1.1\r\n');
  await new Promise((r) => setTimeout(r, 100));
  conn.write('Host: app.test\r\nContent-Length: 11\r\n');
  await new Promise((r) => setTimeout(r, 100));
  conn.write('\r\nhello world');
  t.true(await conn.until(() => responses(conn.text) === 4, 3000), conn.text);
  t.deepEqual(statuses(conn.text), [200, 200, 200, 200]);
  t.deepEqual(origin.requests.map((r) => r.url), ['/first', '/a', '/b', '/c']);
  t.is(origin.requests[3]?.bodySha256, sha256('hello world'));
  t.false(conn.closed);
});

test('a parked connection is closed when keepalive_timeout runs out, and a head it starts is timed', async (t) => {
  const { proxy } = await setup(t, { limits: { keepalive_timeout: '1500ms', header_timeout: '300ms' } });
  const idle = await RawConn.open(t, proxy.port);
  idle.write(GET('/one'));
  t.true(await idle.until(() => responses(idle.text) === 1, 3000));
  await waitParked(t, proxy, idle);
  t.true(await idle.until(() => idle.closed, 5000), 'closed once idle past keepalive_timeout');
  t.is(parked(proxy), 0);

  const slow = await RawConn.open(t, proxy.port);
  slow.write(GET('/one'));
  t.true(await slow.until(() => responses(slow.text) === 1, 3000));
  await waitParked(t, proxy, slow);
  slow.write('GET /stalled HTTP/1.1\r\nHost: app.test\r\n');
  t.true(await slow.until(() => slow.closed, 1200), 'the stalled head is cut by header_timeout, well before keep-alive');
});

test('the smuggling check still sees requests that arrive after parking', async (t) => {
  const { proxy, origin } = await setup(t);
  const conn = await RawConn.open(t, proxy.port);
  conn.write(GET('/one'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  await waitParked(t, proxy, conn);
  conn.write('POST /smuggle HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
  t.true(await conn.until(() => conn.closed, 3000), 'closed');
  t.deepEqual(statuses(conn.text), [200, 400]);
  t.deepEqual(origin.requests.map((r) => r.url), ['/one'], 'the ambiguous request never reached the origin');
});

test('closing the gateway closes parked connections at once', async (t) => {
  const { proxy } = await setup(t);
  const conn = await RawConn.open(t, proxy.port);
  conn.write(GET('/one'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  await waitParked(t, proxy, conn);
  const started = Date.now();
  await proxy.close();
  t.true(await conn.until(() => conn.closed, 2000), 'the parked connection was closed');
  // The drain timeout is 5 s: a parked connection has nothing in flight to wait for.
  t.true(Date.now() - started < 4000, `close() took ${Date.now() - started} ms`);
});

test('TLS connections park and resume too', async (t) => {
  const { proxy, origin } = await setup(t, {
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: certs.a.cert, key: certs.a.key }] } }],
  });
  const socket = tlsConnect({ host: '127.0.0.1', port: proxy.port, servername: 'a.test', ca: certs.caPem, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  const conn = RawConn.wrap(t, socket);
  conn.write(GET('/one'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  await waitParked(t, proxy, conn);
  conn.write(GET('/two'));
  t.true(await conn.until(() => responses(conn.text) === 2, 3000), conn.text);
  t.deepEqual(statuses(conn.text), [200, 200]);
  t.deepEqual(origin.requests.map((r) => r.url), ['/one', '/two']);
  t.is(proxy.gateway.stats().connections.total, 1);
});

test('a WebSocket upgrade on a connection that was parked is tunnelled', async (t) => {
  const origin = await startWsOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(() => proxy.close());
  const conn = await RawConn.open(t, proxy.port);
  conn.write(GET('/plain'));
  t.true(await conn.until(() => responses(conn.text) === 1, 3000));
  await waitParked(t, proxy, conn);
  const key = randomBytes(16).toString('base64');
  conn.write(`GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  t.true(await conn.until(() => conn.text.includes(acceptFor(key)), 3000), conn.text);
  t.deepEqual(statuses(conn.text), [200, 101]);
  // The origin echoes frames unmasked: the payload comes back as it was sent.
  conn.write(encodeFrame(OP.TEXT, Buffer.from('hello after parking'), true));
  t.true(await conn.until(() => conn.text.includes('hello after parking'), 3000), 'echoed through the tunnel');
  t.is(upgradeStats(proxy.gateway).active, 1);
  t.is(parked(proxy), 0, 'a tunnel is not a parked connection');
});

test('with several workers, many parked connections all resume, and park again', async (t) => {
  const { proxy, origin } = await setup(t, { workers: 2 });
  const conns = await Promise.all(Array.from({ length: 20 }, () => RawConn.open(t, proxy.port)));
  conns.forEach((c, i) => c.write(GET(`/first/${i}`)));
  t.true(await conns[0]!.until(() => conns.every((c) => responses(c.text) === 1), 3000));
  await waitParked(t, proxy, conns[0]!, 20);
  conns.forEach((c, i) => c.write(GET(`/second/${i}`)));
  t.true(await conns[0]!.until(() => conns.every((c) => responses(c.text) === 2), 3000), 'every parked connection served its next request');
  t.true(conns.every((c) => !c.closed && statuses(c.text).every((s) => s === 200)));
  t.is(origin.requests.length, 40);
  t.is(proxy.gateway.stats().connections.total, 20, 'no connection was replaced');
  await waitParked(t, proxy, conns[0]!, 20);
});

test('a parked connection keeps its place under limits.max_connections until it closes', async (t) => {
  const { proxy } = await setup(t, { limits: { max_connections: 1 } });
  const first = await RawConn.open(t, proxy.port);
  first.write(GET('/one'));
  t.true(await first.until(() => responses(first.text) === 1, 3000));
  await waitParked(t, proxy, first);
  const second = await RawConn.open(t, proxy.port);
  second.write(GET('/two'));
  t.false(await second.until(() => responses(second.text) === 1, 500), 'the second connection waits for a slot');
  t.is(proxy.gateway.stats().connections.active, 1);
  first.destroy();
  t.true(await second.until(() => responses(second.text) === 1, 3000), 'served once the parked connection closed');
  t.is(parked(proxy), 0, 'the closed connection left the lot');
});
