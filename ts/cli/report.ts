/** The CLI's one error printer: every configuration problem on its own line, key path first. */
import { ConfigError, GatehouseError } from '../errors.js';

export function reportError(e: unknown): void {
  if (e instanceof ConfigError) {
    for (const p of e.problems) process.stderr.write(`${p.path}: ${p.message}\n`);
    return;
  }
  if (e instanceof GatehouseError) {
    process.stderr.write(`error (${e.code}): ${e.message}\n`);
    return;
  }
  process.stderr.write(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
}
