/**
 * Failure handling through the real proxy: retries (idempotent only, budgeted), passive
 * ejection and its floor, and the connection pool facing origins that close, restart or idle.
 */
import test, { type ExecutionContext } from 'ava';
import { rawOrigin } from './helpers/raw.js';
import { closedPort, startOrigin, type Origin } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { adminJson, listenOn, many, namedOrigin, send, until } from './helpers/client.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';
import type { BackendView } from '../ts/index.js';

type Upstream = GatehouseConfigInput['upstreams'][string];

async function proxyOver(t: ExecutionContext, urls: string[], upstream: Omit<Upstream, 'backends'> = {}, admin = false): Promise<TestProxy> {
  const config = proxyConfig(urls, admin ? { admin: { address: '127.0.0.1:0' } } : {});
  config.upstreams = { app: { ...upstream, backends: urls.map((url) => ({ url })) } };
  const proxy = await startProxy(config);
  t.teardown(() => proxy.close());
  return proxy;
}

/** An origin that reads each request whole, records it, then resets the connection unanswered. */
async function resettingOrigin(t: ExecutionContext): Promise<Origin> {
  const origin = await startOrigin((req) => req.socket.resetAndDestroy());
  t.teardown(() => origin.close());
  return origin;
}

async function okOrigin(t: ExecutionContext, name = 'ok'): Promise<Origin> {
  const origin = await namedOrigin(name);
  t.teardown(() => origin.close());
  return origin;
}

const poolOf = (proxy: TestProxy, i = 0) => proxy.gateway.stats().upstreams.app?.backends[i]?.pool;

test('GET with retries.max 1: a backend on a closed port is retried away from, every request succeeds', async (t) => {
  const dead = `http://127.0.0.1:${await closedPort()}`;
  const ok = await okOrigin(t);
  const proxy = await proxyOver(t, [dead, ok.url], { retries: { max: 1 }, passive_health: { consecutive_failures: 0 } });
  const replies = await many(20, 4, (i) => send(`${proxy.url}/g/${i}`));
  t.deepEqual(replies.map((r) => r.status), Array<number>(20).fill(200));
  t.is(ok.requests.length, 20, 'the live backend served all of them');
  const [deadStats] = proxy.gateway.stats().upstreams.app?.backends ?? [];
  t.true((deadStats?.failures ?? 0) >= 5, `round robin sent first tries to the dead backend: ${deadStats?.failures} failures`);
});

test('a POST whose connection is reset after it was sent is not retried: 502, and no other backend sees it', async (t) => {
  const reset = await resettingOrigin(t);
  const ok = await okOrigin(t);
  // Round robin starts with the first backend.
  const proxy = await proxyOver(t, [reset.url, ok.url], { balance: 'round_robin', retries: { max: 3 } });
  const r = await send(`${proxy.url}/order`, { method: 'POST', body: 'buy 1 share' });
  t.is(r.status, 502);
  t.is(reset.requests.length, 1, 'the resetting origin read the POST');
  t.is(reset.requests[0]?.method, 'POST');
  t.is(reset.requests[0]?.bodyLength, 'buy 1 share'.length);
  t.deepEqual(ok.requests.map((s) => s.method), [], 'the POST was not replayed elsewhere');
});

test('a GET whose connection is reset is retried on the other backend', async (t) => {
  const reset = await resettingOrigin(t);
  const ok = await okOrigin(t);
  const proxy = await proxyOver(t, [reset.url, ok.url], { balance: 'round_robin', retries: { max: 1 } });
  const r = await send(`${proxy.url}/item/7`);
  t.is(r.status, 200);
  t.is(r.body, 'ok');
  t.deepEqual(reset.requests.map((s) => s.url), ['/item/7'], 'first tried on the resetting backend');
  t.deepEqual(ok.requests.map((s) => s.url), ['/item/7'], 'then on the other one');
  // PUT and DELETE are idempotent too.
  const put = await send(`${proxy.url}/item/8`, { method: 'PUT', body: 'x' });
  const put2 = await send(`${proxy.url}/item/9`, { method: 'PUT', body: 'y' });
  t.deepEqual([put.status, put2.status], [200, 200]);
});

