/**
 * The configuration language: one zod schema, the single source of truth. The JSON Schema in
 * `config/schema.json` and the README's reference are generated from it, and the engine receives
 * what it produces (see `normalize.ts`).
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `invalid duration ${JSON.stringify(v)} (use e.g. "250ms", "10s", "5m")` });
        return z.NEVER;
      }
      return ms;
    })
    .describe(`duration such as "250ms", "10s", "5m" (or milliseconds); default ${fallback}`);

const size = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((v, ctx) => {
      const bytes = parseSize(v);
      if (bytes === undefined) {
        ctx.addIssue({ code: 'custom', message: `invalid size ${JSON.stringify(v)} (use e.g. "16kb", "64mb", or bytes)` });
        return z.NEVER;
      }
      return bytes;
    })
    .describe(`size such as "16kb", "64mb" (or bytes); default ${fallback}`);

const port = z.number().int().min(1).max(65535);

/** `host:port`, with IPv6 hosts in brackets. Port 0 asks the OS for a free port. */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const hostPort = z
  .string()
  .regex(HOST_PORT, 'expected host:port, e.g. 127.0.0.1:8080')
  .refine((s) => Number(HOST_PORT.exec(s)?.[2]) <= 65535, {
    message: 'port must be at most 65535',
    // Only once the shape is right: "no-port" is one problem, not two.
    when: (payload) => payload.issues.length === 0,
  });

const backendUrl = z.string().superRefine((s, ctx) => {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: `not a URL: ${JSON.stringify(s)}` });
    return;
  }
  if (url.protocol !== 'http:') ctx.addIssue({ code: 'custom', message: 'only http:// backends are supported' });
  if ((url.pathname !== '/' && url.pathname !== '') || url.search) {
    ctx.addIssue({ code: 'custom', message: 'a backend URL takes no path or query (the client path is forwarded)' });
  }
});

export const tlsSchema = z.strictObject({
  certificates: z
    .array(
      z.strictObject({
        cert: z.string().min(1).describe('PEM certificate chain, leaf first'),
        key: z.string().min(1).describe('PEM private key of the leaf'),
      }),
    )
    .min(1)
    .describe('chosen by SNI (exact name, then one-label wildcard); the first is the default'),
  min_version: z.enum(['1.2', '1.3']).default('1.2').describe('oldest TLS version accepted'),
  cipher_suites: z
    .array(z.string().regex(/^TLS(13)?_[A-Z0-9_]+$/, 'an IANA cipher suite name such as TLS13_AES_128_GCM_SHA256'))
    .min(1)
    .optional()
    .describe("cipher suites allowed (IANA names); rustls' defaults when absent"),
});

export const listenerSchema = z.strictObject({
  address: hostPort.describe('host:port to listen on; port 0 picks a free port'),
  redirect_to_https: port.optional().describe('answer every request with 308 to https://<host>:<port><path>'),
  tls: tlsSchema.optional().describe('terminate TLS on this listener (HTTP/1.1 and HTTP/2 by ALPN)'),
});

export const backendSchema = z.strictObject({
  url: backendUrl.describe('http://host:port of the origin'),
  weight: z.number().int().min(0).max(1_000_000).default(1).describe('relative share of requests'),
});

export const poolSchema = z.strictObject({
  max_connections: z.number().int().min(1).default(64).describe('connections per backend at most'),
  max_idle: z.number().int().min(0).default(16).describe('idle connections kept per backend once traffic falls, shared out among the workers (more stay while wanted, closed after 1 s unused)'),
  idle_timeout: duration('60s').describe('an idle upstream connection older than this is closed'),
  connect_timeout: duration('2s').describe('TCP connect to a backend (504 when exceeded)'),
  queue_timeout: duration('1s').describe('wait for a free connection when the pool is full (then 503)'),
});

export const BUILTIN_ALGORITHMS = ['round_robin', 'weighted_round_robin', 'least_conn', 'ip_hash', 'random', 'p2c_ewma'] as const;
const algorithm = z.enum(BUILTIN_ALGORITHMS);

export const policyModuleSchema = z.strictObject({
  module: z.string().min(1).describe('TypeScript or JavaScript module whose default export has select() and/or tune()'),
  tune_interval: duration('10s').describe('how often tune() runs (the module may set tuneInterval instead)'),
  fallback: algorithm.default('weighted_round_robin').describe('algorithm when the module has no select(); select() failures use round_robin'),
});

export const healthCheckSchema = z.strictObject({
  path: z.string().startsWith('/').default('/health').describe('path requested by active health checks'),
  interval: duration('2s').describe('time between checks of a healthy backend (jittered; backs off up to 8× while unhealthy)'),
  timeout: duration('1s').describe('a check slower than this fails'),
  healthy_threshold: z.number().int().min(1).default(2).describe('consecutive successes to become healthy'),
  unhealthy_threshold: z.number().int().min(1).default(2).describe('consecutive failures to become unhealthy'),
});

