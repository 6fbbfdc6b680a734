// The scenarios and how each one is measured. A scenario with `skipped` is listed in the report
// (so it is easy to add when its feature lands) but not run.
import readline from 'node:readline';
import {
  CLK_TCK, LOAD_CPU, PROXY_CPU, cpuBusyTicks, reschedIpis, freePort, sleep, spawnPinned, stopChild, threadTicks, which, treeRss, treeTimes,
} from './system.js';
import { benchCert, probeTls } from './certs.js';
import { runH2load } from './h2load.js';
import { runWrk } from './wrk.js';

const HOLD_CLIENT = new URL('../clients/hold-connections.js', import.meta.url).pathname;
const EMBEDDED = new URL('../peers/gatehouse-embedded.js', import.meta.url).pathname;
/** The engine's worker threads are named `gatehouse-worker` (the kernel keeps 15 characters). */
const ENGINE_THREADS = /^gatehouse/;

export const SCENARIOS = [
  { id: 'h1-small-64', kind: 'load', title: 'HTTP/1.1 keep-alive, 123-byte responses, 64 connections', path: '/small', connections: 64 },
  { id: 'h1-small-rate', kind: 'rate', title: 'HTTP/1.1 keep-alive, 123-byte responses, 64 connections at a fixed 5,000 req/s (h2load): nobody saturated', path: '/small', connections: 64, rate: 5000 },
  { id: 'h1-small-1000', kind: 'load', title: 'HTTP/1.1 keep-alive, 123-byte responses, 1,000 connections', path: '/small', connections: 1000 },
  { id: 'idle-10k', kind: 'idle', title: '10,000 idle keep-alive connections (after one request each)', count: 10_000 },
  { id: 'h1-1mb', kind: 'load', title: 'HTTP/1.1 keep-alive, 1 MiB responses, 16 connections', path: '/1mb', connections: 16 },
  { id: 'js-blocked', kind: 'blocked', title: 'gatehouse embedded, JavaScript thread blocked while traffic runs (64 connections)', path: '/small', connections: 64 },
  { id: 'tls13-new-conn', kind: 'tls-conn', title: 'new TLS 1.3 connections (ECDSA P-256), one 123-byte request each, 64 connections (wrk, Connection: close; wrk resumes its previous session where the proxy lets it)', path: '/small', connections: 64 },
  // 10 × 10 = 100 requests in flight: within the 128 idle upstream connections every proxy keeps,
  // so that nobody opens and closes origin connections in the steady state.
  { id: 'h2-tls-10-streams', kind: 'h2', title: 'HTTP/2 over TLS 1.3, 10 connections × 10 concurrent streams, 123-byte responses (h2load -t 1 -c 10 -m 10)', path: '/small', connections: 10, streams: 10 },
  { id: 'cache-hit', kind: 'cache', title: 'cache hits (123-byte body, max-age=3600) vs nginx proxy_cache, HAProxy\'s cache and Varnish, 64 connections', path: '/cached', connections: 64 },
  { id: 'ts-select-policy', kind: 'policy', title: 'gatehouse: a TypeScript per-request select() policy vs the built-in round robin (64 connections)', path: '/small', connections: 64 },
];

/** CPU and wall-clock counters around one measured interval. */
function startMeter(pid) {
  return {
    wall: performance.now(),
    proxy: treeTimes(pid),
    engine: threadTicks(pid, ENGINE_THREADS),
    core: cpuBusyTicks(PROXY_CPU),
    ipis: reschedIpis(LOAD_CPU),
  };
}

