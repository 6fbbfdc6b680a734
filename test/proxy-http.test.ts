/** HTTP/1.1 proxying end to end: methods, bodies, framing, keep-alive, headers. */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest, Agent } from 'node:http';
import { startOrigin, sha256, echo, type SeenRequest } from './helpers/origin.js';
import { proxyConfig, startProxy } from './helpers/proxy.js';
import { raw } from './helpers/raw.js';
import { until } from './helpers/client.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function send(url: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer | Buffer[]; agent?: Agent } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers, agent: options.agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    const parts = options.body === undefined ? [] : Array.isArray(options.body) ? options.body : [options.body];
    for (const p of parts) req.write(p);
    req.end();
  });
}

const seenOf = (r: Reply): SeenRequest => JSON.parse(r.body.toString()) as SeenRequest;

test('every method reaches the origin with its body', async (t) => {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  for (const method of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const body = method === 'GET' ? undefined : Buffer.from(`payload for ${method}`);
    const r = await send(`${proxy.url}/m/${method}?q=1`, { method, body, headers: body ? { 'content-length': String(body.length) } : {} });
    t.is(r.status, 200, method);
    const seen = seenOf(r);
    t.is(seen.method, method);
    t.is(seen.url, `/m/${method}?q=1`);
    t.is(seen.bodySha256, sha256(body ?? ''));
  }
  const head = await send(`${proxy.url}/head`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.body.length, 0);
  t.is(origin.requests.at(-1)?.method, 'HEAD');
});

test('a 5 MB body survives both directions bit for bit', async (t) => {
  const download = randomBytes(5 * 1024 * 1024);
  const origin = await startOrigin((_req, res, seen) => {
    res.writeHead(200, { 'x-upload-sha256': seen.bodySha256, 'x-upload-length': String(seen.bodyLength), 'content-length': download.length });
    res.end(download);
  });
  const proxy = await startProxy(proxyConfig([origin.url], { limits: { max_body_size: '8mb' } }));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const upload = randomBytes(5 * 1024 * 1024);
  const r = await send(`${proxy.url}/big`, { method: 'POST', body: upload, headers: { 'content-length': String(upload.length) } });
  t.is(r.status, 200);
  t.is(r.headers['x-upload-length'], String(upload.length));
  t.is(r.headers['x-upload-sha256'], sha256(upload));
  t.is(sha256(r.body), sha256(download));
});

test('chunked uploads stream through, small ones arrive with Content-Length', async (t) => {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  // Node sends a body without Content-Length as chunked.
  const big = [randomBytes(100_000), randomBytes(200_000), randomBytes(50_000)];
  const r = await send(`${proxy.url}/chunked`, { method: 'POST', body: big });
  const seen = seenOf(r);
  t.is(seen.bodySha256, sha256(Buffer.concat(big)));
  t.is(seen.headers['transfer-encoding'], 'chunked');
  const small = [Buffer.from('hello '), Buffer.from('world')];
  const s = seenOf(await send(`${proxy.url}/small`, { method: 'POST', body: small }));
  t.is(s.bodySha256, sha256('hello world'));
  t.is(s.headers['content-length'], '11');
  t.is(s.headers['transfer-encoding'], undefined);
});

test('keep-alive is reused on both sides', async (t) => {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 20; i++) t.is((await send(`${proxy.url}/ka/${i}`, { agent })).status, 200);
  t.is(origin.connections, 1, 'the origin saw one connection for 20 sequential requests');
  const stats = proxy.gateway.stats();
  t.is(stats.connections.total, 1, 'the client used one connection');
  const pool = stats.upstreams.app?.backends[0]?.pool;
  t.is(pool?.created, 1);
  t.is(pool?.reused, 19);
});

