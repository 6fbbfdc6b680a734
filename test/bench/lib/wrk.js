// Running wrk on the load core and reading its report.
import { LOAD_CPU, spawnPinned } from './system.js';

const UNIT = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };
const BYTES = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/** A latency such as "1.23ms" or "850.00us", in milliseconds. */
function latencyMs(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  return m ? Number(m[1]) * UNIT[m[2]] : NaN;
}

/** A size such as "12.34MB", in bytes. */
function bytes(text) {
  const m = /^([\d.]+)([KMGT]?B)$/.exec(text);
  return m ? Number(m[1]) * BYTES[m[2]] : NaN;
}

/** Parses the output of `wrk --latency`. */
export function parseWrk(out) {
  const pct = (p) => latencyMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const done = /(\d+) requests in ([\d.]+)(us|ms|s|m), (\S+) read/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const requests = done ? Number(done[1]) : 0;
  const seconds = done ? (Number(done[2]) * UNIT[done[3]]) / 1000 : 0;
  return {
    requests,
    seconds,
    rps: seconds > 0 ? requests / seconds : 0,
    bytes_read: done ? bytes(done[4]) : 0,
    p50_ms: pct(50),
    p99_ms: pct(99),
    errors: {
      connect: sock ? Number(sock[1]) : 0,
      read: sock ? Number(sock[2]) : 0,
      write: sock ? Number(sock[3]) : 0,
      timeout: sock ? Number(sock[4]) : 0,
      non2xx: non2xx ? Number(non2xx[1]) : 0,
    },
  };
}

/**
 * Runs `wrk -t1 -c<connections> -d<seconds>s --latency url` pinned to the load core and resolves
 * with the parsed report. `headers` are added to every request (`-H`; `Connection: close` makes wrk
 * open a new connection for each request). Killed after the duration plus a margin, so it cannot
 * hang the run.
 */
export function runWrk({ url, connections, seconds, threads = 1, timeoutS = 10, headers = [] }) {
  const args = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, `--timeout`, `${timeoutS}s`, '--latency', ...headers.flatMap((h) => ['-H', h]), url];
  return new Promise((resolve, reject) => {
    const child = spawnPinned(LOAD_CPU, 'wrk', args);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), (seconds + timeoutS + 15) * 1000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(killer);
      if (code !== 0) return reject(new Error(`wrk exited with ${code}: ${child.output.slice(-500)}`));
      const report = parseWrk(out);
      if (report.requests === 0) return reject(new Error(`wrk made no request:\n${out}`));
      resolve(report);
    });
  });
}
