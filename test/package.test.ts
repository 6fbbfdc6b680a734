/**
 * The npm packages as a user gets them: the tarballs `npm run package` writes, installed into an
 * empty project with no Rust toolchain on PATH, then used from there — the CLI, the proxy, and the
 * typed library from TypeScript. Packs the current build (lib/ and the addon in bindings/), without
 * rebuilding; `npm run package` itself builds first.
 */
import test from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { embedOutputProblems } from './helpers/examples.js';
import { startOrigin } from './helpers/origin.js';
import { hostPlatform } from '../ts/native.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; version: string; napi: { targets: string[] } };
const platformPackage = `${pkg.name}-${hostPlatform()}`;
const run = promisify(execFile);

interface Packed {
  kind: 'main' | 'platform';
  name: string;
  file: string;
  size: number;
  files: string[];
}

const work = mkdtempSync(join(tmpdir(), 'gatehouse-install-'));
const project = join(work, 'project');
let packed: Packed[] = [];
test.after.always(() => rmSync(work, { recursive: true, force: true }));

/**
 * The environment of a user without Rust: every PATH folder holding cargo or rustc removed, and
 * stubs that fail loudly first, in case anything tried to build from source anyway.
 */
function userEnv(): NodeJS.ProcessEnv {
  const stubs = join(work, 'no-rust');
  mkdirSync(stubs, { recursive: true });
  for (const tool of ['cargo', 'rustc', 'rustup']) writeFileSync(join(stubs, tool), `#!/bin/sh\necho "${tool} must not run during an npm install" >&2\nexit 127\n`, { mode: 0o755 });
  const nodeDir = dirname(process.execPath);
  const kept = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir && (dir === nodeDir || !['cargo', 'rustc'].some((tool) => existsSync(join(dir, tool)))));
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: [stubs, ...kept].join(delimiter) };
  // What `npm test` sets for its own package must not leak into the user's project.
  for (const key of Object.keys(env)) if (/^(npm_lifecycle_|npm_package_|INIT_CWD$|NAPI_RS_)/.test(key)) delete env[key];
  return env;
}

const env = userEnv();
/** `npx --no -- gatehouse …` in the project: the installed bin, never a download. */
const gatehouse = (args: string[]) => run('npx', ['--no', '--', 'gatehouse', ...args], { cwd: project, env, timeout: 20_000 });

test.before(async (t) => {
  const { stdout } = await run(process.execPath, [join(root, 'scripts', 'package.js'), '--out-dir', join(work, 'dist'), '--json'], { cwd: root, timeout: 60_000 });
  packed = (JSON.parse(stdout) as { packages: Packed[] }).packages;
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
  const tarballs = packed.filter((p) => p.kind === 'main' || p.name === platformPackage).map((p) => p.file);
  // Offline first: the dependencies (zod, yaml, commander…) are in the npm cache after `npm install`
  // here. A cache without their metadata (a fresh `npm ci`) falls back to the registry.
  const install = (mode: string) => run('npm', ['install', '--no-audit', '--no-fund', mode, ...tarballs], { cwd: project, env, timeout: 60_000 });
  try {
    await install('--offline');
  } catch (e) {
    t.log(`offline install failed, retrying with the registry: ${(e as { stderr?: string }).stderr ?? String(e)}`);
    await install('--prefer-offline');
  }
});

