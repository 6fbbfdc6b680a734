/** Reading, parsing and validating configuration files and objects. */
import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { ConfigError, formatPath, type ConfigProblem } from '../errors.js';
import { configSchema, type GatehouseConfig } from './schema.js';

/** A validated configuration and the folder its relative paths resolve against. */
export interface LoadedConfig {
  config: GatehouseConfig;
  baseDir: string;
  /** The file it came from, when it came from a file. */
  file?: string;
}

function problemsOf(error: z.ZodError): ConfigProblem[] {
  return error.issues.map((issue) => ({
    path: formatPath(issue.path),
    message: issueMessage(issue),
  }));
}

function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  }
  return issue.message;
}

/** Validates an in-memory configuration; throws a {@link ConfigError} listing every problem. */
export function validateConfig(input: unknown, baseDir = process.cwd(), source?: string): LoadedConfig {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    // Unknown-key issues sit on the parent object; name the key itself in the path.
    const problems = result.error.issues.flatMap((issue) =>
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((k) => ({ path: formatPath([...issue.path, k]), message: 'unknown key' }))
        : [{ path: formatPath(issue.path), message: issueMessage(issue) }],
    );
    throw new ConfigError(problems.length ? problems : problemsOf(result.error), source);
  }
  return { config: result.data, baseDir, ...(source ? { file: source } : {}) };
}

/** Parses the text of a `.yaml`/`.yml` or `.json` file. */
export function parseConfigText(text: string, file: string): unknown {
  const ext = extname(file).toLowerCase();
  try {
    if (ext === '.json') return JSON.parse(text) as unknown;
    if (ext === '.yaml' || ext === '.yml') return parseYaml(text, { prettyErrors: true }) as unknown;
  } catch (e) {
    const where = e instanceof YAMLParseError && e.linePos ? `line ${e.linePos[0].line}` : '(file)';
    const message = e instanceof Error ? e.message.split('\n')[0] ?? e.message : String(e);
    throw new ConfigError([{ path: where, message: `cannot parse: ${message}` }], file);
  }
  throw new ConfigError([{ path: '(file)', message: `unknown extension ${JSON.stringify(ext)}: use .yaml, .yml or .json` }], file);
}

/** Reads and validates a configuration file; relative paths in it resolve against its folder. */
export async function loadConfigFile(path: string): Promise<LoadedConfig> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(e);
    throw new ConfigError([{ path: '(file)', message: reason }], file);
  }
  return validateConfig(parseConfigText(text, file), dirname(file), file);
}
