/** The `gatehouse` command line. The only place that calls `process.exit`. */
import { Command } from 'commander';
import { registerDemo } from './commands/demo.js';
import { registerStart } from './commands/start.js';
import { registerValidate } from './commands/validate.js';
import { reportError } from './report.js';
import { printVersion } from './version.js';

/** Thrown from the `--version` option handler: printing needs the engine, which loads asynchronously. */
class VersionRequested extends Error {}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('gatehouse')
    .description('A reverse proxy with a Rust engine and a TypeScript control plane')
    .option('-V, --version', 'print the version and how the engine was built')
    .on('option:version', () => {
      throw new VersionRequested();
    })
    .showHelpAfterError()
    .exitOverride();
  registerStart(program);
  registerValidate(program);
  registerDemo(program);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof VersionRequested) return printVersion();
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    if (typeof code === 'string' && code.startsWith('commander.')) return 1; // commander printed it
    reportError(e);
    return 1;
  }
}
