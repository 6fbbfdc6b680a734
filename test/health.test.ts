/** Active health checks against real origins on OS-assigned ports, with short intervals. */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { closedPort, startOrigin, type Origin } from './helpers/origin.js';
import { createLogger } from '../ts/log.js';
import { HealthChecker, type HealthChange, type HealthCheckSettings, type HealthTarget } from '../ts/health/checker.js';
import { backedOff, backoffCeiling, firstCheckDelay, jittered } from '../ts/health/schedule.js';

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** What a health origin answers (flip `status` or `hang` at any time) and what it answered, when. */
interface Control {
  status: number;
  hang: boolean;
  served: { status: number; at: number }[];
}

async function healthOrigin(t: ExecutionContext, status = 200): Promise<{ origin: Origin; control: Control }> {
  const control: Control = { status, hang: false, served: [] };
  const origin = await startOrigin((_req, res) => {
    if (control.hang) return; // never answers; close() drops the connection
    control.served.push({ status: control.status, at: performance.now() });
    res.writeHead(control.status, { 'content-type': 'text/plain' });
    res.end(control.status < 300 ? 'ok' : 'down');
  });
  t.teardown(() => origin.close());
  return { origin, control };
}

function settings(overrides: Partial<HealthCheckSettings> = {}): HealthCheckSettings {
  return { path: '/health', intervalMs: 50, timeoutMs: 1000, healthyThreshold: 2, unhealthyThreshold: 3, ...overrides };
}

const target = (url: string, s: HealthCheckSettings = settings(), upstream = 'app'): HealthTarget => ({ upstream, url, settings: s });

interface LogLine {
  level: string;
  message: string;
  [field: string]: unknown;
}

/** A checker with a captured log; `onChange` runs inside the checker's callback (to count requests then). */
function harness(t: ExecutionContext, options: { onChange?: (c: HealthChange) => void; random?: () => number } = {}) {
  const changes: HealthChange[] = [];
  const lines: LogLine[] = [];
  const logger = createLogger('debug', (l) => lines.push(JSON.parse(l) as LogLine));
  const checker = new HealthChecker({
    onChange: (c) => {
      changes.push(c);
      options.onChange?.(c);
    },
    logger,
    random: options.random ?? (() => 0.5), // 0.5 = no jitter on intervals
  });
  // Teardowns run last-registered first: the checker stops before the origins close.
  t.teardown(() => checker.stop());
  return { checker, changes, lines };
}

test('schedule: ±10% jitter, immediate first check, backoff doubling up to min(8× interval, 60 s)', (t) => {
  const ms = (x: number) => Math.round(x * 1e6) / 1e6;
  t.is(ms(jittered(100, () => 0)), 90);
  t.is(ms(jittered(100, () => 0.5)), 100);
  t.is(ms(jittered(100, () => 1)), 110);
  t.is(ms(jittered(100, () => 7)), 110, 'a random source out of range is clamped');
  t.is(firstCheckDelay(1000, () => 0), 0);
  t.is(firstCheckDelay(1000, () => 0.5), 50);
  t.is(backoffCeiling(50), 400);
  t.is(backoffCeiling(10_000), 60_000);
  t.is(backoffCeiling(120_000), 120_000, 'never below the interval');
  const steps = [50];
  for (let i = 0; i < 4; i++) steps.push(backedOff(steps[steps.length - 1] ?? 0, 50));
  t.deepEqual(steps, [50, 100, 200, 400, 400]);
  t.is(backedOff(40_000, 20_000), 60_000);
});

test('a healthy backend stays healthy and emits nothing', async (t) => {
  const { origin } = await healthOrigin(t);
  const { checker, changes, lines } = harness(t);
  checker.update([target(origin.url)]);
  await until(() => (checker.state()[0]?.consecutiveSuccesses ?? 0) >= 4, 'four passing checks');
  t.true(origin.requests.length >= 4);
  t.deepEqual(changes, []);
  t.deepEqual(lines.filter((l) => l.level !== 'DEBUG'), [], 'nothing logged for passing checks');
  const [view] = checker.state();
  t.is(view?.healthy, true);
  t.is(view?.consecutiveFailures, 0);
  t.false(Number.isNaN(Date.parse(view?.lastCheck ?? '')), 'lastCheck is an ISO date');
  t.is(view?.lastError, undefined);
});

