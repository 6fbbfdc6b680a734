// The TLS scenarios' certificate: a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// localhost, made once per run by the openssl CLI in the run's temporary folder, and a probe that
// says what a proxy's TLS listener negotiates and whether it resumes sessions.
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { which } from './system.js';

/**
 * `{ cert, key, pem }` (PEM files: the certificate, its PKCS#8 key, and both concatenated for
 * HAProxy), generated on first use and kept on `ctx` for the rest of the run.
 */
export function benchCert(ctx) {
  if (ctx.cert) return ctx.cert;
  if (!which('openssl')) throw new Error('the openssl CLI is not installed (apt-get install openssl)');
  const cert = join(ctx.dir, 'bench-cert.pem');
  const key = join(ctx.dir, 'bench-key.pem');
  const pem = join(ctx.dir, 'bench-cert-key.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '7', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 },
  );
  writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
  // The proxies start as root here, but a Node.js peer or nginx started otherwise must read them.
  for (const f of [cert, key, pem]) chmodSync(f, 0o644);
  ctx.cert = { cert, key, pem };
  return ctx.cert;
}

/** One TLS connection to 127.0.0.1:port; resolves with the socket once the handshake is done. */
function connect(port, options, timeoutMs) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    });
  });
}

/** Sends one `Connection: close` request on a connected socket and waits for the end (or 2 s). */
function oneRequest(socket, path) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => (socket.destroy(), resolve()), 2000);
    socket.on('data', () => undefined);
    socket.once('close', () => (clearTimeout(timer), resolve()));
    socket.on('error', () => undefined);
    socket.end(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  });
}

/**
 * What a TLS listener does with the clients of these scenarios: the version, cipher and ALPN
 * protocol it negotiates (offering h2 when `alpn` is), whether it also accepts TLS 1.2, and
 * whether it resumes a session: a first connection makes a request and keeps the last session
 * (ticket) the server sent, a second connection offers it.
 */
export async function probeTls(port, { path = '/small', alpn } = {}) {
  const ALPNProtocols = alpn ? ['h2', 'http/1.1'] : undefined;
  const first = await connect(port, { ALPNProtocols }, 5000);
  let session = null;
  first.on('session', (s) => (session = s));
  const facts = {
    protocol: first.getProtocol(),
    cipher: first.getCipher()?.standardName ?? first.getCipher()?.name,
    alpn: first.alpnProtocol || null,
  };
  // An h2 server wants a preface, not an HTTP/1.1 request: tickets arrive without one anyway.
  if (facts.alpn === 'h2') await new Promise((r) => setTimeout(r, 200)).then(() => first.destroy());
  else await oneRequest(first, path);
  facts.resumes = false;
  if (session) {
    const second = await connect(port, { ALPNProtocols, session }, 5000);
    facts.resumes = second.isSessionReused();
    second.destroy();
  }
  try {
    const old = await connect(port, { maxVersion: 'TLSv1.2' }, 5000);
    old.destroy();
    facts.tls12 = 'accepted';
  } catch {
    facts.tls12 = 'refused';
  }
  return facts;
}
