/**
 * When a backend's next check runs. Two concerns: jitter, so that checks of backends started
 * together (every reload starts them together) drift apart instead of hitting origins in bursts;
 * and backoff, so that a backend dead for hours costs a check a minute rather than one an interval.
 * Pure functions, so tests can assert exact values without clocks.
 */

/** Every delay is spread by ±10%. */
export const JITTER = 0.1;
/** An unhealthy backend's interval grows to at most this many intervals… */
export const MAX_BACKOFF_FACTOR = 8;
/** …and at most this long (unless the interval itself is longer). */
export const MAX_BACKOFF_MS = 60_000;

/** `ms` spread by ±10%; `random()` is in [0, 1) like `Math.random` (values outside are clamped). */
export function jittered(ms: number, random: () => number): number {
  return ms * (1 + JITTER * (2 * unit(random()) - 1));
}

/** A new backend is checked right away, at a random point of the first 10% of its interval. */
export function firstCheckDelay(intervalMs: number, random: () => number): number {
  return intervalMs * JITTER * unit(random());
}

/** The longest interval of an unhealthy backend: 8× the interval or 60 s, never below the interval. */
export function backoffCeiling(intervalMs: number): number {
  return Math.max(intervalMs, Math.min(intervalMs * MAX_BACKOFF_FACTOR, MAX_BACKOFF_MS));
}

/** The interval after one more failure of a backend already unhealthy: doubled, up to the ceiling. */
export function backedOff(currentMs: number, intervalMs: number): number {
  return Math.min(currentMs * 2, backoffCeiling(intervalMs));
}

function unit(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1) : 0.5;
}
