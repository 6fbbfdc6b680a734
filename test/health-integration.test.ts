/**
 * Active health checks wired into the gateway: verdicts change what the engine selects, are
 * emitted once per change and shown on the admin listener, and survive reloads.
 */
import test, { type ExecutionContext } from 'ava';
import { startOrigin } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { adminJson, delay, listenOn, many, namedOrigin, send, tally, until, type Named } from './helpers/client.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';
import type { BackendView, HealthChange } from '../ts/index.js';

// The failures these tests cause are immediate (503, connection refused), so the check timeout
// only matters on a loaded machine, where 100 ms could fail healthy backends: keep it generous.
const CHECKS = { interval: '100ms', timeout: '1s', healthy_threshold: 2, unhealthy_threshold: 2 } as const;
/** interval × unhealthy_threshold, plus generous slack for a loaded machine. */
const DETECT_WITHIN_MS = 100 * 2 + 1500;
/** An unhealthy backend is checked up to 8× less often (800 ms) before it answers again. */
const RECOVER_WITHIN_MS = 800 * 2 + 2000;

interface Fixture {
  proxy: TestProxy;
  origins: Named[];
  health: { ok: boolean }[];
  events: HealthChange[];
  config: GatehouseConfigInput;
}

async function setup(t: ExecutionContext, names = ['A', 'B', 'C']): Promise<Fixture> {
  const health = names.map(() => ({ ok: true }));
  const origins = await Promise.all(names.map((n, i) => namedOrigin(n, { health: health[i] })));
  const config = proxyConfig([], { admin: { address: '127.0.0.1:0' } });
  config.upstreams = { app: { health_check: CHECKS, backends: origins.map((o) => ({ url: o.url })) } };
  const proxy = await startProxy(config);
  const events: HealthChange[] = [];
  proxy.gateway.on('health', (c) => events.push(c));
  t.teardown(async () => {
    await proxy.close();
    await Promise.all(origins.map((o) => o.close()));
  });
  return { proxy, origins, health, events, config };
}

const view = (proxy: TestProxy, url: string): BackendView | undefined => proxy.gateway.backends().find((b) => b.url === url);

/** `n` requests; returns who answered each (or the status when it was not a 200). */
async function traffic(proxy: TestProxy, n: number): Promise<Record<string, number>> {
  const replies = await many(n, 3, (i) => send(`${proxy.url}/t/${i}`));
  return tally(replies.map((r) => (r.status === 200 ? r : { ...r, body: String(r.status) })));
}

test('a failing backend is excluded within interval × unhealthy_threshold, reported once, and restored when it recovers', async (t) => {
  const { proxy, origins, health, events } = await setup(t);
  const [, b] = origins as [Named, Named, Named];
  t.deepEqual(await traffic(proxy, 30), { A: 10, B: 10, C: 10 }, 'all three serve at first');

  const failedAt = Date.now();
  health[1]!.ok = false;
  await until(() => view(proxy, b.url)?.healthy === false, 'B to be marked unhealthy', DETECT_WITHIN_MS);
  t.true(Date.now() - failedAt <= DETECT_WITHIN_MS);
  const before = b.traffic();
  const counts = await traffic(proxy, 30);
  t.deepEqual(Object.keys(counts).sort(), ['A', 'C'], `no new request goes to B: ${JSON.stringify(counts)}`);
  t.is((counts.A ?? 0) + (counts.C ?? 0), 30);
  t.is(b.traffic(), before);

  const { backends } = await adminJson<{ backends: BackendView[] }>(proxy.gateway.adminAddress, '/backends');
  const shown = backends.find((v) => v.url === b.url);
  t.like(shown, { upstream: 'app', healthy: false, ejected: false, checks: { healthy: false, consecutiveSuccesses: 0 } });
  t.true((shown?.checks?.consecutiveFailures ?? 0) >= 2);
  t.is(shown?.checks?.lastError, 'status 503');
  t.truthy(shown?.checks?.lastCheck);
  t.like(backends.find((v) => v.url === origins[0]!.url), { healthy: true, checks: { healthy: true } });

  await delay(400); // more failing checks: still one event
  t.is(events.length, 1);
  t.like(events[0], { upstream: 'app', url: b.url, healthy: false });
  t.regex(events[0]?.reason ?? '', /^2 consecutive failures: status 503$/);

  health[1]!.ok = true;
  await until(() => view(proxy, b.url)?.healthy === true, 'B to be healthy again', RECOVER_WITHIN_MS);
  t.deepEqual(await traffic(proxy, 30), { A: 10, B: 10, C: 10 }, 'B takes its share again');
  await delay(300);
  t.is(events.length, 2, 'one event per change');
  t.like(events[1], { upstream: 'app', url: b.url, healthy: true, reason: '2 consecutive successes' });
});

