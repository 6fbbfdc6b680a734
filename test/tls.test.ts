/**
 * TLS termination end to end, with certificates made at test time by a small CA and real TLS
 * clients: SNI, versions, ALPN, resumption, key checks, rotation (watched files and SIGHUP),
 * expiry warnings, and the HTTP→HTTPS redirect.
 */
import test, { type ExecutionContext } from 'ava';
import { copyFile, mkdtemp, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { createTestCerts, type CertFiles, type TestCerts } from './helpers/certs.js';
import { startGatehouse } from './helpers/cliproc.js';
import { adminJson, delay, send, until } from './helpers/client.js';
import { closedPort, startOrigin, type Origin, type SeenRequest } from './helpers/origin.js';
import { proxyConfig, startProxy, type TestProxy } from './helpers/proxy.js';
import { open } from './helpers/raw.js';
import { exchange } from './helpers/rawclose.js';
import { anyName, closeGracefully, handshake, httpsGet, peerCertificate, tlsStats, type TlsStatsView } from './helpers/tlsclient.js';
import { ConfigError, start } from '../ts/index.js';
import type { GatehouseConfigInput } from '../ts/config/schema.js';

let certs: TestCerts;
test.before(async () => {
  certs = await createTestCerts();
});
test.after.always(async () => {
  await certs?.remove();
});

type TlsInput = NonNullable<GatehouseConfigInput['listeners'][number]['tls']>;

interface TlsProxy {
  proxy: TestProxy;
  origin: Origin;
  /** Port of the TLS listener (the first). */
  port: number;
}

/** An echo origin behind a proxy whose first listener terminates TLS with `tls`. */
async function tlsProxy(t: ExecutionContext, tls: TlsInput, overrides: Partial<GatehouseConfigInput> = {}): Promise<TlsProxy> {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], { listeners: [{ address: '127.0.0.1:0', tls }], ...overrides }));
  t.teardown(() => proxy.close());
  return { proxy, origin, port: proxy.port };
}

const pair = (c: CertFiles) => ({ cert: c.cert, key: c.key });

// ---------------------------------------------------------------------------------------------
// Certificate selection

test('SNI picks the certificate: exact name, then one-label wildcard, then the first as default', async (t) => {
  // The wildcard is listed before api.example.test: an exact name still wins over it.
  const { port } = await tlsProxy(t, {
    certificates: [pair(certs.a), pair(certs.b), pair(certs.wildcard), pair(certs.api), pair(certs.multi), pair(certs.cnVsSan)],
  });
  const ca = certs.caPem;
  // Names a certificate covers: the client's own hostname check passes.
  const multiSan = 'DNS:multi.test, DNS:www.multi.test, DNS:*.apps.multi.test';
  const covered: [string, string, string][] = [
    ['a.test', 'a.test', 'DNS:a.test'],
    ['b.test', 'b.test', 'DNS:b.test'],
    ['B.Test', 'b.test', 'DNS:b.test'],
    ['x.example.test', '*.example.test', 'DNS:*.example.test'],
    ['api.example.test', 'api.example.test', 'DNS:api.example.test'],
    ['multi.test', 'multi.test', multiSan],
    ['www.multi.test', 'multi.test', multiSan],
    ['one.apps.multi.test', 'multi.test', multiSan],
    ['san-only.test', 'cn-only.test', 'DNS:san-only.test'],
  ];
  for (const [servername, cn, san] of covered) {
    const cert = await peerCertificate(port, { ca, servername });
    t.is(cert.subject.CN, cn, `SNI ${servername}`);
    t.is(cert.subjectaltname, san, `SNI ${servername}`);
    t.true(cert.authorized, `the chain for ${servername} verifies against the test CA`);
    t.is(cert.issuer.CN, 'Gatehouse Test Root CA');
  }
  // Names no certificate covers get the default (first) one.
  // `cn-only.test` is only the CN of a certificate with SANs: not one of its names.
  for (const servername of ['deep.x.example.test', 'unknown.test', 'example.test', 'apps.multi.test', 'cn-only.test']) {
    const cert = await peerCertificate(port, { ca, servername, checkServerIdentity: anyName });
    t.is(cert.subject.CN, 'a.test', `SNI ${servername} falls back to the default certificate`);
    t.is(cert.fingerprint256, certs.a.fingerprint256);
  }
  // No SNI at all (Node sends none when connecting to an IP address without `servername`).
  const noSni = await peerCertificate(port, { ca, checkServerIdentity: anyName });
  t.is(noSni.subject.CN, 'a.test', 'no SNI: the default certificate');
});

