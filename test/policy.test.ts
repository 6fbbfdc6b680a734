/**
 * TypeScript balancing policies (`balance: { module: FILE }`) through the real proxy: the two
 * shipped examples, modules written at test time, and every way a policy can go wrong.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from 'node:http';
import { proxyConfig } from './helpers/proxy.js';
import { namedOrigin, send, until, type Named } from './helpers/client.js';
import { ConfigError, createLogger, start, type Gateway } from '../ts/index.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';

const policies = fileURLToPath(new URL('../config/policies/', import.meta.url));
const CANARY = join(policies, 'canary.ts');
const LATENCY_WEIGHTS = join(policies, 'latency-weights.ts');

type Balance = GatehouseConfigInput['upstreams'][string]['balance'];

interface LogLine {
  level: string;
  message: string;
  [field: string]: unknown;
}

interface Fixture {
  gateway: Gateway;
  url: string;
  origins: Named[];
  lines: LogLine[];
}

/** Writes `source` as a module file in a temp folder removed after the test; returns its path. */
function writeModule(t: ExecutionContext, source: string, name = 'policy.ts'): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, name);
  writeFileSync(file, source);
  return file;
}

/** Origins named after `names`, a gateway balancing over them with `balance`, and its captured log. */
async function setup(t: ExecutionContext, names: string[], balance: Balance, delays: Record<string, number> = {}): Promise<Fixture> {
  const origins = await Promise.all(names.map((n) => namedOrigin(n, { delayMs: delays[n] })));
  t.teardown(() => Promise.all(origins.map((o) => o.close())));
  const config = proxyConfig([]);
  config.upstreams = { app: { balance, backends: origins.map((o) => ({ url: o.url })) } };
  const lines: LogLine[] = [];
  const logger = createLogger('error', (l) => lines.push(JSON.parse(l) as LogLine));
  const gateway = await start(config, { logger, drainTimeoutMs: 5000 });
  t.teardown(() => gateway.close());
  return { gateway, url: `http://${gateway.addresses[0]?.bound}`, origins, lines };
}

/** Sequential requests on one keep-alive connection; returns who answered each. */
async function names(url: string, paths: string[], headers: Record<string, string> = {}): Promise<string[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const out: string[] = [];
    for (const p of paths) {
      const r = await send(`${url}${p}`, { agent, headers });
      out.push(r.status === 200 ? r.body : `status ${r.status}`);
    }
    return out;
  } finally {
    agent.destroy();
  }
}

const paths = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}/${i}`);
const countOf = (list: string[]) => list.reduce<Record<string, number>>((c, n) => ({ ...c, [n]: (c[n] ?? 0) + 1 }), {});

test('the shipped canary policy sends x-canary: 1 to the last backend and the rest elsewhere', async (t) => {
  const { url, origins } = await setup(t, ['A', 'B', 'CANARY'], { module: CANARY });
  const canary = await names(url, paths('/c', 10), { 'x-canary': '1' });
  t.deepEqual(canary, Array<string>(10).fill('CANARY'));
  const cookie = await names(url, paths('/k', 3), { cookie: 'session=x; canary=1' });
  t.deepEqual(cookie, ['CANARY', 'CANARY', 'CANARY'], 'or a canary=1 cookie');
  const regular = await names(url, paths('/r', 20));
  t.false(regular.includes('CANARY'), `regular traffic stays off the canary: ${regular.join(',')}`);
  t.true(regular.every((n) => n === 'A' || n === 'B'));
  t.is(origins[2]?.traffic(), 13);
});

test('a select() that returns a Promise is awaited', async (t) => {
  const file = writeModule(
    t,
    `interface Req { headers: Record<string, string> }
     interface Backend { url: string }
     export default {
       async select(request: Req, backends: Backend[]): Promise<Backend | undefined> {
         await new Promise((resolve) => setTimeout(resolve, 2));
         return backends.find((b) => b.url === request.headers['x-target']);
       },
     };
    `,
  );
  const { url, origins, lines } = await setup(t, ['A', 'B', 'C'], { module: file });
  const order = ['C', 'A', 'C', 'B', 'B', 'A', 'C'];
  const got: string[] = [];
  for (const name of order) {
    const target = origins.find((o) => o.name === name)?.url ?? '';
    got.push(...(await names(url, ['/p'], { 'x-target': target })));
  }
  t.deepEqual(got, order);
  t.deepEqual(lines, [], 'nothing logged');
});

/** A module that misbehaves in the way the request path names. */
const MISBEHAVING = `
  export default {
    select(request: { path: string }): unknown {
      if (request.path.startsWith('/throw')) throw new Error('policy exploded');
      if (request.path.startsWith('/reject')) return Promise.reject(new Error('policy rejected'));
      if (request.path.startsWith('/unknown')) return 'http://127.0.0.1:1';
      if (request.path.startsWith('/object')) return { url: 'http://elsewhere.invalid' };
      return 42;
    },
  };
