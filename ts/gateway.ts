/**
 * The programmatic API: a running gateway (engine + admin listener) driven from Node.js.
 *
 * The engine runs on its own threads; this object only starts it, hands it configurations and
 * reads its counters. A blocked event loop therefore slows the admin API, never proxied traffic.
 */
import { EventEmitter } from 'node:events';
import { startAdmin, type AdminServer } from './admin/server.js';
import { ConfigError, GatehouseError } from './errors.js';
import { loadConfigFile, validateConfig, type LoadedConfig } from './config/load.js';
import { toEngineConfig } from './config/normalize.js';
import type { GatehouseConfigInput } from './config/schema.js';
import { createLogger, type Logger } from './log.js';
import { native, packageVersion, type NativeEngine } from './native.js';
import { HealthChecker, type HealthChange, type HealthTarget } from './health/checker.js';
import { loadPolicyModule } from './policy/load.js';
import { PolicyRunner } from './policy/runner.js';
import type { BalancingPolicy, UpstreamSnapshot } from './policy/types.js';
import type { PolicyModes } from './config/normalize.js';
import { isAbsolute, resolve as resolvePath } from 'node:path';

/** A listener as configured and as bound (port 0 resolved to the real port). */
export interface ListenerInfo {
  address: string;
  bound: string;
}

export interface StartOptions {
  /** Where control-plane log lines go; defaults to JSON on stderr at the configured level. */
  logger?: Logger;
  /** How long `close()` lets in-flight requests finish. Default 30 s. */
  drainTimeoutMs?: number;
}

/** Statistics as served by the admin `/stats` endpoint. */
export interface GatewayStats {
  version: string;
  draining: boolean;
  listeners: { address: string; bound: string }[];
  /** `parked`: idle HTTP/1.1 connections that gave their buffers back (docs/performance.md). */
  connections: { active: number; total: number; parked: number };
  requests: { total: number; by_status: Record<string, number> };
  upstreams: Record<
    string,
    {
      backends: {
        url: string;
        healthy: boolean;
        weight: number;
        active: number;
        requests: number;
        failures: number;
        pool: { created: number; reused: number; idle: number; active: number; exhausted: number; queue_timeouts: number };
      }[];
    }
  >;
  access_log: { dropped: number };
  /** Present when the cache is enabled. */
  cache: {
    hits: number;
    misses: number;
    stale: number;
    expired: number;
    revalidations: number;
    bypasses: number;
    coalesced: number;
    stores: number;
    evictions: number;
    entries: number;
    size_bytes: number;
  } | null;
  tls: {
    handshakes: number;
    failures: number;
    failure_reasons: Record<string, number>;
    resumed: number;
    versions: Record<string, number>;
    certificates: { listener: string; names: string[]; file: string; not_after: string; expires_in_days: number; expiring_soon: boolean }[];
  };
  upgrades: { active: number; total: number };
  /**
   * What the client-side timers ended since start: connections with an unfinished request head
   * or TLS handshake (`header`), requests answered 408 for a paused body (`body`), connections,
   * tunnels and HTTP/2 streams whose writes stayed blocked for `limits.send_timeout` (`send`),
   * idle tunnels (`tunnel`). Origin timeouts count as backend `failures`.
   */
  timeouts: { header: number; body: number; send: number; tunnel: number };
  admin?: { address: string };
}

/** One backend as the admin `/backends` endpoint shows it. */
export interface BackendView {
  upstream: string;
  url: string;
  /** Takes new requests: healthy by the active checks and not ejected by passive detection. */
  healthy: boolean;
  weight: number;
  active: number;
  requests: number;
  failures: number;
  ejected: boolean;
  ejections: number;
  latencyEwmaMs: number;
  /** Active health checks, when configured for the upstream. */
  checks?: { healthy: boolean; consecutiveSuccesses: number; consecutiveFailures: number; lastCheck?: string; lastError?: string };
}

type EngineBackend = GatewayStats['upstreams'][string]['backends'][number] & {
  checks_healthy: boolean;
  ejected: boolean;
  ejections: number;
  latency_ewma_ms: number;
};

