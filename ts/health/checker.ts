/**
 * Active health checks, scheduled by the control plane. Each backend has a monitor (`monitor.ts`)
 * with its own check loop: a GET on a connection of its own (`probe.ts`), consecutive thresholds,
 * jitter and backoff (`schedule.ts`). This class owns the set of monitors: it swaps it on every
 * reload, reports changes of verdict once each, and stops everything cleanly.
 */
import { createLogger, type Logger } from '../log.js';
import { BackendMonitor, type MonitorHooks } from './monitor.js';
import type { BackendHealth, HealthChange, HealthCheckSettings, HealthTarget } from './types.js';

export type { BackendHealth, HealthChange, HealthCheckSettings, HealthTarget } from './types.js';

export interface HealthCheckerOptions {
  /** Called once per change of verdict (never per check). A throw is logged, not propagated. */
  onChange: (change: HealthChange) => void;
  /** Where changes are logged (warn when a backend goes down, info when it comes back); JSON on stderr by default. */
  logger?: Logger;
  /** Source of jitter, in [0, 1); `Math.random` by default. */
  random?: () => number;
  /**
   * Called after every passing check of a healthy backend (not only on changes): the gateway uses
   * it to end a passive ejection early, since the backend has just answered. A throw is logged.
   */
  onPass?: (upstream: string, url: string) => void;
}

export class HealthChecker {
  /** By target identity (upstream + url), in the order of the last `update`. */
  #monitors = new Map<string, BackendMonitor>();
  /** Monitors being stopped after a reload removed or replaced them. */
  #retiring = new Set<Promise<void>>();
  #stopped = false;
  readonly #logger: Logger;
  readonly #hooks: MonitorHooks;

  constructor(options: HealthCheckerOptions) {
    const logger = options.logger ?? createLogger();
    const random = options.random ?? Math.random;
    this.#logger = logger;
    const onPass = options.onPass;
    this.#hooks = {
      random,
      ...(onPass
        ? {
            onPass: (upstream: string, url: string) => {
              try {
                onPass(upstream, url);
              } catch (e) {
                logger.error('health pass listener threw', { error: e instanceof Error ? e.message : String(e) });
              }
            },
          }
        : {}),
      onChange: (change) => {
        const fields = { upstream: change.upstream, backend: change.url, reason: change.reason };
        if (change.healthy) logger.info('backend healthy', fields);
        else logger.warn('backend unhealthy', fields);
        try {
          options.onChange(change);
        } catch (e) {
          logger.error('health change listener threw', { error: e instanceof Error ? e.message : String(e) });
        }
      },
    };
  }

  /**
   * Replaces the set of targets (on start and on every reload). A target whose upstream, url and
   * settings are unchanged keeps its state and schedule; removed ones stop; new ones start healthy
   * and are checked right away (after a small jitter). A target whose settings changed keeps its
   * verdict (a dead backend is not declared alive by a reload) but restarts its counters, backoff
   * and schedule. Invalid targets throw before anything changes. Ignored after `stop()`.
   */
  update(targets: HealthTarget[]): void {
    if (this.#stopped) {
      this.#logger.debug('health checker stopped, update ignored', { targets: targets.length });
      return;
    }
    const checkUrls = targets.map(validate);
    const next = new Map<string, BackendMonitor>();
    targets.forEach((target, i) => {
      const key = identity(target);
      if (next.has(key)) return; // listed twice: checked once
      const current = this.#monitors.get(key);
      if (current && sameSettings(current.target.settings, target.settings)) {
        next.set(key, current);
        return;
      }
      const fresh = new BackendMonitor(target, checkUrls[i] as URL, this.#hooks, current?.inherit());
      next.set(key, fresh);
      // The successor starts once its predecessor's check has ended, so checks never overlap.
      if (current) void this.#retire(current).then(() => fresh.start());
      else fresh.start();
    });
    for (const [key, monitor] of this.#monitors) if (!next.has(key)) void this.#retire(monitor);
    this.#monitors = next;
  }

  /** Current view, for `/backends`. */
  state(): BackendHealth[] {
    return [...this.#monitors.values()].map((m) => m.snapshot());
  }

  /** Stops every timer and in-flight check; resolves when no timer or socket is left. Final. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const stopping = [...this.#monitors.values()].map((m) => m.stop());
    this.#monitors = new Map();
    await Promise.all([...stopping, ...this.#retiring]);
  }

  #retire(monitor: BackendMonitor): Promise<void> {
    const done = monitor.stop().finally(() => this.#retiring.delete(done));
    this.#retiring.add(done);
    return done;
  }
}

function identity(target: HealthTarget): string {
  return JSON.stringify([target.upstream, target.url]);
}

function sameSettings(a: HealthCheckSettings, b: HealthCheckSettings): boolean {
  return (
    a.path === b.path &&
    a.intervalMs === b.intervalMs &&
    a.timeoutMs === b.timeoutMs &&
    a.healthyThreshold === b.healthyThreshold &&
    a.unhealthyThreshold === b.unhealthyThreshold
  );
}

/** The URL to check; throws a RangeError naming the target when something cannot work. */
function validate(target: HealthTarget): URL {
  const where = `health check of ${target.url} (upstream ${target.upstream})`;
  const { path, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold } = target.settings;
  let base: URL;
  try {
    base = new URL(target.url);
  } catch {
    throw new RangeError(`${where}: not a URL`);
  }
  if (base.protocol !== 'http:') throw new RangeError(`${where}: only http:// backends can be checked`);
  if (!path.startsWith('/')) throw new RangeError(`${where}: path must start with "/"`);
  for (const [name, value] of [['intervalMs', intervalMs], ['timeoutMs', timeoutMs]] as const) {
    if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${where}: ${name} must be a positive number`);
  }
  for (const [name, value] of [['healthyThreshold', healthyThreshold], ['unhealthyThreshold', unhealthyThreshold]] as const) {
    if (!(Number.isInteger(value) && value >= 1)) throw new RangeError(`${where}: ${name} must be an integer of at least 1`);
  }
  // Joined as text: `new URL('//elsewhere/x', base)` would change host.
  return new URL(`${base.origin}${path}`);
}
