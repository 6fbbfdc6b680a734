/** The `gatehouse` command as an operator uses it: `node bin/gatehouse.js ...` in a child process. */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectLogLines, type LogLine } from './helpers/logs.js';
import { closedPort, startOrigin, type Origin } from './helpers/origin.js';
import { engineBuildInfo, hostPlatform, platformOfTriple } from '../ts/native.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin', 'gatehouse.js');

// ---------------------------------------------------------------------------------------------
// Processes

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}


interface Gatehouse {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** stderr lines that parsed as JSON objects, in order. */
  logs: LogLine[];
  exited: Promise<Exit>;
  /** Waits for a log line (at index `from` or later) matching `match`. */
  waitForLog(what: string, match: (l: LogLine) => boolean, from?: number, timeoutMs?: number): Promise<LogLine>;
  /** Waits until stderr matches `pattern`. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

/** Spawns `node bin/gatehouse.js ...args`; the process is killed at teardown if still running. */
function gatehouse(t: ExecutionContext, args: string[]): Gatehouse {
  const child = spawn(process.execPath, [bin, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  const logs = collectLogLines(child.stderr, (s) => (err += s));
  let done: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.on('close', (code, signal) => {
      done = { code, signal };
      resolve(done);
    });
  });
  const describe = () => `\n--- stderr ---\n${err}\n--- stdout ---\n${out}`;
  const poll = async <T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = probe();
      if (value !== undefined) return value;
      if (done) throw new Error(`gatehouse exited (${JSON.stringify(done)}) before ${what}${describe()}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${describe()}`);
      await delay(20);
    }
  };
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    logs,
    exited,
    waitForLog: (what, match, from = 0, timeoutMs = 20_000) => poll(what, () => logs.slice(from).find(match), timeoutMs),
    waitForStderr: (pattern, timeoutMs = 20_000) => poll(`stderr matching ${String(pattern)}`, () => err.match(pattern) ?? undefined, timeoutMs),
  };
}

