// `npm run bench -- --instructions`: gatehouse's instructions per request, counted by callgrind.
//
// CPU time per request moves by several percent on this shared machine from one minute to the
// next; the instructions a request costs do not (two runs agree within about 0.1%). That makes
// this the figure to A/B a change to the hot path with, where the scenarios are for comparing
// proxies. gatehouse runs under `valgrind --tool=callgrind --separate-threads=yes` with
// instrumentation off until it is warm (a connection pool open, the cache filled), then wrk drives
// it for the measured window while callgrind counts; the engine's worker thread's total over that
// window, divided by the requests /stats counted in it, is the figure. Kernel work is not counted
// (callgrind sees user space only). The inclusive counts of the engine's own functions and of the
// libraries it calls go to bench-results/instructions-<time>.txt.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { gatehouseConfig, REPO } from './proxies.js';
import { PROXY_CPU, freePort, sleep, which } from './system.js';
import { runH2load } from './h2load.js';
import { runWrk } from './wrk.js';

const CASES = [
  { id: 'h1-small', title: 'proxied, 123-byte responses', path: '/small', cache: false, h2: false },
  { id: 'cache-hit', title: 'cache hits, 123-byte body', path: '/cached', cache: true, h2: false },
  // HTTP/2 in clear text (prior knowledge): the stream handling without TLS's share.
  { id: 'h2c-small', title: 'proxied over h2c, 10 streams', path: '/small', cache: false, h2: true },
];
/** Connections for the counted load: enough to keep the worker busy under valgrind's slowdown. */
const CONNECTIONS = 8;
/** For HTTP/2: connections, and requests in flight on each. */
const H2_CONNECTIONS = 4;
const H2_STREAMS = 10;
/** Functions worth showing: the engine's, and the libraries' entry points it spends in. */
const SHOWN = /gatehouse_|hyper::proto::h1::role|hyper::proto::h2::server|h2::hpack|hyper::client::dispatch|http::header::map::HeaderMap|httparse|malloc\.c:(malloc|free)|memcpy|tokio::sync::mpsc|tokio::task::spawn/;

async function waitForPort(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(500);
  }
  throw new Error(`nothing listens on ${port} after ${timeoutMs / 1000} s under valgrind`);
}

async function requestsServed(adminUrl) {
  const stats = await (await fetch(`${adminUrl}/stats`)).json();
  return stats.requests.total;
}

function callgrindControl(args) {
  execFileSync('callgrind_control', args, { stdio: 'ignore', timeout: 60_000 });
}

/** The worker thread's profile among the per-thread files: the one that ran the HTTP server. */
function workerProfile(prefix, dir) {
  const files = readdirSync(dir)
    .filter((f) => f.startsWith(prefix))
    .map((f) => join(dir, f));
  let best = null;
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('gatehouse_engine::listener')) continue;
    // `totals:` is what was counted; `summary:` stays 0 when instrumentation starts switched off.
    const total = Number(/^totals: (\d+)/m.exec(text)?.[1] ?? 0);
    if (!best || total > best.total) best = { file, total };
  }
  if (!best) throw new Error('callgrind wrote no profile of the engine worker');
  return best;
}

/** Inclusive instructions per request of the shown functions, largest first. */
function inclusive(file, requests) {
  const text = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
  });
  const rows = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)(?:\s+\[.*\])?$/.exec(line);
    if (!m || !SHOWN.test(m[2])) continue;
    // `file:function` (paths have no colon): the function is what matters; the file is where
    // the counted code was inlined from, so one function can appear several times.
    const fn = m[2].slice(m[2].indexOf(':') + 1);
    const perRequest = Number(m[1].replace(/,/g, '')) / requests;
    if (perRequest >= 50 && !rows.some((r) => r.fn === fn)) rows.push({ fn, perRequest });
  }
  return rows;
}

async function countOne(ctx, c) {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const conf = join(ctx.dir, `gatehouse-callgrind-${c.id}.json`);
  writeFileSync(conf, JSON.stringify(gatehouseConfig(port, adminPort, ctx.origin.url, undefined, c.cache)));
  const prefix = `callgrind-${c.id}.out`;
  const root = ctx.gatehouseRoot ?? REPO;
  const child = spawn(
    'taskset',
    [
      '-c', String(PROXY_CPU), 'valgrind', '--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no',
      `--callgrind-out-file=${join(ctx.dir, prefix)}`,
      process.execPath, join(root, 'bin/gatehouse.js'), 'start', '-c', conf, '--drain-timeout', '1000',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitForPort(port, 180_000);
    const url = `http://127.0.0.1:${port}${c.path}`;
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    const load = (seconds) =>
      c.h2
        ? runH2load({ url, connections: H2_CONNECTIONS, streams: H2_STREAMS, seconds, h2: true })
        : runWrk({ url, connections: CONNECTIONS, seconds });
    // Warm, uncounted: the pool's connections open, the cache fills, lazy statics initialise.
    await load(2);
    callgrindControl(['--instr=on', String(child.pid)]);
    const before = await requestsServed(adminUrl);
    await load(ctx.durationS);
    const requests = (await requestsServed(adminUrl)) - before;
    callgrindControl(['--instr=off', String(child.pid)]);
    child.kill('SIGINT');
    await Promise.race([exited, sleep(60_000)]);
    const worker = workerProfile(prefix, ctx.dir);
    return { ...c, requests, perRequest: worker.total / requests, top: inclusive(worker.file, requests) };
  } catch (e) {
    throw new Error(`${e.message}; valgrind said: ${stderr.split('\n').slice(-5).join(' | ')}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

export async function countInstructions(ctx, log) {
  if (!which('valgrind') || !which('callgrind_annotate') || !which('callgrind_control')) {
    throw new Error('valgrind is not installed (apt-get install valgrind)');
  }
  const results = [];
  for (const c of CASES) {
    if (c.h2 && !which('h2load')) {
      log(`${c.id}: skipped, h2load is not installed (apt-get install nghttp2-client)`);
      continue;
    }
    log(`${c.id}: gatehouse under callgrind (slow: about ${ctx.durationS + 30} s)`);
    results.push(await countOne(ctx, c));
  }
  const lines = [
    `gatehouse: user-space instructions per request in the engine worker (callgrind; ${CONNECTIONS} HTTP/1.1 connections, or ${H2_CONNECTIONS} HTTP/2 connections of ${H2_STREAMS} streams)`,
  ];
  for (const r of results) {
    lines.push(`  ${r.id.padEnd(10)} ${r.title.padEnd(32)} ${Math.round(r.perRequest).toLocaleString('en').padStart(8)} per request (${r.requests} requests)`);
  }
  let full = `${lines.join('\n')}\n`;
  for (const r of results) {
    const top = r.top.map((t) => `${Math.round(t.perRequest).toLocaleString('en').padStart(9)}  ${t.fn.slice(0, 180)}`);
    lines.push('', `${r.id}: inclusive instructions per request, selected functions`, ...top.slice(0, 25));
    full += `\n${r.id}: inclusive instructions per request (≥ 50)\n${top.join('\n')}\n`;
  }
  console.log(`\n${lines.join('\n')}\n`);
  const outDir = join(REPO, 'bench-results');
  if (!existsSync(outDir)) mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `instructions-${new Date().toISOString().replace(/[:.]/g, '-')}.txt`);
  writeFileSync(file, full);
  log(`full report: ${file.slice(REPO.length)}`);
}
