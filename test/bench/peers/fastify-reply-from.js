// Fastify with @fastify/reply-from (undici pool, keep-alive):
// `node fastify-reply-from.js PORT ORIGIN_URL [CERT KEY h1|h2]`. With CERT and KEY (PEM files) it
// listens with TLS 1.3 only; with h2 it serves HTTP/2 (and HTTP/1.1) by ALPN.
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import replyFrom from '@fastify/reply-from';

const [port, base, cert, key, version] = process.argv.slice(2);
const https = cert ? { cert: readFileSync(cert), key: readFileSync(key), minVersion: 'TLSv1.3', ...(version === 'h2' ? { allowHTTP1: true } : {}) } : undefined;
const app = Fastify({
  logger: false,
  keepAliveTimeout: 120_000,
  requestIdHeader: 'x-request-id',
  ...(https ? { https } : {}),
  ...(version === 'h2' ? { http2: true, http2SessionTimeout: 120_000 } : {}),
});
await app.register(replyFrom, {
  base,
  undici: { connections: 128, pipelining: 1, keepAliveTimeout: 120_000 },
});
const dropConnection = (headers) => {
  delete headers.connection;
  delete headers['keep-alive'];
  return headers;
};
app.all('/*', (request, reply) => {
  reply.from(request.url, {
    rewriteRequestHeaders: (req, headers) => ({
      ...headers,
      'x-forwarded-for': headers['x-forwarded-for'] ? `${headers['x-forwarded-for']}, ${req.ip}` : req.ip,
      'x-forwarded-proto': cert ? 'https' : 'http',
      // The client's Host (or HTTP/2 :authority): reply-from has already set `headers.host` to the origin's.
      'x-forwarded-host': req.host,
      'x-request-id': String(req.id),
    }),
    // reply-from copies the origin's `Connection: keep-alive` to an HTTP/1.1 client, and Node then
    // keeps a connection open that its client asked to close (the TLS scenario's wrk sends
    // `Connection: close`): drop that hop-by-hop header as the other proxies do.
    ...(cert ? { rewriteHeaders: dropConnection } : {}),
  });
});
await app.listen({ port: Number(port), host: '127.0.0.1', backlog: 4096 });