test('the certificate file may hold a chain; the client sees the leaf and verifies it', async (t) => {
  const { port } = await tlsProxy(t, { certificates: [pair(certs.a)] });
  const socket = await handshake(port, { ca: certs.caPem, servername: 'a.test' });
  t.teardown(() => socket.destroy());
  const peer = socket.getPeerCertificate(true);
  t.is(peer.fingerprint256, certs.a.fingerprint256);
  t.is(peer.issuerCertificate?.subject.CN, 'Gatehouse Test Root CA');
  t.true(socket.authorized);
});

test('an expired certificate is still served for its name (clients refuse it), and shows in stats', async (t) => {
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a), pair(certs.expired)] });
  const error = await t.throwsAsync(handshake(port, { ca: certs.caPem, servername: 'expired.test' }));
  t.is((error as NodeJS.ErrnoException | undefined)?.code, 'CERT_HAS_EXPIRED');
  const cert = await peerCertificate(port, { ca: certs.caPem, servername: 'expired.test', rejectUnauthorized: false });
  t.is(cert.fingerprint256, certs.expired.fingerprint256);
  const entry = tlsStats(proxy.gateway).certificates.find((c) => c.names.includes('expired.test'));
  t.truthy(entry);
  t.true(entry?.expiring_soon);
  t.is(entry?.expires_in_days, 0);
  t.true(entry?.not_after.startsWith('2020-02-01'), entry?.not_after);
});

// ---------------------------------------------------------------------------------------------
// Requests over TLS

test('backends see plain HTTP with X-Forwarded-Proto: https (and http from a plain listener)', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(
    proxyConfig([origin.url], {
      listeners: [{ address: '127.0.0.1:0', tls: { certificates: [pair(certs.a)] } }, { address: '127.0.0.1:0' }],
    }),
  );
  t.teardown(() => proxy.close());
  const plainPort = Number(proxy.gateway.addresses[1]?.bound.split(':')[1]);
  // A client's own X-Forwarded-Proto is not believed.
  const r = await httpsGet(proxy.port, { ca: certs.caPem, servername: 'a.test', path: '/fwd?x=1', headers: { 'x-forwarded-proto': 'http' } });
  t.is(r.status, 200);
  t.is(r.fingerprint256, certs.a.fingerprint256);
  const seen = JSON.parse(r.body) as SeenRequest;
  t.is(seen.url, '/fwd?x=1');
  t.is(seen.headers.host, 'a.test');
  t.is(seen.headers['x-forwarded-proto'], 'https');
  t.is(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.is(origin.requests.length, 1, 'the origin (a plain HTTP server) got the request');
  const plain = await send(`http://127.0.0.1:${plainPort}/p`, { headers: { 'x-forwarded-proto': 'https' } });
  t.is((JSON.parse(plain.body) as SeenRequest).headers['x-forwarded-proto'], 'http');
  // A POST body crosses the TLS listener intact.
  const body = 'x'.repeat(100_000);
  const post = await httpsGet(proxy.port, { ca: certs.caPem, servername: 'a.test', path: '/post', method: 'POST', body });
  t.is((JSON.parse(post.body) as SeenRequest).bodyLength, body.length);
});

// ---------------------------------------------------------------------------------------------
// Versions, cipher suites, failures

test('min_version 1.3 refuses a TLS 1.2-only client, counts the failure with a reason, and serves TLS 1.3', async (t) => {
  const admin = { address: '127.0.0.1:0' };
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a)], min_version: '1.3' }, { admin });
  const ca = certs.caPem;
  await t.throwsAsync(handshake(port, { ca, servername: 'a.test', maxVersion: 'TLSv1.2' }), undefined, 'a TLS 1.2-only client is refused');
  await until(() => tlsStats(proxy.gateway).failures >= 1, 'the failed handshake to be counted');
  const r = await httpsGet(port, { ca, servername: 'a.test', path: '/v13' });
  t.is(r.status, 200);
  t.is(r.protocol, 'TLSv1.3');
  await until(() => tlsStats(proxy.gateway).handshakes >= 1, 'the handshake to be counted');
  const stats = await adminJson<{ tls: TlsStatsView }>(proxy.gateway.adminAddress, '/stats');
  t.is(stats.tls.failures, 1);
  t.deepEqual(stats.tls.failure_reasons, { incompatible: 1 }, 'no protocol version in common');
  t.is(stats.tls.handshakes, 1);
  t.deepEqual(stats.tls.versions, { 'TLSv1.2': 0, 'TLSv1.3': 1 });
});

