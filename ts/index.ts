/**
 * gatehouse: a reverse proxy with a Rust engine and a TypeScript control plane.
 *
 * ```ts
 * import { start } from 'gatehouse';
 * const gw = await start('gatehouse.yaml');
 * console.log(gw.addresses, gw.stats().requests.total);
 * await gw.close();
 * ```
 */
export { start, Gateway, type BackendView, type GatewayStats, type ListenerInfo, type StartOptions } from './gateway.js';
export { definePolicy, type BalancingPolicy, type PolicyBackend, type PolicyRequest, type SelectResult, type UpstreamSnapshot } from './policy/types.js';
export type { HealthChange } from './health/checker.js';
export { configSchema, configJsonSchema, type GatehouseConfig, type GatehouseConfigInput } from './config/schema.js';
export { loadConfigFile, validateConfig, type LoadedConfig } from './config/load.js';
export { ConfigError, GatehouseError, type ConfigProblem, type GatehouseErrorCode } from './errors.js';
export { createLogger, type Logger, type LogLevel } from './log.js';
export { engineBuildInfo, packageVersion, type EngineBuildInfo } from './native.js';
