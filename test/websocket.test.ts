/**
 * WebSocket (HTTP/1.1 `Upgrade`) passthrough: the handshake reaches the origin and its 101 comes
 * back, then bytes are piped unchanged both ways, counted in stats, across reloads, over TLS too.
 * The client and origin are hand-written RFC 6455 over raw sockets (test/helpers/ws.ts).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { send, until } from './helpers/client.js';
import { createTestCerts, type TestCerts } from './helpers/certs.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { upgradeStats } from './helpers/tlsclient.js';
import { acceptFor, encodeFrame, FrameDecoder, OP, startWsOrigin, WsClient, wsHandshake, type WsOrigin, type WsOriginConnection } from './helpers/ws.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';

type Overrides = Partial<GatehouseConfigInput>;

async function setup(t: ExecutionContext, overrides: Overrides | ((originUrl: string) => Overrides) = {}): Promise<{ origin: WsOrigin; proxy: TestProxy }> {
  const origin = await startWsOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], typeof overrides === 'function' ? overrides(origin.url) : overrides));
  t.teardown(() => proxy.close());
  return { origin, proxy };
}

/** Handshake through the proxy, checked, as a client. */
async function open(t: ExecutionContext, port: number, path = '/ws', options: Parameters<typeof wsHandshake>[2] = {}): Promise<WsClient> {
  const hs = await wsHandshake(port, path, options);
  t.teardown(() => hs.socket.destroy());
  t.is(hs.status, 101, hs.head);
  t.regex(hs.statusLine, /^HTTP\/1\.1 101 Switching Protocols$/);
  t.is(hs.headers.upgrade?.toLowerCase(), 'websocket');
  t.true((hs.headers.connection ?? '').toLowerCase().split(/\s*,\s*/).includes('upgrade'), hs.head);
  t.is(hs.headers['sec-websocket-accept'], acceptFor(hs.key), 'the origin’s Sec-WebSocket-Accept, unchanged');
  return new WsClient(hs);
}

async function echo(t: ExecutionContext, ws: WsClient, opcode: number, payload: Buffer | string): Promise<void> {
  ws.send(opcode, payload);
  const f = await ws.next();
  t.is(f.opcode, opcode);
  t.true(f.fin);
  t.true(f.payload.equals(typeof payload === 'string' ? Buffer.from(payload) : payload), `echo of ${opcode === OP.TEXT ? JSON.stringify(payload) : `${payload.length} bytes`}`);
}

/** Close handshake from the client; resolves once the proxy has closed the connection. */
async function closeHandshake(t: ExecutionContext, ws: WsClient): Promise<void> {
  ws.send(OP.CLOSE, Buffer.from([0x03, 0xe8]));
  const f = await ws.next();
  t.is(f.opcode, OP.CLOSE);
  t.true(await ws.waitEnd(), 'the connection ends after the close handshake');
}

test('a WebSocket handshake and echo through the proxy, byte for byte both ways, counted in stats', async (t) => {
  const { origin, proxy } = await setup(t);
  t.deepEqual(upgradeStats(proxy.gateway), { active: 0, total: 0 });
  const ws = await open(t, proxy.port);
  // What the origin saw of the handshake.
  const seen = origin.upgrades[0];
  t.is(seen?.url, '/ws');
  t.is(String(seen?.headers.upgrade).toLowerCase(), 'websocket');
  t.regex(String(seen?.headers.connection), /upgrade/i);
  t.is(seen?.headers['sec-websocket-version'], '13');
  t.is(typeof seen?.headers['sec-websocket-key'], 'string');
  t.is(seen?.headers.host, 'ws.test');
  t.is(seen?.headers['x-forwarded-for'], '127.0.0.1');

  await until(() => upgradeStats(proxy.gateway).active === 1, 'the tunnel to be counted');
  t.deepEqual(upgradeStats(proxy.gateway), { active: 1, total: 1 });

  await echo(t, ws, OP.TEXT, 'hello');
  await echo(t, ws, OP.TEXT, 'héllo wörld ✓');
  await echo(t, ws, OP.BINARY, Buffer.from([0, 1, 2, 255]));
  await echo(t, ws, OP.BINARY, randomBytes(1000)); // 16-bit length
  await echo(t, ws, OP.BINARY, randomBytes(256 * 1024)); // 64-bit length
  // Pipelined: ten messages out before reading any.
  const burst = Array.from({ length: 10 }, (_, i) => randomBytes(100 + i * 5000));
  for (const b of burst) ws.send(OP.BINARY, b);
  for (const b of burst) t.true((await ws.next()).payload.equals(b));
  ws.send(OP.PING, 'are you there');
  const pong = await ws.next();
  t.is(pong.opcode, OP.PONG);
  t.is(pong.payload.toString(), 'are you there');

  t.true(Buffer.concat(seen?.received ?? []).equals(Buffer.concat(ws.sent)), 'the origin received exactly the bytes the client sent');
  t.true(Buffer.concat(ws.received).equals(Buffer.concat(seen?.sent ?? [])), 'the client received exactly the bytes the origin sent');

  await closeHandshake(t, ws);
  await until(() => upgradeStats(proxy.gateway).active === 0, 'the tunnel to be released');
  t.deepEqual(upgradeStats(proxy.gateway), { active: 0, total: 1 });
  await until(() => seen?.closed === true, 'the origin side to close');
});

