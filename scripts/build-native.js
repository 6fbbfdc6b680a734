#!/usr/bin/env node
// Builds the native addon (release, or the cargo profile given) and installs it into bindings/ by rename, so that a process
// that has the previous addon loaded (a running test, a running proxy) keeps a valid file: copying
// over a loaded shared object in place corrupts it under the process's feet.
//
//   node scripts/build-native.js [--pgo] [napi build options, e.g. --profile dist]
//
// --pgo (`npm run build:pgo`) builds a profile-guided addon, as the npm packages ship: an
// instrumented build, a training run (the benchmark's scenarios through gatehouse alone, `npm run
// bench -- --quick`, after `npm run build:ts` against the new loader), then a build optimised with
// the profile it wrote. It needs llvm-profdata of the compiler's LLVM (`rustup component add llvm-tools`, or LLVM_PROFDATA). The
// two builds keep target folders of their own (target/pgo-generate, target/pgo-use), so the usual
// release build stays incremental; the profile is target/pgo/gatehouse-<its sha256>.profdata.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const log = (line) => process.stderr.write(`build-native: ${line}\n`);

/**
 * `napi build` with `extra` options and environment, installed into bindings/: `--release` unless
 * `extra` names a cargo profile (`--profile dist`; cargo refuses both).
 */
function build(extra, env = {}) {
  const out = mkdtempSync(join(root, 'bindings', '.build-'));
  const profile = extra.includes('--profile') ? [] : ['--release'];
  try {
    execFileSync(
      'npx',
      [
        'napi', 'build', '--platform', ...profile, '--esm',
        '--manifest-path', 'bindings/Cargo.toml',
        '--package-json-path', 'package.json',
        '--output-dir', out,
        '--js', 'index.js', '--dts', 'index.d.ts',
        ...extra,
      ],
      { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } },
    );
    for (const name of readdirSync(out)) renameSync(join(out, name), join(root, 'bindings', name));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** llvm-profdata for the LLVM that rustc uses: a profile is read only by the version that wrote it. */
function llvmProfdata() {
  if (process.env.LLVM_PROFDATA) return process.env.LLVM_PROFDATA;
  const sysroot = execFileSync('rustc', ['--print', 'sysroot'], { encoding: 'utf8' }).trim();
  const host = /^host: (\S+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))?.[1] ?? '';
  const tool = join(sysroot, 'lib', 'rustlib', host, 'bin', 'llvm-profdata');
  if (!existsSync(tool)) {
    throw new Error(`--pgo needs ${tool}: run \`rustup component add llvm-tools\` (or set LLVM_PROFDATA)`);
  }
  return tool;
}

function buildWithProfile(extra) {
  const profdata = llvmProfdata();
  const dir = join(root, 'target', 'pgo');
  const raw = join(dir, 'raw');
  const merged = join(dir, 'merged.profdata');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(raw, { recursive: true });
  // RUSTFLAGS from the caller are kept; cargo applies these to every crate, dependencies included.
  const flags = (flag) => [process.env.RUSTFLAGS, flag].filter(Boolean).join(' ');

  log('PGO 1/3: the instrumented build');
  build(extra, { CARGO_TARGET_DIR: join(root, 'target', 'pgo-generate'), RUSTFLAGS: flags(`-Cprofile-generate=${raw}`) });
  log('PGO 2/3: training on the benchmark scenarios (gatehouse only, quick), through the CLI');
  try {
    execFileSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'inherit' });
    execFileSync(process.execPath, [join(root, 'test', 'bench', 'run.js'), '--quick', '--no-save', '--proxies', 'gatehouse'], {
      cwd: root,
      stdio: 'inherit',
    });
    if (!readdirSync(raw).some((f) => f.endsWith('.profraw'))) throw new Error(`the training run wrote no profile into ${raw}`);
    execFileSync(profdata, ['merge', '-o', merged, raw], { stdio: 'inherit' });
    // Named by its content: the flag then changes with the profile, and cargo rebuilds every
    // crate with it (a fixed path would leave unchanged crates built with the previous one).
    const digest = createHash('sha256').update(readFileSync(merged)).digest('hex').slice(0, 16);
    const profile = join(dir, `gatehouse-${digest}.profdata`);
    renameSync(merged, profile);
    log(`PGO 3/3: the build optimised with ${profile}`);
    build(extra, { CARGO_TARGET_DIR: join(root, 'target', 'pgo-use'), RUSTFLAGS: flags(`-Cprofile-use=${profile}`) });
  } catch (e) {
    // Not left silently: the instrumented addon is slow and writes profile data at every exit.
    log('bindings/ holds the instrumented build: `npm run build:native` puts a plain one back');
    throw e;
  }
}

const args = process.argv.slice(2);
try {
  if (args.includes('--pgo')) buildWithProfile(args.filter((a) => a !== '--pgo'));
  else build(args);
} catch (e) {
  log(e instanceof Error ? e.message : String(e));
  process.exit(1);
}
