/** Foreground lifecycle shared by `start` and `demo`: SIGHUP reloads, SIGTERM/SIGINT drain and exit. */
import type { Gateway } from '../gateway.js';
import type { Logger } from '../log.js';

export function serveUntilSignal(gateway: Gateway, logger: Logger, reload?: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn('second signal, exiting without waiting', { signal });
        process.exit(1);
      }
      stopping = true;
      logger.info('draining', { signal });
      void gateway.close().then(() => {
        logger.info('stopped');
        process.off('SIGHUP', onHup);
        resolve();
      });
    };
    const onHup = () => {
      if (reload && !stopping) void reload();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', onHup);
  });
}