/** Policy modules of a configuration, loaded, with how each upstream then balances. */
interface LoadedPolicies {
  modules: Map<string, { policy: BalancingPolicy; tuneIntervalMs: number }>;
  modes: PolicyModes;
}

async function loadPolicies(loaded: LoadedConfig): Promise<LoadedPolicies> {
  const modules = new Map<string, { policy: BalancingPolicy; tuneIntervalMs: number }>();
  const modes: PolicyModes = {};
  for (const [name, upstream] of Object.entries(loaded.config.upstreams)) {
    const balance = upstream.balance;
    if (typeof balance === 'string') continue;
    const file = isAbsolute(balance.module) ? balance.module : resolvePath(loaded.baseDir, balance.module);
    let policy: BalancingPolicy;
    try {
      policy = await loadPolicyModule(file);
    } catch (e) {
      throw new ConfigError([{ path: `upstreams.${name}.balance.module`, message: (e as Error).message }]);
    }
    modules.set(name, { policy, tuneIntervalMs: balance.tune_interval });
    modes[name] = policy.select ? 'external' : balance.fallback;
  }
  return { modules, modes };
}

function healthTargets(loaded: LoadedConfig): HealthTarget[] {
  return Object.entries(loaded.config.upstreams).flatMap(([upstream, u]) => {
    const hc = u.health_check;
    if (!hc) return [];
    return u.backends.map((b) => ({
      upstream,
      url: b.url,
      settings: {
        path: hc.path,
        intervalMs: hc.interval,
        timeoutMs: hc.timeout,
        healthyThreshold: hc.healthy_threshold,
        unhealthyThreshold: hc.unhealthy_threshold,
      },
    }));
  });
}

type ConfigSource = GatehouseConfigInput | string;

async function load(source: ConfigSource): Promise<LoadedConfig> {
  return typeof source === 'string' ? loadConfigFile(source) : validateConfig(source);
}

export interface Gateway {
  /** A backend's active-health verdict changed (emitted once per change). */
  on(event: 'health', listener: (change: HealthChange) => void): this;
  /** A reload was applied. */
  on(event: 'reload', listener: (config: LoadedConfig['config']) => void): this;
  on(event: 'close', listener: () => void): this;
}

export class Gateway extends EventEmitter {
  #engine: NativeEngine | undefined;
  #health: HealthChecker;
  #policies: PolicyRunner;
  #admin: AdminServer | undefined;
  #source: ConfigSource;
  #loaded: LoadedConfig;
  #draining = false;
  #closing: Promise<void> | undefined;
  /**
   * The engine serves on threads of its own, which do not keep Node's event loop alive; like an
   * http.Server, a running gateway does, until `close()` (or `unref()`).
   */
  #keepAlive: NodeJS.Timeout = setInterval(() => undefined, 2 ** 31 - 1);
  readonly #logger: Logger;
  readonly #drainTimeoutMs: number;

