/** Checks the TLS certificates a configuration names, with the native engine's own loader. */
import { resolve } from 'node:path';
import type { ConfigProblem } from '../errors.js';
import { native } from '../native.js';
import type { LoadedConfig } from './load.js';

/** One problem per certificate that cannot serve (unreadable, unparseable, key mismatch). */
export async function certificateProblems({ config, baseDir }: LoadedConfig): Promise<ConfigProblem[]> {
  const pairs = config.listeners.flatMap((l, i) => (l.tls?.certificates ?? []).map((c, j) => ({ i, j, c })));
  if (pairs.length === 0) return [];
  const binding = await native();
  return pairs.flatMap(({ i, j, c }) => {
    const problem = binding.checkCertificate(resolve(baseDir, c.cert), resolve(baseDir, c.key));
    return problem ? [{ path: `listeners[${i}].tls.certificates[${j}]`, message: problem }] : [];
  });
}