function stopMeter(m, pid, requests) {
  const wallS = (performance.now() - m.wall) / 1000;
  const now = treeTimes(pid);
  const proxyTicks = now.user + now.sys - m.proxy.user - m.proxy.sys;
  const sysTicks = now.sys - m.proxy.sys;
  const engineTicks = threadTicks(pid, ENGINE_THREADS) - m.engine;
  const coreTicks = cpuBusyTicks(PROXY_CPU) - m.core;
  const ipis = reschedIpis(LOAD_CPU) - m.ipis;
  const us = (ticks) => (ticks * 1e6) / CLK_TCK;
  return {
    wall_s: round(wallS, 2),
    cpu_s: round(proxyTicks / CLK_TCK, 2),
    cpu_pct: round((100 * proxyTicks) / CLK_TCK / wallS, 1),
    cpu_us_per_req: requests > 0 ? round(us(proxyTicks) / requests, 2) : null,
    // Share of that CPU spent in the kernel (system calls, and the loopback TCP stack delivering
    // to and waking the peer on the other core, which Linux charges to the sender).
    sys_share_pct: proxyTicks > 0 ? round((100 * sysTicks) / proxyTicks, 0) : null,
    engine_cpu_us_per_req: requests > 0 && engineTicks > 0 ? round(us(engineTicks) / requests, 2) : null,
    engine_cpu_pct: round((100 * engineTicks) / CLK_TCK / wallS, 1),
    // Wake-ups of the origin and the load generator on an idle load core, per request: a proxy
    // that hands them work in a trickle rather than in batches pays an IPI for each.
    load_core_ipis_per_req: requests > 0 ? round(ipis / requests, 3) : null,
    // Time the proxy core spent on anything but the proxy (another build, the kernel's softirqs):
    // the noise indicator of this measurement.
    other_on_core_pct: round(Math.max(0, (100 * (coreTicks - proxyTicks)) / CLK_TCK / wallS), 1),
  };
}