test('an open tunnel survives reloads; other requests on the listener keep working', async (t) => {
  const { origin, proxy } = await setup(t);
  const other = await startWsOrigin('other');
  t.teardown(() => other.close());
  const ws = await open(t, proxy.port);
  await echo(t, ws, OP.TEXT, 'before');
  const plain = await send(`${proxy.url}/plain`);
  t.is(plain.status, 200, 'a non-upgrade request on the same listener');
  t.is(plain.body, 'plain ws');
  // A reload that keeps the backend and changes limits…
  await proxy.gateway.reload(proxyConfig([origin.url], { limits: { max_body_size: '5mb', keepalive_timeout: '30s' } }));
  await echo(t, ws, OP.TEXT, 'after a reload');
  // …and one that replaces the backend altogether: the tunnel stays with the origin it has.
  await proxy.gateway.reload(proxyConfig([other.url]));
  await echo(t, ws, OP.BINARY, randomBytes(64 * 1024));
  t.is((await send(`${proxy.url}/plain`)).body, 'plain other', 'new requests go to the new backend');
  t.deepEqual(upgradeStats(proxy.gateway), { active: 1, total: 1 });
  await closeHandshake(t, ws);
  await until(() => upgradeStats(proxy.gateway).active === 0, 'the tunnel to be released');
});

test('an origin that refuses the upgrade: the client gets its 400 and no tunnel', async (t) => {
  const { origin, proxy } = await setup(t);
  const hs = await wsHandshake(proxy.port, '/refuse');
  t.teardown(() => hs.socket.destroy());
  t.is(hs.status, 400, hs.head);
  t.is(hs.headers.upgrade, undefined, 'no Upgrade in a refusal');
  // The body follows the head.
  let body = hs.rest.toString('latin1');
  if (body.length < 7) {
    hs.socket.resume();
    body += await new Promise<string>((resolve) => hs.socket.once('data', (c: Buffer) => resolve(c.toString('latin1'))));
  }
  t.is(body, 'refused');
  t.is(origin.upgrades.length, 1);
  t.deepEqual(upgradeStats(proxy.gateway), { active: 0, total: 0 });
  // The proxy and the listener carry on.
  t.is((await send(`${proxy.url}/plain`)).status, 200);
  const ws = await open(t, proxy.port);
  await echo(t, ws, OP.TEXT, 'a later upgrade works');
});

test('after a tunnel the backend pool is healthy: plain requests to the same origin succeed', async (t) => {
  const { origin, proxy } = await setup(t);
  for (let i = 0; i < 3; i++) {
    const ws = await open(t, proxy.port, `/ws/${i}`);
    await echo(t, ws, OP.TEXT, `round ${i}`);
    await closeHandshake(t, ws);
    for (let j = 0; j < 3; j++) {
      const r = await send(`${proxy.url}/plain/${i}/${j}`);
      t.is(r.status, 200, `plain request ${j} after tunnel ${i}`);
    }
  }
  t.is(origin.plain.length, 9);
  await until(() => upgradeStats(proxy.gateway).active === 0, 'every tunnel to be released');
  t.is(upgradeStats(proxy.gateway).total, 3);
});