test('a backend answering 500 goes unhealthy after exactly unhealthy_threshold checks, once', async (t) => {
  const { origin } = await healthOrigin(t, 500);
  let checksAtChange = -1;
  const { checker, changes, lines } = harness(t, { onChange: () => (checksAtChange = origin.requests.length) });
  checker.update([target(origin.url, settings({ unhealthyThreshold: 3 }))]);
  await until(() => changes.length === 1, 'the backend to go unhealthy');
  t.is(checksAtChange, 3);
  t.deepEqual(changes[0], { upstream: 'app', url: origin.url, healthy: false, reason: '3 consecutive failures: status 500' });
  const [view] = checker.state();
  t.is(view?.healthy, false);
  t.is(view?.lastError, 'status 500');
  await until(() => origin.requests.length >= 6, 'more failing checks');
  t.is(changes.length, 1, 'further failures change nothing');
  const logged = lines.filter((l) => l.level !== 'DEBUG');
  t.is(logged.length, 1, 'one log line per change, not per check');
  t.like(logged[0], { level: 'WARN', message: 'backend unhealthy', upstream: 'app', backend: origin.url, reason: '3 consecutive failures: status 500' });
});

test('a backend that recovers becomes healthy after healthy_threshold successes', async (t) => {
  const { origin, control } = await healthOrigin(t, 500);
  let passedAtChange = -1;
  const passed = () => control.served.filter((s) => s.status === 200).length;
  const { checker, changes, lines } = harness(t, { onChange: (c) => c.healthy && (passedAtChange = passed()) });
  checker.update([target(origin.url, settings({ unhealthyThreshold: 1, healthyThreshold: 2, intervalMs: 40 }))]);
  await until(() => changes.length === 1, 'the backend to go unhealthy');
  control.status = 200;
  await until(() => changes.length === 2, 'the backend to come back');
  t.is(passedAtChange, 2);
  t.deepEqual(changes[1], { upstream: 'app', url: origin.url, healthy: true, reason: '2 consecutive successes' });
  t.like(checker.state()[0], { healthy: true, consecutiveSuccesses: 2, consecutiveFailures: 0 });
  t.like(lines.find((l) => l.level === 'INFO'), { message: 'backend healthy', backend: origin.url, reason: '2 consecutive successes' });
});

