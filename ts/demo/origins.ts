/** Small HTTP origins for the demo: each answers with JSON naming itself and echoing the request. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface DemoOrigin {
  name: string;
  url: string;
  close(): Promise<void>;
}

export async function startDemoOrigin(name: string): Promise<DemoOrigin> {
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify(
        {
          origin: name,
          method: req.method,
          url: req.url,
          headers: req.headers,
          bodyBytes: Buffer.concat(chunks).length,
        },
        null,
        2,
      );
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