test('retries.max 0 disables retries', async (t) => {
  const reset = await resettingOrigin(t);
  const ok = await okOrigin(t);
  const proxy = await proxyOver(t, [reset.url, ok.url], { balance: 'round_robin', retries: { max: 0 } });
  const r = await send(`${proxy.url}/once`);
  t.is(r.status, 502);
  t.is(reset.requests.length, 1);
  t.is(ok.requests.length, 0);
  const dead = `http://127.0.0.1:${await closedPort()}`;
  const proxy2 = await proxyOver(t, [dead, ok.url], { balance: 'round_robin', retries: { max: 0 } });
  t.is((await send(`${proxy2.url}/never-sent`)).status, 502, 'not even a request that was never sent');
  t.is(ok.requests.length, 0);
});

test('the retry budget: with budget_percent 0, retries stop once the reserve is spent', async (t) => {
  const reset = await resettingOrigin(t);
  const ok = await okOrigin(t);
  const proxy = await proxyOver(t, [reset.url, ok.url], {
    retries: { max: 1, budget_percent: 0, backoff: '1ms' },
    passive_health: { consecutive_failures: 0 },
  });
  /** Requests that reached the resetting backend and then the healthy one: retries. */
  const retried = () => {
    const failed = new Set(reset.requests.map((s) => s.url));
    return ok.requests.filter((s) => failed.has(s.url)).length;
  };
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) statuses.push((await send(`${proxy.url}/b/${i}`)).status);
  const afterFirst = retried();
  for (let i = 30; i < 80; i++) statuses.push((await send(`${proxy.url}/b/${i}`)).status);
  const afterAll = retried();
  t.true(afterFirst >= 1, 'some requests were retried');
  t.true(afterAll <= 10, `retries stay within the reserve: ${afterAll}`);
  t.is(afterAll, afterFirst, `retries stopped growing after the reserve was spent (${afterFirst} → ${afterAll}) while requests went on`);
  const failed = statuses.filter((s) => s === 502).length;
  t.is(failed, reset.requests.length - afterAll, 'every unretried try on the resetting backend became a 502');
  t.true(statuses.slice(30).includes(502), 'later failures are no longer retried');
  t.is(statuses.filter((s) => s === 200).length, ok.requests.length);
});

test('passive ejection: a backend answering 500 is ejected after consecutive_failures and gets nothing more', async (t) => {
  const failing = await startOrigin((_req, res) => {
    res.writeHead(500);
    res.end('broken');
  });
  t.teardown(() => failing.close());
  const ok = await okOrigin(t);
  const proxy = await proxyOver(
    t,
    [failing.url, ok.url],
    { balance: 'round_robin', passive_health: { consecutive_failures: 3, ejection_time: '30s' } },
    true,
  );
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) statuses.push((await send(`${proxy.url}/p/${i}`)).status);
  t.is(failing.requests.length, 3, 'three 500s, then no more requests');
  t.is(statuses.filter((s) => s === 500).length, 3, '500 is passed through, not retried');
  t.is(statuses.filter((s) => s === 200).length, 27);
  const { backends } = await adminJson<{ backends: BackendView[] }>(proxy.gateway.adminAddress, '/backends');
  const bad = backends.find((b) => b.url === failing.url);
  t.like(bad, { upstream: 'app', ejected: true, healthy: false, ejections: 1, failures: 3 });
  t.like(backends.find((b) => b.url === ok.url), { ejected: false, healthy: true, failures: 0 });
});

test('never the last backend: a single backend always answering 500 still gets every request', async (t) => {
  const failing = await startOrigin((_req, res) => {
    res.writeHead(500);
    res.end('broken');
  });
  t.teardown(() => failing.close());
  const proxy = await proxyOver(t, [failing.url], { passive_health: { consecutive_failures: 1 } }, true);
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push((await send(`${proxy.url}/l/${i}`)).status);
  t.deepEqual(statuses, Array<number>(10).fill(500), 'the origin answers, never the proxy with 503');
  t.is(failing.requests.length, 10);
  const { backends } = await adminJson<{ backends: BackendView[] }>(proxy.gateway.adminAddress, '/backends');
  t.like(backends[0], { ejected: false, healthy: true, failures: 10 });
});

test('a pooled connection to an origin that restarted is not used: the next request succeeds', async (t) => {
  const first = await startOrigin((_req, res) => res.end('first'));
  const port = first.port;
  const proxy = await proxyOver(t, [first.url]);
  t.is((await send(`${proxy.url}/a`)).body, 'first');
  await until(() => poolOf(proxy)?.idle === 1, 'the connection to go back to the pool');
  await first.close();
  const second = await listenOn(port, (_req, res) => res.end('second'));
  t.teardown(() => second.close());
  const r = await send(`${proxy.url}/b`);
  t.is(r.status, 200);
  t.is(r.body, 'second');
  t.is(poolOf(proxy)?.created, 2, 'a fresh connection to the new origin');
});

