// node-http-proxy with a keep-alive agent: `node node-http-proxy.js PORT ORIGIN_URL [CERT KEY]`;
// with CERT and KEY (PEM files) it listens with TLS 1.3 only (https.createServer).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import httpProxy from 'http-proxy';

const [port, target, cert, key] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 128 });
// xfwd adds X-Forwarded-For/Port/Proto/Host, like gatehouse's forwarding headers.
const proxy = httpProxy.createProxyServer({ target, agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
  res.end('bad gateway\n');
});
const handler = (req, res) => {
  if (!req.headers['x-request-id']) req.headers['x-request-id'] = randomUUID();
  proxy.web(req, res);
};
const server = cert
  ? https.createServer({ cert: readFileSync(cert), key: readFileSync(key), minVersion: 'TLSv1.3' }, handler)
  : http.createServer(handler);
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.maxConnections = 16_000;
server.listen(Number(port), '127.0.0.1', 4096);
