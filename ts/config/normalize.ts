/**
 * The engine's view of a validated configuration: durations in milliseconds, sizes in bytes,
 * paths absolute, and only what the Rust engine consumes (it rejects unknown keys). Built field by
 * field so that a schema change that the engine does not know about fails to compile here.
 */
import { isAbsolute, resolve } from 'node:path';
import type { LoadedConfig } from './load.js';
import type { BUILTIN_ALGORITHMS } from './schema.js';

export interface EngineConfig {
  workers: number;
  listeners: {
    address: string;
    redirect_to_https?: number;
    tls?: { certificates: { cert: string; key: string }[]; min_version: '1.2' | '1.3'; cipher_suites?: string[] };
  }[];
  upstreams: Record<string, EngineUpstream>;
  routes: { host?: string; path_prefix?: string; upstream: string; cache?: boolean }[];
  cache: { enabled: boolean; max_size: number; max_entry_size: number };
  limits: {
    max_connections: number;
    header_timeout_ms: number;
    max_header_size: number;
    max_body_size: number;
    keepalive_timeout_ms: number;
    body_timeout_ms: number;
    send_timeout_ms: number;
  };
  log: { level: string; access_log: string; access_format: 'json' | 'combined' };
}

export type EngineBalance = (typeof BUILTIN_ALGORITHMS)[number] | 'external';

export interface EngineUpstream {
  balance: EngineBalance;
  backends: { url: string; weight: number }[];
  pool: {
    max_connections: number;
    max_idle: number;
    idle_timeout_ms: number;
    connect_timeout_ms: number;
    queue_timeout_ms: number;
  };
  timeouts: { response_ms: number; body_ms: number; tunnel_ms: number };
  retries: { max: number; budget_percent: number; backoff_ms: number };
  passive_health: { consecutive_failures: number; ejection_time_ms: number; max_ejection_percent: number };
}

/**
 * How each upstream with a policy module balances, once its module is loaded: `external` when
 * it has `select()`, its fallback algorithm otherwise. Upstreams not listed use their algorithm.
 */
export type PolicyModes = Record<string, EngineBalance>;

export function toEngineConfig({ config, baseDir }: LoadedConfig, policyModes: PolicyModes = {}): EngineConfig {
  const upstreams: Record<string, EngineUpstream> = {};
  for (const [name, u] of Object.entries(config.upstreams)) {
    upstreams[name] = {
      balance: typeof u.balance === 'string' ? u.balance : (policyModes[name] ?? 'round_robin'),
      backends: u.backends.map((b) => ({ url: b.url, weight: b.weight })),
      pool: {
        max_connections: u.pool.max_connections,
        max_idle: u.pool.max_idle,
        idle_timeout_ms: u.pool.idle_timeout,
        connect_timeout_ms: u.pool.connect_timeout,
        queue_timeout_ms: u.pool.queue_timeout,
      },
      timeouts: { response_ms: u.timeouts.response, body_ms: u.timeouts.body, tunnel_ms: u.timeouts.tunnel },
      retries: { max: u.retries.max, budget_percent: u.retries.budget_percent, backoff_ms: u.retries.backoff },
      passive_health: {
        consecutive_failures: u.passive_health.consecutive_failures,
        ejection_time_ms: u.passive_health.ejection_time,
        max_ejection_percent: u.passive_health.max_ejection_percent,
      },
    };
  }
  const accessLog = config.log.access_log;
  return {
    workers: config.workers,
    listeners: config.listeners.map((l) => ({
      address: l.address,
      ...(l.redirect_to_https !== undefined ? { redirect_to_https: l.redirect_to_https } : {}),
      ...(l.tls
        ? {
            tls: {
              certificates: l.tls.certificates.map((c) => ({ cert: resolve(baseDir, c.cert), key: resolve(baseDir, c.key) })),
              min_version: l.tls.min_version,
              ...(l.tls.cipher_suites ? { cipher_suites: l.tls.cipher_suites } : {}),
            },
          }
        : {}),
    })),
    upstreams,
    routes: config.routes.map((r) => ({
      upstream: r.upstream,
      ...(r.host !== undefined ? { host: r.host } : {}),
      ...(r.path_prefix !== undefined ? { path_prefix: r.path_prefix } : {}),
      ...(r.cache !== undefined ? { cache: r.cache } : {}),
    })),
    cache: { enabled: config.cache.enabled, max_size: config.cache.max_size, max_entry_size: config.cache.max_entry_size },
    limits: {
      max_connections: config.limits.max_connections,
      header_timeout_ms: config.limits.header_timeout,
      max_header_size: config.limits.max_header_size,
      max_body_size: config.limits.max_body_size,
      keepalive_timeout_ms: config.limits.keepalive_timeout,
      body_timeout_ms: config.limits.body_timeout,
      send_timeout_ms: config.limits.send_timeout,
    },
    log: {
      level: config.log.level,
      access_log:
        accessLog === 'stdout' || accessLog === 'off' || isAbsolute(accessLog) ? accessLog : resolve(baseDir, accessLog),
      access_format: config.log.access_format,
    },
  };
}
