// Tables (plain text for the terminal, Markdown for docs/performance.md) and the PRODUCT.md
// performance targets checked against one run's results.
import { round } from './scenarios.js';

const fmt = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(digits));
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}x` : '–');
const errorCount = (e) => (e ? e.connect + e.read + e.write + e.timeout + e.non2xx : 0);
const byProxy = (rows, name) => rows?.find((r) => r.proxy === name);
const range = (r, digits) => (r.range ? `${fmt(r.range[0], digits)}–${fmt(r.range[1], digits)}` : '–');

/** Columns per scenario kind: [header, (row, rows) => cell]. */
function columns(scn) {
  if (scn.kind === 'idle') {
    return [
      ['proxy', (r) => r.proxy],
      ['conns held', (r) => String(r.connections)],
      ['RSS before MiB', (r) => fmt(r.rss_before_mib)],
      ['RSS after MiB', (r) => fmt(r.rss_after_mib)],
      ['bytes/conn', (r) => fmt(r.bytes_per_conn, 0)],
      ['range', (r) => range(r, 0)],
      ['÷ nginx', (r, rows) => ratio(r.bytes_per_conn, byProxy(rows, 'nginx')?.bytes_per_conn)],
      ['÷ HAProxy', (r, rows) => ratio(r.bytes_per_conn, byProxy(rows, 'haproxy')?.bytes_per_conn)],
      ['CPU µs/conn', (r) => fmt(r.cpu_us_per_conn, 1)],
      ['failed', (r) => String(r.failed)],
      ['other on core %', (r) => fmt(r.other_on_core_pct)],
    ];
  }
  if (scn.kind === 'blocked') {
    return [
      ['JS thread', (r) => r.phase],
      ['req/s', (r) => fmt(r.rps, 0)],
      ['core left %', (r) => fmt(r.available_core_pct)],
      ['engine busy % of it', (r) => fmt(r.engine_busy_of_available_pct)],
      ['req/s per core left', (r) => fmt(r.rps_per_available_core, 0)],
      ['÷ free', (r, rows) => ratio(r.rps_per_available_core, rows.find((x) => x.phase === 'free')?.rps_per_available_core)],
      ['p50 ms', (r) => fmt(r.p50_ms, 2)],
      ['p99 ms', (r) => fmt(r.p99_ms, 2)],
      ['engine CPU µs/req', (r) => fmt(r.engine_cpu_us_per_req, 1)],
      ['process CPU %', (r) => fmt(r.cpu_pct)],
      ['errors', (r) => String(errorCount(r.errors))],
      ['other on core %', (r) => fmt(r.other_on_core_pct)],
    ];
  }
  if (scn.kind === 'policy') {
    const builtin = (rows) => rows.find((x) => x.proxy.includes('built-in'))?.cpu_us_per_req;
    return [
      ['gatehouse with', (r) => r.proxy.replace(/^gatehouse, /, '')],
      ['req/s', (r) => fmt(r.rps, 0)],
      ['p50 ms', (r) => fmt(r.p50_ms, 2)],
      ['p99 ms', (r) => fmt(r.p99_ms, 2)],
      ['CPU µs/req', (r) => fmt(r.cpu_us_per_req, 1)],
      ['range', (r) => range(r, 1)],
      ['÷ built-in', (r, rows) => ratio(r.cpu_us_per_req, builtin(rows))],
      ['engine CPU µs/req', (r) => fmt(r.engine_cpu_us_per_req, 1)],
      ['CPU %', (r) => fmt(r.cpu_pct)],
      ['kernel %', (r) => fmt(r.sys_share_pct, 0)],
      ['RSS MiB', (r) => fmt(r.rss_mib)],
      ['errors', (r) => String(errorCount(r.errors))],
      ['other on core %', (r) => fmt(r.other_on_core_pct)],
    ];
  }
  if (scn.kind === 'tls-conn') {
    const version = (r) => (r.tls_protocol ? `${r.tls_protocol.replace('TLSv', '')}${r.tls12 === 'refused' ? ' only' : ' (1.2 too)'}` : '–');
    return [
      ['proxy', (r) => r.proxy],
      ['conn/s', (r) => fmt(r.conns_per_s, 0)],
      ['p50 ms', (r) => fmt(r.p50_ms, 2)],
      ['p99 ms', (r) => fmt(r.p99_ms, 2)],
      ['CPU µs/conn', (r) => fmt(r.cpu_us_per_conn, 1)],
      ['range', (r) => range(r, 1)],
      ['÷ nginx', (r, rows) => ratio(r.cpu_us_per_conn, byProxy(rows, 'nginx')?.cpu_us_per_conn)],
      ['÷ HAProxy', (r, rows) => ratio(r.cpu_us_per_conn, byProxy(rows, 'haproxy')?.cpu_us_per_conn)],
      ['CPU %', (r) => fmt(r.cpu_pct)],
      ['kernel %', (r) => fmt(r.sys_share_pct, 0)],
      ['TLS', version],
      ['resumes', (r) => (r.resumes === undefined ? '–' : r.resumes ? 'yes' : 'no')],
      ['resumed %', (r) => fmt(r.resumed_pct)],
      ['RSS MiB', (r) => fmt(r.rss_mib)],
      ['errors', (r) => String(errorCount(r.errors))],
      ['other on core %', (r) => fmt(r.other_on_core_pct)],
    ];
  }
  if (scn.kind === 'rate' || scn.kind === 'h2') {
    // Both are h2load runs; HTTP/2 adds what was negotiated.
    const negotiated = ['ALPN, TLS', (r) => (r.alpn ? `${r.alpn}, ${r.tls_protocol?.replace('TLSv', '') ?? '?'}` : '–')];
    return [
      ['proxy', (r) => r.proxy],
      ['req/s', (r) => fmt(r.rps, 0)],
      ['mean ms', (r) => fmt(r.mean_ms, 2)],
      ['max ms', (r) => fmt(r.max_ms, 2)],
      ['CPU µs/req', (r) => fmt(r.cpu_us_per_req, 1)],
      ['range', (r) => range(r, 1)],
      ['÷ nginx', (r, rows) => ratio(r.cpu_us_per_req, byProxy(rows, 'nginx')?.cpu_us_per_req)],
      ['÷ HAProxy', (r, rows) => ratio(r.cpu_us_per_req, byProxy(rows, 'haproxy')?.cpu_us_per_req)],
      ['CPU %', (r) => fmt(r.cpu_pct)],
      ['kernel %', (r) => fmt(r.sys_share_pct, 0)],
      ['IPIs/req', (r) => fmt(r.load_core_ipis_per_req, 2)],
      ...(scn.kind === 'h2' ? [negotiated] : []),
      ['RSS MiB', (r) => fmt(r.rss_mib)],
      ['errors', (r) => String(errorCount(r.errors))],
      ['other on core %', (r) => fmt(r.other_on_core_pct)],
    ];
  }
  const large = scn.path === '/1mb';
  return [
    ['proxy', (r) => r.proxy],
    ['req/s', (r) => fmt(r.rps, 0)],
    ...(large ? [['MiB/s', (r) => fmt(r.mib_per_s, 0)]] : []),
    ['p50 ms', (r) => fmt(r.p50_ms, 2)],
    ['p99 ms', (r) => fmt(r.p99_ms, 2)],
    [large ? 'CPU µs/MiB' : 'CPU µs/req', (r) => fmt(r.cpu_us_per_req, 1)],
    ['range', (r) => range(r, 1)],
    ['÷ nginx', (r, rows) => ratio(r.cpu_us_per_req, byProxy(rows, 'nginx')?.cpu_us_per_req)],
    ['÷ HAProxy', (r, rows) => ratio(r.cpu_us_per_req, byProxy(rows, 'haproxy')?.cpu_us_per_req)],
    ['CPU %', (r) => fmt(r.cpu_pct)],
    ['kernel %', (r) => fmt(r.sys_share_pct, 0)],
    ['IPIs/req', (r) => fmt(r.load_core_ipis_per_req, 2)],
    ['RSS MiB', (r) => fmt(r.rss_mib)],
    ['errors', (r) => String(errorCount(r.errors))],
    ['other on core %', (r) => fmt(r.other_on_core_pct)],
  ];
}

function cells(scn) {
  const cols = columns(scn);
  const rows = scn.results ?? [];
  return { head: cols.map(([h]) => h), body: rows.map((r) => cols.map(([, f]) => f(r, rows))) };
}

/** One scenario as aligned plain text. */
export function textTable(scn) {
  const lines = [`${scn.id}: ${scn.title}`];
  if (scn.skipped) return `${lines[0]}\n  skipped: ${scn.skipped}`;
  const { head, body } = cells(scn);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r) => `  ${r.map((c, i) => (i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ')}`;
  lines.push(line(head), ...body.map(line));
  for (const note of scn.notes ?? []) lines.push(`  note: ${note}`);
  return lines.join('\n');
}

/** One scenario as a Markdown table. */
export function markdownTable(scn) {
  const title = `**${scn.id}** — ${scn.title}`;
  if (scn.skipped) return `${title}: skipped: ${scn.skipped}\n`;
  const { head, body } = cells(scn);
  const row = (r) => `| ${r.join(' | ')} |`;
  const align = `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`;
  const notes = (scn.notes ?? []).map((n) => `\n_note: ${n}_`).join('');
  return `${title}\n\n${[row(head), align, ...body.map(row)].join('\n')}\n${notes}\n`;
}

/** The PRODUCT.md performance goals, each with the measured figure and a verdict. */
export function checkTargets(scenarios) {
  const get = (id) => scenarios.find((s) => s.id === id);
  const gh = (id) => byProxy(get(id)?.results, 'gatehouse');
  const out = [];
  const verdict = (ok) => (ok === null ? 'not measured' : ok ? 'met' : 'NOT met');

  for (const id of ['h1-small-64', 'h1-small-rate', 'h1-small-1000']) {
    const g = gh(id);
    for (const peer of ['nginx', 'haproxy']) {
      const p = byProxy(get(id)?.results, peer);
      const r = g && p ? g.cpu_us_per_req / p.cpu_us_per_req : null;
      out.push({
        target: `HTTP/1.1 CPU/request ≤ 0.8× ${peer} (${id})`,
        measured: r === null ? '–' : `${r.toFixed(2)}× (${fmt(g.cpu_us_per_req)} vs ${fmt(p.cpu_us_per_req)} µs)`,
        verdict: verdict(r === null ? null : r <= 0.8),
      });
    }
  }
  {
    const g = gh('idle-10k');
    const n = byProxy(get('idle-10k')?.results, 'nginx');
    const r = g && n ? g.bytes_per_conn / n.bytes_per_conn : null;
    out.push({
      target: 'idle-connection memory ≤ nginx per connection',
      measured: r === null ? '–' : `${r.toFixed(2)}× (${fmt(g.bytes_per_conn, 0)} vs ${fmt(n.bytes_per_conn, 0)} bytes)`,
      verdict: verdict(r === null ? null : r <= 1),
    });
  }
  {
    const g = gh('h1-small-1000');
    const n = byProxy(get('h1-small-1000')?.results, 'nginx');
    const r = g && n ? g.p99_ms / n.p99_ms : null;
    out.push({
      target: '1,000 busy connections without latency collapse (no errors, p99 ≤ 2× nginx)',
      measured: r === null ? '–' : `p99 ${fmt(g.p99_ms, 2)} ms = ${r.toFixed(2)}× nginx, ${errorCount(g.errors)} errors`,
      verdict: verdict(r === null ? null : r <= 2 && errorCount(g.errors) === 0),
    });
  }
  for (const peer of ['node-http-proxy', 'fastify-reply-from']) {
    const g = gh('h1-small-64');
    const p = byProxy(get('h1-small-64')?.results, peer);
    // Throughput per core = requests per CPU-second = 1 / CPU per request.
    const r = g && p ? p.cpu_us_per_req / g.cpu_us_per_req : null;
    out.push({
      target: `≥ 10× ${peer}'s throughput per core`,
      measured: r === null ? '–' : `${r.toFixed(1)}× per core (${fmt(round(g.rps / p.rps, 1))}× req/s)`,
      verdict: verdict(r === null ? null : r >= 10),
    });
  }
  {
    // Judged on the engine's use of the share of the core left to it (other processes and the
    // busy loops take the rest): a noisy machine does not move it, waiting for JavaScript would.
    const rows = get('js-blocked')?.results;
    const row = (p) => rows?.find((r) => r.phase === p);
    const free = row('free');
    const blocked = ['sleep', 'spin'].map(row).filter(Boolean);
    const worst = blocked.length ? Math.min(...blocked.map((r) => r.engine_busy_of_available_pct)) : null;
    const perCore = (p) => (row(p)?.rps_per_available_core && free?.rps_per_available_core ? row(p).rps_per_available_core / free.rps_per_available_core : null);
    const errors = (rows ?? []).reduce((n, r) => n + errorCount(r.errors), 0);
    out.push({
      target: 'blocked event loop does not slow proxied traffic',
      measured:
        free && worst !== null
          ? `engine busy ${fmt(worst)}% of its core share while blocked vs ${fmt(free.engine_busy_of_available_pct)}% free; ` +
            `req/s per core share ${fmt(perCore('sleep'), 2)}× (sleep), ${fmt(perCore('spin'), 2)}× (spin); ${errors} errors`
          : '–',
      verdict: verdict(free && worst !== null ? worst >= 0.9 * free.engine_busy_of_available_pct && errors === 0 : null),
    });
  }
  for (const peer of ['nginx', 'varnish']) {
    const g = gh('cache-hit');
    const p = byProxy(get('cache-hit')?.results, peer);
    const r = g && p ? g.cpu_us_per_req / p.cpu_us_per_req : null;
    out.push({
      target: `cache hit CPU/request ≤ 0.8× ${peer === 'nginx' ? 'nginx proxy_cache' : 'Varnish'}`,
      measured: r === null ? '–' : `${r.toFixed(2)}× (${fmt(g.cpu_us_per_req)} vs ${fmt(p.cpu_us_per_req)} µs)`,
      verdict: verdict(r === null ? null : r <= 0.8),
    });
  }
  {
    // Judged on the handshakes wrk makes (resumed ones where the proxy resumes: see the
    // scenario); a proxy that does not resume pays full handshakes, and the figure says so.
    const g = gh('tls13-new-conn');
    const n = byProxy(get('tls13-new-conn')?.results, 'nginx');
    const r = g && n ? g.cpu_us_per_conn / n.cpu_us_per_conn : null;
    const kind = (x) => (x.resumes ? 'resumed' : 'full');
    out.push({
      target: 'new TLS 1.3 connection CPU < nginx/OpenSSL (tls13-new-conn)',
      measured:
        r === null
          ? '–'
          : `${r.toFixed(2)}× (${fmt(g.cpu_us_per_conn)} vs ${fmt(n.cpu_us_per_conn)} µs/conn; ${kind(g)} vs ${kind(n)} handshakes), ${errorCount(g.errors)} errors`,
      verdict: verdict(r === null ? null : r < 1 && errorCount(g.errors) === 0),
    });
  }
  {
    const g = gh('h2-tls-10-streams');
    const n = byProxy(get('h2-tls-10-streams')?.results, 'nginx');
    const r = g && n ? g.cpu_us_per_req / n.cpu_us_per_req : null;
    out.push({
      target: 'HTTP/2 CPU/request < nginx (h2-tls-10-streams)',
      measured: r === null ? '–' : `${r.toFixed(2)}× (${fmt(g.cpu_us_per_req)} vs ${fmt(n.cpu_us_per_req)} µs), ${errorCount(g.errors)} errors`,
      verdict: verdict(r === null ? null : r < 1 && errorCount(g.errors) === 0),
    });
  }
  return out;
}

export function targetsText(targets) {
  const w = Math.max(...targets.map((t) => t.target.length));
  const m = Math.max(...targets.map((t) => t.measured.length));
  return targets.map((t) => `  ${t.target.padEnd(w)}  ${t.measured.padEnd(m)}  ${t.verdict}`).join('\n');
}

export function targetsMarkdown(targets) {
  return ['| target | measured | verdict |', '|---|---|---|', ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.verdict} |`)].join('\n');
}
