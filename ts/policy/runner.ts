/**
 * Runs policy modules against the engine: `select` answers the engine's per-request calls,
 * `tune` retunes weights on a timer. Every failure is logged and answered with a fallback; a
 * policy can never crash the gateway.
 */
import { parseDuration } from '../config/units.js';
import type { Logger } from '../log.js';
import type { BalancingPolicy, PolicyBackend, PolicyRequest, SelectResult, UpstreamSnapshot } from './types.js';

/** The calls the native engine makes and takes (a subset of NativeEngine). */
export interface PolicyEngine {
  setPolicy(upstream: string, policy: (call: PolicyCall) => void): void;
  resolvePolicy(token: number, url?: string | null): void;
  setWeights(upstream: string, weights: [string, number][]): void;
}

export interface PolicyCall {
  token: number;
  method: string;
  path: string;
  host: string;
  headers: string[][];
  clientIp: string;
  backends: PolicyBackend[];
}

/** Snapshot source for `tune`. */
export type SnapshotSource = (upstream: string) => UpstreamSnapshot | undefined;

/** Logs at most one line per second per upstream and kind, counting what it suppressed. */
class Throttle {
  #last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly logger: Logger) {}
  error(key: string, message: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    const entry = this.#last.get(key);
    if (entry && now - entry.at < 1000) {
      entry.suppressed += 1;
      return;
    }
    this.logger.error(message, { ...fields, ...(entry?.suppressed ? { suppressed: entry.suppressed } : {}) });
    this.#last.set(key, { at: now, suppressed: 0 });
  }
}

function chosenUrl(result: SelectResult, backends: PolicyBackend[]): string | null | 'invalid' {
  if (result === null || result === undefined) return null;
  const url = typeof result === 'string' ? result : typeof result === 'object' && 'url' in result ? result.url : undefined;
  return backends.some((b) => b.url === url) ? (url as string) : 'invalid';
}

function requestOf(call: PolicyCall): PolicyRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of call.headers) {
    if (name === undefined || value === undefined) continue;
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { method: call.method, path: call.path, host: call.host, headers, clientIp: call.clientIp };
}

export class PolicyRunner {
  readonly #engine: PolicyEngine;
  readonly #snapshot: SnapshotSource;
  readonly #throttle: Throttle;
  readonly #logger: Logger;
  #timers = new Map<string, NodeJS.Timeout>();

  constructor(engine: PolicyEngine, snapshot: SnapshotSource, logger: Logger) {
    this.#engine = engine;
    this.#snapshot = snapshot;
    this.#logger = logger;
    this.#throttle = new Throttle(logger);
  }

  /** Installs `policy` for `upstream` (replacing an earlier one). */
  install(upstream: string, policy: BalancingPolicy, tuneIntervalMs: number): void {
    this.uninstall(upstream);
    const select = policy.select?.bind(policy);
    if (select) this.#engine.setPolicy(upstream, (call) => this.#answer(upstream, select, call));
    const tune = policy.tune?.bind(policy);
    if (tune) {
      const interval = policy.tuneInterval !== undefined ? parseDuration(policy.tuneInterval) : tuneIntervalMs;
      if (interval === undefined || interval <= 0) {
        this.#logger.error('invalid tuneInterval in policy module; using the configured tune_interval', { upstream });
      }
      const every = interval && interval > 0 ? interval : tuneIntervalMs;
      const timer = setInterval(() => void this.#tune(upstream, tune), every);
      timer.unref();
      this.#timers.set(upstream, timer);
    }
  }

  uninstall(upstream: string): void {
    const timer = this.#timers.get(upstream);
    if (timer) clearInterval(timer);
    this.#timers.delete(upstream);
  }

  stop(): void {
    for (const upstream of [...this.#timers.keys()]) this.uninstall(upstream);
  }

  #answer(upstream: string, select: NonNullable<BalancingPolicy['select']>, call: PolicyCall): void {
    const fail = (problem: string) => {
      this.#throttle.error(`${upstream}:select`, 'balancing policy failed; round robin used for the request', { upstream, problem });
      this.#engine.resolvePolicy(call.token, null);
    };
    let result: ReturnType<typeof select>;
    try {
      result = select(requestOf(call), call.backends);
    } catch (e) {
      fail(`select() threw: ${(e as Error)?.message ?? String(e)}`);
      return;
    }
    const settle = (value: SelectResult) => {
      const url = chosenUrl(value, call.backends);
      if (url === 'invalid') fail(`select() returned ${JSON.stringify(value)}, which is not one of the offered backends`);
      else this.#engine.resolvePolicy(call.token, url);
    };
    if (result instanceof Promise) {
      result.then(settle, (e: unknown) => fail(`select() rejected: ${(e as Error)?.message ?? String(e)}`));
    } else {
      settle(result);
    }
  }

  async #tune(upstream: string, tune: NonNullable<BalancingPolicy['tune']>): Promise<void> {
    const snapshot = this.#snapshot(upstream);
    if (!snapshot) return;
    try {
      const weights = await tune(snapshot);
      const known = new Set(snapshot.backends.map((b) => b.url));
      const entries = Object.entries(weights ?? {});
      const bad = entries.find(([url, w]) => !known.has(url) || !Number.isInteger(w) || w < 0 || w > 1_000_000);
      if (bad) throw new Error(`invalid weight ${JSON.stringify(bad[1])} for ${JSON.stringify(bad[0])}`);
      if (entries.length > 0) this.#engine.setWeights(upstream, entries);
    } catch (e) {
      this.#throttle.error(`${upstream}:tune`, 'balancing policy tune() failed; weights unchanged', {
        upstream,
        problem: (e as Error)?.message ?? String(e),
      });
    }
  }
}