test('min_version 1.2 accepts TLS 1.2 and TLS 1.3 clients and counts each version', async (t) => {
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a)], min_version: '1.2' });
  const ca = certs.caPem;
  const v12 = await httpsGet(port, { ca, servername: 'a.test', tls: { maxVersion: 'TLSv1.2' } });
  t.is(v12.status, 200);
  t.is(v12.protocol, 'TLSv1.2');
  const v13 = await httpsGet(port, { ca, servername: 'a.test', tls: { minVersion: 'TLSv1.3' } });
  t.is(v13.status, 200);
  t.is(v13.protocol, 'TLSv1.3');
  await until(() => tlsStats(proxy.gateway).handshakes >= 2, 'both handshakes to be counted');
  const s = tlsStats(proxy.gateway);
  t.deepEqual(s.versions, { 'TLSv1.2': 1, 'TLSv1.3': 1 });
  t.is(s.failures, 0);
});

test('cipher_suites restricts what is negotiated; a client with none of them is refused', async (t) => {
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a)], min_version: '1.3', cipher_suites: ['TLS13_AES_256_GCM_SHA384'] });
  const ca = certs.caPem;
  const socket = await handshake(port, { ca, servername: 'a.test' });
  t.is(socket.getCipher().standardName, 'TLS_AES_256_GCM_SHA384');
  await closeGracefully(socket);
  // Node takes TLS 1.3 suites in `ciphers` too.
  await t.throwsAsync(handshake(port, { ca, servername: 'a.test', ciphers: 'TLS_AES_128_GCM_SHA256' }));
  const other = await handshake(port, { ca, servername: 'a.test', ciphers: 'TLS_AES_256_GCM_SHA384' });
  t.is(other.getCipher().standardName, 'TLS_AES_256_GCM_SHA384');
  await closeGracefully(other);
  await until(() => tlsStats(proxy.gateway).handshakes === 2, 'the handshakes to be counted');
  const s = tlsStats(proxy.gateway);
  t.is(s.failures, 1);
  t.deepEqual(s.failure_reasons, { incompatible: 1 }, 'no cipher suite in common');
});

async function unknownSuite(t: ExecutionContext): Promise<{ error: ConfigError | undefined; port: number }> {
  const port = await closedPort();
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const config = proxyConfig([origin.url], {
    listeners: [{ address: `127.0.0.1:${port}`, tls: { certificates: [pair(certs.a)], cipher_suites: ['TLS13_NOT_A_SUITE'] } }],
  });
  const error = await t.throwsAsync(start(config), { instanceOf: ConfigError });
  return { error, port };
}

test('an unknown cipher suite is a config error naming it, and nothing listens', async (t) => {
  const { error, port } = await unknownSuite(t);
  await t.throwsAsync(open(port), undefined, 'nothing listens');
  const problem = error?.problems[0];
  t.regex(problem?.message ?? '', /TLS13_NOT_A_SUITE/);
  t.true(problem?.path.startsWith('listeners[0].tls'), problem?.path);
});

// Settings problems are reported at the setting they concern, not at the certificates.
test('an unknown cipher suite is reported at listeners[0].tls.cipher_suites', async (t) => {
  const { error } = await unknownSuite(t);
  t.is(error?.problems[0]?.path, 'listeners[0].tls.cipher_suites');
});

test('failed handshakes are counted by reason: plain HTTP on a TLS port, and a client that never speaks', async (t) => {
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a)] }, { limits: { header_timeout: '300ms' } });
  const plain = await exchange(port, ['GET / HTTP/1.1\r\nHost: a.test\r\n\r\n'], { waitMs: 3000 });
  t.true(plain.closed, 'the connection is closed');
  t.deepEqual(plain.statuses, [], 'no HTTP answer on a TLS port');
  await until(() => tlsStats(proxy.gateway).failures === 1, 'the failure to be counted');
  const silent = await exchange(port, [], { waitMs: 5000 });
  t.true(silent.closed, 'a silent client is closed after the header timeout');
  await until(() => tlsStats(proxy.gateway).failures === 2, 'the timeout to be counted');
  const s = tlsStats(proxy.gateway);
  t.is(s.failure_reasons.timeout, 1, JSON.stringify(s.failure_reasons));
  t.is(Object.values(s.failure_reasons).reduce((a, b) => a + b, 0), 2, JSON.stringify(s.failure_reasons));
  t.is(s.handshakes, 0);
  t.is((await httpsGet(port, { ca: certs.caPem, servername: 'a.test' })).status, 200, 'the listener still serves');
});

