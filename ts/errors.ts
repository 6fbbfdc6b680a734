/** Errors with stable codes, so that programs can tell them apart without reading messages. */

export type GatehouseErrorCode =
  | 'ERR_GATEHOUSE_CONFIG'
  | 'ERR_GATEHOUSE_START'
  | 'ERR_GATEHOUSE_RELOAD'
  | 'ERR_GATEHOUSE_CLOSED'
  | 'ERR_GATEHOUSE_WEIGHT'
  | 'ERR_GATEHOUSE_CACHE'
  | 'ERR_GATEHOUSE_NATIVE';

/** One configuration problem: where (`upstreams.app.backends[1].url`) and what. */
export interface ConfigProblem {
  path: string;
  message: string;
}

export class GatehouseError extends Error {
  readonly code: GatehouseErrorCode;
  constructor(code: GatehouseErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GatehouseError';
    this.code = code;
  }
}

/** A configuration that cannot be used; `problems` lists every issue found, each with its key path. */
export class ConfigError extends GatehouseError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[], source?: string) {
    const where = source ? ` in ${source}` : '';
    super('ERR_GATEHOUSE_CONFIG', `invalid configuration${where}:\n${problems.map(formatProblem).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.path}: ${p.message}`;
}

/** `['upstreams', 'app', 'backends', 1, 'url']` → `upstreams.app.backends[1].url`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(root)' : out;
}