  private constructor(engine: NativeEngine, source: ConfigSource, loaded: LoadedConfig, logger: Logger, drainTimeoutMs: number) {
    super();
    this.#engine = engine;
    this.#source = source;
    this.#loaded = loaded;
    this.#logger = logger;
    this.#drainTimeoutMs = drainTimeoutMs;
    this.#health = new HealthChecker({
      logger,
      // A passing check ends a passive ejection early: the backend has just answered.
      onPass: (upstream, url) => this.#engine?.setBackendHealth(upstream, url, true),
      onChange: (change) => {
        try {
          this.#engine?.setBackendHealth(change.upstream, change.url, change.healthy);
        } catch (e) {
          logger.debug('health change for a backend the engine no longer has', { error: (e as Error).message });
        }
        this.emit('health', change);
      },
    });
    this.#policies = new PolicyRunner(engine, (upstream) => this.#snapshot(upstream), logger);
  }

  /** Lets the process exit while the gateway runs (like `server.unref()`). */
  unref(): this {
    this.#keepAlive.unref();
    return this;
  }

  /** Undoes `unref()`. */
  ref(): this {
    this.#keepAlive.ref();
    return this;
  }

  #apply(loaded: LoadedConfig, policies: LoadedPolicies): void {
    for (const [upstream, { policy, tuneIntervalMs }] of policies.modules) {
      this.#policies.install(upstream, policy, tuneIntervalMs);
    }
    for (const upstream of Object.keys(loaded.config.upstreams)) {
      if (!policies.modules.has(upstream)) this.#policies.uninstall(upstream);
    }
    const targets = healthTargets(loaded);
    this.#health.update(targets);
    // Backends no longer under active checks are no longer held out by an old verdict.
    for (const [upstream, u] of Object.entries(loaded.config.upstreams)) {
      if (u.health_check) continue;
      for (const b of u.backends) this.#engine?.setBackendHealth(upstream, b.url, true);
    }
  }

  #snapshot(upstream: string): UpstreamSnapshot | undefined {
    const u = this.stats().upstreams[upstream];
    if (!u) return undefined;
    return {
      upstream,
      backends: u.backends.map((b) => {
        const e = b as EngineBackend;
        return {
          url: e.url,
          weight: e.weight,
          healthy: e.healthy,
          active: e.active,
          requests: e.requests,
          failures: e.failures,
          latencyEwmaMs: e.latency_ewma_ms,
        };
      }),
    };
  }

  /** Validates the configuration (an object, or a path to a YAML/JSON file) and starts serving. */
  static async start(source: ConfigSource, options: StartOptions = {}): Promise<Gateway> {
    const loaded = await load(source);
    const logger = options.logger ?? createLogger(loaded.config.log.level);
    const policies = await loadPolicies(loaded);
    const binding = await native();
    let engine: NativeEngine;
    try {
      engine = await binding.startEngine(JSON.stringify(toEngineConfig(loaded, policies.modes)));
    } catch (e) {
      throw startError(e);
    }
    const gateway = new Gateway(engine, source, loaded, logger, options.drainTimeoutMs ?? 30_000);
    gateway.#apply(loaded, policies);
    if (loaded.config.admin) {
      try {
        gateway.#admin = await startAdmin(loaded.config.admin.address, gateway);
      } catch (e) {
        await gateway.close(0);
        throw new GatehouseError('ERR_GATEHOUSE_START', `admin.address: cannot listen on ${loaded.config.admin.address}: ${(e as Error).message}`, { cause: e });
      }
      logger.info('admin listening', { address: gateway.#admin.address });
    }
    return gateway;
  }

  /** Listeners with their bound addresses. */
  get addresses(): ListenerInfo[] {
    return this.#live().listeners().map((l) => ({ address: l.address, bound: l.bound }));
  }

  /** The admin listener's bound `host:port`, when one is configured. */
  get adminAddress(): string | undefined {
    return this.#admin?.address;
  }

  /** True once `close()` has begun: `/healthz` answers 503 so balancers stop sending traffic. */
  get draining(): boolean {
    return this.#draining;
  }

  stats(): GatewayStats {
    const engine = JSON.parse(this.#live().stats()) as Omit<GatewayStats, 'version' | 'draining' | 'admin'>;
    return {
      version: packageVersion(),
      draining: this.#draining,
      ...engine,
      ...(this.#admin ? { admin: { address: this.#admin.address } } : {}),
    };
  }

  /**
   * Swaps in a new configuration atomically; in-flight requests finish on the old one. Without an
   * argument, re-reads the file the gateway was started from. On any error the old configuration
   * keeps serving and the returned promise rejects with the problems.
   */
  async reload(source: ConfigSource = this.#source): Promise<void> {
    const engine = this.#live();
    let loaded: LoadedConfig;
    try {
      loaded = await load(source);
      if (JSON.stringify(loaded.config.admin) !== JSON.stringify(this.#loaded.config.admin)) {
        throw new ConfigError([{ path: 'admin.address', message: 'the admin listener cannot change on reload; restart instead' }]);
      }
      const policies = await loadPolicies(loaded);
      engine.reload(JSON.stringify(toEngineConfig(loaded, policies.modes)));
      this.#apply(loaded, policies);
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      // The engine names the key path of what it could not apply (a certificate, a listener).
      const mapped = startError(e);
      if (mapped instanceof ConfigError) throw mapped;
      throw new GatehouseError('ERR_GATEHOUSE_RELOAD', `reload failed, previous configuration kept: ${(e as Error).message}`, { cause: e });
    }
    this.#source = source;
    this.#loaded = loaded;
    this.#logger.level = loaded.config.log.level;
    this.emit('reload', loaded.config);
  }

  /** Changes one backend's weight; the next pick uses it. */
  setWeight(upstream: string, url: string, weight: number): void {
    this.setWeights(upstream, { [url]: weight });
  }

  /** Changes several weights of one upstream atomically. */
  setWeights(upstream: string, weights: Record<string, number>): void {
    for (const [url, w] of Object.entries(weights)) {
      if (!Number.isInteger(w) || w < 0 || w > 1_000_000) {
        throw new GatehouseError('ERR_GATEHOUSE_WEIGHT', `weight for ${url} must be an integer from 0 to 1000000`);
      }
    }
    try {
      this.#live().setWeights(upstream, Object.entries(weights));
    } catch (e) {
      throw new GatehouseError('ERR_GATEHOUSE_WEIGHT', (e as Error).message, { cause: e });
    }
  }

  /**
   * Purges the response cache: everything, one URL (`https://host/path?q`, or `host/path?q` for
   * both schemes), or a path on every host (`/path?q`). Returns how many responses were removed.
   */
  purgeCache(url?: string): number {
    try {
      return this.#live().purgeCache(url);
    } catch (e) {
      throw new GatehouseError('ERR_GATEHOUSE_CACHE', (e as Error).message, { cause: e });
    }
  }

  /** Every backend with its health, weight and counters. */
  backends(): BackendView[] {
    const checks = new Map(this.#health.state().map((h) => [`${h.upstream} ${h.url}`, h]));
    return Object.entries(this.stats().upstreams).flatMap(([upstream, u]) =>
      u.backends.map((b) => {
        const e = b as EngineBackend;
        const c = checks.get(`${upstream} ${e.url}`);
        return {
          upstream,
          url: e.url,
          healthy: e.healthy,
          weight: e.weight,
          active: e.active,
          requests: e.requests,
          failures: e.failures,
          ejected: e.ejected,
          ejections: e.ejections,
          latencyEwmaMs: e.latency_ewma_ms,
          ...(c
            ? {
                checks: {
                  healthy: c.healthy,
                  consecutiveSuccesses: c.consecutiveSuccesses,
                  consecutiveFailures: c.consecutiveFailures,
                  ...(c.lastCheck ? { lastCheck: c.lastCheck } : {}),
                  ...(c.lastError ? { lastError: c.lastError } : {}),
                },
              }
            : {}),
        };
      }),
    );
  }

  /**
   * Stops accepting connections, lets in-flight requests finish (up to the drain timeout), then
   * stops the engine's threads and the admin listener. Safe to call more than once.
   */
  close(drainTimeoutMs = this.#drainTimeoutMs): Promise<void> {
    this.#closing ??= (async () => {
      this.#draining = true;
      this.#policies.stop();
      await this.#health.stop();
      const engine = this.#engine;
      if (engine) await engine.shutdown(drainTimeoutMs);
      this.#engine = undefined;
      await this.#admin?.close();
      clearInterval(this.#keepAlive);
      this.emit('close');
    })();
    return this.#closing;
  }

  #live(): NativeEngine {
    if (!this.#engine) throw new GatehouseError('ERR_GATEHOUSE_CLOSED', 'the gateway is closed');
    return this.#engine;
  }
}

function startError(e: unknown): GatehouseError {
  const message = (e as Error).message ?? String(e);
  // The engine names the key path first (`listeners[0].address: cannot listen …`).
  const m = /^([\w.[\]-]+): (.*)$/s.exec(message);
  if (m?.[1] && m[2]) return new ConfigError([{ path: m[1], message: m[2] }]);
  return new GatehouseError('ERR_GATEHOUSE_START', message, { cause: e });
}

/** Starts a gateway from a configuration object or a YAML/JSON file path. */
export function start(source: ConfigSource, options?: StartOptions): Promise<Gateway> {
  return Gateway.start(source, options);
}