export function round(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * Warm-up before a measured run: JIT for the Node.js peers, pools for everyone. A quick run warms
 * only the Node.js peers (the others fill their pools within milliseconds), to stay short.
 */
async function warm(proxy, url, connections, ctx, headers) {
  if (ctx.warmupS > 0 && (!ctx.quick || proxy.jit)) await runWrk({ url, connections, seconds: ctx.warmupS, headers });
}

/** Keep-alive load with wrk against a running proxy: warm up, then measure. */
async function measureLoad(h, proxy, scn, ctx) {
  const url = h.url + scn.path;
  await warm(proxy, url, scn.connections, ctx);
  const m = startMeter(h.pid);
  const w = await runWrk({ url, connections: scn.connections, seconds: ctx.durationS });
  const cpu = stopMeter(m, h.pid, w.requests);
  return {
    proxy: proxy.name,
    rps: round(w.rps, 0),
    mib_per_s: round(w.bytes_read / w.seconds / 2 ** 20, 1),
    p50_ms: round(w.p50_ms, 3),
    p99_ms: round(w.p99_ms, 3),
    requests: w.requests,
    errors: w.errors,
    rss_mib: round(treeRss(h.pid) / 2 ** 20, 1),
    ...cpu,
  };
}

async function runLoad(scn, proxy, ctx) {
  const h = await proxy.start(ctx);
  try {
    return await measureLoad(h, proxy, scn, ctx);
  } finally {
    await h.stop();
  }
}

/** Cache hits: the proxy's cache enabled, a response the origin lets it keep for an hour. */
async function runCache(scn, proxy, ctx) {
  const h = await proxy.start(ctx, { cache: true });
  try {
    return await measureLoad(h, proxy, scn, ctx);
  } finally {
    await h.stop();
  }
}

const POLICY = new URL('../peers/round-robin-policy.js', import.meta.url).pathname;

/**
 * The cost of the bridge: gatehouse with the built-in round robin, then with the same choice made
 * by a per-request select() in JavaScript. The process's CPU includes the Node.js thread's.
 */
async function runPolicy(scn, proxy, ctx) {
  if (proxy.name !== 'gatehouse') return null;
  const rows = [];
  for (const [variant, balance] of [['built-in round_robin', undefined], ['TypeScript select()', { module: POLICY }]]) {
    const h = await proxy.start(ctx, { balance });
    try {
      rows.push({ ...(await measureLoad(h, proxy, scn, ctx)), proxy: `gatehouse, ${variant}` });
    } finally {
      await h.stop();
    }
  }
  return rows;
}

/** One h2load measurement as a table row: its figures, the proxy's RSS and CPU. */
function h2loadRow(proxy, h, r, cpu) {
  return {
    proxy: proxy.name,
    rps: round(r.rps, 0),
    mean_ms: round(r.mean_ms, 3),
    max_ms: round(r.max_ms, 3),
    requests: r.requests,
    errors: r.errors,
    rss_mib: round(treeRss(h.pid) / 2 ** 20, 1),
    ...cpu,
  };
}

/**
 * A fixed request rate every peer can sustain: CPU per request without the batching a saturated
 * proxy gets for free (more events per epoll_wait, a busy peer that needs no wake-up).
 */
async function runRate(scn, proxy, ctx) {
  if (!which('h2load')) throw new Error('h2load is not installed (apt-get install nghttp2-client)');
  const h = await proxy.start(ctx);
  try {
    const url = h.url + scn.path;
    await warm(proxy, url, scn.connections, ctx);
    const m = startMeter(h.pid);
    const r = await runH2load({ url, connections: scn.connections, rate: scn.rate, seconds: ctx.durationS });
    return h2loadRow(proxy, h, r, stopMeter(m, h.pid, r.requests));
  } finally {
    await h.stop();
  }
}

/** gatehouse's TLS counters (`/stats` on its admin listener), or null for the other proxies. */
async function tlsCounters(h) {
  if (!h.adminUrl) return null;
  try {
    const res = await fetch(`${h.adminUrl}/stats`, { signal: AbortSignal.timeout(3000) });
    const tls = (await res.json()).tls;
    return tls ? { handshakes: tls.handshakes, resumed: tls.resumed } : null;
  } catch {
    return null;
  }
}

/**
 * A new TLS 1.3 connection for every request: wrk with `Connection: close` (each proxy closes
 * after its answer, wrk connects again). CPU per request is CPU per connection: TCP accept, the
 * TLS handshake, one proxied request, the close. wrk keeps the session its previous connection got
 * (SSL_clear) and offers it, so against a proxy that resumes sessions almost every handshake is a
 * resumed one (TLS 1.3 PSK with ECDHE: no certificate signature). The `resumes` column says which
 * proxies resume (a probe offers the session a first connection got); gatehouse's own counters
 * give the exact share of resumed handshakes in the measured run.
 */
async function runTlsConn(scn, proxy, ctx) {
  const h = await proxy.start(ctx, { tls: { ...benchCert(ctx), h2: false } });
  try {
    const probe = await probeTls(h.port, { path: scn.path });
    const url = h.url + scn.path;
    const headers = ['Connection: close'];
    await warm(proxy, url, scn.connections, ctx, headers);
    const before = await tlsCounters(h);
    const m = startMeter(h.pid);
    const w = await runWrk({ url, connections: scn.connections, seconds: ctx.durationS, headers });
    const cpu = stopMeter(m, h.pid, w.requests);
    const after = await tlsCounters(h);
    const handshakes = before && after ? after.handshakes - before.handshakes : null;
    return {
      proxy: proxy.name,
      conns_per_s: round(w.rps, 0),
      rps: round(w.rps, 0),
      p50_ms: round(w.p50_ms, 3),
      p99_ms: round(w.p99_ms, 3),
      requests: w.requests,
      errors: w.errors,
      rss_mib: round(treeRss(h.pid) / 2 ** 20, 1),
      tls_protocol: probe.protocol,
      tls12: probe.tls12,
      cipher: probe.cipher,
      resumes: probe.resumes,
      handshakes,
      resumed_pct: handshakes > 0 ? round((100 * (after.resumed - before.resumed)) / handshakes, 1) : null,
      ...cpu,
      cpu_us_per_conn: cpu.cpu_us_per_req,
    };
  } finally {
    await h.stop();
  }
}

/**
 * HTTP/2 over TLS 1.3 (ALPN h2), saturating: h2load keeps `streams` requests in flight on each of
 * `connections` connections. Upstream every proxy speaks HTTP/1.1 keep-alive to the same origin.
 */
async function runH2(scn, proxy, ctx) {
  if (!which('h2load')) throw new Error('h2load is not installed (apt-get install nghttp2-client)');
  const h = await proxy.start(ctx, { tls: { ...benchCert(ctx), h2: true } });
  try {
    const load = (seconds) => runH2load({ url: h.url + scn.path, connections: scn.connections, streams: scn.streams, seconds, h2: true });
    if (ctx.warmupS > 0 && (!ctx.quick || proxy.jit)) await load(ctx.warmupS);
    const m = startMeter(h.pid);
    const r = await load(ctx.durationS);
    const row = h2loadRow(proxy, h, r, stopMeter(m, h.pid, r.requests));
    return { ...row, tls_protocol: r.tls_protocol, alpn: r.alpn, cipher: r.cipher };
  } finally {
    await h.stop();
  }
}

/** Lines from a child's stdout, awaited one pattern at a time with a deadline. */
function lineReader(child) {
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const i = waiters.findIndex((w) => w.re.test(line));
    if (i >= 0) waiters.splice(i, 1)[0].resolve(line);
    else lines.push(line);
  });
  return (re, timeoutMs) => {
    const i = lines.findIndex((l) => re.test(l));
    if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (l) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`no line matching ${re} within ${timeoutMs} ms; output: ${child.output.slice(-500)}`));
      }, timeoutMs);
      waiters.push(w);
    });
  };
}

