// Opens COUNT keep-alive connections to 127.0.0.1:PORT, sends one GET on each and reads the whole
// response, then holds them all idle. `node hold-connections.js PORT COUNT DEADLINE_S`.
//
// stdout: `ready OPEN FAILED` once every connection has had its answer (or failed), then
// `open N` after each `check` line on stdin. Exits when stdin closes or at the deadline.
import net from 'node:net';
import readline from 'node:readline';

const [port, count, deadlineS] = process.argv.slice(2).map(Number);
const IN_FLIGHT = 256; // connects in flight at once, well under every listener's backlog
const REQUEST = `GET /small HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: gatehouse-bench-idle\r\n\r\n`;

setTimeout(() => process.exit(2), deadlineS * 1000).unref();

const sockets = new Set();
let failed = 0;

/** One connection: resolves true once its response is complete, false on error. */
function openOne() {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    let settled = false;
    const done = (ok) => {
      if (settled) return;
      settled = true;
      if (!ok) s.destroy();
      resolve(ok);
    };
    s.setTimeout(20_000, () => done(false));
    s.once('connect', () => s.write(REQUEST));
    s.on('data', (d) => {
      if (settled) return;
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/^content-length:\s*(\d+)/im.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length - end - 4 >= len) {
        s.setTimeout(0);
        sockets.add(s);
        done(true);
      }
    });
    s.once('error', () => done(false));
    s.once('close', () => {
      sockets.delete(s);
      done(false);
    });
  });
}

let next = 0;
async function lane() {
  while (next < count) {
    next++;
    if (!(await openOne())) failed++;
  }
}
await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, count) }, lane));
process.stdout.write(`ready ${sockets.size} ${failed}\n`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'check') process.stdout.write(`open ${sockets.size}\n`);
});
rl.on('close', () => process.exit(0));
