/**
 * Certificates made at test time with the `openssl` CLI, in a temporary directory: a small CA
 * (a self-signed root) and leaf certificates it signs. Clients trust `caPem`. Keys are ECDSA
 * P-256 (fast to make); leaves carry their names as subject alternative names and in the CN.
 */
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function openssl(args: string[], cwd?: string): Promise<void> {
  try {
    await run('openssl', args, cwd ? { cwd } : {});
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

export interface CertFiles {
  /** PEM chain, leaf first. */
  cert: string;
  /** PEM private key (PKCS#8). */
  key: string;
}

export interface IssuedCert extends CertFiles {
  /** The subject CN (the first name). */
  name: string;
  /** DNS names in the subject alternative name extension. */
  sans: string[];
  /** The leaf certificate, PEM. */
  pem: string;
  /** As `tlsSocket.getPeerCertificate().fingerprint256` shows it (`AB:CD:…`). */
  fingerprint256: string;
  /** Expiry of the leaf. */
  notAfter: Date;
}

export interface IssueOptions {
  /** DNS names; `[name]` by default. */
  sans?: string[];
  /** Validity from now, in days (default 30). Ignored when `startDate`/`endDate` are given. */
  days?: number;
  /** Fixed validity (`YYYYMMDDHHMMSSZ`), e.g. in the past for an expired certificate. */
  startDate?: string;
  endDate?: string;
  /** Append the CA certificate after the leaf (a chain of two). */
  chain?: boolean;
  /** Directory and file stem (default: the CA's directory and a stem from the name). */
  dir?: string;
  stem?: string;
}

export interface TestCA {
  dir: string;
  /** The root certificate, PEM, for clients' `ca` option. */
  caPem: string;
  caCert: string;
  caKey: string;
  issue(name: string, options?: IssueOptions): Promise<IssuedCert>;
}

let counter = 0;
const stemOf = (name: string) => `${name.replace(/\*/g, 'star').replace(/[^A-Za-z0-9.-]/g, '_')}-${++counter}`;

/** Makes a root CA in a new temporary directory. */
export async function createCA(dir?: string): Promise<TestCA> {
  const where = dir ?? (await mkdtemp(join(tmpdir(), 'gatehouse-certs-')));
  const caKey = join(where, 'ca.key');
  const caCert = join(where, 'ca.pem');
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', caKey, '-out', caCert, '-days', '3650', '-subj', '/CN=Gatehouse Test Root CA',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const caPem = await readFile(caCert, 'utf8');

  const issue = async (name: string, options: IssueOptions = {}): Promise<IssuedCert> => {
    const sans = options.sans ?? [name];
    const outDir = options.dir ?? where;
    const stem = options.stem ?? stemOf(name);
    const key = join(outDir, `${stem}.key`);
    const cert = join(outDir, `${stem}.pem`);
    const tag = randomBytes(4).toString('hex');
    const csr = join(where, `${stem}-${tag}.csr`);
    const ext = join(where, `${stem}-${tag}.ext`);
    const extensions = [
      `subjectAltName=${sans.map((s) => `DNS:${s}`).join(',')}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
    ];
    await writeFile(ext, `${extensions.join('\n')}\n`);
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
    const leafFile = options.chain ? `${cert}.leaf` : cert;
    if (options.startDate || options.endDate) {
      // `openssl x509 -req` (3.0) cannot set dates in the past; `openssl ca` can.
      const caDir = await mkdtemp(join(where, 'ca-db-'));
      await writeFile(join(caDir, 'index.txt'), '');
      await writeFile(join(caDir, 'serial'), `${randomBytes(8).toString('hex').toUpperCase()}\n`);
      const cnf = join(caDir, 'ca.cnf');
      await writeFile(
        cnf,
        [
          '[ca]', 'default_ca = test_ca',
          '[test_ca]', `database = ${join(caDir, 'index.txt')}`, `new_certs_dir = ${caDir}`, `serial = ${join(caDir, 'serial')}`,
          'default_md = sha256', 'policy = any', 'unique_subject = no', 'copy_extensions = none',
          '[any]', 'commonName = supplied',
          '[leaf]', ...extensions,
          '',
        ].join('\n'),
      );
      await openssl([
        'ca', '-batch', '-config', cnf, '-cert', caCert, '-keyfile', caKey, '-in', csr, '-out', leafFile, '-notext', '-extensions', 'leaf',
        '-startdate', options.startDate ?? '20200101000000Z', '-enddate', options.endDate ?? '20200201000000Z',
      ]);
    } else {
      await openssl([
        'x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${randomBytes(12).toString('hex')}`,
        '-days', String(options.days ?? 30), '-sha256', '-extfile', ext, '-out', leafFile,
      ]);
    }
    const pem = await readFile(leafFile, 'utf8');
    if (options.chain) {
      await writeFile(cert, pem + caPem);
      await rm(leafFile);
    }
    const x509 = new X509Certificate(pem);
    return { name, sans, cert, key, pem, fingerprint256: x509.fingerprint256, notAfter: new Date(x509.validTo) };
  };

  return { dir: where, caPem, caCert, caKey, issue };
}

export interface TestCerts {
  dir: string;
  ca: TestCA;
  caPem: string;
  /** `a.test`, chained with the CA (leaf first). */
  a: IssuedCert;
  /** `b.test`. */
  b: IssuedCert;
  /** `*.example.test`. */
  wildcard: IssuedCert;
  /** `api.example.test` (an exact name under the wildcard). */
  api: IssuedCert;
  /** `expired.test`, valid only in January 2020. */
  expired: IssuedCert;
  /** `soon.test`, valid for 3 more days. */
  soon: IssuedCert;
  /** Several SANs: `multi.test`, `www.multi.test`, `*.apps.multi.test`. */
  multi: IssuedCert;
  /** CN `cn-only.test` but SAN `san-only.test`: names come from the SANs. */
  cnVsSan: IssuedCert;
  /** The certificate of `a.test` with the key of `b.test`. */
  mismatched: CertFiles;
  /** Deletes the directory. */
  remove(): Promise<void>;
}

/** The standard set of certificates for the TLS tests, in a new temporary directory. */
export async function createTestCerts(): Promise<TestCerts> {
  const ca = await createCA();
  const [a, b, wildcard, api, expired, soon, multi, cnVsSan] = await Promise.all([
    ca.issue('a.test', { chain: true }),
    ca.issue('b.test'),
    ca.issue('*.example.test'),
    ca.issue('api.example.test'),
    ca.issue('expired.test', { startDate: '20200101000000Z', endDate: '20200201000000Z' }),
    ca.issue('soon.test', { days: 3 }),
    ca.issue('multi.test', { sans: ['multi.test', 'www.multi.test', '*.apps.multi.test'] }),
    ca.issue('cn-only.test', { sans: ['san-only.test'] }),
  ]);
  return {
    dir: ca.dir,
    ca,
    caPem: ca.caPem,
    a,
    b,
    wildcard,
    api,
    expired,
    soon,
    multi,
    cnVsSan,
    mismatched: { cert: a.cert, key: b.key },
    remove: () => rm(ca.dir, { recursive: true, force: true }),
  };
}
