#!/usr/bin/env node
// `npm run package`: writes the npm tarballs into dist/ — the main package `gatehouse` and one
// package per platform binary that is available (`gatehouse-linux-x64-gnu`, …). See
// docs/releasing.md.
//
//   node scripts/package.js [--build [--pgo]] [--artifacts DIR] [--out-dir DIR] [--require-all] [--json]
//
//   --build        build this machine's addon with the `dist` cargo profile (no debug info) and
//                  pack that, with the loader generated alongside it; needs cargo
//   --pgo          with --build: build it profile-guided, as releases ship it (`build-native.js
//                  --pgo`: an instrumented build, a training run, the optimised build); the
//                  result is left in bindings/ and packed from there
//   --artifacts    take binaries named gatehouse.<platform>.node from DIR (the release pipeline
//                  gathers every target's build there); otherwise bindings/ (`npm run build`)
//   --out-dir      where the tarballs go (default dist/)
//   --require-all  fail unless every target in package.json `napi.targets` has a binary
//   --json         print a JSON summary instead of the table
//
// Both packages are packed from staging folders, so the repository's package.json is never
// edited: the staged main manifest gains `optionalDependencies` on every platform package,
// pinned to this version (what `napi pre-publish` would write in place), and loses what only
// development needs (`scripts`, `devDependencies`, the test runner's settings).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const root = new URL('..', import.meta.url).pathname;
if (!existsSync(join(root, 'lib', 'native.js'))) {
  process.stderr.write('package: lib/ is not built: run `npm run build` first\n');
  process.exit(1);
}
// The platform naming the runtime loader uses, so packing and loading cannot disagree.
const { hostPlatform, platformOfTriple } = await import('../lib/native.js');
const { values: args } = parseArgs({
  options: {
    build: { type: 'boolean', default: false },
    pgo: { type: 'boolean', default: false },
    artifacts: { type: 'string' },
    'out-dir': { type: 'string', default: join(root, 'dist') },
    'require-all': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const binaryName = pkg.napi?.binaryName ?? pkg.name;
const platforms = (pkg.napi?.targets ?? []).map((triple) => ({ triple, platform: platformOfTriple(triple) }));
const outDir = resolve(args['out-dir']);
const log = (line) => process.stderr.write(`${line}\n`);

/** Runs a command for its stdout; its stderr passes through (stdout stays clean for --json). */
function capture(command, argv, cwd) {
  return execFileSync(command, argv, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

class PackageError extends Error {}

function fail(message) {
  throw new PackageError(message);
}

/** Every compiled file in lib/ must come from a source in ts/: a stale one would ship. */
function checkLibIsFresh() {
  const stale = [];
  const walk = (dir) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith('.js') && !existsSync(join(root, 'ts', path.slice('lib/'.length).replace(/\.js$/, '.ts')))) stale.push(path);
    }
  };
  walk('lib');
  if (stale.length > 0) fail(`lib/ has files without a source in ts/ (${stale.join(', ')}): rm -rf lib && npm run build:ts`);
}

/** The addon for this machine built with the `dist` profile, and the loader generated with it. */
function buildDist(staging) {
  const out = join(staging, 'build');
  log('package: building the addon with the dist profile (cargo)…');
  execFileSync(
    'npx',
    ['napi', 'build', '--platform', '--profile', 'dist', '--esm', '--manifest-path', 'bindings/Cargo.toml',
      '--package-json-path', 'package.json', '--output-dir', out, '--js', 'index.js', '--dts', 'index.d.ts'],
    { cwd: root, stdio: ['ignore', 2, 'inherit'] },
  );
  return out;
}

/** The dist build, profile-guided, installed into bindings/ (where its training run loads it from). */
function buildDistWithProfile() {
  log('package: building the addon with the dist profile, profile-guided (cargo, a training run)…');
  execFileSync(process.execPath, [join(root, 'scripts', 'build-native.js'), '--pgo', '--profile', 'dist'], {
    cwd: root,
    stdio: ['ignore', 2, 'inherit'],
  });
  return join(root, 'bindings');
}

/** Checks a binary this machine can load: same version as the package, built for its platform. */
function checkLoadable(file, platform) {
  if (platform !== hostPlatform()) return;
  const binding = createRequire(import.meta.url)(file);
  const version = binding.engineVersion();
  if (version !== pkg.version) fail(`${file} is engine version ${version}, the package is ${pkg.version}: rebuild it`);
  const info = binding.engineBuildInfo?.();
  if (info?.target && platformOfTriple(info.target) !== platform) fail(`${file} was built for ${info.target}, not ${platform}`);
  if (args.pgo && info?.pgo !== 'applied') fail(`${file} is not profile-guided (pgo: ${info?.pgo})`);
}

/** `npm pack` of a staged folder into outDir; returns npm's summary. */
function pack(dir) {
  const [summary] = JSON.parse(capture('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', outDir], dir));
  return summary;
}

function stageMain(staging, loaderDir) {
  const dir = join(staging, 'main');
  // The files npm would pack from the repository (`files` plus what npm always adds).
  const [listing] = JSON.parse(capture('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], root));
  for (const { path } of listing.files) {
    if (path === 'package.json') continue;
    const from = loaderDir && /^bindings\/index\.(js|d\.ts)$/.test(path) ? join(loaderDir, path.slice('bindings/'.length)) : join(root, path);
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    copyFileSync(from, join(dir, path));
  }
  const banned = listing.files.map((f) => f.path).filter((p) => /(\.rs|\.node|\.map)$|^(crates|target|test|ts|scripts|npm)\//.test(p));
  if (banned.length > 0) fail(`the main package would ship ${banned.join(', ')}: fix "files" in package.json`);
  const { scripts: _scripts, devDependencies: _dev, ava: _ava, ...manifest } = pkg;
  manifest.optionalDependencies = Object.fromEntries(platforms.map(({ platform }) => [`${pkg.name}-${platform}`, pkg.version]));
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return dir;
}

function stagePlatform(staging, platform, binary) {
  const source = join(root, 'npm', platform);
  const manifest = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
  if (manifest.name !== `${pkg.name}-${platform}`) fail(`npm/${platform}/package.json is named ${manifest.name}`);
  if (manifest.version !== pkg.version) fail(`npm/${platform}/package.json is version ${manifest.version}, the package is ${pkg.version}: run \`npx napi version\``);
  const dir = join(staging, platform);
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(source)) if (!name.endsWith('.node')) copyFileSync(join(source, name), join(dir, name));
  copyFileSync(binary, join(dir, `${binaryName}.${platform}.node`));
  // The binary is a copy of the software too: MIT asks for the notice to travel with it.
  copyFileSync(join(root, 'LICENSE'), join(dir, 'LICENSE'));
  return dir;
}

const staging = mkdtempSync(join(tmpdir(), 'gatehouse-package-'));
try {
  checkLibIsFresh();
  if (args.pgo && !args.build) fail('--pgo builds the addon: pass --build too (`npm run package -- --pgo`)');
  const loaderDir = args.build ? (args.pgo ? buildDistWithProfile() : buildDist(staging)) : undefined;
  const binariesDir = loaderDir ?? (args.artifacts ? resolve(args.artifacts) : join(root, 'bindings'));
  const available = platforms.filter(({ platform }) => existsSync(join(binariesDir, `${binaryName}.${platform}.node`)));
  const missing = platforms.filter((p) => !available.includes(p)).map((p) => p.platform);
  if (available.length === 0) fail(`no binary for any target in ${binariesDir}: run \`npm run build\` (or pass --build)`);
  if (args['require-all'] && missing.length > 0) fail(`no binary for ${missing.join(', ')} in ${binariesDir}`);

  mkdirSync(outDir, { recursive: true });
  for (const name of readdirSync(outDir)) if (name.startsWith(`${pkg.name}-`) && name.endsWith('.tgz')) rmSync(join(outDir, name));
  const packed = [];
  for (const { platform } of available) {
    const binary = join(binariesDir, `${binaryName}.${platform}.node`);
    checkLoadable(binary, platform);
    packed.push({ kind: 'platform', platform, ...pack(stagePlatform(staging, platform, binary)) });
  }
  packed.unshift({ kind: 'main', ...pack(stageMain(staging, loaderDir)) });

  const summary = packed.map((p) => ({
    kind: p.kind,
    ...(p.platform ? { platform: p.platform } : {}),
    name: p.name,
    version: p.version,
    file: join(outDir, p.filename),
    size: p.size,
    unpackedSize: p.unpackedSize,
    files: p.files.map((f) => f.path),
  }));
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ packages: summary, missing }, null, 2)}\n`);
  } else {
    const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
    for (const s of summary) log(`${s.file}  ${kb(s.size)} (unpacked ${kb(s.unpackedSize)}, ${s.files.length} files)`);
    if (missing.length > 0) log(`not packed (no binary here; the release pipeline builds them): ${missing.join(', ')}`);
  }
} catch (e) {
  if (!(e instanceof PackageError)) throw e;
  log(`package: ${e.message}`);
  process.exitCode = 1;
} finally {
  rmSync(staging, { recursive: true, force: true });
}
