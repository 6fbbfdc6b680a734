// Running h2load on the load core, and reading its report: HTTP/1.1 at a fixed request rate (the
// rate scenario), or HTTP/2 over TLS with several concurrent streams per connection, saturating.
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
  const fact = (name) => new RegExp(`^${name}: (.+)$`, 'm').exec(out)?.[1]?.trim() ?? null;
  return {
    // What the first connection negotiated (printed for TLS only).
    tls_protocol: fact('TLS Protocol'),
    cipher: fact('Cipher'),
    alpn: fact('Application protocol'),
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

/**
 * `h2load -t 1 -c <connections> -D <seconds>` against `url`, HTTP/1.1 (`--h1`) unless `h2` is set.
 * With `rate`, the clients send that many requests/s in all (`--rps` per client); with `streams`,
 * each connection keeps that many requests in flight (`-m`; HTTP/2 streams, or pipelined HTTP/1.1).
 * With `h2`, the run fails unless ALPN picked h2 (over TLS; h2c by prior knowledge in clear text).
 */
export function runH2load({ url, connections, seconds, rate, streams, h2 = false }) {
  const args = [...(h2 ? [] : ['--h1']), '-t', '1', '-c', String(connections), '-D', String(seconds)];
  if (rate) args.push('--rps', String(Math.max(1, Math.round(rate / connections))));
  if (streams) args.push('-m', String(streams));
  args.push(url);
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
      // Over TLS, ALPN must have picked h2; in clear text h2load speaks h2c by prior knowledge.
      const expected = url.startsWith('https:') ? ['h2'] : ['h2c', null];
      if (h2 && !expected.includes(report.alpn)) return reject(new Error(`h2load did not get HTTP/2 (ALPN: ${report.alpn ?? 'none'})`));
      resolve(report);
    });
  });
}
