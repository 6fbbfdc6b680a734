// Fastify with @fastify/reply-from (undici pool, keep-alive): `node fastify-reply-from.js PORT ORIGIN_URL`.
import Fastify from 'fastify';
import replyFrom from '@fastify/reply-from';

const [port, base] = process.argv.slice(2);
const app = Fastify({ logger: false, keepAliveTimeout: 120_000, requestIdHeader: 'x-request-id' });
await app.register(replyFrom, {
  base,
  undici: { connections: 128, pipelining: 1, keepAliveTimeout: 120_000 },
});
app.all('/*', (request, reply) => {
  reply.from(request.url, {
    rewriteRequestHeaders: (req, headers) => ({
      ...headers,
      'x-forwarded-for': headers['x-forwarded-for'] ? `${headers['x-forwarded-for']}, ${req.ip}` : req.ip,
      'x-forwarded-proto': 'http',
      'x-forwarded-host': headers.host,
      'x-request-id': String(req.id),
    }),
  });
});
await app.listen({ port: Number(port), host: '127.0.0.1', backlog: 4096 });
