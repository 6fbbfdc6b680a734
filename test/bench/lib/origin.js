// The origin every proxy forwards to: a separate nginx instance on the load core, so that it is
// fast and identical for all proxies. Without nginx, a tiny Node.js origin stands in (slower: the
// load core then saturates earlier, which the CPU-per-request figure still tolerates).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LOAD_CPU, freePort, spawnPinned, stopChild, waitForPort, which } from './system.js';

/** A small response body (the size of a typical JSON API answer). */
export const SMALL_BODY = `${'{"ok":true,"service":"origin","padding":"'.padEnd(120, 'x')}"}\n`;
export const LARGE_BYTES = 1024 * 1024;

function nginxOriginConf(dir, port) {
  return `
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/origin.pid;
error_log ${dir}/origin-error.log error;
worker_rlimit_nofile 20000;
events { worker_connections 16000; }
http {
  access_log off;
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/o-body;
  proxy_temp_path ${dir}/o-proxy;
  fastcgi_temp_path ${dir}/o-fastcgi;
  uwsgi_temp_path ${dir}/o-uwsgi;
  scgi_temp_path ${dir}/o-scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /small { return 200 '${SMALL_BODY.trimEnd()}\n'; }
    location = /cached { add_header Cache-Control "public, max-age=3600"; return 200 '${SMALL_BODY.trimEnd()}\n'; }
    location = /1mb { root ${dir}/www; try_files /1mb =404; }
    location / { return 200 '${SMALL_BODY.trimEnd()}\n'; }
  }
}
`;
}

/** Starts the origin; resolves with { url, kind, child, stop() }. */
export async function startOrigin(dir) {
  const { mkdirSync } = await import('node:fs');
  mkdirSync(join(dir, 'www'), { recursive: true });
  writeFileSync(join(dir, 'www', '1mb'), Buffer.alloc(LARGE_BYTES, 'a'), { mode: 0o644 });
  const port = await freePort();
  let child;
  let kind;
  if (which('nginx')) {
    kind = 'nginx';
    const conf = join(dir, 'origin.conf');
    writeFileSync(conf, nginxOriginConf(dir, port));
    child = spawnPinned(LOAD_CPU, 'nginx', ['-p', dir, '-e', join(dir, 'origin-error.log'), '-c', conf]);
  } else {
    kind = 'node (nginx missing)';
    const script = new URL('../peers/node-origin.js', import.meta.url).pathname;
    child = spawnPinned(LOAD_CPU, process.execPath, [script, String(port), join(dir, 'www', '1mb')]);
  }
  try {
    await waitForPort(port, 15_000, child);
  } catch (e) {
    await stopChild(child);
    throw new Error(`origin (${kind}) did not start: ${e.message}\n${child.output}`);
  }
  return { url: `http://127.0.0.1:${port}`, port, kind, child, stop: () => stopChild(child) };
}