// ---------------------------------------------------------------------------------------------
// ALPN

test('ALPN: an HTTP/2 client negotiates h2 and is proxied; HTTP/1.1 clients still work', async (t) => {
  const { port, origin } = await tlsProxy(t, { certificates: [pair(certs.a), pair(certs.b)] });
  const session: ClientHttp2Session = h2connect(`https://127.0.0.1:${port}`, { ca: certs.caPem, servername: 'b.test' });
  t.teardown(() => session.destroy());
  await new Promise<void>((resolve, reject) => session.once('connect', () => resolve()).once('error', reject));
  const socket = session.socket as unknown as import('node:tls').TLSSocket;
  t.is(session.alpnProtocol, 'h2');
  t.is(socket.getPeerCertificate().subject.CN, 'b.test', 'SNI works with h2 too');
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const stream = session.request({ ':path': '/h2?z=1', ':authority': 'b.test' });
    let status = 0;
    let body = '';
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ status, body }));
    stream.on('error', reject);
    stream.end();
  });
  t.is(status, 200);
  const seen = JSON.parse(body) as SeenRequest;
  t.is(seen.url, '/h2?z=1');
  t.is(seen.headers.host, 'b.test');
  t.is(seen.headers['x-forwarded-proto'], 'https');
  const h1 = await httpsGet(port, { ca: certs.caPem, servername: 'a.test', tls: { ALPNProtocols: ['http/1.1'] } });
  t.is(h1.status, 200);
  t.is(h1.alpn, 'http/1.1');
  const noAlpn = await httpsGet(port, { ca: certs.caPem, servername: 'a.test' });
  t.is(noAlpn.status, 200);
  t.is(noAlpn.alpn, false, 'no ALPN offered: HTTP/1.1');
  t.is(origin.requests.length, 3);
});

// ---------------------------------------------------------------------------------------------
// Resumption

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  test(`session resumption (${version}): a saved session is resumed and counted`, async (t) => {
    const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a)] });
    const options = { ca: certs.caPem, servername: 'a.test', minVersion: version, maxVersion: version };
    const first = await handshake(port, options);
    t.teardown(() => first.destroy());
    t.false(first.isSessionReused());
    // TLS 1.3 tickets come after the handshake: exchange a request so they are read.
    first.write('GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    first.resume();
    await until(() => first.sessions.length > 0, 'a session ticket');
    const second = await handshake(port, { ...options, session: first.sessions[0] });
    t.teardown(() => second.destroy());
    t.true(second.isSessionReused(), 'the second connection resumed the session');
    t.is(second.getProtocol(), version);
    t.is(second.getPeerCertificate().fingerprint256 ?? certs.a.fingerprint256, certs.a.fingerprint256);
    await until(() => tlsStats(proxy.gateway).resumed >= 1, 'the resumed handshake to be counted');
    const s = tlsStats(proxy.gateway);
    t.is(s.resumed, 1);
    t.is(s.handshakes, 2);
  });
}

