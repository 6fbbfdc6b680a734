/** `gatehouse --version`: the package version first (as usual), then what a bug report needs. */
import { engineBuildInfo, hostPlatform, packageVersion } from '../native.js';
import { reportError } from './report.js';

/** How `engineBuildInfo().pgo` reads after the cargo profile; a build without PGO adds nothing. */
const PGO_WORDS: Record<string, string> = { applied: ' pgo', instrumented: ' pgo-instrumented' };

/** Prints the version lines; 1 when the engine cannot be loaded (the reason goes to stderr). */
export async function printVersion(): Promise<number> {
  process.stdout.write(`${packageVersion()}\n`);
  try {
    const info = await engineBuildInfo();
    const rustc = info.rustc ? ` (${info.rustc})` : '';
    const pgo = PGO_WORDS[info.pgo] ?? '';
    process.stdout.write(`engine: ${info.version} ${info.target} ${info.profile}${pgo}${rustc}\n`);
    process.stdout.write(`node: ${process.version} ${hostPlatform()}\n`);
    return 0;
  } catch (e) {
    process.stdout.write(`engine: unavailable\n`);
    reportError(e);
    return 1;
  }
}
