// The proxies compared side by side. Each runs with one worker pinned to the proxy core, keeps
// connections alive on both sides, and does the same header work as gatehouse where the peer can
// (X-Forwarded-For/Proto/Host and a request id), so that CPU per request compares like with like.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROXY_CPU, freePort, spawnPinned, stopChild, waitForPort, which } from './system.js';

export const REPO = new URL('../../../', import.meta.url).pathname;
const PEERS = new URL('../peers/', import.meta.url).pathname;
const BENCH_MODULES = new URL('../node_modules/', import.meta.url).pathname;

/** Connections a proxy must be able to hold (the idle scenario opens 10,000). */
const MAX_CONNS = 16_000;

/**
 * Copies the built gatehouse (bin/, lib/, the addon and its loader, package.json) into `dir`, so
 * that a rebuild in the work tree during a long run (another engineer compiling) cannot swap the
 * subject between scenarios. Returns the copy's root and what identifies the build.
 */
export function snapshotGatehouse(dir) {
  const root = join(dir, 'gatehouse');
  mkdirSync(join(root, 'bindings'), { recursive: true });
  for (const part of ['bin', 'lib', 'package.json']) cpSync(join(REPO, part), join(root, part), { recursive: true });
  const addons = readdirSync(join(REPO, 'bindings')).filter((f) => f.endsWith('.node'));
  for (const f of [...addons, 'index.js']) cpSync(join(REPO, 'bindings', f), join(root, 'bindings', f));
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'));
  const addon = addons[0] ? join(REPO, 'bindings', addons[0]) : null;
  return {
    root,
    addon: addon
      ? {
          file: addons[0],
          built: statSync(addon).mtime.toISOString(),
          sha256: createHash('sha256').update(readFileSync(addon)).digest('hex').slice(0, 16),
        }
      : null,
  };
}

/**
 * `tls` ({ cert, key }): the listener terminates TLS 1.3 only; gatehouse offers h2 and http/1.1
 * by ALPN on every TLS listener (there is no setting for it).
 */
export function gatehouseConfig(port, adminPort, originUrl, balance, cache, tls) {
  const listener = { address: `127.0.0.1:${port}` };
  if (tls) listener.tls = { certificates: [{ cert: tls.cert, key: tls.key }], min_version: '1.3' };
  return {
    workers: 1,
    listeners: [listener],
    upstreams: {
      origin: {
        ...(balance ? { balance } : {}),
        backends: [{ url: originUrl }],
        // Like nginx's `keepalive 128` below: up to 128 idle upstream connections kept, and no
        // cap low enough to queue requests at 1,000 client connections.
        pool: { max_connections: 1024, max_idle: 128 },
      },
    },
    limits: { max_connections: MAX_CONNS },
    ...(cache ? { cache: { enabled: true, max_size: '64mb' } } : {}),
    // `gatehouse start` exits at once without an admin listener (nothing else keeps Node's event
    // loop alive); the admin listener costs nothing per proxied request.
    admin: { address: `127.0.0.1:${adminPort}` },
    log: { level: 'error', access_log: 'off' },
  };
}

/** `tls` ({ cert, key, h2 }): `listen … ssl` (and `http2` with h2), TLS 1.3 only. */
function nginxConfig(dir, port, originPort, cache, tls) {
  return `
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log error;
worker_rlimit_nofile 20000;
events { worker_connections ${MAX_CONNS}; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/n-body;
  proxy_temp_path ${dir}/n-proxy;
  fastcgi_temp_path ${dir}/n-fastcgi;
  uwsgi_temp_path ${dir}/n-uwsgi;
  scgi_temp_path ${dir}/n-scgi;
  ${cache ? `proxy_cache_path ${dir}/n-cache-${port} levels=1:2 keys_zone=bench:10m max_size=64m inactive=60m use_temp_path=off;` : ''}
  upstream origin {
    server 127.0.0.1:${originPort};
    keepalive 128;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${port}${tls ? ` ssl${tls.h2 ? ' http2' : ''}` : ''} backlog=4096;${tls ? `
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.3;` : ''}
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
      # Stream large bodies through memory buffers rather than spooling them to temp files.
      proxy_max_temp_file_size 0;
      ${cache ? 'proxy_cache bench; proxy_cache_lock on; add_header X-Cache-Status $upstream_cache_status;' : ''}
    }
  }
}
`;
}

/** `tls` ({ pem, h2 }): `bind … ssl crt` (certificate and key in one file), TLS 1.3 only. */
function haproxyConfig(port, originPort, cache, tls) {
  return `
global
  nbthread 1
  # 10,000 idle connections need no server side: do not insist on 2 fds per maxconn.
  no strict-limits
  maxconn ${MAX_CONNS}
  log stderr format short local0 err
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  timeout http-request 10s
frontend bench
  bind 127.0.0.1:${port}${tls ? ` ssl crt ${tls.pem} ssl-min-ver TLSv1.3 alpn ${tls.h2 ? 'h2,http/1.1' : 'http/1.1'}` : ''}
  maxconn ${MAX_CONNS}
  option forwardfor
  unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto ${tls ? 'https' : 'http'}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend origin
backend origin
  http-reuse always${cache ? '\n  http-request cache-use bench\n  http-response cache-store bench' : ''}
  server o1 127.0.0.1:${originPort}
${cache ? 'cache bench\n  total-max-size 64\n  max-object-size 1048576\n  max-age 3600\n' : ''}`;
}