test('a session saved for one name is not resumed for another: the other name gets a full handshake and its own certificate', async (t) => {
  const { port, proxy } = await tlsProxy(t, { certificates: [pair(certs.a), pair(certs.b)] });
  const first = await handshake(port, { ca: certs.caPem, servername: 'a.test' });
  t.teardown(() => first.destroy());
  first.write('GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
  first.resume();
  await until(() => first.sessions.length > 0, 'a session ticket');
  const other = await handshake(port, { ca: certs.caPem, servername: 'b.test', session: first.sessions[0] });
  t.teardown(() => other.destroy());
  t.false(other.isSessionReused());
  t.is(other.getPeerCertificate().subject.CN, 'b.test');
  t.true(other.authorized);
  t.is(tlsStats(proxy.gateway).resumed, 0);
});

// ---------------------------------------------------------------------------------------------
// Configuration errors

test('a key that does not match its certificate: start() rejects naming the key file, and nothing listens', async (t) => {
  const port = await closedPort();
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const config = proxyConfig([origin.url], { listeners: [{ address: `127.0.0.1:${port}`, tls: { certificates: [pair(certs.mismatched)] } }] });
  const error = await t.throwsAsync(start(config), { instanceOf: ConfigError });
  t.is(error?.code, 'ERR_GATEHOUSE_CONFIG');
  const problem = error?.problems[0];
  t.true(problem?.path.startsWith('listeners[0].tls.certificates'), problem?.path);
  t.true(problem?.message.includes(certs.mismatched.key), problem?.message);
  t.regex(problem?.message ?? '', /does not match/);
  await t.throwsAsync(open(port), undefined, 'nothing listens');
});

test('a bad certificate on a later listener fails start() whole: the earlier plain listener is not left bound', async (t) => {
  const plainPort = await closedPort();
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const garbage = join(certs.dir, 'garbage.pem');
  await writeFile(garbage, 'this is not a certificate\n');
  const config = proxyConfig([origin.url], {
    listeners: [{ address: `127.0.0.1:${plainPort}` }, { address: '127.0.0.1:0', tls: { certificates: [{ cert: garbage, key: certs.a.key }] } }],
  });
  const error = await t.throwsAsync(start(config), { instanceOf: ConfigError });
  const problem = error?.problems[0];
  t.true(problem?.path.startsWith('listeners[1].tls.certificates'), problem?.path);
  t.true(problem?.message.includes(garbage), problem?.message);
  await t.throwsAsync(open(plainPort), undefined, 'nothing listens');
});

async function mismatchedReload(t: ExecutionContext): Promise<{ error: Error | undefined; port: number; proxy: TestProxy; origin: Origin }> {
  const { port, proxy, origin } = await tlsProxy(t, { certificates: [pair(certs.a)] });
  const bad = proxyConfig([origin.url], { listeners: [{ address: '127.0.0.1:0', tls: { certificates: [pair(certs.mismatched)] } }] });
  const error = await t.throwsAsync(proxy.gateway.reload(bad));
  return { error, port, proxy, origin };
}

test('a reload with a mismatched key is rejected naming the key file; the old certificate keeps serving; a good reload applies', async (t) => {
  const { error, port, proxy, origin } = await mismatchedReload(t);
  t.true(error?.message.includes(certs.mismatched.key), error?.message);
  const ca = certs.caPem;
  t.is((await peerCertificate(port, { ca, servername: 'a.test' })).fingerprint256, certs.a.fingerprint256);
  t.is((await httpsGet(port, { ca, servername: 'a.test' })).status, 200);
  await proxy.gateway.reload(proxyConfig([origin.url], { listeners: [{ address: '127.0.0.1:0', tls: { certificates: [pair(certs.b), pair(certs.a)] } }] }));
  t.is(proxy.gateway.addresses[0]?.bound, `127.0.0.1:${port}`, 'the same listener');
  const unknown = await peerCertificate(port, { ca, servername: 'unknown.test', checkServerIdentity: anyName });
  t.is(unknown.subject.CN, 'b.test', 'the reloaded list has b.test first: the new default');
  t.is((await peerCertificate(port, { ca, servername: 'a.test' })).subject.CN, 'a.test');
});

// A reload refused for a certificate is a ConfigError with its key path, as at start, so the CLI
// logs SIGHUP failures with the path and programs can tell a bad certificate apart.
test('a reload with a mismatched key rejects with a ConfigError at listeners[0].tls.certificates, as start() does', async (t) => {
  const { error } = await mismatchedReload(t);
  t.true(error instanceof ConfigError, `${error?.name}: ${error?.message}`);
  t.true((error as ConfigError | undefined)?.problems?.[0]?.path.startsWith('listeners[0].tls.certificates'));
});

test('a reload changes TLS settings of a running listener: min_version, and TLS added to a plain listener', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(proxyConfig([origin.url], { listeners: [{ address: '127.0.0.1:0' }] }));
  t.teardown(() => proxy.close());
  const port = proxy.port;
  t.is((await send(`http://127.0.0.1:${port}/plain`)).status, 200);
  const ca = certs.caPem;
  const withTls = (min_version: '1.2' | '1.3') =>
    proxyConfig([origin.url], { listeners: [{ address: '127.0.0.1:0', tls: { certificates: [pair(certs.a)], min_version } }] });
  await proxy.gateway.reload(withTls('1.2'));
  t.is(proxy.gateway.addresses[0]?.bound, `127.0.0.1:${port}`, 'the same socket');
  const v12 = await httpsGet(port, { ca, servername: 'a.test', tls: { maxVersion: 'TLSv1.2' } });
  t.is(v12.status, 200);
  t.is(v12.protocol, 'TLSv1.2');
  await proxy.gateway.reload(withTls('1.3'));
  await t.throwsAsync(handshake(port, { ca, servername: 'a.test', maxVersion: 'TLSv1.2' }), undefined, 'TLS 1.2 refused after the reload');
  t.is((await httpsGet(port, { ca, servername: 'a.test' })).protocol, 'TLSv1.3');
  await proxy.gateway.reload(proxyConfig([origin.url]));
  t.is((await send(`http://127.0.0.1:${port}/plain-again`)).status, 200, 'and back to plain HTTP');
});

