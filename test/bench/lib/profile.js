// `npm run bench -- --profile`: where the CPU goes, as input for optimisation work. While wrk
// drives small keep-alive requests (64 connections, or --profile-connections) against each proxy it counts system calls and context switches per request
// (perf stat), then samples gatehouse and nginx (perf record, flat self time) and writes the
// hottest symbols and the split by binary to bench-results/. The release build keeps line
// tables (Cargo.toml: debug = "line-tables-only"), so Rust symbols resolve; JavaScript frames
// would show as unknown addresses in node, which is not on the request path.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './proxies.js';
import { processTree, sleep, which } from './system.js';
import { runWrk } from './wrk.js';

const SAMPLED = ['gatehouse', 'nginx'];

/** Self time grouped by where it is spent: the kernel, libc's allocator or copies, each Rust crate. */
function groupByCrate(rows) {
  const groups = new Map();
  for (const line of rows) {
    const m = /^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, pct, dso, kind, sym] = m;
    let g;
    if (kind === 'k') g = 'kernel';
    else if (dso.startsWith('libc')) {
      g = /malloc|free|_int_|realloc|tcache|consolidate|unlink_chunk/.test(sym)
        ? 'libc: malloc/free'
        : /mem(move|cpy|set|cmp)/.test(sym)
          ? 'libc: memmove/memcpy'
          : 'libc: other';
    } else if (dso.endsWith('.node')) {
      const engine = /gatehouse_engine::([a-z_]+)/.exec(sym);
      const krate = /^<?([a-z_0-9]+)::/.exec(sym);
      g = engine ? `rust: gatehouse_engine::${engine[1]}` : `rust: ${krate ? krate[1] : 'other'}`;
    } else g = dso;
    groups.set(g, (groups.get(g) ?? 0) + Number(pct));
  }
  return [...groups].sort((a, b) => b[1] - a[1]).map(([g, p]) => `${p.toFixed(2).padStart(8)}%  ${g}`);
}