/** Runs a command to completion (upper bound `timeoutMs`). */
async function run(t: ExecutionContext, args: string[], timeoutMs = 30_000): Promise<Exit & { stdout: string; stderr: string }> {
  const g = gatehouse(t, args);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gatehouse ${args.join(' ')} did not exit within ${timeoutMs} ms\n${g.stderr()}`)), timeoutMs);
  });
  try {
    const exit = await Promise.race([g.exited, timeout]);
    return { ...exit, stdout: g.stdout(), stderr: g.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

async function exitWithin(g: Gatehouse, timeoutMs = 20_000): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gatehouse did not exit within ${timeoutMs} ms\n${g.stderr()}`)), timeoutMs);
  });
  try {
    return await Promise.race([g.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts `gatehouse start -c file` and waits until it serves; returns the bound listener and admin addresses. */
async function startGatehouse(t: ExecutionContext, file: string): Promise<{ g: Gatehouse; proxy: string; admin: string }> {
  const g = gatehouse(t, ['start', '-c', file]);
  const admin = await g.waitForLog('"admin listening"', (l) => l.message === 'admin listening' && typeof l.address === 'string');
  // The control plane logs "listening" last, just before it installs its signal handlers.
  const listening = await g.waitForLog(
    '"listening" from the control plane',
    (l) => l.message === 'listening' && typeof l.bound === 'string' && l.target === 'gatehouse::control',
  );
  return { g, proxy: `http://${String(listening.bound)}`, admin: `http://${String(admin.address)}` };
}

// ---------------------------------------------------------------------------------------------
// Network

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A GET on a fresh connection (no keep-alive, so nothing lingers to hold up a drain). */
function get(url: string, timeoutMs = 20_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** `'connected'`, or the error code of a failed connect (`'ECONNREFUSED'` when nothing listens). */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(5000, () => {
      socket.destroy();
      resolve('timeout');
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** Polls until connecting to `port` is refused; returns how it went (upper bound `timeoutMs`). */
async function untilRefused(port: number, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    last = await tryConnect(port);
    if (last === 'ECONNREFUSED') return last;
    await delay(20);
  }
  return last;
}

const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

// ---------------------------------------------------------------------------------------------
// Fixtures

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A valid YAML configuration proxying everything to `backend`. */
function goodYaml(backend: string, listener = '127.0.0.1:0', admin = '127.0.0.1:0'): string {
  return [
    'workers: 1',
    'listeners:',
    `  - address: ${listener}`,
    'upstreams:',
    '  app:',
    '    backends:',
    `      - url: ${backend}`,
    `admin: { address: "${admin}" }`,
    'log: { level: info, access_log: "off" }',
    '',
  ].join('\n');
}

/** Two problems: a bad second backend URL and a misspelt limit. */
function badYaml(backend: string, listener = '127.0.0.1:0', admin = '127.0.0.1:0'): string {
  return [
    'workers: 1',
    'listeners:',
    `  - address: ${listener}`,
    'upstreams:',
    '  app:',
    '    backends:',
    `      - url: ${backend}`,
    '      - url: "not a url"',
    'limits:',
    '  max_header_sise: 16kb',
    `admin: { address: "${admin}" }`,
    'log: { level: info, access_log: "off" }',
    '',
  ].join('\n');
}

/** An origin that answers with its own name, so a response shows which origin served it. */
function namedOrigin(name: string): Promise<Origin> {
  return startOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-origin': name });
    res.end(name);
  });
}

const lines = (text: string): string[] => text.split('\n').filter((l) => l.trim() !== '');

// ---------------------------------------------------------------------------------------------
// Tests

test('--version prints the package version, then the engine build', async (t) => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  const { pgo } = await engineBuildInfo();
  t.true(['none', 'applied', 'instrumented'].includes(pgo), pgo);
  for (const flag of ['--version', '-V']) {
    const r = await run(t, [flag]);
    t.is(r.code, 0, r.stderr);
    const [first, engine, node] = lines(r.stdout);
    t.is(first, pkg.version, 'the first line is the bare package version');
    const m = /^engine: (\S+) (\S+) (release|debug|dist)( pgo| pgo-instrumented)?( \(rustc .+\))?$/.exec(engine ?? '');
    t.truthy(m, engine);
    t.is(m?.[1], pkg.version);
    t.is(m?.[4], { none: undefined, applied: ' pgo', instrumented: ' pgo-instrumented' }[pgo], 'says whether it is profile-guided');
    t.is(platformOfTriple(m?.[2] ?? ''), hostPlatform(), 'built for this machine');
    t.is(node, `node: ${process.version} ${hostPlatform()}`);
  }
});

test('--help lists the commands', async (t) => {
  const r = await run(t, ['--help']);
  t.is(r.code, 0, r.stderr);
  for (const command of ['start', 'validate', 'demo']) t.regex(r.stdout, new RegExp(`^\\s+${command}\\b`, 'm'), command);
});

test('validate: a good file prints ok and exits 0', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'good.yaml');
  await writeFile(file, goodYaml('http://127.0.0.1:9001'));
  const r = await run(t, ['validate', '-c', file]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), 'ok');
  const json = join(dir, 'good.json');
  await writeFile(
    json,
    JSON.stringify({ listeners: [{ address: '127.0.0.1:0' }], upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9001' }] } } }),
  );
  const j = await run(t, ['validate', '--config', json]);
  t.is(j.code, 0, j.stderr);
  t.is(j.stdout.trim(), 'ok');
});

test('validate: a bad file exits 1 with one line per problem, key path first', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'bad.yaml');
  await writeFile(file, badYaml('http://127.0.0.1:9001'));
  const r = await run(t, ['validate', '-c', file]);
  t.is(r.code, 1);
  t.notRegex(r.stdout, /\bok\b/);
  const problems = lines(r.stdout + r.stderr).sort();
  t.is(problems.length, 2, problems.join('\n'));
  t.true(problems[0]?.startsWith('limits.max_header_sise: '), problems[0]);
  t.true(problems[1]?.startsWith('upstreams.app.backends[1].url: '), problems[1]);

  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, 'listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  app: [unclosed\n');
  const b = await run(t, ['validate', '-c', broken]);
  t.is(b.code, 1);
  t.regex(b.stdout + b.stderr, /^line \d+: cannot parse/m);

  const missing = await run(t, ['validate', '-c', join(dir, 'missing.yaml')]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /not found/);
});