// ---------------------------------------------------------------------------------------------
// Rotation

/** A directory with `live.pem`/`live.key`, copies of `source`. */
async function liveFiles(source: CertFiles): Promise<{ dir: string; cert: string; key: string }> {
  const dir = await mkdtemp(join(certs.dir, 'live-'));
  const files = { dir, cert: join(dir, 'live.pem'), key: join(dir, 'live.key') };
  await copyFile(source.cert, files.cert);
  await copyFile(source.key, files.key);
  return files;
}

/** Issues a new `a.test` certificate and moves it over `live` by rename (key, then certificate). */
async function rotate(live: { dir: string; cert: string; key: string }, stem: string, mtime?: Date): Promise<string> {
  const next = await certs.ca.issue('a.test', { dir: live.dir, stem });
  if (mtime) {
    await utimes(next.key, mtime, mtime);
    await utimes(next.cert, mtime, mtime);
  }
  await rename(next.key, live.key);
  await rename(next.cert, live.cert);
  return next.fingerprint256;
}

test('rotation under traffic: replaced files serve new handshakes, no request fails, kept-alive connections continue', async (t) => {
  const live = await liveFiles(certs.a);
  const { port, proxy } = await tlsProxy(t, { certificates: [{ cert: live.cert, key: live.key }] });
  const ca = certs.caPem;
  const oldFp = certs.a.fingerprint256;
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
  t.teardown(() => agent.destroy());
  const kept = await httpsGet(port, { ca, servername: 'a.test', agent, path: '/kept/1' });
  t.is(kept.fingerprint256, oldFp);

  let stop = false;
  let newFp = '';
  const failures: string[] = [];
  const seen: string[][] = [[], [], [], []];
  const worker = async (w: number) => {
    while (!stop) {
      try {
        const r = await httpsGet(port, { ca, servername: 'a.test', path: `/w${w}` });
        if (r.status !== 200) failures.push(`status ${r.status}`);
        seen[w]?.push(r.fingerprint256);
      } catch (e) {
        failures.push(String(e));
      }
    }
  };
  const workers = Promise.all(seen.map((_, w) => worker(w)));
  try {
    await until(() => seen.every((s) => s.length >= 3), 'traffic on the old certificate');
    newFp = await rotate(live, 'next');
    await until(() => seen.every((s) => s.at(-1) === newFp), 'new handshakes to present the new certificate', 8000);
    const counts = seen.map((s) => s.length);
    await until(() => seen.every((s, w) => s.length >= (counts[w] ?? 0) + 3), 'more traffic on the new certificate');
  } finally {
    stop = true;
    await workers;
  }
  t.deepEqual(failures, [], 'no request failed during the rotation');
  for (const s of seen) {
    t.is(s[0], oldFp);
    const firstNew = s.indexOf(newFp);
    t.true(firstNew > 0);
    t.true(s.slice(firstNew).every((fp) => fp === newFp), 'once rotated, every new handshake presents the new certificate');
    t.true(s.every((fp) => fp === oldFp || fp === newFp));
  }
  const again = await httpsGet(port, { ca, servername: 'a.test', agent, path: '/kept/2' });
  t.is(again.status, 200);
  t.true(again.reusedSocket, 'the kept-alive connection was reused');
  t.is(again.socket, kept.socket);
  t.is(again.fingerprint256, oldFp, 'an established connection keeps its certificate');
  t.deepEqual(tlsStats(proxy.gateway).certificates.map((c) => c.names), [['a.test']]);
});

/** A YAML config for the CLI: one TLS listener over `certificates`, an upstream at `origin`. */
function cliConfig(origin: Origin, certificates: CertFiles[], extra = ''): string {
  const list = certificates.map((c) => `        - { cert: "${c.cert}", key: "${c.key}" }`).join('\n');
  return `workers: 1
listeners:
  - address: 127.0.0.1:0
    tls:
      certificates:
${list}
upstreams:
  app:
    backends: [{ url: "${origin.url}" }]
log: { level: info, access_log: "off" }
${extra}`;
}

