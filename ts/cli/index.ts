/** The `gatehouse` command line. The only place that calls `process.exit`. */
import { Command } from 'commander';
import { packageVersion } from '../native.js';
import { registerDemo } from './commands/demo.js';
import { registerStart } from './commands/start.js';
import { registerValidate } from './commands/validate.js';
import { reportError } from './report.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('gatehouse')
    .description('A reverse proxy with a Rust engine and a TypeScript control plane')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    .exitOverride();
  registerStart(program);
  registerValidate(program);
  registerDemo(program);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    if (typeof code === 'string' && code.startsWith('commander.')) return 1; // commander printed it
    reportError(e);
    return 1;
  }
}