/** Connections held before the baseline is taken (see runIdle). */
const IDLE_PRIMING = 100;
/** How long memory may take to settle after connections go idle (see settledRss). */
const IDLE_SETTLE_MS = 3500;
const IDLE_SETTLE_MS_QUICK = 1000;
const IDLE_SETTLE_MAX_MS = 10_000;

/**
 * The process tree's RSS once it has settled: gatehouse parks a connection 250-500 ms after its
 * last response and gives the freed memory back to the OS once the number of parked connections
 * has stopped growing for one of its 1 s housekeeping ticks (up to ~2.5 s). Waits `IDLE_SETTLE_MS`
 * (a smoke run only `IDLE_SETTLE_MS_QUICK`: its memory figures are not for reading), then until
 * two samples half a second apart differ by under 0.5% (at most `IDLE_SETTLE_MAX_MS`). The same for
 * every proxy.
 */
async function settledRss(pid, quick) {
  const started = Date.now();
  await sleep(quick ? IDLE_SETTLE_MS_QUICK : IDLE_SETTLE_MS);
  let last = treeRss(pid);
  while (Date.now() - started < IDLE_SETTLE_MAX_MS) {
    await sleep(500);
    const now = treeRss(pid);
    if (Math.abs(now - last) < last * 0.005) return now;
    last = now;
  }
  return last;
}