async function startPinned(name, port, cmd, args, { tls } = {}) {
  const child = spawnPinned(PROXY_CPU, cmd, args);
  try {
    await waitForPort(port, 20_000, child);
  } catch (e) {
    await stopChild(child);
    throw new Error(`${name} did not start: ${e.message}\n${child.output}`);
  }
  return { name, port, url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, pid: child.pid, child, stop: () => stopChild(child) };
}

/**
 * The proxies in table order. `available()` returns null when it can run, or why not;
 * `unsupported[kind]` says why a proxy sits out a scenario kind. `start(ctx, opts)` takes
 * `tls: { cert, key, pem, h2 }` for a TLS 1.3 listener (the certificate's PEM files, `pem` being
 * both in one; `h2` offers HTTP/2 by ALPN); the upstream side stays HTTP/1.1 keep-alive.
 */
export const PROXIES = [
  {
    name: 'gatehouse',
    available: () =>
      existsSync(join(REPO, 'lib/index.js')) && existsSync(join(REPO, 'bindings/index.js'))
        ? null
        : 'not built (run `npm run build` first)',
    caches: true,
    /** `balance` replaces the built-in round robin (the policy scenario); `cache` enables the cache. */
    async start({ dir, origin, gatehouseRoot = REPO }, { balance, cache, tls } = {}) {
      const port = await freePort();
      let adminPort = await freePort();
      while (adminPort === port) adminPort = await freePort();
      const conf = join(dir, `gatehouse-${port}.json`);
      writeFileSync(conf, JSON.stringify(gatehouseConfig(port, adminPort, origin.url, balance, cache, tls), null, 2));
      const h = await startPinned('gatehouse', port, process.execPath, [
        join(gatehouseRoot, 'bin/gatehouse.js'), 'start', '-c', conf, '--drain-timeout', '1000',
      ], { tls });
      return { ...h, adminUrl: `http://127.0.0.1:${adminPort}` };
    },
  },
  {
    name: 'nginx',
    debian: 'nginx-light',
    available: () => (which('nginx') ? null : 'nginx is not installed (apt-get install nginx-light)'),
    caches: true,
    async start({ dir, origin }, { cache, tls } = {}) {
      const port = await freePort();
      const conf = join(dir, `nginx-${port}.conf`);
      writeFileSync(conf, nginxConfig(dir, port, origin.port, cache, tls));
      return startPinned('nginx', port, 'nginx', ['-p', dir, '-e', join(dir, 'nginx-error.log'), '-c', conf], { tls });
    },
  },
  {
    name: 'haproxy',
    debian: 'haproxy',
    available: () => (which('haproxy') ? null : 'haproxy is not installed (apt-get install haproxy)'),
    caches: true,
    async start({ dir, origin }, { cache, tls } = {}) {
      const port = await freePort();
      const conf = join(dir, `haproxy-${port}.cfg`);
      writeFileSync(conf, haproxyConfig(port, origin.port, cache, tls));
      return startPinned('haproxy', port, 'haproxy', ['-db', '-f', conf], { tls });
    },
  },
  {
    name: 'varnish',
    debian: 'varnish',
    cacheOnly: true,
    caches: true,
    available: () => (which('varnishd') ? null : 'varnish is not installed (apt-get install varnish)'),
    async start({ dir, origin }) {
      const port = await freePort();
      const work = join(dir, `varnish-${port}`);
      // One thread pool; Varnish serves each connection from a thread of its own, so it needs
      // at least as many threads as the scenario has connections.
      return startPinned('varnish', port, 'varnishd', [
        '-F', '-n', work, '-a', `127.0.0.1:${port}`, '-b', `127.0.0.1:${origin.port}`, '-s', 'malloc,64m',
        '-p', 'thread_pools=1', '-p', 'thread_pool_min=100', '-p', 'thread_pool_max=2000',
      ]);
    },
  },
  {
    name: 'node-http-proxy',
    npm: 'http-proxy',
    jit: true,
    available: () => (existsSync(join(BENCH_MODULES, 'http-proxy')) ? null : 'http-proxy is not installed in test/bench'),
    unsupported: { h2: 'http-proxy cannot serve HTTP/2 (it proxies HTTP/1.x requests only)' },
    /** With `tls`, an `https.createServer` (TLS 1.3 only) in front of the same proxy. */
    async start({ origin }, { tls } = {}) {
      const port = await freePort();
      if (tls?.h2) throw new Error('http-proxy cannot serve HTTP/2');
      const args = [join(PEERS, 'node-http-proxy.js'), String(port), origin.url, ...(tls ? [tls.cert, tls.key] : [])];
      return startPinned('node-http-proxy', port, process.execPath, args, { tls });
    },
  },
  {
    name: 'fastify-reply-from',
    npm: '@fastify/reply-from',
    jit: true,
    available: () =>
      existsSync(join(BENCH_MODULES, '@fastify/reply-from')) ? null : '@fastify/reply-from is not installed in test/bench',
    /** With `tls`, fastify's `https` (TLS 1.3 only); with `tls.h2`, `http2: true` as well (HTTP/1.1 still allowed). */
    async start({ origin }, { tls } = {}) {
      const port = await freePort();
      const args = [join(PEERS, 'fastify-reply-from.js'), String(port), origin.url, ...(tls ? [tls.cert, tls.key, tls.h2 ? 'h2' : 'h1'] : [])];
      return startPinned('fastify-reply-from', port, process.execPath, args, { tls });
    },
  },
];