test('start: a bad file exits 1 with the problems on stderr and nothing listens', async (t) => {
  const dir = await tempDir(t);
  const listenPort = await closedPort();
  const adminPort = await closedPort();
  const file = join(dir, 'bad.yaml');
  await writeFile(file, badYaml('http://127.0.0.1:9001', `127.0.0.1:${listenPort}`, `127.0.0.1:${adminPort}`));
  const r = await run(t, ['start', '-c', file]);
  t.is(r.code, 1, r.stderr);
  const problems = lines(r.stderr);
  t.true(problems.some((l) => l.startsWith('upstreams.app.backends[1].url: ')), r.stderr);
  t.true(problems.some((l) => l.startsWith('limits.max_header_sise: ')), r.stderr);
  t.false(r.stderr.includes('"listening"'), 'no listener was started');
  t.is(await tryConnect(listenPort), 'ECONNREFUSED', 'the configured listener address is not listening');
  t.is(await tryConnect(adminPort), 'ECONNREFUSED', 'the admin address is not listening');
});

test('start: a port that cannot be bound exits 1 and leaves nothing listening', async (t) => {
  const busy: Server = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const busyPort = (busy.address() as { port: number }).port;
  const dir = await tempDir(t);

  // The listener's port is taken: the admin port must not be left open.
  const adminPort = await closedPort();
  const listenerBusy = join(dir, 'listener-busy.yaml');
  await writeFile(listenerBusy, goodYaml('http://127.0.0.1:9001', `127.0.0.1:${busyPort}`, `127.0.0.1:${adminPort}`));
  const a = await run(t, ['start', '-c', listenerBusy]);
  t.is(a.code, 1, a.stderr);
  t.regex(a.stderr, /^listeners\[0\]\.address: /m);
  t.is(await tryConnect(adminPort), 'ECONNREFUSED');

  // The admin port is taken: the proxy listener must not be left open.
  const listenPort = await closedPort();
  const adminBusy = join(dir, 'admin-busy.yaml');
  await writeFile(adminBusy, goodYaml('http://127.0.0.1:9001', `127.0.0.1:${listenPort}`, `127.0.0.1:${busyPort}`));
  const b = await run(t, ['start', '-c', adminBusy]);
  t.is(b.code, 1, b.stderr);
  t.regex(b.stderr, /admin\.address/);
  t.is(await tryConnect(listenPort), 'ECONNREFUSED');
});

test('start: serves, SIGHUP reloads the file, a bad reload keeps the old configuration', async (t) => {
  const first = await namedOrigin('first');
  const second = await namedOrigin('second');
  t.teardown(async () => { await first.close(); await second.close(); });
  const dir = await tempDir(t);
  const file = join(dir, 'good.yaml');
  await writeFile(file, goodYaml(first.url));
  const { g, proxy, admin } = await startGatehouse(t, file);

  const r1 = await get(`${proxy}/one`);
  t.is(r1.status, 200);
  t.is(r1.body, 'first');
  t.is(first.requests.at(-1)?.url, '/one');

  // Route to the second origin and reload.
  await writeFile(file, goodYaml(second.url));
  let mark = g.logs.length;
  g.child.kill('SIGHUP');
  await g.waitForLog('"configuration reloaded"', (l) => l.message === 'configuration reloaded', mark);
  for (let i = 0; i < 3; i++) {
    const r = await get(`${proxy}/two/${i}`);
    t.is(r.status, 200);
    t.is(r.body, 'second');
  }
  t.is(first.requests.length, 1, 'the first origin gets nothing after the reload');
  t.is(second.requests.length, 3);

  // An invalid file is rejected: error lines name the key path, the previous config keeps serving.
  await writeFile(file, badYaml(first.url));
  mark = g.logs.length;
  g.child.kill('SIGHUP');
  const rejected = await g.waitForLog(
    'an error naming upstreams.app.backends[1].url',
    (l) => l.level === 'ERROR' && JSON.stringify(l).includes('upstreams.app.backends[1].url'),
    mark,
  );
  t.is(rejected.path, 'upstreams.app.backends[1].url');
  await g.waitForLog('an error naming limits.max_header_sise', (l) => l.level === 'ERROR' && JSON.stringify(l).includes('limits.max_header_sise'), mark);
  t.is(g.child.exitCode, null, 'still running');
  const r3 = await get(`${proxy}/three`);
  t.is(r3.status, 200);
  t.is(r3.body, 'second', 'the previous configuration keeps serving');
  t.is(first.requests.length, 1);

  const health = await get(`${admin}/healthz`);
  t.is(health.status, 200);

  g.child.kill('SIGTERM');
  const exit = await exitWithin(g);
  t.deepEqual(exit, { code: 0, signal: null }, g.stderr());
});

