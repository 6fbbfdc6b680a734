/** Loading policy modules: TypeScript through tsx, JavaScript with a plain import. */
import { extname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { GatehouseError } from '../errors.js';
import type { BalancingPolicy } from './types.js';

export async function loadPolicyModule(file: string): Promise<BalancingPolicy> {
  const ext = extname(file);
  let mod: { default?: unknown };
  try {
    if (ext === '.ts' || ext === '.mts' || ext === '.cts') {
      const { tsImport } = await import('tsx/esm/api');
      mod = (await tsImport(pathToFileURL(file).href, import.meta.url)) as { default?: unknown };
    } else {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    }
  } catch (e) {
    throw new GatehouseError('ERR_GATEHOUSE_CONFIG', `cannot load policy module ${file}: ${(e as Error).message}`, { cause: e });
  }
  // A TypeScript module compiled to CommonJS nests its default export once more.
  let policy = mod.default;
  if (policy && typeof policy === 'object' && 'default' in policy && !('select' in policy) && !('tune' in policy)) {
    policy = (policy as { default: unknown }).default;
  }
  if (!policy || typeof policy !== 'object') {
    throw new GatehouseError('ERR_GATEHOUSE_CONFIG', `policy module ${file} has no default export object`);
  }
  const p = policy as Record<string, unknown>;
  if (typeof p.select !== 'function' && typeof p.tune !== 'function') {
    throw new GatehouseError('ERR_GATEHOUSE_CONFIG', `policy module ${file} exports neither select() nor tune()`);
  }
  return policy as BalancingPolicy;
}