test('a bad rotation keeps the old certificate serving and logs why (garbage, a mismatched key, a deleted key); a good one then applies', async (t) => {
  const live = await liveFiles(certs.a);
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const file = join(live.dir, 'gatehouse.yaml');
  await writeFile(file, cliConfig(origin, [live]));
  const gh = await startGatehouse(t, file);
  const ca = certs.caPem;
  const fp = async () => (await peerCertificate(gh.port, { ca, servername: 'a.test' })).fingerprint256;
  t.is(await fp(), certs.a.fingerprint256);

  // Garbage over the certificate file.
  let from = gh.logs.length;
  await writeFile(live.cert, 'garbage\n');
  const garbage = await gh.waitForLog('an error about the broken certificate', (l) => l.level === 'ERROR' && /certificate/i.test(JSON.stringify(l)), from);
  t.true(JSON.stringify(garbage.line).includes(live.cert), JSON.stringify(garbage.line));
  t.is(await fp(), certs.a.fingerprint256, 'the old certificate keeps serving');
  t.is((await httpsGet(gh.port, { ca, servername: 'a.test' })).status, 200);
  await delay(1500);
  t.is(gh.logs.slice(garbage.index + 1).filter((l) => l.level === 'ERROR').length, 0, 'a broken file is reported once, not every second');

  // The right certificate back, but with another certificate's key.
  from = gh.logs.length;
  const tmpKey = join(live.dir, 'wrong.key.tmp');
  const tmpCert = join(live.dir, 'right.pem.tmp');
  await copyFile(certs.b.key, tmpKey);
  await copyFile(certs.a.cert, tmpCert);
  await rename(tmpKey, live.key);
  await rename(tmpCert, live.cert);
  const mismatch = await gh.waitForLog('an error about the mismatched key', (l) => l.level === 'ERROR' && JSON.stringify(l).includes(live.key), from);
  t.regex(JSON.stringify(mismatch.line), /does not match/);
  t.is(await fp(), certs.a.fingerprint256, 'the old certificate keeps serving');

  // The key file deleted.
  from = gh.logs.length;
  await rm(live.key);
  const missing = await gh.waitForLog('an error about the missing key', (l) => l.level === 'ERROR' && JSON.stringify(l).includes(live.key), from);
  t.regex(JSON.stringify(missing.line), /private key/);
  t.is(await fp(), certs.a.fingerprint256, 'the old certificate keeps serving');

  // A good pair: applied to new handshakes.
  from = gh.logs.length;
  const next = await rotate(live, 'good');
  await until(async () => (await fp()) === next, 'the good certificate to serve', 8000);
  await gh.waitForLog('an info line about the reload', (l) => l.level === 'INFO' && /certificates reloaded/.test(String(l.message)), from);
  await gh.stop();
});