// The engine's threads do not hold Node's event loop open; without an admin server nothing else did.
test('start: without an admin listener it keeps serving until SIGTERM', async (t) => {
  const origin = await namedOrigin('only');
  t.teardown(() => origin.close());
  const dir = await tempDir(t);
  const file = join(dir, 'no-admin.yaml');
  await writeFile(file, goodYaml(origin.url).replace(/^admin: .*\n/m, ''));
  const g = gatehouse(t, ['start', '-c', file]);
  const listening = await g.waitForLog('"listening"', (l) => l.message === 'listening' && l.target === 'gatehouse::control');
  await delay(300);
  const r = await get(`http://${String(listening.bound)}/`);
  t.is(r.body, 'only');
  g.child.kill('SIGTERM');
  t.deepEqual(await exitWithin(g), { code: 0, signal: null }, g.stderr());
});

test('start: SIGTERM lets the in-flight request finish, refuses new connections, exits 0', async (t) => {
  // The origin answers ~700 ms after the request arrives, and not before the test has checked
  // the draining state (so the checks below never race the response).
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const fallback = setTimeout(release, 15_000);
  t.teardown(() => clearTimeout(fallback));
  const origin = await startOrigin((_req, res) => {
    void Promise.all([delay(700), released]).then(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('slow done');
    });
  });
  t.teardown(() => origin.close());
  const dir = await tempDir(t);
  const file = join(dir, 'good.yaml');
  await writeFile(file, goodYaml(origin.url));
  const { g, proxy, admin } = await startGatehouse(t, file);
  const port = portOf(proxy);
  t.is(await tryConnect(port), 'connected');

  const slow = get(`${proxy}/slow`);
  slow.catch(() => undefined); // awaited below; keep an early failure from being unhandled
  const deadline = Date.now() + 10_000;
  while (origin.heads === 0 && Date.now() < deadline) await delay(10);
  t.is(origin.heads, 1, 'the slow request reached the origin');

  const mark = g.logs.length;
  g.child.kill('SIGTERM');
  await g.waitForLog('"draining"', (l) => l.message === 'draining', mark);
  t.is(await untilRefused(port), 'ECONNREFUSED', 'new connections are refused while draining');
  const health = await get(`${admin}/healthz`);
  t.is(health.status, 503, '/healthz answers 503 while draining');

  release();
  const r = await slow;
  t.is(r.status, 200);
  t.is(r.body, 'slow done');
  const exit = await exitWithin(g);
  t.deepEqual(exit, { code: 0, signal: null }, g.stderr());
  t.is(await tryConnect(port), 'ECONNREFUSED');
});

test('demo: prints the proxy URL, proxies to a demo origin, SIGINT exits 0', async (t) => {
  const g = gatehouse(t, ['demo', '--port', '0', '--admin-port', '0', '--access-log', 'off']);
  const m = await g.waitForStderr(/proxy:\s+(http:\/\/[^\s/]+)/);
  const proxy = m[1] ?? '';
  t.regex(proxy, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.not(portOf(proxy), 0);
  const r = await get(`${proxy}/hello`);
  t.is(r.status, 200);
  const body = JSON.parse(r.body) as { origin?: unknown };
  t.is(typeof body.origin, 'string');
  t.truthy(body.origin);
  g.child.kill('SIGINT');
  const exit = await exitWithin(g);
  t.deepEqual(exit, { code: 0, signal: null }, g.stderr());
});
