import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';
import { start } from '../../gateway.js';
import { createLogger } from '../../log.js';
import { ConfigError } from '../../errors.js';
import { serveUntilSignal } from '../signals.js';

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run the proxy in the foreground; SIGHUP reloads the file, SIGTERM/SIGINT drain and exit')
    .requiredOption('-c, --config <file>', 'configuration file (.yaml, .yml or .json)')
    .option('--drain-timeout <ms>', 'how long in-flight requests may finish on shutdown', '30000')
    .action(async (opts: { config: string; drainTimeout: string }) => {
      // Validate before anything listens, so an invalid file starts nothing.
      const loaded = await loadConfigFile(opts.config);
      const logger = createLogger(loaded.config.log.level);
      const gateway = await start(opts.config, { logger, drainTimeoutMs: Number(opts.drainTimeout) });
      for (const l of gateway.addresses) logger.info('listening', { address: l.address, bound: l.bound });
      await serveUntilSignal(gateway, logger, async () => {
        try {
          await gateway.reload();
          logger.info('configuration reloaded', { file: opts.config });
        } catch (e) {
          const problems = e instanceof ConfigError ? e.problems : [{ path: '(reload)', message: (e as Error).message }];
          for (const p of problems) logger.error('reload rejected, previous configuration kept', { path: p.path, problem: p.message });
        }
      });
    });
}
