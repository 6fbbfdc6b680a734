// Fallback origin when nginx is not installed: a fixed small body, and a 1 MiB body at /1mb.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { SMALL_BODY } from '../lib/origin.js';

const [port, largeFile] = process.argv.slice(2);
const large = readFileSync(largeFile);
const small = Buffer.from(SMALL_BODY);
const server = http.createServer((req, res) => {
  const body = req.url === '/1mb' ? large : small;
  const headers = { 'content-type': 'text/plain', 'content-length': body.length };
  if (req.url === '/cached') headers['cache-control'] = 'public, max-age=3600';
  res.writeHead(200, headers);
  res.end(body);
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(Number(port), '127.0.0.1');
