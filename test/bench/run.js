#!/usr/bin/env node
// `npm run bench [-- options]`: gatehouse side by side with nginx, HAProxy, node-http-proxy and
// @fastify/reply-from. Each proxy runs pinned to CPU 0 with one worker; the origin (a separate
// nginx) and the load generator (wrk) run on CPU 1. See docs/performance.md for the method.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDebian, ensureNodePeers } from './lib/install.js';
import { startOrigin } from './lib/origin.js';
import { profileProxies } from './lib/profile.js';
import { countInstructions } from './lib/instructions.js';
import { PROXIES, REPO, snapshotGatehouse } from './lib/proxies.js';
import { checkTargets, markdownTable, targetsMarkdown, targetsText, textTable } from './lib/report.js';
import { RUNNERS, SCENARIOS } from './lib/scenarios.js';
import { killAllChildren, machineFacts, nofileLimits, tryExec, which } from './lib/system.js';

const HELP = `usage: npm run bench -- [options]

  --quick               a few seconds per scenario (the whole run stays under two minutes)
  --duration S          measured seconds per run (default 10; 2 with --quick)
  --warmup S            warm-up seconds before each measured run (default 2; with --quick, 1 and
                        only for the Node.js peers, which need their JIT warm)
  --repeat N            rounds per scenario, each proxy's median run is reported (default 3; 1
                        with --quick)
  --proxies a,b         only these proxies (${PROXIES.map((p) => p.name).join(', ')})
  --scenarios a,b       only these scenarios (${SCENARIOS.map((s) => s.id).join(', ')})
  --idle-count N        connections held in idle-10k (default 10000, 2000 with --quick; bounded
                        by ulimit -n)
  --profile             instead of the scenarios: under h1-small-64, count system calls and
                        context switches per request of every proxy (perf stat) and print the
                        hottest symbols of gatehouse and nginx (perf record; needs linux-perf)
  --profile-connections N  connections for --profile (default 64)
  --instructions        instead of the scenarios: gatehouse's user-space instructions per request
                        (proxied, cache hits, proxied over h2c), counted by callgrind: repeatable
                        within ~0.1%, the figure to compare two builds with (needs valgrind)
  --no-install          never apt-get or npm install missing peers (skip them instead)
  --no-save             write no results, and fail unless gatehouse ran every scenario it was
                        given (the PGO training run, \`npm run build:pgo\`, uses it)
  -h, --help            this text

gatehouse is measured as built in bindings/: the Linux npm packages ship a profile-guided build, so
run \`npm run build:pgo\` first for the figures users get (the run says which build it measured).

The TLS scenarios (tls13-new-conn, h2-tls-10-streams) make a self-signed ECDSA P-256 certificate
with the openssl CLI and drive HTTP/2 with h2load (nghttp2-client).

Results: a table per scenario, the PRODUCT.md targets, and JSON + Markdown in bench-results/.`;

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    repeat: { type: 'string' },
    proxies: { type: 'string' },
    scenarios: { type: 'string' },
    'idle-count': { type: 'string' },
    profile: { type: 'boolean', default: false },
    instructions: { type: 'boolean', default: false },
    'profile-connections': { type: 'string' },
    'no-install': { type: 'boolean', default: false },
    'no-save': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}

const log = (msg) => console.log(`# ${msg}`);

/** The run with the median `key`, with the range of `key` over all runs and the runs themselves. */
function medianRun(runs, key) {
  const sorted = [...runs].sort((a, b) => (a[key] ?? Infinity) - (b[key] ?? Infinity));
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  if (runs.length === 1) return median;
  return { ...median, runs: runs.length, range: [sorted[0][key], sorted.at(-1)[key]], all_runs: runs };
}
const list = (s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : null);

/**
 * Runs one scenario for every proxy it applies to, in rounds that go through every proxy in turn
 * (so that a burst of noise hits them all alike); each proxy's row is its median round by the
 * scenario's key figure.
 */
async function runScenario(def, scn, runnable, ctx) {
  scn.results = [];
  scn.notes = [];
  const gatehouseOnly = def.kind === 'blocked' || def.kind === 'policy';
  const rounds = def.kind === 'blocked' ? 1 : ctx.repeat;
  const runs = new Map();
  for (let round = 0; round < rounds; round++) {
    for (const proxy of runnable) {
      if (gatehouseOnly && proxy.name !== 'gatehouse') continue;
      if (def.kind === 'cache' ? !proxy.caches : proxy.cacheOnly) continue;
      if (proxy.unsupported?.[def.kind]) {
        if (round === 0) scn.notes.push(`${proxy.name} skipped: ${proxy.unsupported[def.kind]}`);
        continue;
      }
      try {
        const r = await RUNNERS[def.kind](def, proxy, ctx);
        if (def.kind === 'blocked') scn.results.push(...r);
        else for (const row of [r].flat().filter(Boolean)) runs.set(row.proxy, [...(runs.get(row.proxy) ?? []), row]);
      } catch (e) {
        const lines = e.message.split('\n').filter((l) => l.trim());
        scn.notes.push(`${proxy.name} failed: ${lines[0]}${lines.length > 1 ? ` (${lines.at(-1).trim()})` : ''}`);
      }
    }
  }
  for (const rs of runs.values()) scn.results.push(medianRun(rs, def.kind === 'idle' ? 'bytes_per_conn' : 'cpu_us_per_req'));
}