/**
 * The keep-alive race: the origin closes an idle connection just as the proxy reuses it, so the
 * request is written but the connection ends before any response byte. A raw TCP origin answers
 * the first request on each connection and closes on the second, without answering it.
 */
async function closeOnSecondRequest(t: ExecutionContext): Promise<{ url: string; heads: number; connections: number }> {
  let heads = 0;
  const origin = await rawOrigin(t, (socket) => {
    let buffered = '';
    let onThis = 0;
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      while (buffered.includes('\r\n\r\n')) {
        buffered = buffered.slice(buffered.indexOf('\r\n\r\n') + 4);
        heads += 1;
        onThis += 1;
        if (onThis === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
        else socket.destroy();
      }
    });
  });
  return {
    url: origin.url,
    get heads() {
      return heads;
    },
    get connections() {
      return origin.connections;
    },
  };
}

// Issue 3, item 1: the keep-alive race. A GET written on a reused connection that the origin
// closes without a response byte is replayed on a fresh connection, even with no other backend.
test('a GET that fails on a reused connection before any response byte is replayed on a fresh connection', async (t) => {
  const origin = await closeOnSecondRequest(t);
  const proxy = await proxyOver(t, [origin.url]);
  t.is((await send(`${proxy.url}/one`)).status, 200);
  await until(() => poolOf(proxy)?.idle === 1, 'the connection to go back to the pool');
  const r = await send(`${proxy.url}/two`);
  t.is(r.status, 200, `replayed on a new connection (${r.body.trim()})`);
  t.is(origin.connections, 2);
  t.is(origin.heads, 3, 'sent on the reused connection, then once more on a fresh one');
});

test('idle connections are evicted after pool.idle_timeout', async (t) => {
  const origin = await okOrigin(t);
  const proxy = await proxyOver(t, [origin.url], { pool: { idle_timeout: '300ms' } }, true);
  t.is((await send(`${proxy.url}/x`)).status, 200);
  await until(() => poolOf(proxy)?.idle === 1, 'the connection to go back to the pool');
  t.is(origin.sockets.size, 1);
  // The engine sweeps pools every second: idle 300 ms + at most one sweep period (+ slack).
  await until(() => origin.sockets.size === 0, 'the origin to see its connection closed', 3000);
  const stats = await adminJson<{ upstreams: { app: { backends: { pool: { idle: number; created: number } }[] } } }>(
    proxy.gateway.adminAddress,
    '/stats',
  );
  t.is(stats.upstreams.app.backends[0]?.pool.idle, 0);
  t.is((await send(`${proxy.url}/y`)).status, 200, 'a later request opens a new connection');
  t.is(poolOf(proxy)?.created, 2);
});

test('the pool cap is never exceeded: 20 concurrent slow requests over max_connections 3', async (t) => {
  let inFlight = 0;
  let peakInFlight = 0;
  let peakSockets = 0;
  const origin: Origin = await startOrigin((_req, res) => {
    inFlight += 1;
    peakInFlight = Math.max(peakInFlight, inFlight);
    peakSockets = Math.max(peakSockets, origin.sockets.size);
    setTimeout(() => {
      inFlight -= 1;
      res.end('slow');
    }, 150);
  });
  t.teardown(() => origin.close());
  const proxy = await proxyOver(t, [origin.url], { pool: { max_connections: 3, queue_timeout: '10s' } });
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => send(`${proxy.url}/c/${i}`)));
  t.deepEqual(replies.map((r) => r.status), Array<number>(20).fill(200));
  t.is(peakInFlight, 3, 'three requests at a time at the origin');
  t.true(peakSockets <= 3, `origin saw ${peakSockets} concurrent connections`);
  t.true(origin.connections <= 3, `origin accepted ${origin.connections} connections in all`);
  const pool = poolOf(proxy);
  t.true((pool?.exhausted ?? 0) >= 1, 'queued checkouts are counted');
  t.is(pool?.queue_timeouts, 0);
  t.true((pool?.reused ?? 0) >= 17, `connections were reused: ${JSON.stringify(pool)}`);
});
