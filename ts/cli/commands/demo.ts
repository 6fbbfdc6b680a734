import type { Command } from 'commander';
import { start, type Gateway } from '../../gateway.js';
import { createLogger } from '../../log.js';
import { startDemoOrigin } from '../../demo/origins.js';
import { serveUntilSignal } from '../signals.js';
import type { GatehouseConfigInput } from '../../config/schema.js';

/** The embedded demo configuration: two origins behind one listener, round robin. */
export function demoConfig(port: number, adminPort: number, origins: string[]): GatehouseConfigInput {
  return {
    workers: 1,
    listeners: [{ address: `127.0.0.1:${port}` }],
    upstreams: { demo: { balance: 'round_robin', backends: origins.map((url) => ({ url })) } },
    admin: { address: `127.0.0.1:${adminPort}` },
    log: { level: 'info', access_log: 'stdout' },
  };
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('start two demo origins and a proxy in front of them; runs until Ctrl-C')
    .option('-p, --port <port>', 'proxy port (0 = any free port)', '8080')
    .option('--admin-port <port>', 'admin port (0 = any free port)', '9901')
    .option('--access-log <target>', 'stdout, off, or a file', 'stdout')
    .action(async (opts: { port: string; adminPort: string; accessLog: string }) => {
      const logger = createLogger('info');
      const origins = await Promise.all([startDemoOrigin('origin-a'), startDemoOrigin('origin-b')]);
      const config = (port: number, admin: number): GatehouseConfigInput => {
        const c = demoConfig(port, admin, origins.map((o) => o.url));
        c.log = { level: 'info', access_log: opts.accessLog };
        return c;
      };
      let gateway: Gateway;
      try {
        gateway = await start(config(Number(opts.port), Number(opts.adminPort)), { logger, drainTimeoutMs: 5000 });
      } catch (e) {
        // A busy default port should not stop a demo: take any free one instead.
        logger.warn('default ports busy, using free ones', { reason: (e as Error).message });
        gateway = await start(config(0, 0), { logger, drainTimeoutMs: 5000 });
      }
      const proxy = `http://${gateway.addresses[0]?.bound ?? ''}`;
      const admin = `http://${gateway.adminAddress ?? ''}`;
      process.stderr.write(
        [
          '',
          'gatehouse demo is running',
          `  proxy:   ${proxy}/  (round robin over ${origins.map((o) => `${o.name} ${o.url}`).join(', ')})`,
          `  stats:   ${admin}/stats`,
          `  metrics: ${admin}/metrics`,
          `  health:  ${admin}/healthz`,
          `try: curl -s ${proxy}/hello`,
          'Ctrl-C to stop',
          '',
        ].join('\n') + '\n',
      );
      await serveUntilSignal(gateway, logger);
      await Promise.all(origins.map((o) => o.close()));
    });
}