test('several tunnels at once are counted; the origin or the client may end them', async (t) => {
  const { origin, proxy } = await setup(t);
  const clients = await Promise.all(Array.from({ length: 5 }, (_, i) => open(t, proxy.port, `/many/${i}`)));
  await Promise.all(clients.map((ws, i) => echo(t, ws, OP.TEXT, `client ${i}`)));
  await until(() => upgradeStats(proxy.gateway).active === 5, 'five tunnels');
  // One ends by a close handshake, one by an abrupt close of the client socket.
  await closeHandshake(t, clients[0] as WsClient);
  (clients[1] as WsClient).socket.destroy();
  await until(() => upgradeStats(proxy.gateway).active === 3, 'two tunnels released');
  await until(() => origin.upgrades.find((u) => u.url === '/many/1')?.closed === true, 'the origin to see the abrupt close');
  // The origin closes a new one right after the handshake.
  const closing = await open(t, proxy.port, '/server-closes');
  const bye = await closing.next();
  t.is(bye.opcode, OP.CLOSE);
  t.is(bye.payload.subarray(2).toString(), 'bye');
  t.true(await closing.waitEnd(), 'the client sees the end');
  // The others still echo.
  await echo(t, clients[2] as WsClient, OP.TEXT, 'still here');
  for (const ws of clients.slice(2)) ws.socket.destroy();
  await until(() => upgradeStats(proxy.gateway).active === 0, 'every tunnel released');
  t.is(upgradeStats(proxy.gateway).total, 6);
});

test('a browser-style handshake (Connection: keep-alive, Upgrade) with a first frame sent before the 101 arrives', async (t) => {
  const { origin, proxy } = await setup(t);
  const socket = connect(proxy.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', () => resolve()).once('error', reject));
  const key = randomBytes(16).toString('base64');
  const early = encodeFrame(OP.TEXT, Buffer.from('early bird'), true);
  // The request head and a first frame in one write, as an eager client may do.
  socket.write(Buffer.concat([
    Buffer.from(`GET /eager HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://ws.test\r\n\r\n`),
    early,
  ]));
  let data = Buffer.alloc(0);
  const decoder = new FrameDecoder();
  const frames: { opcode: number; payload: Buffer }[] = [];
  socket.on('data', (c: Buffer) => {
    data = Buffer.concat([data, c]);
    const end = data.indexOf('\r\n\r\n');
    if (end >= 0 && frames.length === 0) frames.push(...decoder.feed(data.subarray(end + 4)));
  });
  await until(() => frames.length > 0, 'the echo of the early frame');
  const head = data.subarray(0, data.indexOf('\r\n\r\n')).toString('latin1');
  t.regex(head, /^HTTP\/1\.1 101 /);
  t.true(head.toLowerCase().includes(`\r\nsec-websocket-accept: ${acceptFor(key).toLowerCase()}`), head);
  t.is(frames[0]?.payload.toString(), 'early bird');
  t.is(origin.upgrades[0]?.headers.origin, 'http://ws.test', 'end-to-end headers pass');
  t.true(Buffer.concat(origin.upgrades[0]?.received ?? []).equals(early), 'the early frame reached the origin unchanged');
});

test('close() ends open tunnels instead of waiting for them', async (t) => {
  const { origin, proxy } = await setup(t);
  const ws = await open(t, proxy.port);
  await echo(t, ws, OP.TEXT, 'open');
  const started = Date.now();
  await proxy.gateway.close();
  t.true(Date.now() - started < 5000, 'close() finished within the drain timeout');
  t.true(await ws.waitEnd(), 'the client side of the tunnel ends');
  await until(() => origin.upgrades[0]?.closed === true, 'the origin side of the tunnel to close');
});

// An upgraded connection keeps its connection slot (limits.max_connections) and stays counted in
// connections.active: the tunnel takes them over from the HTTP connection task.
test('an upgraded connection still counts as a client connection (limits.max_connections, connections.active)', async (t) => {
  const { proxy } = await setup(t, { limits: { max_connections: 2 } });
  const a = await open(t, proxy.port, '/a');
  const b = await open(t, proxy.port, '/b');
  await echo(t, a, OP.TEXT, 'a');
  await echo(t, b, OP.TEXT, 'b');
  await until(() => upgradeStats(proxy.gateway).active === 2, 'two tunnels');
  t.is(proxy.gateway.stats().connections.active, 2, 'both tunnels are open client connections');
  const third = wsHandshake(proxy.port, '/c');
  third.then((hs) => hs.socket.destroy(), () => undefined);
  const answered = await Promise.race([third.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500).unref())]);
  t.false(answered, 'a third client waits for a free slot while two tunnels are open');
});

