// Processes, CPU pinning and /proc accounting for the benchmark harness.
//
// CPU time is read from /proc/<pid>/stat (utime + stime, in clock ticks) for every process in a
// proxy's tree (nginx's master and worker, a Node process with all its threads), before and after
// a load run. It is the figure that survives a noisy machine best: other work on the same core
// stretches wall time and lowers requests/s, but barely changes the CPU a request costs.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

/** The core every proxy runs on; origin, load generator and helper clients use the other one. */
export const PROXY_CPU = 0;
export const LOAD_CPU = 1;

export const CLK_TCK = Number(tryExec('getconf', ['CLK_TCK']) || 100);

/** Output of a command, trimmed, or '' when it fails or is missing. Bounded to 60 s. */
export function tryExec(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000, ...opts }).trim();
  } catch (e) {
    // Some tools (nginx -v, haproxy -v) print to stderr; callers that want it pass `stderr: true`.
    if (opts.stderr && e.stderr) return String(e.stderr).trim();
    return '';
  }
}

export function which(cmd) {
  return tryExec('sh', ['-c', `command -v ${cmd}`]);
}

export function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Facts that identify the machine a run was made on. */
export function machineFacts() {
  const cpuinfo = safeRead('/proc/cpuinfo');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    hostname: os.hostname(),
    nproc: Number(tryExec('nproc')) || os.cpus().length,
    cpu_model: model,
    kernel: tryExec('uname', ['-r']) || os.release(),
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    loadavg_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function safeRead(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Parent, utime and stime of one process (all its threads, live and exited), in ticks. */
function statTicks(stat) {
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  const user = Number(rest[11]);
  const sys = Number(rest[12]);
  return { ppid: Number(rest[1]), user, sys, ticks: user + sys };
}

/** The pid and every descendant of it. */
export function processTree(root) {
  const parent = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = safeRead(`/proc/${name}/stat`);
    if (stat) parent.set(Number(name), statTicks(stat).ppid);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parent) if (ppid === tree[i] && !tree.includes(pid)) tree.push(pid);
  }
  return tree;
}

/** CPU ticks of a process tree: { user, sys }. */
export function treeTimes(root) {
  const t = { user: 0, sys: 0 };
  for (const pid of processTree(root)) {
    const stat = safeRead(`/proc/${pid}/stat`);
    if (!stat) continue;
    const s = statTicks(stat);
    t.user += s.user;
    t.sys += s.sys;
  }
  return t;
}

/** CPU ticks of the threads of `pid` whose name matches `re` (e.g. the engine's workers). */
export function threadTicks(pid, re) {
  let ticks = 0;
  let dir = [];
  try {
    dir = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  for (const tid of dir) {
    const comm = safeRead(`/proc/${pid}/task/${tid}/comm`).trim();
    if (!re.test(comm)) continue;
    const stat = safeRead(`/proc/${pid}/task/${tid}/stat`);
    if (stat) ticks += statTicks(stat).ticks;
  }
  return ticks;
}

/** Resident memory of a process tree, in bytes. */
export function treeRss(root) {
  let kb = 0;
  for (const pid of processTree(root)) {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(safeRead(`/proc/${pid}/status`));
    if (m) kb += Number(m[1]);
  }
  return kb * 1024;
}

/** Busy ticks of one CPU (everything but idle and iowait) from /proc/stat. */
export function cpuBusyTicks(cpu) {
  const line = safeRead('/proc/stat').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return 0;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  return f.reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
}

/**
 * Rescheduling IPIs received by one CPU so far (/proc/interrupts, RES): how often something woke a
 * task on an idle core. In a VM each one costs the sender a VM exit.
 */
export function reschedIpis(cpu) {
  const line = safeRead('/proc/interrupts').split('\n').find((l) => /^\s*RES:/.test(l));
  return line ? Number(line.trim().split(/\s+/)[cpu + 1]) || 0 : 0;
}

/** A free TCP port on 127.0.0.1 (closed again before use: a tiny race, fine for a benchmark). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts a connection; rejects after `timeoutMs`. */
export async function waitForPort(port, timeoutMs = 15_000, child) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`exited with code ${child.exitCode} before listening`);
    const ok = await new Promise((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

const children = new Set();

/**
 * Spawns `cmd args` pinned to `cpu` with `taskset` (which execs, so the pid is the program's).
 */
export function spawnPinned(cpu, cmd, args, opts = {}) {
  const argv = ['-c', String(cpu), cmd, ...args];
  const child = spawn('taskset', argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  child.output = '';
  const keep = (d) => {
    // Keep the tail only: enough to explain a failure to start.
    child.output = (child.output + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.once('exit', () => children.delete(child));
  return child;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopChild(child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  const tree = processTree(child.pid);
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const pid of tree) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

/** Kills every child still running (on exit or interrupt). */
export function killAllChildren() {
  for (const child of children) {
    for (const pid of processTree(child.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** The soft and hard open-file limits this process would give its children. */
export function nofileLimits() {
  const soft = Number(tryExec('sh', ['-c', 'ulimit -Sn'])) || 1024;
  const hard = Number(tryExec('sh', ['-c', 'ulimit -Hn'])) || soft;
  return { soft, hard };
}
