/**
 * `node bin/gatehouse.js start -c FILE` in a child process, with its JSON log lines (control plane
 * and engine alike) parsed from stderr, for tests that must see what the engine logs.
 */
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectLogLines, type LogLine } from './logs.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin', 'gatehouse.js');

export type { LogLine } from './logs.js';

export interface RunningGatehouse {
  child: ChildProcess;
  /** Every stderr line that parsed as a JSON object, in order. */
  logs: LogLine[];
  stderr(): string;
  /** Bound addresses from the `listening` lines, in listener order. */
  bound: string[];
  /** Port of the first listener. */
  port: number;
  /** Waits for a log line at index `from` or later matching `match`; returns it and its index. */
  waitForLog(what: string, match: (l: LogLine) => boolean, from?: number, timeoutMs?: number): Promise<{ line: LogLine; index: number }>;
  /** SIGTERM, then wait for the exit. */
  stop(): Promise<void>;
}

/** Starts the CLI on `configFile` and waits until every listener is bound. Killed at teardown. */
export async function startGatehouse(t: ExecutionContext, configFile: string, listeners = 1): Promise<RunningGatehouse> {
  const child = spawn(process.execPath, [bin, 'start', '-c', configFile, '--drain-timeout', '1000'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.on('close', () => { exited = true; resolve(); }));
  t.teardown(async () => {
    if (!exited) {
      child.kill('SIGKILL');
      await exit;
    }
  });
  let err = '';
  const logs = collectLogLines(child.stderr, (s) => (err += s));
  const waitForLog: RunningGatehouse['waitForLog'] = async (what, match, from = 0, timeoutMs = 8000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = logs.findIndex((l, i) => i >= from && match(l));
      const line = logs[index];
      if (line) return { line, index };
      if (exited) throw new Error(`gatehouse exited before ${what}\n--- stderr ---\n${err}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n--- stderr ---\n${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const isListening = (l: LogLine) => l.message === 'listening' && l.target === 'gatehouse::control' && typeof l.bound === 'string';
  await waitForLog(`${listeners} listener(s) to be bound`, () => logs.filter(isListening).length >= listeners);
  const bound = logs.filter(isListening).map((l) => String(l.bound));
  const first = bound[0] ?? '';
  return {
    child,
    logs,
    stderr: () => err,
    bound,
    port: Number(first.slice(first.lastIndexOf(':') + 1)),
    waitForLog,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exit;
    },
  };
}