test('the tarballs hold only what runs: no sources, tests, maps or build output', (t) => {
  const main = packed.find((p) => p.kind === 'main');
  const native = packed.find((p) => p.name === platformPackage);
  if (!main || !native) return t.fail(`packed: ${packed.map((p) => p.name).join(', ')}`);
  const shipped = /^(package\.json|README\.md|LICENSE|bin\/[\w-]+\.js|lib\/.+\.(js|d\.ts)|bindings\/index\.(js|d\.ts)|config\/[\w.-]+\.(yaml|json))$/;
  t.deepEqual(main.files.filter((f) => !shipped.test(f)), []);
  for (const needed of ['LICENSE', 'bin/gatehouse.js', 'lib/index.js', 'lib/index.d.ts', 'bindings/index.js', 'bindings/index.d.ts', 'config/example.yaml']) t.true(main.files.includes(needed), needed);
  t.true(main.size < 200 * 1024, `main package ${main.size} bytes`);
  t.deepEqual([...native.files].sort(), ['LICENSE', 'README.md', `gatehouse.${hostPlatform()}.node`, 'package.json']);

  const manifest = JSON.parse(readFileSync(join(project, 'node_modules', pkg.name, 'package.json'), 'utf8')) as Record<string, unknown>;
  t.is(manifest.scripts, undefined, 'no lifecycle scripts ship (nothing builds on install)');
  t.is(manifest.devDependencies, undefined);
  t.deepEqual(
    manifest.optionalDependencies,
    Object.fromEntries(['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'darwin-arm64', 'win32-x64-msvc'].map((p) => [`${pkg.name}-${p}`, pkg.version])),
    'every platform package, pinned to this version',
  );
});

test('npx gatehouse --version: the package version and the engine from the platform package', async (t) => {
  const { stdout } = await gatehouse(['--version']);
  const [version, engine] = stdout.trim().split('\n');
  t.is(version, pkg.version);
  t.regex(engine ?? '', new RegExp(`^engine: ${pkg.version.replaceAll('.', '\\.')} \\S+ `));
});

test('npx gatehouse validate: the shipped example config is ok, a broken one names its key path', async (t) => {
  const { stdout } = await gatehouse(['validate', '-c', join('node_modules', pkg.name, 'config', 'example.yaml')]);
  t.is(stdout.trim(), 'ok');
  writeFileSync(join(project, 'broken.yaml'), 'listeners: [{ address: "127.0.0.1:0" }]\nupstreams: { app: { backends: [{ url: "ftp://x" }] } }\n');
  const e = await t.throwsAsync(gatehouse(['validate', '-c', 'broken.yaml']));
  t.is((e as unknown as { code: number }).code, 1);
  t.regex((e as unknown as { stderr: string }).stderr, /^upstreams\.app\.backends\[0\]\.url: /m);
});

test('npx gatehouse start proxies to an origin; a signal drains it and nothing keeps running', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('from the origin'));
  t.teardown(() => origin.close());
  const config = join(project, 'gatehouse.yaml');
  writeFileSync(config, `listeners: [{ address: "127.0.0.1:0" }]\nupstreams: { app: { backends: [{ url: "${origin.url}" }] } }\nlog: { level: info, access_log: "off" }\n`);
  // Its own process group, as in a terminal: npx runs gatehouse through a shell, and the signal
  // goes to all of them, as Ctrl-C does (npx alone would leave gatehouse orphaned).
  const child: ChildProcess = spawn('npx', ['--no', '--', 'gatehouse', 'start', '-c', config], { cwd: project, env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const group = -(child.pid ?? 0);
  // 'close', not 'exit': npx can exit on the signal before gatehouse, which shares its stderr
  // pipe, has written its last lines; the pipe closes only once every process holding it is gone.
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  t.teardown(() => {
    try {
      process.kill(group, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const bound = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /"message":"listening","target":"gatehouse::control".*?"bound":"([^"]+)"/.exec(stderr);
      if (m?.[1]) {
        clearInterval(timer);
        resolve(m[1]);
      }
    }, 20);
    setTimeout(() => {
      clearInterval(timer);
      reject(new Error(`no "listening" line within 20 s:\n${stderr}`));
    }, 20_000);
  });
  const get = () =>
    new Promise<string>((resolve, reject) => {
      request(`http://${bound}/hello`, { agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text));
      }).on('error', reject).end();
    });
  await new Promise((r) => setTimeout(r, 200)); // still serving a moment later (nothing exits early)
  t.is(await get(), 'from the origin');
  t.is(origin.requests[0]?.url, '/hello');

  process.kill(group, 'SIGTERM');
  await exited;
  t.regex(stderr, /"message":"draining"/);
  t.regex(stderr, /"message":"stopped"/, 'drained and stopped cleanly');
  await t.throwsAsync(get(), { code: 'ECONNREFUSED' }, 'nothing listens any more');
});

test("import { start } from 'gatehouse' in TypeScript: type-checks against the shipped .d.ts and runs", async (t) => {
  // The embedding example, as a user would copy it, plus checks that the types are real (not any).
  copyFileSync(join(root, 'examples', 'embed.ts'), join(project, 'embed.ts'));
  writeFileSync(
    join(project, 'types.ts'),
    [
      "import { ConfigError, GatehouseError, start, type GatehouseConfigInput, type GatehouseErrorCode, type Gateway, type GatewayStats } from 'gatehouse';",
      "const ok: GatehouseConfigInput = { listeners: [{ address: '127.0.0.1:0' }], upstreams: { app: { backends: [{ url: 'http://127.0.0.1:1' }] } } };",
      '// @ts-expect-error misspelt key',
      "const typo: GatehouseConfigInput = { listeners: [{ adress: '127.0.0.1:0' }], upstreams: {} };",
      "// @ts-expect-error a weight is a number",
      "const weight: GatehouseConfigInput = { upstreams: { app: { backends: [{ url: 'http://x:1', weight: 'heavy' }] } } };",
      'const run: (c: GatehouseConfigInput) => Promise<Gateway> = start;',
      "const code: GatehouseErrorCode = 'ERR_GATEHOUSE_NATIVE';",
      'const total = (s: GatewayStats): number => s.requests.total;',
      'export { ok, typo, weight, run, code, total, ConfigError, GatehouseError };',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noUncheckedIndexedAccess: true,
        skipLibCheck: false, // check the shipped declaration files too
        outDir: 'out',
        typeRoots: [join(root, 'node_modules', '@types')],
        types: ['node'],
      },
      files: ['embed.ts', 'types.ts'],
    }),
  );
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: project, env, timeout: 60_000 }).catch((e: { stdout?: string }) => {
    throw new Error(`tsc failed:\n${e.stdout ?? String(e)}`);
  });
  const { stdout } = await run(process.execPath, [join('out', 'embed.js')], { cwd: project, env, timeout: 30_000 });
  t.deepEqual(embedOutputProblems(stdout), [], stdout);
});

// Serial, so it runs before the others and they never see the package missing.
test.serial('without the platform package, the error names the platform and the package to install', async (t) => {
  const installed = join(project, 'node_modules', platformPackage);
  const aside = join(work, 'aside');
  renameSync(installed, aside);
  try {
    const e = await t.throwsAsync(gatehouse(['--version']));
    const stderr = (e as unknown as { stderr: string }).stderr;
    t.regex(stderr, /ERR_GATEHOUSE_NATIVE/);
    t.true(stderr.includes(`for this platform (${hostPlatform()})`), stderr);
    t.true(stderr.includes(`its package ${platformPackage} `), stderr);
  } finally {
    renameSync(aside, installed);
  }
});
