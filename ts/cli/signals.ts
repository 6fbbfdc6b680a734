/** Foreground lifecycle shared by `start` and `demo`: SIGHUP reloads, SIGTERM/SIGINT drain and exit. */
import type { Gateway } from '../gateway.js';
import type { Logger } from '../log.js';

export function serveUntilSignal(gateway: Gateway, logger: Logger, reload?: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    // The engine serves on its own threads, which do not keep Node's event loop alive: without an
    // admin listener nothing else would, and the process would exit while the proxy is serving.
    const keepAlive = setInterval(() => undefined, 2 ** 31 - 1);
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
        clearInterval(keepAlive);
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
