/** Configuration validation through the public API: units, key paths, files, relative paths, schema.json. */
import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, configJsonSchema, loadConfigFile, start, validateConfig, type ConfigProblem } from '../ts/index.js';
import { createLogger } from '../ts/log.js';
import { startOrigin } from './helpers/origin.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** A minimal valid configuration, with `extra` merged over the top level. */
function base(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }] } },
    ...extra,
  };
}

/** The problems `validateConfig` reports for `input`; fails the test when it does not throw a ConfigError. */
function problemsOf(t: ExecutionContext, input: unknown): ConfigProblem[] {
  const error = t.throws(() => validateConfig(input), { instanceOf: ConfigError });
  return error?.problems ?? [];
}

const paths = (problems: ConfigProblem[]): string[] => problems.map((p) => p.path);

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('durations normalise to milliseconds', (t) => {
  const { config } = validateConfig(
    base({
      upstreams: {
        app: {
          backends: [{ url: 'http://127.0.0.1:9001' }],
          pool: { idle_timeout: '5m', connect_timeout: '250ms', queue_timeout: 1500 },
          timeouts: { response: '10s' },
        },
      },
      limits: { header_timeout: '250ms', keepalive_timeout: '5m', body_timeout: 42 },
    }),
  );
  const app = config.upstreams.app;
  t.truthy(app);
  t.is(app?.pool.idle_timeout, 300_000);
  t.is(app?.pool.connect_timeout, 250);
  t.is(app?.pool.queue_timeout, 1500, 'a number is milliseconds');
  t.is(app?.timeouts.response, 10_000);
  t.is(config.limits.header_timeout, 250);
  t.is(config.limits.keepalive_timeout, 300_000);
  t.is(config.limits.body_timeout, 42);
});

test('sizes normalise to bytes', (t) => {
  const { config } = validateConfig(base({ limits: { max_header_size: '16kb', max_body_size: '64mb' } }));
  t.is(config.limits.max_header_size, 16 * 1024);
  t.is(config.limits.max_body_size, 64 * 1024 * 1024);
  const bytes = validateConfig(base({ limits: { max_header_size: 8192, max_body_size: 1000 } })).config;
  t.is(bytes.limits.max_header_size, 8192, 'a number is bytes');
  t.is(bytes.limits.max_body_size, 1000);
});

test('defaults are filled in, already normalised', (t) => {
  const { config } = validateConfig(base());
  t.is(config.limits.header_timeout, 10_000);
  t.is(config.limits.max_header_size, 16 * 1024);
  t.is(config.limits.max_body_size, 10 * 1024 * 1024);
  t.is(config.limits.keepalive_timeout, 60_000);
  t.is(config.upstreams.app?.pool.connect_timeout, 2000);
  t.is(config.upstreams.app?.timeouts.response, 30_000);
  t.is(config.upstreams.app?.backends[0]?.weight, 1);
  t.deepEqual(config.routes, []);
  t.is(config.log.access_log, 'stdout');
});

test('malformed durations and sizes are errors at their key path', (t) => {
  const problems = problemsOf(
    t,
    base({
      upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }], pool: { connect_timeout: '2 seconds' } } },
      limits: { header_timeout: '10x', max_body_size: 'huge', max_header_size: -1 },
    }),
  );
  t.deepEqual(
    paths(problems).sort(),
    ['limits.header_timeout', 'limits.max_body_size', 'limits.max_header_size', 'upstreams.app.pool.connect_timeout'],
    JSON.stringify(problems),
  );
  const timeout = problems.find((p) => p.path === 'limits.header_timeout');
  t.regex(timeout?.message ?? '', /10x/, 'the message quotes the bad value');
});

