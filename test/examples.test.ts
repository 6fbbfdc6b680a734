/**
 * The examples run as documented (`npx tsx examples/embed.ts`), importing `gatehouse` by its
 * package name (the package's self-reference, so the compiled lib/ is what runs). The installed
 * package runs the same example in test/package.test.ts.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { embedOutputProblems } from './helpers/examples.js';

const root = fileURLToPath(new URL('..', import.meta.url));

test('examples/embed.ts runs: weights, health events, reload, refused reload, close', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'examples/embed.ts'], { cwd: root, timeout: 30_000 });
  t.deepEqual(embedOutputProblems(stdout), [], stdout);
});

test('examples/custom-policy.ts runs: each tenant sticks to one origin', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'examples/custom-policy.ts'], { cwd: root, timeout: 30_000 });
  const lines = stdout.trim().split('\n');
  t.is(lines.length, 4, stdout);
  const answer = (line: string | undefined) => line?.split(' -> ')[1];
  t.regex(lines[0] ?? '', /^acme -> [ab]$/);
  t.is(answer(lines[0]), answer(lines[1]), 'acme twice to the same origin');
  t.is(answer(lines[2]), answer(lines[3]), 'globex twice to the same origin');
});
