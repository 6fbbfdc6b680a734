import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check a configuration file; prints "ok" or one line per problem, key path first')
    .requiredOption('-c, --config <file>', 'configuration file (.yaml, .yml or .json)')
    .action(async (opts: { config: string }) => {
      await loadConfigFile(opts.config);
      process.stdout.write('ok\n');
    });
}