test('a tunnel that carries nothing either way for timeouts.tunnel is closed on both sides; traffic keeps it open', async (t) => {
  const idleMs = 600;
  const { origin, proxy } = await setup(t, (url) => ({
    upstreams: { app: { backends: [{ url }], timeouts: { tunnel: `${idleMs}ms` } } },
  }));
  const ws = await open(t, proxy.port);
  // A message every 200 ms for 1.2 s: twice the timeout in all, never that long apart.
  for (let i = 0; i < 6; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    await echo(t, ws, OP.TEXT, `tick ${i}`);
  }
  const quietFrom = Date.now();
  t.deepEqual(upgradeStats(proxy.gateway), { active: 1, total: 1 }, 'still open while messages kept coming');
  t.true(await ws.waitEnd(5000), 'the proxy closed the quiet tunnel');
  // A lower bound only (the echo reached the client a little after the tunnel last moved it).
  t.true(Date.now() - quietFrom >= idleMs / 2, 'not at once, but after the quiet time');
  await until(() => origin.upgrades[0]?.closed === true, 'the origin side to close');
  await until(() => upgradeStats(proxy.gateway).active === 0, 'the tunnel to be released');
  await until(() => proxy.gateway.stats().connections.active === 0, 'its client connection slot to be free');
  t.deepEqual(proxy.gateway.stats().timeouts, { header: 0, body: 0, send: 0, tunnel: 1 }, 'counted as an idle tunnel');
});

test('a tunnel whose client stops reading is closed after limits.send_timeout, although the client keeps writing', async (t) => {
  const { origin, proxy } = await setup(t, { limits: { send_timeout: '500ms' } });
  const ws = await open(t, proxy.port, '/flood');
  ws.socket.pause(); // reads nothing: the origin's frames fill the sockets and the proxy's writes block
  // The client keeps talking, so the tunnel is never idle; only the blocked direction is stuck.
  const talk = setInterval(() => ws.socket.writable && ws.send(OP.PING, 'still here'), 100);
  t.teardown(() => clearInterval(talk));
  const conn = origin.upgrades[0] as WsOriginConnection;
  await until(() => conn.closed, 'the origin side of the tunnel to be closed', 8000);
  t.true(conn.received.length > 0, 'the client’s frames reached the origin meanwhile');
  await until(() => upgradeStats(proxy.gateway).active === 0, 'the tunnel to be released');
  t.deepEqual(proxy.gateway.stats().timeouts, { header: 0, body: 0, send: 1, tunnel: 0 }, 'counted as a send timeout');
});

let certs: TestCerts | undefined;
test.after.always(async () => {
  await certs?.remove();
});

test('WebSocket over a TLS listener (wss): the same passthrough', async (t) => {
  certs = await createTestCerts();
  const { origin, proxy } = await setup(t, {
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: certs.a.cert, key: certs.a.key }] } }],
  });
  const ws = await open(t, proxy.port, '/secure', { host: 'a.test', tls: { ca: certs.caPem, servername: 'a.test', ALPNProtocols: ['http/1.1'] } });
  await echo(t, ws, OP.BINARY, randomBytes(256 * 1024));
  t.is(origin.upgrades[0]?.headers['x-forwarded-proto'], 'https');
  t.deepEqual(upgradeStats(proxy.gateway), { active: 1, total: 1 });
  await closeHandshake(t, ws);
  await until(() => upgradeStats(proxy.gateway).active === 0, 'the tunnel to be released');
});
