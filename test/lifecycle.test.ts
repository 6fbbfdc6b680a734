/** The gateway's life through the programmatic API: reload, drain, close, admin, pool limits. */
import test from 'ava';
import { get } from 'node:http';
import { readdirSync } from 'node:fs';
import { startOrigin } from './helpers/origin.js';
import { proxyConfig, startProxy } from './helpers/proxy.js';
import { RawConn, open, statuses } from './helpers/raw.js';
import { ConfigError, start } from '../ts/index.js';

/** A GET on a fresh connection (no keep-alive agent), so listener changes are observed. */
function fetchText(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    get(url, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    }).on('error', reject);
  });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await delay(10);
  if (!condition()) throw new Error(`timed out waiting for ${what}`);
}

test('reload swaps routes atomically; requests in flight finish on the old configuration', async (t) => {
  const slowA = await startOrigin((_req, res) => setTimeout(() => res.end('A'), 600));
  const b = await startOrigin((_req, res) => res.end('B'));
  const proxy = await startProxy(proxyConfig([slowA.url]));
  t.teardown(async () => { await proxy.close(); await slowA.close(); await b.close(); });
  const inFlight = fetchText(`${proxy.url}/slow`);
  await until(() => slowA.heads === 1, 'the slow request to reach its origin');
  await proxy.gateway.reload(proxyConfig([b.url]));
  t.is((await fetchText(`${proxy.url}/after`)).body, 'B', 'new requests use the new backends');
  const old = await inFlight;
  t.is(old.status, 200);
  t.is(old.body, 'A', 'the request that started before the reload finished on the old backend');
});

test('an invalid reload is rejected with its key paths and the old configuration keeps serving', async (t) => {
  const a = await startOrigin((_req, res) => res.end('A'));
  const proxy = await startProxy(proxyConfig([a.url]));
  t.teardown(async () => { await proxy.close(); await a.close(); });
  const bad = proxyConfig(['ftp://nowhere']);
  const error = await t.throwsAsync(proxy.gateway.reload(bad), { instanceOf: ConfigError });
  t.is(error?.code, 'ERR_GATEHOUSE_CONFIG');
  t.deepEqual(error?.problems.map((p) => p.path), ['upstreams.app.backends[0].url']);
  t.is((await fetchText(`${proxy.url}/`)).body, 'A');
});

test('a reload can add and remove listeners; a listener that cannot bind fails the reload whole', async (t) => {
  const a = await startOrigin((_req, res) => res.end('A'));
  const proxy = await startProxy(proxyConfig([a.url]));
  t.teardown(async () => { await proxy.close(); await a.close(); });
  await proxy.gateway.reload(proxyConfig([a.url], { listeners: [{ address: '127.0.0.1:0' }, { address: '127.0.0.2:0' }] }));
  const bound = proxy.gateway.addresses;
  t.is(bound.length, 2);
  t.is((await fetchText(`http://${bound[1]?.bound}/`)).body, 'A', 'the new listener serves');
  // Port of the first listener is taken now; asking for it on a second listener must fail the reload.
  const clash = { listeners: [{ address: '127.0.0.1:0' }, { address: bound[0]?.bound ?? '' }] };
  await t.throwsAsync(proxy.gateway.reload(proxyConfig([a.url], clash)));
  t.is(proxy.gateway.addresses.length, 2, 'the old listeners are untouched');
  await proxy.gateway.reload(proxyConfig([a.url]));
  t.is(proxy.gateway.addresses.length, 1);
  await t.throwsAsync(fetchText(`http://${bound[1]?.bound}/`), undefined, 'the removed listener refuses connections');
});

// Serial: it counts this process's threads, which concurrent tests would change.
test.serial('close drains in-flight requests, refuses new connections and stops the engine threads', async (t) => {
  const threads = () => readdirSync('/proc/self/task').length;
  const slow = await startOrigin((_req, res) => setTimeout(() => res.end('done'), 500));
  t.teardown(() => slow.close());
  // libuv starts its thread pool on first use (the engine starts and stops on it): warm it first.
  await (await start(proxyConfig([slow.url]))).close();
  const before = threads();
  const gateway = await start(proxyConfig([slow.url], { workers: 2, admin: { address: '127.0.0.1:0' } }), { drainTimeoutMs: 5000 });
  t.true(threads() > before, 'the engine runs on threads of its own');
  const port = Number(gateway.addresses[0]?.bound.split(':')[1]);
  const admin = `http://${gateway.adminAddress}`;
  t.is((await fetchText(`${admin}/healthz`)).status, 200);
  const inFlight = fetchText(`http://127.0.0.1:${port}/slow`);
  await until(() => slow.heads === 1, 'the slow request to reach its origin');
  const closing = gateway.close();
  t.true(gateway.draining);
  await delay(50);
  await t.throwsAsync(open(port), undefined, 'new connections are refused while draining');
  const r = await inFlight;
  t.is(r.status, 200);
  t.is(r.body, 'done');
  await closing;
  await delay(100);
  t.is(threads(), before, 'no engine thread is left behind');
  t.throws(() => gateway.stats(), { message: /closed/ });
});