async function main() {
  const startedAt = new Date();
  const wantProxies = list(opts.proxies);
  const wantScenarios = list(opts.scenarios);
  for (const p of wantProxies ?? []) if (!PROXIES.some((x) => x.name === p)) throw new Error(`unknown proxy ${p}`);
  for (const s of wantScenarios ?? []) if (!SCENARIOS.some((x) => x.id === s)) throw new Error(`unknown scenario ${s}`);

  const machine = machineFacts();
  if (machine.nproc < 2) throw new Error('the harness needs 2 CPUs (proxy on CPU 0, origin and load on CPU 1)');
  if (!opts['no-install']) {
    // Only what the chosen proxies need (the origin is an nginx too, when there is one).
    const wanted = (name) => !wantProxies || wantProxies.includes(name);
    ensureDebian(
      {
        wrk: 'wrk', h2load: 'nghttp2-client', nginx: 'nginx-light', taskset: 'util-linux', openssl: 'openssl',
        ...(wanted('haproxy') ? { haproxy: 'haproxy' } : {}),
        ...(wanted('varnish') ? { varnishd: 'varnish' } : {}),
        ...(opts.profile ? { perf: 'linux-perf' } : {}),
        ...(opts.instructions ? { valgrind: 'valgrind' } : {}),
      },
      log,
    );
    if (PROXIES.some((p) => p.npm && wanted(p.name))) ensureNodePeers(log);
  }
  if (!which('wrk')) throw new Error('wrk is not installed (apt-get install wrk)');
  if (!which('taskset')) throw new Error('taskset is not installed (apt-get install util-linux)');

  const limits = nofileLimits();
  const idleCount = Math.min(Number(opts['idle-count'] ?? (opts.quick ? 2000 : 10_000)), limits.soft - 1000);
  const ctx = {
    durationS: Number(opts.duration ?? (opts.quick ? 2 : 10)),
    warmupS: Number(opts.warmup ?? (opts.quick ? 1 : 2)),
    repeat: Math.max(1, Number(opts.repeat ?? (opts.quick ? 1 : 3))),
    quick: opts.quick,
    idleCount,
    profileConnections: Number(opts['profile-connections'] ?? 64),
  };
  const dir = mkdtempSync(join(os.tmpdir(), 'gatehouse-bench-'));
  // nginx workers run as an unprivileged user: they must be able to read the 1 MiB file.
  chmodSync(dir, 0o755);
  ctx.dir = dir;
  const gitDirty = tryExec('git', ['-C', REPO, 'status', '--porcelain', '--', 'crates', 'bindings', 'ts']) ? ', uncommitted changes' : '';
  const [version, engine] = tryExec('node', [join(REPO, 'bin/gatehouse.js'), '--version']).split('\n');
  const versions = {
    gatehouse: `${version} (${tryExec('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'])}${gitDirty})`,
    gatehouse_engine: engine?.replace(/^engine: /, ''),
    nginx: tryExec('sh', ['-c', 'nginx -v 2>&1']).replace(/^nginx version: /, ''),
    haproxy: tryExec('sh', ['-c', 'haproxy -v 2>&1 | head -1']).replace(/ - https.*$/, ''),
    wrk: tryExec('sh', ['-c', 'wrk -v 2>&1 | head -1']).replace(/ Copyright.*$/, ''),
    node: process.version,
  };
  log(`machine: ${machine.cpu_model}, ${machine.nproc} CPUs, kernel ${machine.kernel}, load ${machine.loadavg_at_start.join(' ')}`);
  log(`versions: ${Object.entries(versions).map(([k, v]) => `${k} ${v || 'missing'}`).join('; ')}`);
  if (engine && !/ pgo(-instrumented)?( |$)/.test(engine)) {
    log('gatehouse: this addon is not profile-guided, the Linux npm packages are: `npm run build:pgo` measures what they ship');
  }
  if (idleCount < 10_000) log(`idle-10k holds ${idleCount} connections${idleCount < Number(opts['idle-count'] ?? (opts.quick ? 2000 : 10_000)) ? ` (ulimit -n is ${limits.soft})` : ''}`);

  const origin = await startOrigin(dir);
  ctx.origin = origin;
  log(`origin: ${origin.kind} on CPU 1 at ${origin.url}`);
  try {
    const proxies = PROXIES.filter((p) => !wantProxies || wantProxies.includes(p.name));
    const runnable = [];
    for (const p of proxies) {
      const why = p.available();
      if (why) log(`${p.name}: skipped: ${why}`);
      else runnable.push(p);
    }
    if (!runnable.some((p) => p.name === 'gatehouse') && (!wantProxies || wantProxies.includes('gatehouse'))) {
      throw new Error(`gatehouse cannot run: ${PROXIES[0].available()}`);
    }
    if (runnable.some((p) => p.name === 'gatehouse')) {
      const snap = snapshotGatehouse(dir);
      ctx.gatehouseRoot = snap.root;
      versions.gatehouse_addon = snap.addon;
      log(`gatehouse: measuring a copy of the current build (addon ${snap.addon?.sha256 ?? '?'}, built ${snap.addon?.built ?? '?'})`);
    }
    if (opts.profile) {
      await profileProxies(ctx, log, runnable.filter((p) => !p.cacheOnly));
      return;
    }
    if (opts.instructions) {
      await countInstructions(ctx, log);
      return;
    }
    log(
      `${opts.quick ? 'quick run: ' : ''}${ctx.durationS} s measured after ${ctx.warmupS} s warm-up per proxy and scenario, ` +
        `${ctx.repeat} round${ctx.repeat > 1 ? 's (median shown)' : ''}`,
    );
    console.log();

    const scenarios = [];
    for (const def of SCENARIOS.filter((s) => !wantScenarios || wantScenarios.includes(s.id))) {
      const scn = { id: def.id, title: def.title, kind: def.kind, path: def.path };
      scenarios.push(scn);
      if (def.skipped) {
        scn.skipped = def.skipped;
        console.log(`${textTable(scn)}\n`);
        continue;
      }
      const t0 = Date.now();
      await runScenario(def, scn, runnable, ctx);
      scn.elapsed_s = Math.round((Date.now() - t0) / 100) / 10;
      console.log(`${textTable(scn)}\n`);
    }

    const targets = checkTargets(scenarios);
    console.log(`PRODUCT.md performance targets (gatehouse):\n${targetsText(targets)}\n`);

    const finishedAt = new Date();
    machine.loadavg_at_end = os.loadavg().map((x) => Math.round(x * 100) / 100);
    const report = {
      started_at: startedAt.toISOString(),
      finished_at: finishedAt.toISOString(),
      elapsed_s: Math.round((finishedAt - startedAt) / 1000),
      quick: opts.quick,
      machine,
      versions,
      method: {
        proxy_cpu: 0,
        origin_and_load_cpu: 1,
        origin: origin.kind,
        duration_s: ctx.durationS,
        warmup_s: ctx.warmupS,
        repeat: ctx.repeat,
        cpu_accounting: 'utime+stime from /proc/<pid>/stat summed over the proxy process tree, before/after the measured wrk run',
        tls: 'TLS 1.3 only, a self-signed ECDSA P-256 certificate made by the openssl CLI at run time; upstream HTTP/1.1 keep-alive',
      },
      scenarios,
      targets,
    };
    if (opts['no-save']) {
      // The PGO training run: a profile from scenarios that did not run would optimise for
      // the wrong paths without a word.
      const missed = scenarios.flatMap((scn) => [
        ...(scn.skipped ? [`${scn.id}: ${scn.skipped}`] : []),
        ...(scn.notes ?? []).filter((n) => n.startsWith('gatehouse failed')).map((n) => `${scn.id}: ${n}`),
      ]);
      if (missed.length > 0) throw new Error(`gatehouse did not run every scenario: ${missed.join('; ')}`);
      return;
    }
    const outDir = join(REPO, 'bench-results');
    mkdirSync(outDir, { recursive: true });
    const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
    const json = `${JSON.stringify(report, null, 2)}\n`;
    writeFileSync(join(outDir, `bench-${stamp}.json`), json);
    writeFileSync(join(outDir, 'latest.json'), json);
    const md = [
      `Machine: ${machine.cpu_model}, ${machine.nproc} CPUs, ${machine.memory_gib} GiB, kernel ${machine.kernel}; ` +
        `${versions.nginx ? `nginx ${versions.nginx}, ` : ''}${versions.haproxy ? `${versions.haproxy}, ` : ''}Node ${versions.node}; ` +
        `gatehouse ${versions.gatehouse}, engine ${versions.gatehouse_engine}; ${report.quick ? 'quick run, ' : ''}${ctx.durationS} s per measurement, median of ${ctx.repeat}; load average ${machine.loadavg_at_start.join(' ')} at start, ${machine.loadavg_at_end.join(' ')} at end; ${startedAt.toISOString()}.`,
      '',
      ...scenarios.map(markdownTable),
      targetsMarkdown(targets),
      '',
    ].join('\n');
    writeFileSync(join(outDir, 'latest.md'), md);
    log(`results: bench-results/bench-${stamp}.json (also latest.json, latest.md); ${report.elapsed_s} s in all`);
  } finally {
    await origin.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAllChildren();
    process.exit(130);
  });
}
try {
  await main();
} catch (e) {
  killAllChildren();
  console.error(`bench: ${e.message}`);
  process.exitCode = 1;
}