test('a closed port goes unhealthy with a connect-refused reason', async (t) => {
  const port = await closedPort();
  const { checker, changes } = harness(t);
  checker.update([target(`http://127.0.0.1:${port}`, settings({ unhealthyThreshold: 2 }))]);
  await until(() => changes.length === 1, 'the backend to go unhealthy');
  t.false(changes[0]?.healthy);
  t.regex(changes[0]?.reason ?? '', /^2 consecutive failures: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
  t.regex(checker.state()[0]?.lastError ?? '', /ECONNREFUSED/);
});

test('a check that gets no answer within timeout counts as a failure', async (t) => {
  const { origin, control } = await healthOrigin(t);
  control.hang = true;
  let checksAtChange = -1;
  const { checker, changes } = harness(t, { onChange: () => (checksAtChange = origin.heads) });
  checker.update([target(origin.url, settings({ timeoutMs: 100, unhealthyThreshold: 2 }))]);
  await until(() => changes.length === 1, 'the backend to go unhealthy');
  t.is(checksAtChange, 2);
  t.is(changes[0]?.reason, '2 consecutive failures: timeout after 100ms');
});

test('checks use connections of their own, the configured path and their own User-Agent', async (t) => {
  const { origin } = await healthOrigin(t);
  const { checker } = harness(t);
  checker.update([target(origin.url, settings({ path: '/healthz?deep=1' }))]);
  await until(() => origin.requests.length >= 3, 'three checks');
  for (const [i, seen] of origin.requests.slice(0, 3).entries()) {
    t.is(seen.method, 'GET');
    t.is(seen.url, '/healthz?deep=1');
    t.is(seen.headers.connection, 'close');
    t.is(seen.headers['user-agent'], 'gatehouse-health-check');
    t.is(seen.connection, i + 1, 'a new connection per check');
  }
});

test('the first checks of backends are spread by the injected random source', async (t) => {
  const { origin: early } = await healthOrigin(t);
  const { origin: late } = await healthOrigin(t);
  const { checker: soon } = harness(t, { random: () => 0 });
  const { checker: later } = harness(t, { random: () => 0.99 });
  soon.update([target(early.url, settings({ intervalMs: 3000 }))]);
  later.update([target(late.url, settings({ intervalMs: 3000 }))]); // first check after ~297 ms
  await until(() => early.requests.length === 1, 'the unjittered first check');
  await delay(100);
  t.is(late.requests.length, 0, 'the jittered first check waits its share of the interval');
  await until(() => late.requests.length === 1, 'the jittered first check');
});

test('a dead backend is checked less and less often, and at the interval again once it answers', async (t) => {
  const { origin, control } = await healthOrigin(t, 500);
  const { checker } = harness(t);
  // Unhealthy after one failure, then gaps of 40, 80, 160, 320, 320 (the ceiling: 8 × 40) ms.
  checker.update([target(origin.url, settings({ intervalMs: 40, unhealthyThreshold: 1, healthyThreshold: 3 }))]);
  await until(() => control.served.length >= 6, 'six checks');
  const at = control.served.map((s) => s.at);
  const gaps = at.slice(1).map((x, i) => x - (at[i] ?? 0));
  const [first = 0, , third = 0, fourth = 0, fifth = 0] = gaps;
  // Timing on a shared machine is noisy: only clear growth is asserted, with wide margins.
  t.true(third > first, `the gap grows (${gaps.join(', ')})`);
  t.true(fourth > first * 2.5, `the gap keeps growing (${gaps.join(', ')})`);
  t.true(fifth < 600, `the gap stops growing at 8× the interval (${gaps.join(', ')})`);
  control.status = 200;
  await until(() => control.served.filter((s) => s.status === 200).length >= 2, 'two passing checks');
  const passing = control.served.filter((s) => s.status === 200).map((s) => s.at);
  const back = (passing[1] ?? 0) - (passing[0] ?? 0);
  t.true(back < 250, `a success restores the interval (${back} ms)`);
});

test('update keeps unchanged targets, stops removed ones and starts new ones', async (t) => {
  const { origin: a } = await healthOrigin(t, 500);
  const { origin: b } = await healthOrigin(t);
  const { origin: c } = await healthOrigin(t);
  const { checker, changes } = harness(t);
  const s = settings({ unhealthyThreshold: 2 });
  checker.update([target(a.url, s), target(b.url, s)]);
  await until(() => changes.length === 1 && b.requests.length >= 1, 'a to go unhealthy');
  const failures = checker.state()[0]?.consecutiveFailures ?? 0;

  checker.update([target(a.url, { ...s }), target(c.url, s)]);
  t.deepEqual(checker.state().map((v) => [v.url, v.healthy]), [[a.url, false], [c.url, true]], 'a keeps its verdict; c starts healthy');
  t.is(checker.state()[0]?.consecutiveFailures, failures, 'a keeps its counters');
  await until(() => c.requests.length >= 1, 'c to be checked right away', 1000);
  await until(() => (checker.state()[0]?.consecutiveFailures ?? 0) > failures, 'a to be checked again');
  const bChecks = b.heads; // now, not at update(): a check cancelled there may still have reached b
  await delay(150);
  t.is(b.heads, bChecks, 'b is no longer checked');
  t.is(changes.length, 1, 'no change reported for kept, removed or added targets');

  // New settings for a: its verdict stays (a reload does not revive a dead backend), its counters restart.
  checker.update([target(a.url, settings({ unhealthyThreshold: 2, intervalMs: 30 })), target(c.url, s)]);
  t.like(checker.state()[0], { healthy: false, consecutiveFailures: 0 });
  await until(() => (checker.state()[0]?.consecutiveFailures ?? 0) >= 3, 'a to fail under its new settings');
  t.is(changes.length, 1);
  t.true(c.requests.length >= 1);
});

test('update rejects unusable targets and changes nothing', async (t) => {
  const { origin } = await healthOrigin(t);
  const { checker } = harness(t);
  checker.update([target(origin.url)]);
  t.throws(() => checker.update([target(origin.url, settings({ intervalMs: 0 }))]), { instanceOf: RangeError, message: /intervalMs/ });
  t.throws(() => checker.update([target('ftp://x:21')]), { instanceOf: RangeError, message: /http/ });
  t.throws(() => checker.update([target(origin.url, settings({ path: 'health' }))]), { instanceOf: RangeError, message: /path/ });
  t.is(checker.state().length, 1);
  await until(() => origin.requests.length >= 1, 'the original target to be checked');
});

test('a throwing onChange is logged and checks go on', async (t) => {
  const port = await closedPort();
  const { checker, lines } = harness(t, { onChange: () => { throw new Error('listener bug'); } });
  checker.update([target(`http://127.0.0.1:${port}`, settings({ unhealthyThreshold: 1 }))]);
  await until(() => lines.some((l) => l.message === 'health change listener threw'), 'the error to be logged');
  t.like(lines.find((l) => l.level === 'ERROR'), { error: 'listener bug' });
  await until(() => (checker.state()[0]?.consecutiveFailures ?? 0) >= 2, 'further checks');
});

/**
 * Watches what code under ts/health/ leaves behind: its timers (set, then neither fired nor
 * cleared) and every client socket this process opens (only the checker opens any meanwhile).
 */
function watchResources(t: ExecutionContext) {
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const timers = new Set<unknown>();
  const sockets: Socket[] = [];
  const wrapped = (callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): NodeJS.Timeout => {
    const ours = /[\\/]ts[\\/]health[\\/]/.test(new Error().stack ?? '');
    const timer = realSet((...a: unknown[]) => {
      timers.delete(timer);
      callback(...a);
    }, ms, ...args);
    if (ours) timers.add(timer);
    return timer;
  };
  globalThis.setTimeout = wrapped as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((timer?: NodeJS.Timeout | string | number) => {
    timers.delete(timer);
    realClear(timer);
  }) as typeof clearTimeout;
  const onSocket = (message: unknown) => sockets.push((message as { socket: Socket }).socket);
  diagnostics.subscribe('net.client.socket', onSocket);
  const restore = () => {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
    diagnostics.unsubscribe('net.client.socket', onSocket);
  };
  t.teardown(restore);
  return { timers, sockets, restore };
}

// Serial: it patches the global timers and watches every socket of the process.
test.serial('stop cancels timers and in-flight checks and leaves no socket open', async (t) => {
  const { origin: hung, control } = await healthOrigin(t);
  control.hang = true;
  const { origin: live } = await healthOrigin(t);
  const { checker } = harness(t);
  const watched = watchResources(t);
  checker.update([target(hung.url, settings({ timeoutMs: 5000 })), target(live.url)]);
  await until(() => hung.heads >= 1 && live.requests.length >= 2, 'a check in flight and a check scheduled');
  t.true(watched.timers.size >= 2, 'the watch sees the checker\'s timers');
  const started = Date.now();
  await checker.stop();
  t.true(Date.now() - started < 1000, 'stop does not wait for the check timeout');
  t.is(watched.timers.size, 0, 'no timer of the checker is pending');
  t.true(watched.sockets.length >= 3);
  t.deepEqual(watched.sockets.filter((s) => !s.closed), [], 'every check connection is closed when stop resolves');
  watched.restore();
  await until(() => hung.sockets.size === 0 && live.sockets.size === 0, 'the origins to see every connection closed', 1000);
  const seen = [hung.heads, live.heads];
  checker.update([target(live.url)]);
  t.deepEqual(checker.state(), [], 'updates after stop are ignored');
  await delay(200);
  t.deepEqual([hung.heads, live.heads], seen, 'no check after stop');
});

test('a forgotten checker does not keep the process alive', async (t) => {
  const { origin } = await healthOrigin(t);
  const module = pathToFileURL(new URL('../ts/health/checker.ts', import.meta.url).pathname).href;
  // The child checks once right away, then has a 5 s timer pending: it must exit long before that.
  const script = [
    `import { HealthChecker } from ${JSON.stringify(module)};`,
    `const checker = new HealthChecker({ onChange() {}, random: () => 0, logger: { level: 'off', debug() {}, info() {}, warn() {}, error() {} } });`,
    `checker.update([{ upstream: 'app', url: ${JSON.stringify(origin.url)}, settings: { path: '/health', intervalMs: 5000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 1 } }]);`,
    'const started = performance.now();',
    "process.on('exit', () => process.stdout.write(String(Math.round(performance.now() - started))));",
    'setTimeout(() => {}, 300);', // the program's own work, during which the first check runs
  ].join('\n');
  const child = spawn(process.execPath, ['--import=tsx/esm', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const timer = setTimeout(() => child.kill(), 8000);
  const code = await exited;
  clearTimeout(timer);
  t.is(code, 0, stderr);
  t.true(Number(stdout) < 2500, `the child exited ${stdout} ms after starting the checker, not at its next check`);
  t.is(origin.requests.length, 1, 'the checker ran in the child');
});
