// Bringing the peers in: Debian packages (nginx-light, haproxy, wrk) when running as root, and the
// Node.js peers into test/bench/node_modules from test/bench/package.json, never into the main
// package's dependencies.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isRoot, which } from './system.js';

const BENCH = new URL('../', import.meta.url).pathname;
const NODE_PEERS = ['http-proxy', 'fastify', '@fastify/reply-from'];

function run(cmd, args, timeoutS, env = {}) {
  execFileSync(cmd, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: timeoutS * 1000,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', ...env },
  });
}

/** Installs missing Debian packages for `commands` ({ command: package }); returns notes. */
export function ensureDebian(commands, log) {
  const missing = Object.entries(commands).filter(([cmd]) => !which(cmd));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
  if (!isRoot()) {
    log(`not root: cannot install ${pkgs.join(', ')}; the proxies that need them are skipped`);
    return;
  }
  log(`installing ${pkgs.join(', ')} with apt-get`);
  try {
    run('apt-get', ['install', '-y', '-q', ...pkgs], 600);
  } catch {
    try {
      // The package lists may be missing or stale on a fresh machine: refresh once and retry.
      run('apt-get', ['update', '-q'], 300);
      run('apt-get', ['install', '-y', '-q', ...pkgs], 600);
    } catch (e) {
      log(`apt-get install ${pkgs.join(' ')} failed (${String(e.stderr ?? e.message).trim().split('\n').pop()})`);
    }
  }
}

/** Installs the Node.js peers into test/bench/node_modules when any is missing. */
export function ensureNodePeers(log) {
  const missing = NODE_PEERS.filter((name) => !existsSync(`${BENCH}node_modules/${name}/package.json`));
  if (missing.length === 0) return;
  log(`installing ${missing.join(', ')} into test/bench/node_modules (npm install --prefix test/bench)`);
  try {
    run('npm', ['install', '--prefix', BENCH, '--no-audit', '--no-fund', '--loglevel=error'], 300);
  } catch (e) {
    log(`npm install failed (${String(e.stderr ?? e.message).trim().split('\n').pop()}); the Node.js peers are skipped`);
  }
}
