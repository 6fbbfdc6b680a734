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
  connections: { active: number; total: number };
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
  admin?: { address: string };
}

type ConfigSource = GatehouseConfigInput | string;

async function load(source: ConfigSource): Promise<LoadedConfig> {
  return typeof source === 'string' ? loadConfigFile(source) : validateConfig(source);
}

export class Gateway extends EventEmitter {
  #engine: NativeEngine | undefined;
  #admin: AdminServer | undefined;
  #source: ConfigSource;
  #loaded: LoadedConfig;
  #draining = false;
  #closing: Promise<void> | undefined;
  readonly #logger: Logger;
  readonly #drainTimeoutMs: number;

  private constructor(engine: NativeEngine, source: ConfigSource, loaded: LoadedConfig, logger: Logger, drainTimeoutMs: number) {
    super();
    this.#engine = engine;
    this.#source = source;
    this.#loaded = loaded;
    this.#logger = logger;
    this.#drainTimeoutMs = drainTimeoutMs;
  }

  /** Validates the configuration (an object, or a path to a YAML/JSON file) and starts serving. */
  static async start(source: ConfigSource, options: StartOptions = {}): Promise<Gateway> {
    const loaded = await load(source);
    const logger = options.logger ?? createLogger(loaded.config.log.level);
    const binding = await native();
    let engine: NativeEngine;
    try {
      engine = await binding.startEngine(JSON.stringify(toEngineConfig(loaded)));
    } catch (e) {
      throw startError(e);
    }
    const gateway = new Gateway(engine, source, loaded, logger, options.drainTimeoutMs ?? 30_000);
    if (loaded.config.admin) {
      try {
        gateway.#admin = await startAdmin(loaded.config.admin.address, gateway);
      } catch (e) {
        await engine.shutdown(0);
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
      engine.reload(JSON.stringify(toEngineConfig(loaded)));
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      throw new GatehouseError('ERR_GATEHOUSE_RELOAD', `reload failed, previous configuration kept: ${(e as Error).message}`, { cause: e });
    }
    this.#source = source;
    this.#loaded = loaded;
    this.#logger.level = loaded.config.log.level;
    this.emit('reload', loaded.config);
  }

  /**
   * Stops accepting connections, lets in-flight requests finish (up to the drain timeout), then
   * stops the engine's threads and the admin listener. Safe to call more than once.
   */
  close(drainTimeoutMs = this.#drainTimeoutMs): Promise<void> {
    this.#closing ??= (async () => {
      this.#draining = true;
      const engine = this.#engine;
      if (engine) await engine.shutdown(drainTimeoutMs);
      this.#engine = undefined;
      await this.#admin?.close();
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
