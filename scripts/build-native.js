#!/usr/bin/env node
// Builds the native addon (release) and installs it into bindings/ by rename, so that a process
// that has the previous addon loaded (a running test, a running proxy) keeps a valid file: copying
// over a loaded shared object in place corrupts it under the process's feet.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const out = mkdtempSync(join(root, 'bindings', '.build-'));
try {
  execFileSync(
    'npx',
    [
      'napi', 'build', '--platform', '--release', '--esm',
      '--manifest-path', 'bindings/Cargo.toml',
      '--package-json-path', 'package.json',
      '--output-dir', out,
      '--js', 'index.js', '--dts', 'index.d.ts',
      ...process.argv.slice(2),
    ],
    { cwd: root, stdio: 'inherit' },
  );
  for (const name of readdirSync(out)) renameSync(join(out, name), join(root, 'bindings', name));
} finally {
  rmSync(out, { recursive: true, force: true });
}