/** Starts the idle-connection client holding `count` connections; resolves once they are ready. */
async function holdConnections(h, count) {
  const client = spawnPinned(LOAD_CPU, process.execPath, [HOLD_CLIENT, String(h.port), String(count), '180'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const next = lineReader(client);
  const release = async () => {
    client.stdin.end();
    await stopChild(client, 2000);
  };
  try {
    const [, opened, failed] = (await next(/^ready /, 120_000)).split(' ').map(Number);
    const stillOpen = async () => {
      client.stdin.write('check\n');
      return Number((await next(/^open /, 10_000)).split(' ')[1]);
    };
    return { opened, failed, stillOpen, release };
  } catch (e) {
    await release();
    throw e;
  }
}

/**
 * Opens `count` keep-alive connections (one request each) and holds them: RSS per connection.
 * The marginal cost: the baseline is taken with `IDLE_PRIMING` connections already idle and
 * memory settled, so a proxy's one-time costs of going idle (gatehouse's first heap trim gives
 * back memory from start-up too) are in neither figure.
 */
async function runIdle(scn, proxy, ctx) {
  const h = await proxy.start(ctx);
  const held = [];
  try {
    await runWrk({ url: `${h.url}/small`, connections: 16, seconds: 1 });
    held.push(await holdConnections(h, IDLE_PRIMING));
    const rssBefore = await settledRss(h.pid, ctx.quick);
    const m = startMeter(h.pid);
    const idle = await holdConnections(h, ctx.idleCount);
    held.push(idle);
    const cpu = stopMeter(m, h.pid, idle.opened);
    const rssAfter = await settledRss(h.pid, ctx.quick);
    const stillOpen = await idle.stillOpen();
    const grown = rssAfter - rssBefore;
    return {
      proxy: proxy.name,
      connections: stillOpen,
      failed: idle.failed,
      rss_before_mib: round(rssBefore / 2 ** 20, 1),
      rss_after_mib: round(rssAfter / 2 ** 20, 1),
      bytes_per_conn: stillOpen > 0 ? round(grown / stillOpen, 0) : null,
      // CPU to accept a connection, serve its one request and keep it: per connection.
      cpu_us_per_conn: cpu.cpu_us_per_req,
      other_on_core_pct: cpu.other_on_core_pct,
    };
  } finally {
    for (const c of held) await c.release();
    await h.stop();
  }
}

/**
 * gatehouse embedded in a Node.js process whose JavaScript thread is made busy while wrk runs.
 * Phases: free; main thread blocked without CPU (Atomics.wait); main thread busy-looping; and
 * the control for the last one, the same busy loop on a worker thread (the event loop stays free
 * but the engine shares its core with the same amount of JavaScript work). The property: `sleep`
 * ≈ `free` and `spin` ≈ `worker-spin`.
 */
async function runBlocked(scn, proxy, ctx) {
  if (proxy.name !== 'gatehouse') return null;
  const port = await freePort();
  const child = spawnPinned(PROXY_CPU, process.execPath, [EMBEDDED, String(port), ctx.origin.url, ctx.gatehouseRoot], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const next = lineReader(child);
  const rows = [];
  try {
    await next(/^listening /, 20_000);
    const url = `http://127.0.0.1:${port}${scn.path}`;
    if (!ctx.quick) await runWrk({ url, connections: scn.connections, seconds: ctx.warmupS });
    const holdMs = ctx.durationS * 1000 + 700;
    for (const phase of ['free', 'sleep', 'spin', 'worker-spin']) {
      if (phase !== 'free') {
        child.stdin.write(`${phase} ${holdMs}\n`);
        await next(new RegExp(`^started ${phase}$`), 10_000);
      }
      const m = startMeter(child.pid);
      const w = await runWrk({ url, connections: scn.connections, seconds: ctx.durationS });
      const cpu = stopMeter(m, child.pid, w.requests);
      if (phase !== 'free') await next(new RegExp(`^done ${phase}$`), holdMs + 10_000);
      // The share of the core left to the engine: what other processes and this process's own
      // JavaScript (the busy loops) did not take. Requests per second divided by it is the figure
      // that a noisy machine does not move, and that drops if the engine ever waits for JavaScript.
      const availablePct = Math.max(1, 100 - cpu.other_on_core_pct - Math.max(0, cpu.cpu_pct - cpu.engine_cpu_pct));
      rows.push({
        proxy: 'gatehouse',
        phase,
        rps: round(w.rps, 0),
        available_core_pct: round(availablePct, 1),
        rps_per_available_core: round(w.rps / (availablePct / 100), 0),
        // Below 100% only if the engine sat idle while it could have run: waiting for JavaScript,
        // or for the load core.
        engine_busy_of_available_pct: round(Math.min(100, (100 * cpu.engine_cpu_pct) / availablePct), 1),
        p50_ms: round(w.p50_ms, 3),
        p99_ms: round(w.p99_ms, 3),
        requests: w.requests,
        errors: w.errors,
        engine_cpu_us_per_req: cpu.engine_cpu_us_per_req,
        engine_cpu_pct: cpu.engine_cpu_pct,
        cpu_pct: cpu.cpu_pct,
        other_on_core_pct: cpu.other_on_core_pct,
      });
    }
  } finally {
    child.stdin.end();
    await stopChild(child);
  }
  return rows;
}

export const RUNNERS = {
  load: runLoad, rate: runRate, idle: runIdle, blocked: runBlocked, policy: runPolicy, cache: runCache, 'tls-conn': runTlsConn, h2: runH2,
};
