import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';
import { certificateProblems } from '../../config/certificates.js';
import { ConfigError } from '../../errors.js';

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check a configuration file (and the TLS certificates it names); prints "ok" or one line per problem, key path first')
    .requiredOption('-c, --config <file>', 'configuration file (.yaml, .yml or .json)')
    .action(async (opts: { config: string }) => {
      const loaded = await loadConfigFile(opts.config);
      const problems = await certificateProblems(loaded);
      if (problems.length > 0) throw new ConfigError(problems, loaded.file);
      process.stdout.write('ok\n');
    });
}