test('forwarding headers are added and hop-by-hop headers removed', async (t) => {
  const origin = await startOrigin((_req, res, seen) => {
    const body = JSON.stringify(seen);
    res.writeHead(200, { 'content-type': 'application/json', connection: 'x-origin-hop', 'x-origin-hop': 'secret', 'keep-alive': 'timeout=5', 'x-kept': 'yes' });
    res.end(body);
  });
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const r = await send(`${proxy.url}/h`, {
    headers: {
      host: 'app.example.com',
      'x-forwarded-for': '203.0.113.7',
      connection: 'x-client-hop',
      'x-client-hop': 'secret',
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      'x-request-id': 'req-123',
      'x-first': '1',
      'x-second': '2',
    },
  });
  const seen = seenOf(r);
  t.is(seen.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
  t.is(seen.headers['x-forwarded-proto'], 'http');
  t.is(seen.headers['x-forwarded-host'], 'app.example.com');
  t.is(seen.headers.host, 'app.example.com');
  t.is(seen.headers.via, '1.1 gatehouse');
  t.is(seen.headers['x-request-id'], 'req-123');
  for (const hop of ['x-client-hop', 'proxy-connection', 'te']) t.is(seen.headers[hop], undefined, hop);
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
  t.true(names.indexOf('x-first') < names.indexOf('x-second'), 'header order kept');
  t.is(r.headers['x-origin-hop'], undefined);
  t.is(r.headers['keep-alive'] === undefined || r.headers['keep-alive'] !== 'timeout=5', true);
  t.is(r.headers['x-kept'], 'yes');
  t.regex(String(r.headers.via), /gatehouse/);
  const generated = seenOf(await send(`${proxy.url}/id`));
  t.regex(String(generated.headers['x-request-id']), /^[0-9a-f]{32}$/);
});

test('a generated request id is the one the origin gets and the access log records', async (t) => {
  const origin = await startOrigin(echo);
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-rid-'));
  const logFile = join(dir, 'access.log');
  const proxy = await startProxy(proxyConfig([origin.url], { log: { level: 'error', access_log: logFile } }));
  t.teardown(async () => { await proxy.close(); await origin.close(); await rm(dir, { recursive: true, force: true }); });
  const ids: string[] = [];
  for (let i = 0; i < 3; i += 1) {
    const seen = seenOf(await send(`${proxy.url}/logged/${i}`));
    ids.push(String(seen.headers['x-request-id']));
  }
  for (const id of ids) t.regex(id, /^[0-9a-f]{32}$/);
  t.is(new Set(ids).size, 3, 'a new id for every request');
  interface Line { request_id: unknown; duration_ms: unknown; upstream: unknown }
  let lines: Line[] = [];
  await until(async () => {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
    return lines.length >= 3;
  }, 'three access log lines');
  t.deepEqual(lines.map((l) => String(l.request_id)), ids);
  for (const line of lines) {
    t.is(typeof line.duration_ms, 'number');
    t.true(Number(line.duration_ms) >= 0 && Number(line.duration_ms) < 5000, `a request's own duration: ${String(line.duration_ms)} ms`);
    t.is(line.upstream, origin.url);
  }
});

test('an absolute-form request reaches the origin in origin form, with the Host its URI names', async (t) => {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const r = await raw(proxy.port, 'GET http://app.example.com/abs/path?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n');
  t.deepEqual(r.statuses, [200]);
  t.is(origin.requests.length, 1);
  t.is(origin.requests[0]?.url, '/abs/path?q=1');
  t.is(origin.requests[0]?.headers.host, 'app.example.com');
  t.is(origin.requests[0]?.headers['x-forwarded-host'], 'app.example.com');
  // No path at all: the origin is asked for `/`.
  const bare = await raw(proxy.port, 'GET http://app.example.com HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n');
  t.deepEqual(bare.statuses, [200]);
  t.is(origin.requests[1]?.url, '/');
});

test('HEAD, 204 and 304 responses carry no body', async (t) => {
  const origin = await startOrigin((req, res) => {
    if (req.url === '/204') { res.writeHead(204); res.end(); return; }
    if (req.url === '/304') { res.writeHead(304, { etag: '"v1"' }); res.end(); return; }
    res.writeHead(200, { 'content-length': '5' });
    res.end(req.method === 'HEAD' ? undefined : 'hello');
  });
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  // Pipelined on one raw connection: any stray body byte would corrupt the next response.
  const host = 'Host: x\r\n';
  const r = await raw(proxy.port, `HEAD /head HTTP/1.1\r\n${host}\r\nGET /204 HTTP/1.1\r\n${host}\r\nGET /304 HTTP/1.1\r\n${host}\r\nGET /200 HTTP/1.1\r\n${host}Connection: close\r\n\r\n`);
  t.deepEqual(r.statuses, [200, 204, 304, 200]);
  t.true(r.text.endsWith('\r\n\r\nhello'), 'only the last response has a body');
  t.regex(r.text.split('HTTP/1.1 204')[0] ?? '', /content-length: 5/i, 'HEAD keeps the origin Content-Length');
});

test('Expect: 100-continue gets 100 before the body is sent', async (t) => {
  const origin = await startOrigin();
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const r = await raw(proxy.port, [
    'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
    'hello',
  ], { pauseMs: 300 });
  t.deepEqual(r.statuses, [100, 200]);
  t.is(origin.requests[0]?.bodySha256, sha256('hello'));
  t.is(origin.requests[0]?.headers.expect, undefined, 'the proxy answered the expectation itself');
  const refused = await raw(proxy.port, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n');
  t.deepEqual(refused.statuses, [413], 'too large: no 100, straight to 413');
});

test('HTTP/1.0 clients are answered and closed', async (t) => {
  const origin = await startOrigin(echo);
  const proxy = await startProxy(proxyConfig([origin.url]));
  t.teardown(async () => { await proxy.close(); await origin.close(); });
  const r = await raw(proxy.port, 'GET /old HTTP/1.0\r\n\r\n');
  t.deepEqual(r.statuses, [200]);
  t.true(r.closed);
  t.is(origin.requests[0]?.headers.via, '1.0 gatehouse');
  t.is(origin.requests[0]?.headers.host, new URL(origin.url).host, 'no Host from the client: the backend address stands in');
});
