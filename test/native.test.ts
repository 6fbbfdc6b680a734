/**
 * Loading the native engine: the JS/native version check, the error users get when no engine fits
 * their platform, and the platform packages declared for the release (npm/<platform>/).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { engineLoadError, hostPlatform, platformOfTriple, supportedPlatforms, versionMismatch } from '../ts/native.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; version: string; napi: { targets: string[] } };

// ---------------------------------------------------------------------------------------------
// The version check

test('the engine and the package must be the same version', (t) => {
  t.is(versionMismatch('0.1.0', '0.1.0'), undefined);
  for (const [engine, js] of [['0.0.9', '0.1.0'], ['0.1.0', '0.1.1'], ['0.1.0-rc.1', '0.1.0'], ['1.0.0', '1.0.0-beta']]) {
    const e = versionMismatch(engine!, js!);
    t.is(e?.code, 'ERR_GATEHOUSE_NATIVE', `${engine} vs ${js}`);
    t.true(e?.message.includes(`native engine is version ${engine}`), e?.message);
    t.true(e?.message.includes(`package is ${js}`), e?.message);
  }
});

test('the engine crate version is the package version (the release bumps both)', (t) => {
  const cargo = readFileSync(join(root, 'Cargo.toml'), 'utf8');
  const workspaceVersion = /\[workspace\.package\][^[]*?\nversion = "([^"]+)"/.exec(cargo)?.[1];
  t.is(workspaceVersion, pkg.version);
});

// ---------------------------------------------------------------------------------------------
// Platforms

test('target triples map to napi-rs platform names', (t) => {
  t.deepEqual(
    ['x86_64-unknown-linux-gnu', 'aarch64-unknown-linux-gnu', 'x86_64-unknown-linux-musl', 'aarch64-apple-darwin', 'x86_64-pc-windows-msvc', 'armv7-unknown-linux-gnueabihf', 'x86_64-unknown-freebsd', 'aarch64-linux-android'].map(platformOfTriple),
    ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'darwin-arm64', 'win32-x64-msvc', 'linux-arm-gnueabihf', 'freebsd-x64', 'android-arm64'],
  );
  t.is(hostPlatform('darwin', 'arm64'), 'darwin-arm64');
  t.is(hostPlatform('win32', 'x64'), 'win32-x64-msvc');
  t.regex(hostPlatform('linux', 'arm64'), /^linux-arm64-(gnu|musl)$/);
});

test('every configured target has an npm/<platform> package with matching os, cpu and libc', (t) => {
  const required = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'darwin-arm64', 'win32-x64-msvc'];
  const platforms = supportedPlatforms();
  for (const p of required) t.true(platforms.includes(p), `napi.targets lacks ${p}`);
  t.deepEqual(readdirSync(join(root, 'npm')).sort(), [...platforms].sort(), 'one folder per target, no strays');
  for (const platform of platforms) {
    const manifest = JSON.parse(readFileSync(join(root, 'npm', platform, 'package.json'), 'utf8')) as Record<string, unknown>;
    const [os, cpu, abi] = platform.split('-');
    t.is(manifest.name, `${pkg.name}-${platform}`);
    t.is(manifest.version, pkg.version, `${platform}: version pinned to the package's`);
    t.deepEqual(manifest.os, [os]);
    t.deepEqual(manifest.cpu, [cpu]);
    t.deepEqual(manifest.libc, os === 'linux' ? [abi === 'musl' ? 'musl' : 'glibc'] : undefined, `${platform}: libc`);
    t.is(manifest.main, `gatehouse.${platform}.node`);
    t.deepEqual(manifest.files, [`gatehouse.${platform}.node`]);
  }
});

test('no engine for this platform: the error names it and lists the platforms that have one', (t) => {
  const e = engineLoadError('linux-riscv64-gnu', supportedPlatforms(), 'gatehouse', new Error('Cannot find native binding.'));
  t.is(e.code, 'ERR_GATEHOUSE_NATIVE');
  t.regex(e.message, /no prebuilt engine for this platform \(linux-riscv64-gnu\)/);
  t.regex(e.message, /linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, darwin-arm64, win32-x64-msvc/);
  t.regex(e.message, /build it from a source checkout/);
});

test('a supported platform without its package: the error names the package to install', (t) => {
  const chain = new Error('Cannot find native binding. npm has a bug…', { cause: new Error("Cannot find module 'gatehouse-linux-x64-musl'\nRequire stack:\n- x") });
  const e = engineLoadError('linux-x64-musl', supportedPlatforms(), 'gatehouse', chain);
  t.is(e.code, 'ERR_GATEHOUSE_NATIVE');
  t.regex(e.message, /for this platform \(linux-x64-musl\): its package gatehouse-linux-x64-musl /);
  t.regex(e.message, /\) is not installed\./);
  t.regex(e.message, /--omit=optional/);
  t.is(e.cause, chain, 'the loader error stays available');
});

test('a platform package that fails to load: the error carries the loader problem', (t) => {
  const glibc = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.39' not found (required by gatehouse.linux-x64-gnu.node)";
  const chain = new Error('Cannot find native binding.', { cause: new Error(glibc, { cause: new Error("Cannot find module './gatehouse.linux-x64-gnu.node'") }) });
  const e = engineLoadError('linux-x64-gnu', supportedPlatforms(), 'gatehouse', chain);
  t.true(e.message.includes(`failed to load: ${glibc}.`), e.message);
});

// ---------------------------------------------------------------------------------------------
// The same checks as a user meets them: `gatehouse` with a stand-in engine.
// NAPI_RS_NATIVE_LIBRARY_PATH makes the generated loader load that file instead of the addon.

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function gatehouseWith(t: ExecutionContext, library: string, args: string[]): Promise<Run> {
  const r = await new Promise<Run>((resolve) => {
    execFile(
      process.execPath,
      [join(root, 'bin', 'gatehouse.js'), ...args],
      { cwd: root, timeout: 20_000, env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: library } },
      (error, stdout, stderr) => resolve({ code: typeof error?.code === 'number' ? error.code : error ? -1 : 0, stdout, stderr }),
    );
  });
  t.log(r.stderr.trim());
  return r;
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-native-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('a native engine of another version is refused at load, with both versions named', async (t) => {
  const dir = await tempDir(t);
  const fake = join(dir, 'old-engine.cjs');
  await writeFile(
    fake,
    `module.exports = { engineVersion: () => '0.0.1', engineBuildInfo: () => ({ version: '0.0.1', target: 'x', profile: 'release' }),
       startEngine: async () => { throw new Error('must not start') }, NativeEngine: class {} };`,
  );
  const config = join(dir, 'gatehouse.json');
  await writeFile(config, JSON.stringify({ listeners: [{ address: '127.0.0.1:0' }], upstreams: { app: { backends: [{ url: 'http://127.0.0.1:9' }] } } }));

  const version = await gatehouseWith(t, fake, ['--version']);
  t.is(version.code, 1);
  t.is(version.stdout.split('\n')[0], pkg.version, 'the package version is still printed first');
  t.regex(version.stderr, new RegExp(`ERR_GATEHOUSE_NATIVE.*native engine is version 0\\.0\\.1 but the gatehouse package is ${pkg.version.replaceAll('.', '\\.')}`));

  const started = await gatehouseWith(t, fake, ['start', '-c', config]);
  t.is(started.code, 1);
  t.regex(started.stderr, /ERR_GATEHOUSE_NATIVE.*native engine is version 0\.0\.1/);
  t.notRegex(started.stderr, /must not start/);
});

test('no loadable engine: the error names this platform and its package', async (t) => {
  const dir = await tempDir(t);
  const r = await gatehouseWith(t, join(dir, 'missing.node'), ['--version']);
  t.is(r.code, 1);
  t.true(r.stderr.includes(`ERR_GATEHOUSE_NATIVE`), r.stderr);
  t.true(r.stderr.includes(`for this platform (${hostPlatform()})`), r.stderr);
  t.true(r.stderr.includes(`${pkg.name}-${hostPlatform()}`), r.stderr);
});
