/** `gatehouse --version`: the package version first (as usual), then what a bug report needs. */
import { engineBuildInfo, hostPlatform, packageVersion } from '../native.js';
import { reportError } from './report.js';

/** Prints the version lines; 1 when the engine cannot be loaded (the reason goes to stderr). */
export async function printVersion(): Promise<number> {
  process.stdout.write(`${packageVersion()}\n`);
  try {
    const info = await engineBuildInfo();
    const rustc = info.rustc ? ` (${info.rustc})` : '';
    process.stdout.write(`engine: ${info.version} ${info.target} ${info.profile}${rustc}\n`);
    process.stdout.write(`node: ${process.version} ${hostPlatform()}\n`);
    return 0;
  } catch (e) {
    process.stdout.write(`engine: unavailable\n`);
    reportError(e);
    return 1;
  }
}