test('/stats, /metrics and /healthz on the admin listener', async (t) => {
  const a = await startOrigin((_req, res) => res.end('A'));
  const proxy = await startProxy(proxyConfig([a.url], { admin: { address: '127.0.0.1:0' } }));
  t.teardown(async () => { await proxy.close(); await a.close(); });
  await fetchText(`${proxy.url}/one`);
  await fetchText(`${proxy.url}/two`);
  const admin = `http://${proxy.gateway.adminAddress}`;
  const stats = JSON.parse((await fetchText(`${admin}/stats`)).body) as ReturnType<typeof proxy.gateway.stats>;
  t.is(stats.requests.total, 2);
  t.is(stats.requests.by_status['2xx'], 2);
  t.is(stats.listeners[0]?.bound, `127.0.0.1:${proxy.port}`);
  const backend = stats.upstreams.app?.backends[0];
  t.is(backend?.url, a.url);
  t.is(backend?.requests, 2);
  t.true(backend?.healthy);
  t.is(backend?.pool.created, 1);
  const metrics = await fetchText(`${admin}/metrics`);
  t.regex(String(metrics.headers['content-type']), /text\/plain/);
  t.regex(metrics.body, /^gatehouse_requests_total 2$/m);
  t.regex(metrics.body, new RegExp(`^gatehouse_backend_requests_total\\{upstream="app",backend="${a.url}"\\} 2$`, 'm'));
  t.deepEqual(stats.timeouts, { header: 0, body: 0, send: 0, tunnel: 0 });
  for (const kind of ['header', 'body', 'send', 'tunnel']) t.regex(metrics.body, new RegExp(`^gatehouse_timeouts_total\\{kind="${kind}"\\} 0$`, 'm'));
  t.is((await fetchText(`${admin}/healthz`)).status, 200);
  t.is((await fetchText(`${admin}/nope`)).status, 404);
});

test('under steady load more than 80% of upstream requests reuse a pooled connection', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const once = () => new Promise<number>((resolve, reject) => {
    get(`${proxy.url}/steady`, { agent }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); }).on('error', reject);
  });
  for (let round = 0; round < 25; round++) {
    const statuses = await Promise.all(Array.from({ length: 8 }, once));
    t.true(statuses.every((s) => s === 200));
  }
  const pool = proxy.gateway.stats().upstreams.app?.backends[0]?.pool;
  const reuse = (pool?.reused ?? 0) / 200;
  t.true(reuse > 0.8, `reuse ratio ${reuse} (created ${pool?.created})`);
  t.true(origin.connections <= 8, `the origin saw ${origin.connections} connections for 200 requests`);
});

test('the pool cap holds: excess requests queue, then get 503 with Retry-After', async (t) => {
  let concurrent = 0;
  let peak = 0;
  const origin = await startOrigin((_req, res) => {
    concurrent += 1;
    peak = Math.max(peak, concurrent);
    setTimeout(() => { concurrent -= 1; res.end('ok'); }, 300);
  });
  const config = proxyConfig([origin.url]);
  config.upstreams = { app: { backends: [{ url: origin.url }], pool: { max_connections: 2, queue_timeout: '1s' } } };
  const proxy = await startProxy(config);
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const queued = await Promise.all(Array.from({ length: 6 }, (_, i) => fetchText(`${proxy.url}/q/${i}`)));
  t.deepEqual(queued.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'six requests through two connections, queued');
  t.is(peak, 2);
  t.is(origin.connections, 2, 'never more than two origin connections');

  config.upstreams = { app: { backends: [{ url: origin.url }], pool: { max_connections: 1, queue_timeout: '100ms' } } };
  await proxy.gateway.reload(config);
  const burst = await Promise.all(Array.from({ length: 3 }, (_, i) => fetchText(`${proxy.url}/b/${i}`)));
  const refused = burst.filter((r) => r.status === 503);
  t.is(burst.filter((r) => r.status === 200).length, 1);
  t.is(refused.length, 2);
  t.is(refused[0]?.headers['retry-after'], '1');
  const pool = proxy.gateway.stats().upstreams.app?.backends[0]?.pool;
  t.is(pool?.queue_timeouts, 2);
});

// Serial: blocking this thread would stall the other tests' clients.
test.serial('the engine keeps serving while the JavaScript thread is blocked', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  // A child process makes the requests, since this thread will be busy.
  const { spawn } = await import('node:child_process');
  const script = `const http=require('http');let ok=0;const go=(i)=>{if(i===20){console.log(ok);return;}http.get('${proxy.url}/x',r=>{r.resume();r.on('end',()=>{ok+=r.statusCode===200;go(i+1)})}).on('error',()=>go(i+1))};go(0);`;
  const child = spawn(process.execPath, ['-e', script]);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const until = Date.now() + 1500;
  while (Date.now() < until) { /* block the event loop */ }
  await exited;
  t.is(out.trim(), '20', 'all requests were served while this thread was blocked');
});

// Every worker accepts on the same socket and takes its connection slot only after accept, so the
// cap is exact however many workers there are.
test('several workers serve one listener; limits.max_connections stays exact across them', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], { workers: 3, limits: { max_connections: 2 } }));
  t.teardown(() => proxy.close());
  const GET = 'GET / HTTP/1.1\r\nHost: app.test\r\n\r\n';
  const served = (c: RawConn) => statuses(c.text).length;
  const a = await RawConn.open(t, proxy.port);
  const b = await RawConn.open(t, proxy.port);
  a.write(GET);
  b.write(GET);
  t.true(await a.until(() => served(a) === 1 && served(b) === 1, 3000), 'the first two connections are served');
  const c = await RawConn.open(t, proxy.port);
  c.write(GET);
  t.false(await c.until(() => served(c) === 1, 500), 'a third connection waits for a slot');
  t.is(proxy.gateway.stats().connections.active, 2);
  a.destroy();
  t.true(await c.until(() => served(c) === 1, 3000), 'served once a slot is free');
  t.deepEqual(statuses(c.text), [200]);
});

test('with several workers, many concurrent connections are all served', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], { workers: 4 }));
  t.teardown(() => proxy.close());
  const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => fetchText(`${proxy.url}/n${i}`)));
  t.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
  t.is(origin.requests.length, 60);
  t.is(proxy.gateway.stats().connections.total, 60);
});
