/**
 * One backend's health: its verdict, its consecutive counters and its own check loop. The loop
 * runs one check at a time (the next is scheduled only when the last has finished), so checks of
 * one backend never overlap, however slow the backend.
 */
import { probe, type ProbeResult } from './probe.js';
import { backedOff, firstCheckDelay, jittered } from './schedule.js';
import type { BackendHealth, HealthChange, HealthTarget } from './types.js';

export interface MonitorHooks {
  /** Called once per change of verdict; must not throw. */
  onChange(change: HealthChange): void;
  /** Called after each passing check of a backend that is (now) healthy; must not throw. */
  onPass?(upstream: string, url: string): void;
  random(): number;
}

/** What a monitor hands to its successor when only the settings of its target changed. */
export interface Inherited {
  healthy: boolean;
  lastCheck?: Date;
  lastError?: string;
}

export class BackendMonitor {
  readonly target: HealthTarget;
  readonly #checkUrl: URL;
  readonly #hooks: MonitorHooks;
  #healthy: boolean;
  #successes = 0;
  #failures = 0;
  #lastCheck: Date | undefined;
  #lastError: string | undefined;
  /** The current gap between checks: the interval, or longer while backing off. */
  #gapMs: number;
  #timer: NodeJS.Timeout | undefined;
  #inflight: { abort: AbortController; done: Promise<void> } | undefined;
  #stopped = false;

  /** `checkUrl` is `target.url` + `target.settings.path`, already validated by the caller. */
  constructor(target: HealthTarget, checkUrl: URL, hooks: MonitorHooks, inherited?: Inherited) {
    this.target = target;
    this.#checkUrl = checkUrl;
    this.#hooks = hooks;
    // New backends are presumed healthy until checks prove otherwise (as HAProxy and Envoy do).
    this.#healthy = inherited?.healthy ?? true;
    this.#lastCheck = inherited?.lastCheck;
    this.#lastError = inherited?.lastError;
    this.#gapMs = target.settings.intervalMs;
  }

  /** Schedules the first check, a small jitter from now. Does nothing once stopped. */
  start(): void {
    if (this.#stopped || this.#timer || this.#inflight) return;
    this.#schedule(firstCheckDelay(this.target.settings.intervalMs, this.#hooks.random));
  }

  /** Cancels the timer and any check in flight; resolves when its socket has closed. */
  stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#inflight?.abort.abort();
    return this.#inflight?.done ?? Promise.resolve();
  }

  inherit(): Inherited {
    return { healthy: this.#healthy, lastCheck: this.#lastCheck, lastError: this.#lastError };
  }

  snapshot(): BackendHealth {
    const view: BackendHealth = {
      upstream: this.target.upstream,
      url: this.target.url,
      healthy: this.#healthy,
      consecutiveSuccesses: this.#successes,
      consecutiveFailures: this.#failures,
    };
    if (this.#lastCheck) view.lastCheck = this.#lastCheck.toISOString();
    if (this.#lastError !== undefined) view.lastError = this.#lastError;
    return view;
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => void this.#check(), ms);
    this.#timer.unref();
  }

  async #check(): Promise<void> {
    this.#timer = undefined;
    const abort = new AbortController();
    const done = probe(this.#checkUrl, this.target.settings.timeoutMs, abort.signal).then((r) => this.#record(r));
    this.#inflight = { abort, done };
    await done;
    this.#inflight = undefined;
    if (!this.#stopped) this.#schedule(jittered(this.#gapMs, this.#hooks.random));
  }

  #record(result: ProbeResult): void {
    if (this.#stopped) return; // a cancelled check says nothing about the backend
    const { intervalMs, healthyThreshold, unhealthyThreshold } = this.target.settings;
    this.#lastCheck = new Date();
    if (result.ok) {
      this.#successes += 1;
      this.#failures = 0;
      this.#lastError = undefined;
      this.#gapMs = intervalMs;
      if (!this.#healthy && this.#successes >= healthyThreshold) {
        this.#healthy = true;
        this.#emit(`${count(this.#successes, 'consecutive success', 'consecutive successes')}`);
      }
      if (this.#healthy) this.#hooks.onPass?.(this.target.upstream, this.target.url);
      return;
    }
    this.#failures += 1;
    this.#successes = 0;
    this.#lastError = result.reason;
    if (this.#healthy && this.#failures >= unhealthyThreshold) {
      this.#healthy = false;
      this.#gapMs = intervalMs;
      this.#emit(`${count(this.#failures, 'consecutive failure', 'consecutive failures')}: ${result.reason}`);
    } else if (!this.#healthy) {
      this.#gapMs = backedOff(this.#gapMs, intervalMs);
    }
  }

  #emit(reason: string): void {
    this.#hooks.onChange({ upstream: this.target.upstream, url: this.target.url, healthy: this.#healthy, reason });
  }
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}
