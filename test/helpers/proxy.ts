/** Starting the real proxy (the native engine through the public API) for a test. */
import { start, type Gateway } from '../../ts/index.js';
import type { GatehouseConfigInput } from '../../ts/config/schema.js';
import { createLogger } from '../../ts/log.js';

export interface TestProxy {
  gateway: Gateway;
  /** `http://127.0.0.1:PORT` of the first listener. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** A config with one listener on a free port and one upstream `app` over `backends`. */
export function proxyConfig(backends: string[], overrides: Partial<GatehouseConfigInput> = {}): GatehouseConfigInput {
  return {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { backends: backends.map((url) => ({ url })) } },
    log: { level: 'error', access_log: 'off' },
    ...overrides,
  };
}

const quiet = createLogger('error');

export async function startProxy(config: GatehouseConfigInput): Promise<TestProxy> {
  const gateway = await start(config, { logger: quiet, drainTimeoutMs: 5000 });
  const bound = gateway.addresses[0]?.bound ?? '';
  const port = Number(bound.slice(bound.lastIndexOf(':') + 1));
  return { gateway, url: `http://127.0.0.1:${port}`, port, close: () => gateway.close() };
}