function perf(args, timeoutS) {
  return execFileSync('perf', args, {
    encoding: 'utf8',
    timeout: timeoutS * 1000,
    maxBuffer: 64 * 2 ** 20,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** perf stat's counters for a process tree over `seconds` (perf prints them on stderr). */
function statOnce(pids, seconds) {
  const r = spawnSync(
    'perf',
    ['stat', '-x', ',', '-e', 'raw_syscalls:sys_enter,context-switches,task-clock', '-p', pids.join(','), '--', 'sleep', String(seconds)],
    { encoding: 'utf8', timeout: (seconds + 60) * 1000 },
  );
  const text = r.stderr ?? '';
  const value = (name) => Number(text.split('\n').find((l) => l.includes(name))?.split(',')[0] ?? NaN);
  return { syscalls: value('raw_syscalls:sys_enter'), switches: value('context-switches'), taskClockMs: value('task-clock') };
}

export async function profileProxies(ctx, log, proxies) {
  if (!which('perf')) throw new Error('perf is not installed (apt-get install linux-perf)');
  const seconds = Math.max(ctx.durationS, 3);
  const lines = [];
  const counters = [];
  const reports = [];
  for (const proxy of proxies) {
    const h = await proxy.start(ctx);
    try {
      const url = `${h.url}/small`;
      await runWrk({ url, connections: ctx.profileConnections, seconds: ctx.warmupS });
      // Counting: perf stat in the middle of a steady run, whose rate gives the requests.
      const counted = runWrk({ url, connections: ctx.profileConnections, seconds: seconds + 2 });
      await sleep(1000);
      const pids = processTree(h.pid);
      const stat = statOnce(pids, seconds);
      const w = await counted;
      const requests = w.rps * seconds;
      counters.push({
        proxy: proxy.name,
        rps: Math.round(w.rps),
        syscalls_per_req: stat.syscalls / requests,
        switches_per_req: stat.switches / requests,
        task_clock_us_per_req: (stat.taskClockMs * 1000) / requests,
      });
      // Sampling, in a run of its own (perf record slows the proxy down).
      let data;
      let graph;
      if (SAMPLED.includes(proxy.name)) {
        const sampled = runWrk({ url, connections: ctx.profileConnections, seconds: seconds + 2 });
        await sleep(1000);
        data = join(ctx.dir, `perf-${proxy.name}.data`);
        perf(['record', '-F', '2999', '-p', pids.join(','), '-o', data, '--', 'sleep', String(seconds)], seconds + 60);
        await sampled;
      }
      if (proxy.name === 'gatehouse') {
        // Call graphs through DWARF unwinding (no frame pointers in the release build): inclusive
        // time per function, at a low rate because every sample copies 16 KiB of stack.
        const sampled = runWrk({ url, connections: ctx.profileConnections, seconds: seconds + 2 });
        await sleep(1000);
        graph = join(ctx.dir, 'perf-gatehouse-graph.data');
        perf(['record', '-F', '499', '--call-graph', 'dwarf,16384', '-p', pids.join(','), '-o', graph, '--', 'sleep', String(seconds)], seconds + 120);
        await sampled;
      }
      if (data) reports.push({ proxy: proxy.name, data, graph });
    } catch (e) {
      log(`${proxy.name}: ${e.message.split('\n')[0]}`);
    } finally {
      await h.stop();
    }
  }

  lines.push(`keep-alive small responses at ${ctx.profileConnections} connections under perf stat (requests = req/s × window):`);
  lines.push('  proxy                 req/s  syscalls/req  ctx switches/req  CPU µs/req (task-clock)');
  for (const c of counters) {
    lines.push(
      `  ${c.proxy.padEnd(20)}${String(c.rps).padStart(6)}  ${c.syscalls_per_req.toFixed(2).padStart(12)}  ${c.switches_per_req.toFixed(3).padStart(16)}  ${c.task_clock_us_per_req.toFixed(1).padStart(23)}`,
    );
  }
  let full = `${lines.join('\n')}\n`;
  const rows = (text) => text.split('\n').filter((l) => /^\s+\d/.test(l));
  for (const { proxy, data, graph } of reports) {
    const report = (sort, limit) =>
      perf(['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '--percent-limit', String(limit)], 120);
    const byDso = rows(report('dso', 0.5));
    const all = rows(report('dso,sym', 0));
    const bySym = all.filter((l) => Number(/([\d.]+)%/.exec(l)?.[1]) >= 0.3);
    const byCrate = groupByCrate(all);
    lines.push(
      '', `${proxy}: samples by binary`, ...byDso,
      '', `${proxy}: self time by crate`, ...byCrate.slice(0, 16),
      '', `${proxy}: hottest symbols (self time)`, ...bySym.slice(0, proxy === 'gatehouse' ? 40 : 15),
    );
    full += `\n${proxy}: samples by binary\n${byDso.join('\n')}\n\n${proxy}: self time by crate\n${byCrate.join('\n')}\n`;
    full += `\n${proxy}: symbols (self time, ≥ 0.3%)\n${bySym.join('\n')}\n`;
    if (graph) {
      // Inclusive time of the engine's own functions and of the libraries' entry points it calls.
      const children = rows(
        perf(['report', '-i', graph, '--stdio', '--children', '--sort', 'sym', '--percent-limit', '0.5', '-g', 'none'], 300),
      )
        .filter((l) => !l.includes('(inlined)'))
        .filter((l) => /gatehouse_|hyper::|tokio::time|tokio::sync|http::header|httparse|malloc|_int_free|memmove|clock_gettime/.test(l))
        .map((l) => l.replace(/^(\s+[\d.]+%)\s+[\d.]+%/, '$1').slice(0, 200));
      lines.push('', `${proxy}: inclusive time of selected functions (call graphs)`, ...children.slice(0, 30));
      full += `\n${proxy}: inclusive time (call graphs, ≥ 0.5%)\n${children.join('\n')}\n`;
    }
  }
  console.log(`\n${lines.join('\n')}\n`);
  const outDir = join(REPO, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `profile-${new Date().toISOString().replace(/[:.]/g, '-')}.txt`);
  writeFileSync(file, full);
  log(`full report: ${file.slice(REPO.length)}`);
}
