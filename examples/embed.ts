/**
 * Embedding gatehouse in a Node.js program: start from a configuration object, send traffic
 * through it, change a weight, watch a health event, reload, close.
 *
 * It starts two small origins of its own, so it runs anywhere without setup:
 *   npx tsx examples/embed.ts          (in a checkout, after `npm install`)
 * In your own project (`npm install gatehouse`), copy this file; the import is the same.
 */
import { once } from 'node:events';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, start, type GatehouseConfigInput, type HealthChange } from 'gatehouse';

/** An origin that answers with its name; `/health` answers 503 once `down` is set. */
async function origin(name: string): Promise<{ url: string; server: Server; down: boolean }> {
  const o = { url: '', server: createServer(), down: false };
  o.server.on('request', (req, res) => {
    if (req.url === '/health') res.writeHead(o.down ? 503 : 200).end();
    else res.writeHead(200, { 'content-type': 'text/plain' }).end(name);
  });
  await new Promise<void>((resolve) => o.server.listen(0, '127.0.0.1', resolve));
  o.url = `http://127.0.0.1:${(o.server.address() as AddressInfo).port}`;
  return o;
}

/** Sends `n` requests through the proxy; which origin answered how often, e.g. `a=3 b=1`. */
async function spread(proxy: string, n: number): Promise<string> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const body = await new Promise<string>((resolve, reject) => {
      get(`${proxy}/hello`, { agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text));
      }).on('error', reject);
    });
    counts[body] = (counts[body] ?? 0) + 1;
  }
  return Object.keys(counts).sort().map((k) => `${k}=${counts[k]}`).join(' ');
}

const a = await origin('a');
const b = await origin('b');

// The input type is inferred from the zod schema: durations as "2s", defaults optional.
const config: GatehouseConfigInput = {
  workers: 1,
  listeners: [{ address: '127.0.0.1:0' }], // port 0: any free port, see gateway.addresses
  upstreams: {
    app: {
      balance: 'weighted_round_robin',
      backends: [{ url: a.url }, { url: b.url }],
      health_check: { path: '/health', interval: '100ms', healthy_threshold: 1, unhealthy_threshold: 1 },
    },
  },
  log: { level: 'warn', access_log: 'off' },
};

const gateway = await start(config);
const proxy = `http://${gateway.addresses[0]?.bound}`;
console.log(`listening: ${proxy}`);
console.log(`equal weights: ${await spread(proxy, 4)}`);

// Weights change at once, without a reload; the next request uses them.
gateway.setWeight('app', a.url, 3);
console.log(`a weighs 3: ${await spread(proxy, 8)}`);

// Active health checks report each change of verdict once; unhealthy backends get no traffic.
const nextHealthChange = async (): Promise<string> => {
  const [change] = (await once(gateway, 'health')) as [HealthChange];
  return `${change.url === b.url ? 'b' : change.url} healthy=${change.healthy}`;
};
let change = nextHealthChange();
b.down = true;
console.log(`health: ${await change}`);
console.log(`b is down: ${await spread(proxy, 4)}`);
change = nextHealthChange();
b.down = false;
console.log(`health: ${await change}`);

// A reload swaps the whole configuration; requests in flight finish on the old one.
await gateway.reload({ ...config, upstreams: { app: { ...config.upstreams.app, backends: [{ url: b.url }] } } });
console.log(`reloaded to b only: ${await spread(proxy, 2)}`);

// An invalid configuration is refused with every problem and its key path; the old one keeps serving.
try {
  await gateway.reload({ ...config, upstreams: { app: { backends: [{ url: 'ftp://b' }] } } });
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  console.log(`refused: ${e.code} ${e.problems.map((p) => p.path).join(', ')}`);
}

console.log(`requests: ${gateway.stats().requests.total}`);
await gateway.close(); // drains in-flight requests, then stops the engine's threads
a.server.close();
b.server.close();
console.log('closed');
