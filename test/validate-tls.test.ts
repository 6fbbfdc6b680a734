/** `gatehouse validate` also checks the certificates a configuration names, with the engine's own loader. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../bin/gatehouse.js', import.meta.url));

async function selfSigned(dir: string, name: string): Promise<void> {
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`), '-days', '30',
    '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`]);
}

async function validate(dir: string, cert: string, key: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = join(dir, 'gatehouse.yaml');
  await writeFile(file, `listeners:\n  - address: 127.0.0.1:0\n    tls: { certificates: [{ cert: ${cert}, key: ${key} }] }\nupstreams: { app: { backends: [{ url: "http://127.0.0.1:9" }] } }\n`);
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, 'validate', '-c', file]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

test('validate accepts a matching certificate and key, relative to the config file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-validate-tls-'));
  await selfSigned(dir, 'a.test');
  const r = await validate(dir, 'a.test.pem', 'a.test.key');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), 'ok');
});

test('validate names the key file when it does not match its certificate', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-validate-tls-'));
  await selfSigned(dir, 'a.test');
  await selfSigned(dir, 'b.test');
  const r = await validate(dir, 'a.test.pem', 'b.test.key');
  t.is(r.code, 1);
  const line = r.stderr.trim();
  t.true(line.startsWith('listeners[0].tls.certificates[0]: '), line);
  t.true(line.includes(join(dir, 'b.test.key')), line);
  t.regex(line, /does not match/);
});

test('validate reports a missing certificate file by its path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-validate-tls-'));
  await selfSigned(dir, 'a.test');
  const r = await validate(dir, 'missing.pem', 'a.test.key');
  t.is(r.code, 1);
  t.true(r.stderr.includes(join(dir, 'missing.pem')), r.stderr);
});
