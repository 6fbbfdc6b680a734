/** Durations (`"250ms"`, `"10s"`, `"5m"`, `"1h"`) and sizes (`"16kb"`, `"64mb"`, bytes) as users write them. */

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const SIZE = /^(\d+(?:\.\d+)?)(b|kb|mb|gb)?$/i;

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_BYTES: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** Milliseconds for a duration string or a number of milliseconds; `undefined` when malformed. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
  const m = DURATION.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (DURATION_MS[m[2] ?? ''] ?? NaN));
}

/** Bytes for a size string (1 kb = 1024 bytes) or a number of bytes; `undefined` when malformed. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const m = SIZE.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (SIZE_BYTES[(m[2] ?? 'b').toLowerCase()] ?? NaN));
}