test('SIGHUP reloads changed certificate files; a broken one on SIGHUP keeps the old certificate and logs its key path', async (t) => {
  const live = await liveFiles(certs.a);
  // A fixed modification time: replacement files get the same one, so the file watcher (which
  // compares modification times) stays out of it and only SIGHUP can pick them up.
  const fixed = new Date(1_600_000_000_000);
  await utimes(live.cert, fixed, fixed);
  await utimes(live.key, fixed, fixed);
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const file = join(live.dir, 'gatehouse.yaml');
  await writeFile(file, cliConfig(origin, [live]));
  const gh = await startGatehouse(t, file);
  const ca = certs.caPem;
  const fp = async () => (await peerCertificate(gh.port, { ca, servername: 'a.test' })).fingerprint256;
  t.is(await fp(), certs.a.fingerprint256);
  // A connection established before the reload.
  const established = await handshake(gh.port, { ca, servername: 'a.test' });
  t.teardown(() => established.destroy());

  const next = await rotate(live, 'hup', fixed);
  await delay(1500);
  t.is(await fp(), certs.a.fingerprint256, 'precondition: the watcher did not notice files with unchanged times');
  let from = gh.logs.length;
  gh.child.kill('SIGHUP');
  await gh.waitForLog('the reload', (l) => l.message === 'configuration reloaded', from);
  t.is(await fp(), next, 'SIGHUP loaded the new certificate');
  // The established connection still works, with its certificate.
  const reply = await new Promise<string>((resolve) => {
    let text = '';
    established.setEncoding('utf8');
    established.on('data', (c: string) => (text += c));
    established.on('end', () => resolve(text));
    established.write('GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
  });
  t.regex(reply, /^HTTP\/1\.1 200 /);
  t.is(established.getPeerCertificate().fingerprint256, certs.a.fingerprint256);

  // A broken certificate file, then SIGHUP.
  const tmp = join(live.dir, 'broken.pem.tmp');
  await writeFile(tmp, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
  await utimes(tmp, fixed, fixed);
  await rename(tmp, live.cert);
  from = gh.logs.length;
  gh.child.kill('SIGHUP');
  const rejected = await gh.waitForLog('the rejected reload', (l) => l.level === 'ERROR' && /reload rejected/.test(String(l.message)), from);
  const text = JSON.stringify(rejected.line);
  t.true(text.includes('listeners[0].tls.certificates'), text);
  t.true(text.includes(live.cert), text);
  t.is(await fp(), next, 'the previous certificate keeps serving');
  t.is((await httpsGet(gh.port, { ca, servername: 'a.test' })).status, 200);
  await gh.stop();
});

// ---------------------------------------------------------------------------------------------
// Expiry

test('a certificate expiring within 14 days is flagged in stats', async (t) => {
  const { proxy } = await tlsProxy(t, { certificates: [pair(certs.a), pair(certs.soon)] });
  const list = tlsStats(proxy.gateway).certificates;
  t.is(list.length, 2);
  const [a, soon] = list;
  t.deepEqual(a?.names, ['a.test']);
  t.false(a?.expiring_soon);
  t.true((a?.expires_in_days ?? 0) >= 29, String(a?.expires_in_days));
  t.is(a?.file, certs.a.cert);
  t.is(a?.listener, '127.0.0.1:0');
  t.deepEqual(soon?.names, ['soon.test']);
  t.true(soon?.expiring_soon);
  t.true(soon !== undefined && soon.expires_in_days >= 2 && soon.expires_in_days <= 3, String(soon?.expires_in_days));
  t.is(Date.parse(soon?.not_after ?? ''), certs.soon.notAfter.getTime());
});

test('a certificate expiring within 14 days is logged as a warning naming it', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const dir = await mkdtemp(join(certs.dir, 'expiry-'));
  const file = join(dir, 'gatehouse.yaml');
  await writeFile(file, cliConfig(origin, [certs.a, certs.soon]));
  const gh = await startGatehouse(t, file);
  const { line } = await gh.waitForLog('the expiry warning', (l) => l.level === 'WARN' && JSON.stringify(l).includes('soon.test'));
  t.regex(String(line.message), /expire/);
  t.false(gh.logs.some((l) => l.level === 'WARN' && JSON.stringify(l).includes('"a.test"')), 'no warning for the 30-day certificate');
  await gh.stop();
});

// ---------------------------------------------------------------------------------------------
// Redirect

test('redirect_to_https answers 308 to https://host:port/path?query, whatever the Host port', async (t) => {
  const origin = await startOrigin();
  t.teardown(() => origin.close());
  const proxy = await startProxy(
    proxyConfig([origin.url], {
      listeners: [
        { address: '127.0.0.1:0', redirect_to_https: 8443 },
        { address: '127.0.0.1:0', redirect_to_https: 443 },
      ],
    }),
  );
  t.teardown(() => proxy.close());
  const base = `http://127.0.0.1:${proxy.port}`;
  const cases: [string, string][] = [
    ['example.test', 'https://example.test:8443/path/x?q=1&r=2'],
    ['example.test:8080', 'https://example.test:8443/path/x?q=1&r=2'],
    ['[::1]:8080', 'https://[::1]:8443/path/x?q=1&r=2'],
  ];
  for (const [host, location] of cases) {
    const r = await send(`${base}/path/x?q=1&r=2`, { headers: { host } });
    t.is(r.status, 308, `Host ${host}`);
    t.is(r.headers.location, location, `Host ${host}`);
  }
  const post = await send(`${base}/form`, { method: 'POST', headers: { host: 'example.test' }, body: 'a=1' });
  t.is(post.status, 308, 'a POST too (308 keeps the method)');
  t.is(post.headers.location, 'https://example.test:8443/form');
  const second = proxy.gateway.addresses[1]?.bound ?? '';
  const r443 = await send(`http://${second}/p?q`, { headers: { host: 'example.test:80' } });
  t.is(r443.status, 308);
  t.is(r443.headers.location, 'https://example.test/p?q', 'port 443 is left out');
  t.is(origin.requests.length, 0, 'nothing reaches the origin');
});