test('a backend killed mid-run is excluded, and restored once restarted on the same port', async (t) => {
  const { proxy, origins, events } = await setup(t);
  const [, b] = origins as [Named, Named, Named];
  const port = b.port;
  const load = many(60, 2, async (i) => {
    if (i === 10) await b.close();
    return send(`${proxy.url}/k/${i}`);
  });
  // Passive detection may eject it first (connect failures); the active checks must say so too.
  await until(() => view(proxy, b.url)?.checks?.healthy === false, 'the killed backend to be marked unhealthy', DETECT_WITHIN_MS + 1000);
  t.false(view(proxy, b.url)?.healthy);
  const statuses = (await load).map((r) => r.status);
  t.true(statuses.every((s) => s === 200), `requests to the dead backend were retried elsewhere meanwhile: ${statuses.join(' ')}`);
  const during = await traffic(proxy, 20);
  t.deepEqual(Object.keys(during).sort(), ['A', 'C'], JSON.stringify(during));
  t.like(events.at(-1), { url: b.url, healthy: false });
  t.regex(events.at(-1)?.reason ?? '', /ECONNREFUSED/);

  const revived = await listenOn(port, (req, res) => res.end(req.url === '/health' ? 'ok' : 'B'));
  t.teardown(() => revived.close());
  await until(() => view(proxy, b.url)?.healthy === true, 'the restarted backend to be healthy again', RECOVER_WITHIN_MS);
  t.deepEqual(await traffic(proxy, 30), { A: 10, B: 10, C: 10 });
  t.is(revived.requests.filter((r) => r.url !== '/health').length, 10);
  t.deepEqual(events.filter((e) => e.url === b.url).map((e) => e.healthy), [false, true]);
});

test('when every backend is down, requests get 503 with Retry-After', async (t) => {
  const { proxy, origins, health } = await setup(t);
  health.forEach((h) => (h.ok = false));
  await until(() => proxy.gateway.backends().every((v) => !v.healthy), 'every backend to be unhealthy', DETECT_WITHIN_MS);
  const sent = origins.map((o) => o.traffic());
  const r = await send(`${proxy.url}/nothing`);
  t.is(r.status, 503);
  t.is(r.headers['retry-after'], '1');
  t.deepEqual(origins.map((o) => o.traffic()), sent, 'no origin was asked');
});

test('health checks use connections of their own, with Connection: close and their own User-Agent', async (t) => {
  const { proxy, origins } = await setup(t, ['A']);
  const [a] = origins as [Named];
  for (let i = 0; i < 3; i++) t.is((await send(`${proxy.url}/x/${i}`)).status, 200);
  await until(() => a.requests.filter((r) => r.url === '/health').length >= 4, 'a few health checks');
  const checks = a.requests.filter((r) => r.url === '/health');
  const traffic = a.requests.filter((r) => r.url !== '/health');
  for (const c of checks) {
    t.is(c.headers['user-agent'], 'gatehouse-health-check');
    t.is(c.headers.connection, 'close');
    t.is(c.headers.via, undefined, 'not proxied');
  }
  const trafficConnections = new Set(traffic.map((r) => r.connection));
  t.is(trafficConnections.size, 1, 'traffic reuses one pooled connection');
  t.true(checks.every((c) => !trafficConnections.has(c.connection)), 'no check ran on a traffic connection');
  t.is(new Set(checks.map((c) => c.connection)).size, checks.length, 'each check on a new connection');
  const pool = proxy.gateway.stats().upstreams.app?.backends[0]?.pool;
  t.is(pool?.created, 1, 'the traffic pool opened one connection, whatever the checks did');
  t.is(proxy.gateway.backends()[0]?.requests, 3, 'checks are not counted as proxied requests');
});

test('a reload keeps the health state of unchanged backends', async (t) => {
  const { proxy, origins, health, events, config } = await setup(t);
  const [a, b, c] = origins as [Named, Named, Named];
  health[1]!.ok = false;
  await until(() => view(proxy, b.url)?.healthy === false, 'B to be marked unhealthy', DETECT_WITHIN_MS);
  const d = await namedOrigin('D');
  t.teardown(() => d.close());
  const next = structuredClone(config);
  next.upstreams.app!.backends = [...origins, d].map((o) => ({ url: o.url }));
  next.upstreams.app!.retries = { max: 2 };
  await proxy.gateway.reload(next);
  // At once, before any check of the new configuration could have run.
  t.like(view(proxy, b.url), { healthy: false, checks: { healthy: false } });
  t.like(view(proxy, d.url), { healthy: true });
  const counts = await traffic(proxy, 9);
  t.deepEqual(Object.keys(counts).sort(), ['A', 'C', 'D'], `B still gets nothing right after the reload: ${JSON.stringify(counts)}`);
  t.is(events.filter((e) => e.url === b.url).length, 1, 'the reload emitted nothing for B');
  t.true(events.every((e) => e.url === b.url), 'nor for the others');
  await delay(300);
  t.like(view(proxy, a.url), { healthy: true });
  t.like(view(proxy, c.url), { healthy: true });
});

// Issue 3, item 5: "active checks bring it back". A passively ejected backend whose checks never
// failed has no change of verdict to report; every passing check must still end the ejection.
test('passing active checks bring back a passively ejected backend before its ejection time', async (t) => {
  let broken = true;
  // F answers traffic with 500 while `broken`; its /health always passes.
  const flaky = await startOrigin((req, res) => {
    res.writeHead(req.url !== '/health' && broken ? 500 : 200);
    res.end('F');
  });
  const ok = await namedOrigin('OK');
  t.teardown(async () => {
    await flaky.close();
    await ok.close();
  });
  const config = proxyConfig([]);
  config.upstreams = {
    app: {
      health_check: CHECKS,
      passive_health: { consecutive_failures: 2, ejection_time: '30s' },
      backends: [{ url: flaky.url }, { url: ok.url }],
    },
  };
  const proxy = await startProxy(config);
  t.teardown(() => proxy.close());
  const f = () => view(proxy, flaky.url);
  for (let i = 0; i < 6 && !f()?.ejected; i++) await send(`${proxy.url}/e/${i}`);
  t.like(f(), { ejected: true, checks: { healthy: true } }, 'ejected by two 500s while its checks pass');
  broken = false;
  await until(() => f()?.healthy === true, 'passing checks to end the ejection', 1500);
  t.like(f(), { ejected: false, healthy: true });
});