test('an invalid backend URL names its full path', (t) => {
  const problems = problemsOf(
    t,
    base({ upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }, { url: 'not a url' }] } } }),
  );
  t.deepEqual(paths(problems), ['upstreams.app.backends[1].url']);
  t.regex(problems[0]?.message ?? '', /not a url/);
  const withPath = problemsOf(t, base({ upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001/api' }] } } }));
  t.deepEqual(paths(withPath), ['upstreams.app.backends[0].url']);
  const ftp = problemsOf(t, base({ upstreams: { app: { backends: [{ url: 'ftp://127.0.0.1:21' }] } } }));
  t.deepEqual(paths(ftp), ['upstreams.app.backends[0].url']);
});

test('unknown keys are reported with their path', (t) => {
  const nested = problemsOf(t, base({ limits: { max_header_sise: '16kb' } }));
  t.deepEqual(paths(nested), ['limits.max_header_sise']);
  t.regex(nested[0]?.message ?? '', /unknown key/);
  const top = problemsOf(t, base({ listners: [] }));
  t.deepEqual(paths(top), ['listners']);
  const deep = problemsOf(t, base({ upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001', wieght: 2 }] } } }));
  t.deepEqual(paths(deep), ['upstreams.app.backends[0].wieght']);
});

test('a route naming a missing upstream is an error at routes[i].upstream', (t) => {
  const problems = problemsOf(t, base({ routes: [{ path_prefix: '/api', upstream: 'nope' }] }));
  t.deepEqual(paths(problems), ['routes[0].upstream']);
  t.regex(problems[0]?.message ?? '', /nope/);
  const second = problemsOf(t, base({ routes: [{ upstream: 'app' }, { upstream: 'missing' }] }));
  t.deepEqual(paths(second), ['routes[1].upstream']);
});

test('two upstreams without routes is an error at routes', (t) => {
  const problems = problemsOf(
    t,
    base({
      upstreams: {
        a: { backends: [{ url: 'http://127.0.0.1:9001' }] },
        b: { backends: [{ url: 'http://127.0.0.1:9002' }] },
      },
    }),
  );
  t.deepEqual(paths(problems), ['routes']);
  // One upstream needs no routes; two with routes are fine.
  t.notThrows(() => validateConfig(base()));
  t.notThrows(() =>
    validateConfig(
      base({
        upstreams: { a: { backends: [{ url: 'http://127.0.0.1:9001' }] }, b: { backends: [{ url: 'http://127.0.0.1:9002' }] } },
        routes: [{ path_prefix: '/a', upstream: 'a' }, { upstream: 'b' }],
      }),
    ),
  );
});

test('duplicate listener addresses are an error at the second one', (t) => {
  const problems = problemsOf(
    t,
    base({ listeners: [{ address: '127.0.0.1:8080' }, { address: '127.0.0.1:8081' }, { address: '127.0.0.1:8080' }] }),
  );
  t.deepEqual(paths(problems), ['listeners[2].address']);
  t.regex(problems[0]?.message ?? '', /listeners\[0\]/);
});

test('several problems in one configuration are all reported', (t) => {
  const problems = problemsOf(t, {
    listeners: [{ address: '127.0.0.1:99999' }],
    upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001', weight: -1 }, { url: 'bogus' }] } },
    limits: { max_header_sise: 1, header_timeout: 'soon' },
    log: { level: 'loud' },
  });
  t.deepEqual(
    paths(problems).sort(),
    [
      'limits.header_timeout',
      'limits.max_header_sise',
      'listeners[0].address',
      'log.level',
      'upstreams.app.backends[0].weight',
      'upstreams.app.backends[1].url',
    ],
    JSON.stringify(problems),
  );
});

test('cross-field problems are reported together with field problems', (t) => {
  const problems = problemsOf(t, {
    listeners: [{ address: '127.0.0.1:8080' }, { address: '127.0.0.1:8080' }],
    upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }, { url: 'bogus' }] } },
    routes: [{ upstream: 'nope' }],
    limits: { max_header_sise: 1 },
  });
  t.deepEqual(
    paths(problems).sort(),
    ['limits.max_header_sise', 'listeners[1].address', 'routes[0].upstream', 'upstreams.app.backends[1].url'],
    JSON.stringify(problems),
  );
});

// validateConfig promises "a ConfigError listing every problem": a malformed duration or size must
// not hide the cross-field checks (route targets, duplicate listeners) until a second round.
test('cross-field problems are reported even when a duration is malformed', (t) => {
  const problems = problemsOf(t, {
    listeners: [{ address: '127.0.0.1:8080' }, { address: '127.0.0.1:8080' }],
    upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }] } },
    routes: [{ upstream: 'nope' }],
    limits: { header_timeout: 'soon' },
  });
  t.deepEqual(
    paths(problems).sort(),
    ['limits.header_timeout', 'listeners[1].address', 'routes[0].upstream'],
    JSON.stringify(problems),
  );
});

test('YAML and JSON files both load, with the same result', async (t) => {
  const dir = await tempDir(t);
  const yamlFile = join(dir, 'gatehouse.yaml');
  const ymlFile = join(dir, 'gatehouse.yml');
  const jsonFile = join(dir, 'gatehouse.json');
  const yaml = [
    'workers: 1',
    'listeners:',
    '  - address: 127.0.0.1:0',
    'upstreams:',
    '  app:',
    '    backends:',
    '      - { url: "http://127.0.0.1:9001", weight: 3 }',
    '    pool: { connect_timeout: 250ms }',
    'limits:',
    '  max_header_size: 16kb',
    '  header_timeout: 5m',
    '',
  ].join('\n');
  await writeFile(yamlFile, yaml);
  await writeFile(ymlFile, yaml);
  await writeFile(
    jsonFile,
    JSON.stringify({
      workers: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001', weight: 3 }], pool: { connect_timeout: '250ms' } } },
      limits: { max_header_size: '16kb', header_timeout: '5m' },
    }),
  );
  const fromYaml = await loadConfigFile(yamlFile);
  const fromYml = await loadConfigFile(ymlFile);
  const fromJson = await loadConfigFile(jsonFile);
  t.is(fromYaml.baseDir, dir);
  t.is(fromYaml.file, yamlFile);
  t.is(fromJson.file, jsonFile);
  t.is(fromYaml.config.upstreams.app?.backends[0]?.weight, 3);
  t.is(fromYaml.config.upstreams.app?.pool.connect_timeout, 250);
  t.is(fromYaml.config.limits.max_header_size, 16 * 1024);
  t.is(fromYaml.config.limits.header_timeout, 300_000);
  t.deepEqual(fromJson.config, fromYaml.config);
  t.deepEqual(fromYml.config, fromYaml.config);
});

