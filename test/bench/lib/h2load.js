// Running h2load (HTTP/1.1 mode) at a fixed request rate on the load core, and reading its report.
import { LOAD_CPU, spawnPinned } from './system.js';

const UNIT = { us: 1e-3, ms: 1, s: 1000 };
const ms = (text) => {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text ?? '');
  return m ? Number(m[1]) * UNIT[m[2]] : NaN;
};

export function parseH2load(out) {
  const fin = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const lat = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  return {
    seconds: fin ? Number(fin[1]) : 0,
    rps: fin ? Number(fin[2]) : 0,
    requests: req ? Number(req[4]) : 0,
    errors: req
      ? { connect: 0, read: Number(req[6]), write: 0, timeout: Number(req[7]), non2xx: Number(req[5]) - Number(req[6]) - Number(req[7]) + (codes ? Number(codes[3]) + Number(codes[4]) : 0) }
      : null,
    mean_ms: ms(lat?.[3]),
    max_ms: ms(lat?.[2]),
  };
}

/** `h2load --h1` with `connections` clients sending `rate` requests/s in all, for `seconds`. */
export function runH2load({ url, connections, rate, seconds }) {
  const perClient = Math.max(1, Math.round(rate / connections));
  const args = ['--h1', '-t', '1', '-c', String(connections), '--rps', String(perClient), '-D', String(seconds), url];
  return new Promise((resolve, reject) => {
    const child = spawnPinned(LOAD_CPU, 'h2load', args);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), (seconds + 30) * 1000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(killer);
      const report = parseH2load(out);
      if (code !== 0 || report.requests === 0) return reject(new Error(`h2load failed (exit ${code}):\n${out.slice(-500)}${child.output.slice(-300)}`));
      resolve(report);
    });
  });
}