export const upstreamSchema = z.strictObject({
  balance: z
    .union([algorithm, policyModuleSchema])
    .default('round_robin')
    .describe(`load-balancing algorithm (${BUILTIN_ALGORITHMS.join(', ')}) or { module: FILE } for a TypeScript policy`),
  backends: z.array(backendSchema).min(1).describe('the origin servers'),
  pool: poolSchema.prefault({}),
  timeouts: z
    .strictObject({
      response: duration('30s').describe('from request sent to response head (504 when exceeded)'),
      body: duration('60s').describe("longest pause in a response body's arrival, then the client's response is cut short (0 = no limit, for event streams)"),
      tunnel: duration('60s').describe('longest an upgraded connection (WebSocket) may carry no bytes either way before both sides are closed, as nginx (proxy_read_timeout) and HAProxy (timeout tunnel) do; raise it for quiet WebSocket apps (0 = no limit)'),
    })
    .prefault({}),
  retries: z
    .strictObject({
      max: z.number().int().min(0).max(10).default(1).describe('retries after the first try, each to another backend (idempotent requests, or any request never sent)'),
      budget_percent: z.number().int().min(0).max(100).default(20).describe('retries add at most this share to the request rate'),
      backoff: duration('25ms').describe('base of the jittered exponential backoff between tries'),
    })
    .prefault({}),
  health_check: healthCheckSchema.optional().describe('active HTTP health checks (off when absent)'),
  passive_health: z
    .strictObject({
      consecutive_failures: z.number().int().min(0).default(5).describe('consecutive connect failures, resets, timeouts or 5xx that eject a backend (0 = off)'),
      ejection_time: duration('30s').describe('first ejection; doubles with each further one, up to 16×'),
      max_ejection_percent: z.number().int().min(0).max(100).default(50).describe('never eject more than this share of backends, nor the last available one'),
    })
    .prefault({}),
});

export const routeSchema = z.strictObject({
  host: z
    .string()
    .regex(/^(\*\.)?[A-Za-z0-9.-]+$|^\*$/, 'expected a host name, "*.example.com" or "*"')
    .optional()
    .describe('Host to match (exact, or one-label wildcard "*.example.com"); any host when absent'),
  path_prefix: z.string().startsWith('/').optional().describe('path prefix to match (case-sensitive)'),
  upstream: z.string().describe('name of the upstream that serves the route'),
  cache: z.boolean().optional().describe('cache responses of this route when the cache is enabled (default true)'),
});

export const cacheSchema = z.strictObject({
  enabled: z.boolean().default(false).describe('RFC 9111 shared cache in memory'),
  max_size: size('64mb').describe('memory for cached responses (headers, bodies, overhead); least recently used go first'),
  max_entry_size: size('8mb').describe('largest response body stored; bigger ones pass through unstored'),
});

export const limitsSchema = z.strictObject({
  max_connections: z.number().int().min(1).default(10_000).describe('client connections at most'),
  header_timeout: duration('10s').describe('time to receive a request head (slow clients are closed)'),
  max_header_size: size('16kb').describe('request line plus headers (431 when exceeded)'),
  max_body_size: size('10mb').describe('request body (413 when exceeded)'),
  keepalive_timeout: duration('60s').describe('idle client connection lifetime'),
  body_timeout: duration('60s').describe('longest pause while receiving a request body (408)'),
  send_timeout: duration('60s').describe("longest a client may leave a response unread before it is closed, freeing the response's origin connection (0 = no limit)"),
});

export const logSchema = z.strictObject({
  level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'off']).default('info').describe('process log level (JSON lines on stderr)'),
  access_log: z.string().min(1).default('stdout').describe('stdout, off, or a file path'),
  access_format: z.enum(['json', 'combined']).default('json').describe('JSON lines, or the Apache/nginx combined format'),
});

export const adminSchema = z.strictObject({
  address: hostPort.describe('host:port of the admin listener (stats, health)'),
});

export const configSchema = z
  .strictObject({
    workers: z.number().int().min(0).max(1024).default(0).describe('worker threads; 0 = one per CPU'),
    listeners: z.array(listenerSchema).min(1),
    upstreams: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'upstream names use letters, digits, _ . -'), upstreamSchema),
    routes: z.array(routeSchema).default([]),
    limits: limitsSchema.prefault({}),
    admin: adminSchema.optional(),
    cache: cacheSchema.prefault({}),
    log: logSchema.prefault({}),
  })
  // Cross-field rules. `when` makes them run even when a field elsewhere failed, so that one run
  // reports every problem; the value may then be partly unparsed, hence the defensive reads.
  .superRefine(
    (cfg, ctx) => {
      const upstreams: object = typeof cfg.upstreams === 'object' && cfg.upstreams !== null ? cfg.upstreams : {};
      const names = Object.keys(upstreams);
      const routes: unknown[] = Array.isArray(cfg.routes) ? cfg.routes : [];
      const listeners: unknown[] = Array.isArray(cfg.listeners) ? cfg.listeners : [];
      if (names.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['upstreams'], message: 'at least one upstream is required' });
      }
      if (routes.length === 0 && names.length > 1) {
        ctx.addIssue({ code: 'custom', path: ['routes'], message: 'routes are required when there is more than one upstream' });
      }
      routes.forEach((r, i) => {
        const target = (r as { upstream?: unknown } | null)?.upstream;
        if (typeof target === 'string' && !names.includes(target)) {
          ctx.addIssue({
            code: 'custom',
            path: ['routes', i, 'upstream'],
            message: `no upstream named ${JSON.stringify(target)} (have: ${names.join(', ') || 'none'})`,
          });
        }
      });
      const seen = new Map<string, number>();
      listeners.forEach((l, i) => {
        const address = (l as { address?: unknown } | null)?.address;
        // Port 0 asks for any free port: several such listeners on one host are distinct.
        if (typeof address !== 'string' || address.endsWith(':0')) return;
        const first = seen.get(address);
        if (first !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['listeners', i, 'address'], message: `same address as listeners[${first}]` });
        }
        seen.set(address, i);
      });
    },
    { when: () => true },
  );

/** What users write (durations and sizes as strings, defaults optional). */
export type GatehouseConfigInput = z.input<typeof configSchema>;
/** The validated configuration (durations in ms, sizes in bytes, defaults filled in). */
export type GatehouseConfig = z.output<typeof configSchema>;

/** The JSON Schema of the file format, for editors and other tools. */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