test('problems in a file carry their key path and the file name', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'bad.yaml');
  await writeFile(
    file,
    [
      'listeners:',
      '  - address: 127.0.0.1:0',
      'upstreams:',
      '  app:',
      '    backends:',
      '      - url: http://127.0.0.1:9001',
      '      - url: "not a url"',
      'limits:',
      '  max_header_sise: 16kb',
      '',
    ].join('\n'),
  );
  const error = await t.throwsAsync(loadConfigFile(file), { instanceOf: ConfigError });
  t.deepEqual(paths(error?.problems ?? []).sort(), ['limits.max_header_sise', 'upstreams.app.backends[1].url']);
  t.true(error?.message.includes(file), 'the message names the file');
  t.is(error?.code, 'ERR_GATEHOUSE_CONFIG');
});

test('an unparseable YAML file gives a clear error', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'broken.yaml');
  await writeFile(file, 'listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  app: [unclosed\n');
  const error = await t.throwsAsync(loadConfigFile(file), { instanceOf: ConfigError });
  t.is(error?.problems.length, 1);
  const problem = error?.problems[0];
  t.regex(problem?.path ?? '', /^line \d+$/, 'the path names the line');
  t.regex(problem?.message ?? '', /cannot parse/);
  t.true(error?.message.includes(file), 'the message names the file');

  const json = join(dir, 'broken.json');
  await writeFile(json, '{"listeners": [');
  const jsonError = await t.throwsAsync(loadConfigFile(json), { instanceOf: ConfigError });
  t.regex(jsonError?.problems[0]?.message ?? '', /cannot parse/);

  const missing = await t.throwsAsync(loadConfigFile(join(dir, 'missing.yaml')), { instanceOf: ConfigError });
  t.regex(missing?.problems[0]?.message ?? '', /not found/);

  const other = join(dir, 'gatehouse.toml');
  await writeFile(other, 'workers = 1\n');
  const otherError = await t.throwsAsync(loadConfigFile(other), { instanceOf: ConfigError });
  t.regex(otherError?.problems[0]?.message ?? '', /extension/);
});

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('a relative access_log path resolves against the config file folder', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const dir = await tempDir(t);
  await mkdir(join(dir, 'logs'));
  const file = join(dir, 'gatehouse.yaml');
  await writeFile(
    file,
    [
      'workers: 1',
      'listeners:',
      '  - address: 127.0.0.1:0',
      'upstreams:',
      '  app:',
      '    backends:',
      `      - url: ${origin.url}`,
      'log:',
      '  level: error',
      '  access_log: logs/access.log',
      '',
    ].join('\n'),
  );
  t.not(process.cwd(), dir);
  const gateway = await start(file, { logger: createLogger('error'), drainTimeoutMs: 5000 });
  t.teardown(() => gateway.close());
  const bound = gateway.addresses[0]?.bound ?? '';
  const r = await get(`http://${bound}/logged/path?q=1`, { 'x-request-id': 'config-test-rid-1' });
  t.is(r.status, 200);
  t.is(origin.requests.length, 1);

  const logFile = join(dir, 'logs', 'access.log');
  const line = await waitFor('an access log line', async () => {
    if (!existsSync(logFile)) return undefined;
    const text = await readFile(logFile, 'utf8');
    return text.split('\n').find((l) => l.includes('config-test-rid-1'));
  });
  const entry = JSON.parse(line) as Record<string, unknown>;
  t.is(entry.method, 'GET');
  t.regex(String(entry.path), /^\/logged\/path/);
  t.is(entry.status, 200);
  t.is(entry.request_id, 'config-test-rid-1');
});

test('config/schema.json is not stale', (t) => {
  const committed = JSON.parse(readFileSync(join(repoRoot, 'config', 'schema.json'), 'utf8')) as unknown;
  // What scripts/gen-schema.js writes, round-tripped through JSON like the file.
  const fresh = JSON.parse(JSON.stringify({ ...configJsonSchema(), title: 'gatehouse configuration' })) as unknown;
  t.deepEqual(committed, fresh, 'config/schema.json is stale: run `npm run schema` (after `npx tsc -p tsconfig.json`) and commit it');
});
