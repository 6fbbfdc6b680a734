// gatehouse embedded in a Node.js program whose JavaScript thread can be made busy on command:
// `node gatehouse-embedded.js PORT ORIGIN_URL [GATEHOUSE_ROOT]` (default: this checkout). Prints `listening PORT`, then reads commands on
// stdin, one a line:
//   spin MS         busy-loop the main thread for MS ms (the event loop is blocked, CPU burnt)
//   sleep MS        block the main thread for MS ms without burning CPU (Atomics.wait)
//   worker-spin MS  busy-loop a worker thread for MS ms (same CPU burnt, event loop free): the
//                   control for `spin`, since both compete with the engine for the same core
// Each prints `started CMD` synchronously before it begins and `done CMD` when it ends.
import { writeSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { Worker } from 'node:worker_threads';

const [port, origin, root = new URL('../../../', import.meta.url).pathname] = process.argv.slice(2);
const { start, createLogger } = await import(join(root, 'lib/index.js'));
const gateway = await start(
  {
    workers: 1,
    listeners: [{ address: `127.0.0.1:${port}` }],
    upstreams: { origin: { backends: [{ url: origin }], pool: { max_connections: 1024, max_idle: 128 } } },
    log: { level: 'error', access_log: 'off' },
  },
  { logger: createLogger('error'), drainTimeoutMs: 1000 },
);
const say = (line) => writeSync(1, `${line}\n`);
say(`listening ${port}`);

function spin(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  const ms = Math.min(Number(arg) || 0, 120_000);
  if (cmd === 'spin') {
    say(`started ${cmd}`);
    spin(ms);
    say(`done ${cmd}`);
  } else if (cmd === 'sleep') {
    say(`started ${cmd}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    say(`done ${cmd}`);
  } else if (cmd === 'worker-spin') {
    const code = `const end = Date.now() + ${ms}; let x = 0; while (Date.now() < end) x += Math.sqrt(x + 1);`;
    const w = new Worker(code, { eval: true });
    w.once('online', () => say(`started ${cmd}`));
    w.once('exit', () => say(`done ${cmd}`));
  }
});
rl.on('close', async () => {
  await gateway.close();
  process.exit(0);
});
process.on('SIGTERM', async () => {
  await gateway.close();
  process.exit(0);
});
