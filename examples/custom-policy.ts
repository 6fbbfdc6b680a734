/**
 * A custom balancing policy, written in TypeScript and used by gatehouse per request.
 *
 * Requests from clients that send `x-tenant: <name>` stick to one backend per tenant (hash of
 * the tenant name over the healthy backends); others go to the least busy backend. Run it:
 *   npx tsx examples/custom-policy.ts      (in a checkout, after `npm install`)
 * It starts two origins, a gateway whose upstream uses this file as its policy module, sends a
 * few requests and prints which origin answered.
 */
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { definePolicy, start, type PolicyBackend } from 'gatehouse';

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The policy: the module's default export. */
export default definePolicy({
  select(request, backends): PolicyBackend | undefined {
    const tenant = request.headers['x-tenant'];
    if (tenant) return backends[hash(tenant) % backends.length];
    return backends.reduce((best, b) => (b.active < best.active ? b : best), backends[0] as PolicyBackend);
  },
});

async function main(): Promise<void> {
  const origins = await Promise.all(
    ['a', 'b'].map(async (name) => {
      const server = createServer((_req, res) => res.end(name));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
    }),
  );
  const gateway = await start({
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { balance: { module: fileURLToPath(import.meta.url) }, backends: origins.map((o) => ({ url: o.url })) } },
    log: { level: 'warn', access_log: 'off' },
  });
  const proxy = `http://${gateway.addresses[0]?.bound}`;
  const ask = (tenant: string) =>
    new Promise<string>((resolve, reject) => {
      get(`${proxy}/`, { agent: false, headers: { 'x-tenant': tenant } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve(body));
      }).on('error', reject);
    });
  for (const tenant of ['acme', 'acme', 'globex', 'globex']) console.log(`${tenant} -> ${await ask(tenant)}`);
  await gateway.close();
  for (const o of origins) o.server.close();
}

// Run the demo only when executed directly, not when gatehouse loads this file as its policy
// (that import carries a loader query in its URL, so the URLs differ).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
