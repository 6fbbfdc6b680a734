/** Prometheus text exposition (version 0.0.4) of the `/stats` document. */

type Json = Record<string, unknown>;

const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const obj = (v: unknown): Json => (v && typeof v === 'object' ? (v as Json) : {});
const label = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export function toPrometheus(stats: Json): string {
  const out: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [string, number][]): void => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
  };
  const connections = obj(stats.connections);
  const requests = obj(stats.requests);
  metric('gatehouse_connections_active', 'gauge', 'Open client connections.', [['', num(connections.active)]]);
  metric('gatehouse_connections_parked', 'gauge', 'Idle HTTP/1.1 connections holding no buffers.', [['', num(connections.parked)]]);
  metric('gatehouse_connections_total', 'counter', 'Client connections accepted.', [['', num(connections.total)]]);
  metric('gatehouse_requests_total', 'counter', 'Requests received.', [['', num(requests.total)]]);
  metric(
    'gatehouse_responses_total',
    'counter',
    'Responses sent, by status class.',
    Object.entries(obj(requests.by_status)).map(([cls, v]) => [`{class="${label(cls)}"}`, num(v)]),
  );
  metric(
    'gatehouse_timeouts_total',
    'counter',
    'Client-side timeouts, by limit: header, body (408), send (client or tunnel peer not reading), tunnel (idle).',
    Object.entries(obj(stats.timeouts)).map(([kind, v]) => [`{kind="${label(kind)}"}`, num(v)]),
  );
  const backendSamples = (field: string, nested?: string): [string, number][] =>
    Object.entries(obj(stats.upstreams)).flatMap(([upstream, u]) =>
      (Array.isArray(obj(u).backends) ? (obj(u).backends as Json[]) : []).map((b): [string, number] => {
        const source = nested ? obj(b[nested]) : b;
        const v = source[field];
        return [`{upstream="${label(upstream)}",backend="${label(String(b.url))}"}`, typeof v === 'boolean' ? Number(v) : num(v)];
      }),
    );
  metric('gatehouse_backend_healthy', 'gauge', 'Whether the backend takes traffic (1) or not (0).', backendSamples('healthy'));
  metric('gatehouse_backend_active_requests', 'gauge', 'Requests in flight to the backend.', backendSamples('active'));
  metric('gatehouse_backend_requests_total', 'counter', 'Requests sent to the backend.', backendSamples('requests'));
  metric('gatehouse_backend_failures_total', 'counter', 'Failed exchanges with the backend.', backendSamples('failures'));
  metric('gatehouse_pool_connections_created_total', 'counter', 'Upstream connections opened.', backendSamples('created', 'pool'));
  metric('gatehouse_pool_connections_reused_total', 'counter', 'Requests served on a reused connection.', backendSamples('reused', 'pool'));
  metric('gatehouse_pool_connections_idle', 'gauge', 'Idle upstream connections.', backendSamples('idle', 'pool'));
  metric('gatehouse_pool_connections_active', 'gauge', 'Upstream connections in use.', backendSamples('active', 'pool'));
  metric('gatehouse_pool_exhausted_total', 'counter', 'Checkouts that found every connection busy.', backendSamples('exhausted', 'pool'));
  metric('gatehouse_pool_queue_timeouts_total', 'counter', 'Checkouts that gave up waiting (503).', backendSamples('queue_timeouts', 'pool'));
  return `${out.join('\n')}\n`;
}