`;

for (const [kind, problem] of [
  ['/throw', /select\(\) threw: policy exploded/],
  ['/reject', /select\(\) rejected: policy rejected/],
  ['/unknown', /select\(\) returned "http:\/\/127\.0\.0\.1:1", which is not one of the offered backends/],
  ['/object', /not one of the offered backends/],
  ['/number', /select\(\) returned 42/],
] as const) {
  test(`a policy whose select() fails (${kind.slice(1)}) falls back to round robin and logs an error`, async (t) => {
    const file = writeModule(t, MISBEHAVING);
    const { url, origins, lines } = await setup(t, ['A', 'B'], { module: file });
    const got = await names(url, paths(kind, 10));
    t.deepEqual(countOf(got), { A: 5, B: 5 }, 'every request served, round robin');
    t.deepEqual(origins.map((o) => o.traffic()), [5, 5]);
    const errors = lines.filter((l) => l.level === 'ERROR');
    t.true(errors.length >= 1 && errors.length <= 2, `logged, and throttled: ${errors.length} lines`);
    t.is(errors[0]?.message, 'balancing policy failed; round robin used for the request');
    t.is(errors[0]?.upstream, 'app');
    t.regex(String(errors[0]?.problem), problem);
  });
}

test('a policy with only tune() sets weights on its interval; the fallback algorithm follows them', async (t) => {
  const file = writeModule(
    t,
    `export default {
       tuneInterval: '100ms',
       tune(snapshot: { backends: { url: string }[] }): Record<string, number> {
         const [a, b] = snapshot.backends;
         return { [a!.url]: 3, [b!.url]: 1 };
       },
     };
    `,
  );
  const { gateway, url } = await setup(t, ['A', 'B'], { module: file });
  t.deepEqual(gateway.backends().map((b) => b.weight), [1, 1], 'the configured weights until the first tune');
  await until(() => gateway.backends().map((b) => b.weight).join() === '3,1', 'tune() to apply 3:1', 3000);
  t.deepEqual(countOf(await names(url, paths('/after', 40))), { A: 30, B: 10 }, 'exactly 3:1 over whole periods');
});

test('the shipped latency-weights policy loads, and its tune() favours the faster backend', async (t) => {
  // The shipped module, as configured (its own tuneInterval is 5 s): it loads and serves.
  const shipped = await setup(t, ['A', 'B'], { module: LATENCY_WEIGHTS, fallback: 'weighted_round_robin' });
  t.deepEqual(countOf(await names(shipped.url, paths('/s', 4))), { A: 2, B: 2 });
  t.deepEqual(shipped.lines, []);

  // The same module with a shorter interval, so that a test can watch a couple of its runs.
  const fast = writeModule(
    t,
    `import policy from ${JSON.stringify(LATENCY_WEIGHTS)};
     export default { ...policy, tuneInterval: '100ms' };
    `,
  );
  const { gateway, url } = await setup(t, ['SLOW', 'FAST'], { module: fast }, { SLOW: 80 });
  const [slowUrl, fastUrl] = gateway.backends().map((b) => b.url);
  // Until both have been measured (tune() may already be running meanwhile).
  const measured = () => gateway.backends().every((b) => b.latencyEwmaMs > 0);
  for (let i = 0; i < 50 && !measured(); i++) await names(url, [`/m/${i}`]);
  t.true(measured(), 'both backends have a latency sample');
  const weight = (u: string | undefined) => gateway.backends().find((b) => b.url === u)?.weight ?? 0;
  await until(() => weight(fastUrl) > weight(slowUrl), 'the faster backend to get the higher weight', 3000);
  await new Promise((r) => setTimeout(r, 250)); // a couple more intervals: the verdict holds
  t.true(weight(fastUrl) > weight(slowUrl), `fast ${weight(fastUrl)} vs slow ${weight(slowUrl)}`);
  t.is(weight(slowUrl), 1, '100 / 80 ms rounds to 1');
  const after = countOf(await names(url, paths('/a', 20)));
  t.true((after.FAST ?? 0) > (after.SLOW ?? 0), JSON.stringify(after));
});

test('a policy module that does not exist fails start with a ConfigError at upstreams.app.balance.module', async (t) => {
  const config = proxyConfig(['http://127.0.0.1:1']);
  config.upstreams = { app: { balance: { module: join(tmpdir(), 'no-such-dir', 'missing-policy.ts') }, backends: [{ url: 'http://127.0.0.1:1' }] } };
  const error = await t.throwsAsync(start(config), { instanceOf: ConfigError });
  t.deepEqual(error?.problems.map((p) => p.path), ['upstreams.app.balance.module']);
  t.regex(error?.problems[0]?.message ?? '', /cannot load policy module/);

  const empty = writeModule(t, 'export default { name: "nothing to call" };\n');
  config.upstreams = { app: { balance: { module: empty }, backends: [{ url: 'http://127.0.0.1:1' }] } };
  const e2 = await t.throwsAsync(start(config), { instanceOf: ConfigError });
  t.deepEqual(e2?.problems.map((p) => p.path), ['upstreams.app.balance.module']);
  t.regex(e2?.problems[0]?.message ?? '', /exports neither select\(\) nor tune\(\)/);
});
