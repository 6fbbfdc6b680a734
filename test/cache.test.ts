/**
 * The RFC 9111 response cache end to end: the real proxy in front of a real origin that counts
 * what reaches it and sets the headers each rule needs. Every test has its own proxy and origin;
 * what a user would check is asserted: status, body, `X-Cache-Status`, `Age`, and how many
 * requests the origin saw.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { cacheSetup, fetchRaw, reply } from './helpers/cache.js';
import { delay, until } from './helpers/client.js';
import { sha256 } from './helpers/origin.js';

/** Long enough for a `max-age=1` response to be stale, whatever the `Date` rounding. */
const PAST_ONE_SECOND = 1300;

// ---------------------------------------------------------------------------------------------
// Hits, Age, HEAD

test('a second identical GET is a HIT: the origin sees one request and the hit carries Age', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `body ${n}`));
  const first = await c.get('/hit');
  t.is(first.status, 200);
  t.is(first.body, 'body 1');
  t.is(first.cache, 'MISS');
  const second = await c.get('/hit');
  t.is(second.status, 200);
  t.is(second.body, 'body 1');
  t.is(second.cache, 'HIT');
  t.true(Number.isInteger(second.age) && (second.age ?? -1) >= 0, `Age on the hit: ${String(second.headers.age)}`);
  t.is(c.hits('/hit'), 1);
  const stats = c.stats();
  t.is(stats.hits, 1);
  t.is(stats.misses, 1);
  t.is(stats.stores, 1);
  t.is(stats.entries, 1);
  t.true(stats.size_bytes > 0);
});

test('Age counts the age the origin reported (an upstream cache) plus the time stored', async (t) => {
  const c = await cacheSetup(t, (_req, res) => reply(res, 200, { 'cache-control': 'max-age=3600', age: '100' }, 'aged'));
  t.is((await c.get('/aged')).cache, 'MISS');
  const hit = await c.get('/aged');
  t.is(hit.cache, 'HIT');
  t.true((hit.age ?? 0) >= 100 && (hit.age ?? 0) < 110, `Age ${String(hit.headers.age)}`);
  t.is(c.hits('/aged'), 1);
});

test('HEAD is served from a stored GET response: the origin sees no HEAD', async (t) => {
  const body = 'x'.repeat(1234);
  const c = await cacheSetup(t, (_req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, body));
  t.is((await c.get('/head')).cache, 'MISS');
  const head = await c.get('/head', { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.cache, 'HIT');
  t.is(head.body, '');
  t.is(head.headers['content-length'], '1234');
  t.is(c.hits('/head', 'HEAD'), 0);
  t.is(c.hits('/head'), 1);
  // The other way round, a response to HEAD (no body) never answers a GET.
  t.is((await c.get('/head-first', { method: 'HEAD' })).cache, 'MISS');
  const get = await c.get('/head-first');
  t.is(get.cache, 'MISS');
  t.is(get.body, body);
  t.is(c.hits('/head-first', 'GET'), 1);
});

// ---------------------------------------------------------------------------------------------
// What is not stored

test('no-store is never cached', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'no-store, max-age=60' }, `fresh ${n}`));
  for (let i = 1; i <= 3; i++) {
    const r = await c.get('/no-store');
    t.is(r.status, 200);
    t.is(r.body, `fresh ${i}`);
    t.is(r.cache, 'MISS');
  }
  t.is(c.hits('/no-store'), 3);
  t.is(c.stats().entries, 0);
});

test('private responses are not stored by the shared cache', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'private, max-age=60' }, `mine ${n}`));
  t.is((await c.get('/private')).body, 'mine 1');
  const again = await c.get('/private');
  t.is(again.body, 'mine 2');
  t.is(again.cache, 'MISS');
  t.is(c.hits('/private'), 2);
  t.is(c.stats().entries, 0);
});

test('responses with Set-Cookie are not stored, and the client still gets its cookie', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60', 'set-cookie': `session=s${n}` }, `cookie ${n}`));
  const first = await c.get('/cookie');
  t.deepEqual(first.headers['set-cookie'], ['session=s1']);
  const second = await c.get('/cookie');
  t.is(second.cache, 'MISS');
  t.is(second.body, 'cookie 2');
  t.deepEqual(second.headers['set-cookie'], ['session=s2'], 'never another user\'s cookie');
  t.is(c.hits('/cookie'), 2);
});

test('a request with Authorization is not stored unless the response says public or s-maxage', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    const cc = req.url === '/auth/plain' ? 'max-age=60' : req.url === '/auth/public' ? 'public, max-age=60' : 's-maxage=60';
    reply(res, 200, { 'cache-control': cc }, `${req.url} ${n}`);
  });
  const auth = { authorization: 'Bearer secret' };
  t.is((await c.get('/auth/plain', { headers: auth })).cache, 'MISS');
  const plain = await c.get('/auth/plain');
  t.is(plain.cache, 'MISS', 'the authorized response was not stored');
  t.is(plain.body, '/auth/plain 2');
  for (const path of ['/auth/public', '/auth/s-maxage']) {
    t.is((await c.get(path, { headers: auth })).cache, 'MISS');
    const next = await c.get(path);
    t.is(next.cache, 'HIT', `${path} is stored`);
    t.is(next.body, `${path} 1`);
    t.is(c.hits(path), 1);
  }
});

// ---------------------------------------------------------------------------------------------
// Freshness

test('max-age=1 expires: a GET after more than a second goes to the origin', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=1' }, `v${n}`));
  t.is((await c.get('/short')).body, 'v1');
  await delay(PAST_ONE_SECOND);
  const later = await c.get('/short');
  t.is(later.status, 200);
  t.is(later.body, 'v2');
  t.true(later.cache === 'EXPIRED' || later.cache === 'MISS', `X-Cache-Status ${later.cache}`);
  t.is(c.hits('/short'), 2);
});

test('s-maxage wins over max-age for the shared cache (s-maxage=60, max-age=0 is a HIT)', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 's-maxage=60, max-age=0' }, `shared ${n}`));
  await c.get('/smaxage');
  const second = await c.get('/smaxage');
  t.is(second.cache, 'HIT');
  t.is(second.body, 'shared 1');
  t.is(c.hits('/smaxage'), 1);
});

test('Expires relative to Date gives freshness; an invalid Expires means already stale', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    const now = Date.now();
    const headers: Record<string, string> =
      req.url === '/expires/valid'
        ? { date: new Date(now).toUTCString(), expires: new Date(now + 60_000).toUTCString() }
        : { date: new Date(now).toUTCString(), expires: '0' };
    reply(res, 200, headers, `${req.url} ${n}`);
  });
  await c.get('/expires/valid');
  const valid = await c.get('/expires/valid');
  t.is(valid.cache, 'HIT');
  t.is(valid.body, '/expires/valid 1');
  t.is(c.hits('/expires/valid'), 1);
  await c.get('/expires/invalid');
  const invalid = await c.get('/expires/invalid');
  t.not(invalid.cache, 'HIT');
  t.is(invalid.body, '/expires/invalid 2', 'the origin answered again');
  t.is(c.hits('/expires/invalid'), 2);
});

test('heuristic freshness only for heuristically cacheable statuses (200 with Last-Modified yes, 302 no)', async (t) => {
  const lastModified = new Date(Date.now() - 10 * 24 * 3600 * 1000).toUTCString();
  const c = await cacheSetup(t, (req, res, n) => {
    if (req.url === '/heuristic/200') reply(res, 200, { 'last-modified': lastModified }, `ok ${n}`);
    else reply(res, 302, { 'last-modified': lastModified, location: '/elsewhere' }, `moved ${n}`);
  });
  await c.get('/heuristic/200');
  const ok = await c.get('/heuristic/200');
  t.is(ok.cache, 'HIT');
  t.is(ok.body, 'ok 1');
  await c.get('/heuristic/302');
  const moved = await c.get('/heuristic/302');
  t.is(moved.status, 302);
  t.is(moved.cache, 'MISS');
  t.is(c.hits('/heuristic/302'), 2);
});

test('must-revalidate and proxy-revalidate: a stale response is never served without the origin', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    const directive = req.url === '/must' ? 'must-revalidate' : 'proxy-revalidate';
    reply(res, 200, { 'cache-control': `max-age=1, ${directive}, stale-while-revalidate=60, stale-if-error=60` }, `${req.url} ${n}`);
  });
  await c.get('/must');
  await c.get('/proxy');
  await delay(PAST_ONE_SECOND);
  for (const path of ['/must', '/proxy']) {
    // Even though the response allows stale-while-revalidate and the client max-stale.
    const later = await c.get(path, { headers: { 'cache-control': 'max-stale=60' } });
    t.not(later.cache, 'STALE', path);
    t.is(later.body, `${path} 2`);
    t.is(c.hits(path), 2);
  }
});

// ---------------------------------------------------------------------------------------------
// Validation

test('a no-cache response is stored but revalidated every time (304 → REVALIDATED, body from the cache)', async (t) => {
  const c = await cacheSetup(t, (req, res) => {
    if (req.headers['if-none-match'] === '"nc1"') reply(res, 304, { etag: '"nc1"', 'cache-control': 'no-cache' });
    else reply(res, 200, { etag: '"nc1"', 'cache-control': 'no-cache' }, 'the stored body');
  });
  t.is((await c.get('/no-cache')).cache, 'MISS');
  for (let i = 0; i < 2; i++) {
    const r = await c.get('/no-cache');
    t.is(r.status, 200);
    t.is(r.cache, 'REVALIDATED');
    t.is(r.body, 'the stored body');
  }
  const seen = c.seen('/no-cache');
  t.is(seen.length, 3, 'the origin is asked every time');
  t.is(seen[0]?.headers['if-none-match'], undefined);
  t.is(seen[1]?.headers['if-none-match'], '"nc1"');
  t.is(seen[2]?.headers['if-none-match'], '"nc1"');
  t.is(c.stats().revalidations, 2);
});

test('ETag → If-None-Match → 304: the stored body is served and the 304\'s headers replace the stored ones', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    if (n === 1) reply(res, 200, { etag: '"e1"', 'cache-control': 'max-age=1', 'x-version': '1' }, 'original body');
    else if (req.headers['if-none-match'] === '"e1"') reply(res, 304, { etag: '"e1"', 'cache-control': 'max-age=60', 'x-version': '2' });
    else reply(res, 200, { 'cache-control': 'no-store' }, 'unexpected full response');
  });
  const first = await c.get('/etag');
  t.is(first.headers['x-version'], '1');
  await delay(PAST_ONE_SECOND);
  const revalidated = await c.get('/etag');
  t.is(revalidated.status, 200);
  t.is(revalidated.cache, 'REVALIDATED');
  t.is(revalidated.body, 'original body');
  t.is(revalidated.headers['x-version'], '2', 'updated from the 304');
  t.is(c.seen('/etag')[1]?.headers['if-none-match'], '"e1"');
  const hit = await c.get('/etag');
  t.is(hit.cache, 'HIT', 'fresh again for max-age=60 from the 304');
  t.is(hit.body, 'original body');
  t.is(hit.headers['x-version'], '2', 'the stored headers were updated');
  t.is(hit.headers['content-length'], String('original body'.length));
  t.is(c.hits('/etag'), 2);
});

test('a client\'s own If-None-Match matching the stored ETag gets 304 from the cache, without the origin', async (t) => {
  const lastModified = new Date(Date.now() - 3600_000).toUTCString();
  const c = await cacheSetup(t, (_req, res) => reply(res, 200, { etag: '"abc"', 'cache-control': 'max-age=60', 'last-modified': lastModified }, 'tagged'));
  await c.get('/cond');
  const notModified = await c.get('/cond', { headers: { 'if-none-match': '"abc"' } });
  t.is(notModified.status, 304);
  t.is(notModified.body, '');
  t.is(notModified.headers.etag, '"abc"');
  t.is(notModified.cache, 'HIT');
  const other = await c.get('/cond', { headers: { 'if-none-match': '"zzz"' } });
  t.is(other.status, 200);
  t.is(other.body, 'tagged');
  t.is(other.cache, 'HIT');
  const since = await c.get('/cond', { headers: { 'if-modified-since': new Date().toUTCString() } });
  t.is(since.status, 304, 'If-Modified-Since after Last-Modified');
  const older = await c.get('/cond', { headers: { 'if-modified-since': new Date(Date.now() - 7200_000).toUTCString() } });
  t.is(older.status, 200);
  t.is(older.body, 'tagged');
  t.is(c.hits('/cond'), 1);
});

// RFC 9111 §4.3.4: a 304 that does not match the stored response means fetching it again,
// without conditionals.
test('a 304 naming a different representation than the stored one makes the cache fetch the full response', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    if (req.headers['if-none-match'] !== undefined) reply(res, 304, { etag: '"new"', 'cache-control': 'no-cache' });
    else reply(res, 200, { etag: n === 1 ? '"old"' : '"new"', 'cache-control': 'no-cache' }, `full ${n}`);
  });
  t.is((await c.get('/mismatch')).body, 'full 1');
  const r = await c.get('/mismatch');
  t.is(r.status, 200, 'not 502');
  t.is(r.body, 'full 3', 'fetched again without conditionals');
  t.is(c.seen('/mismatch')[2]?.headers['if-none-match'], undefined);
});

// ---------------------------------------------------------------------------------------------
// Vary

test('Vary: Accept-Encoding keeps one variant per value: two origin requests, then hits for each', async (t) => {
  const c = await cacheSetup(t, (req, res) =>
    reply(res, 200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding' }, `encoded for ${String(req.headers['accept-encoding'])}`),
  );
  const gzip = { 'accept-encoding': 'gzip' };
  const br = { 'accept-encoding': 'br' };
  t.is((await c.get('/vary', { headers: gzip })).cache, 'MISS');
  t.is((await c.get('/vary', { headers: br })).cache, 'MISS');
  for (let i = 0; i < 2; i++) {
    const g = await c.get('/vary', { headers: gzip });
    t.is(g.cache, 'HIT');
    t.is(g.body, 'encoded for gzip');
    const b = await c.get('/vary', { headers: br });
    t.is(b.cache, 'HIT');
    t.is(b.body, 'encoded for br');
  }
  t.is(c.hits('/vary'), 2);
  t.is(c.stats().entries, 2);
});

test('Vary: the request values are normalised (whitespace in lists), an absent header is a value of its own', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60', vary: 'accept-encoding' }, `v${n}`));
  await c.get('/vary-norm', { headers: { 'accept-encoding': 'gzip, br' } });
  const same = await c.get('/vary-norm', { headers: { 'accept-encoding': 'gzip,br' } });
  t.is(same.cache, 'HIT');
  t.is(same.body, 'v1');
  const none = await c.get('/vary-norm');
  t.is(none.cache, 'MISS');
  t.is(none.body, 'v2');
  t.is(c.hits('/vary-norm'), 2);
});

test('Vary: * is never served from the cache', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60', vary: '*' }, `any ${n}`));
  await c.get('/vary-any');
  const second = await c.get('/vary-any');
  t.is(second.cache, 'MISS');
  t.is(second.body, 'any 2');
  t.is(c.hits('/vary-any'), 2);
});

// ---------------------------------------------------------------------------------------------
// Request Cache-Control

/** A stored fresh response with an ETag; the origin answers 304 to a matching If-None-Match. */
async function storedWithEtag(t: Parameters<typeof cacheSetup>[0]) {
  const c = await cacheSetup(t, (req, res) => {
    if (req.headers['if-none-match'] === '"r1"') reply(res, 304, { etag: '"r1"', 'cache-control': 'max-age=60' });
    else reply(res, 200, { etag: '"r1"', 'cache-control': 'max-age=60' }, 'stored');
  });
  t.is((await c.get('/req')).cache, 'MISS');
  t.is((await c.get('/req')).cache, 'HIT');
  return c;
}

for (const [name, headers] of [
  ['Cache-Control: no-cache', { 'cache-control': 'no-cache' }],
  ['Cache-Control: max-age=0', { 'cache-control': 'max-age=0' }],
  ['Pragma: no-cache (without Cache-Control)', { pragma: 'no-cache' }],
] as const) {
  test(`request ${name} forces revalidation with the origin`, async (t) => {
    const c = await storedWithEtag(t);
    const r = await c.get('/req', { headers: { ...headers } });
    t.is(r.status, 200);
    t.is(r.cache, 'REVALIDATED');
    t.is(r.body, 'stored');
    t.is(c.hits('/req'), 2);
    t.is(c.seen('/req')[1]?.headers['if-none-match'], '"r1"');
  });
}

test('request Cache-Control: min-fresh asks for more freshness than is left → the origin is asked', async (t) => {
  const c = await storedWithEtag(t);
  const r = await c.get('/req', { headers: { 'cache-control': 'min-fresh=120' } });
  t.not(r.cache, 'HIT');
  t.is(c.hits('/req'), 2);
});

test('request Cache-Control: max-stale accepts a stale response without the origin', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=1' }, `old ${n}`));
  await c.get('/max-stale');
  await delay(PAST_ONE_SECOND);
  const r = await c.get('/max-stale', { headers: { 'cache-control': 'max-stale=60' } });
  t.is(r.cache, 'STALE');
  t.is(r.body, 'old 1');
  t.is(c.hits('/max-stale'), 1);
});

test('request Cache-Control: only-if-cached gets 504 when nothing is stored, the stored response otherwise', async (t) => {
  const c = await cacheSetup(t, (_req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, 'cached'));
  const cold = await c.get('/oic', { headers: { 'cache-control': 'only-if-cached' } });
  t.is(cold.status, 504);
  t.truthy(cold.cache, 'X-Cache-Status on the 504 too');
  t.is(c.hits('/oic'), 0, 'the origin is not asked');
  await c.get('/oic');
  const warm = await c.get('/oic', { headers: { 'cache-control': 'only-if-cached' } });
  t.is(warm.status, 200);
  t.is(warm.body, 'cached');
  t.is(warm.cache, 'HIT');
  t.is(c.hits('/oic'), 1);
});

test('request Cache-Control: no-store is not stored', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `r${n}`));
  await c.get('/req-no-store', { headers: { 'cache-control': 'no-store' } });
  const next = await c.get('/req-no-store');
  t.is(next.cache, 'MISS');
  t.is(next.body, 'r2');
});

test('a Range request is cut from the stored response (206, HIT); past the end 416; unchanged entry', async (t) => {
  const c = await cacheSetup(t, (req, res, n) =>
    reply(res, 200, { 'cache-control': 'max-age=60', etag: '"v1"', 'x-origin-range': req.headers.range ?? 'none' }, `0123456789 ${n}`));
  // Nothing stored yet: the origin gets the request as sent, and its answer is not what is stored.
  const before = await c.get('/range', { headers: { range: 'bytes=0-1' } });
  t.is(before.cache, 'BYPASS');
  t.is(before.headers['x-origin-range'], 'bytes=0-1', 'the origin saw the Range');
  t.is((await c.get('/range')).cache, 'MISS');
  t.is(c.hits('/range'), 2);

  const part = await c.get('/range', { headers: { range: 'bytes=2-5' } });
  t.is(part.status, 206);
  t.is(part.cache, 'HIT');
  t.is(part.body, '2345');
  t.is(part.headers['content-range'], 'bytes 2-5/12');
  t.is(part.headers['content-length'], '4');
  const suffix = await c.get('/range', { headers: { range: 'bytes=-3' } });
  t.is(suffix.status, 206);
  t.is(suffix.body, '9 2');
  const past = await c.get('/range', { headers: { range: 'bytes=12-' } });
  t.is(past.status, 416);
  t.is(past.headers['content-range'], 'bytes */12');
  t.is(past.body, '');
  // Several ranges, or an If-Range that no longer matches: the whole stored response.
  const several = await c.get('/range', { headers: { range: 'bytes=0-1,4-5' } });
  t.is(several.status, 200);
  t.is(several.body, '0123456789 2');
  const changed = await c.get('/range', { headers: { range: 'bytes=0-1', 'if-range': '"v0"' } });
  t.is(changed.status, 200);
  t.is(changed.body, '0123456789 2');
  const same = await c.get('/range', { headers: { range: 'bytes=0-1', 'if-range': '"v1"' } });
  t.is(same.status, 206);
  t.is(same.body, '01');
  t.is(c.hits('/range'), 2, 'every range after the store came from the cache');
  t.is((await c.get('/range')).body, '0123456789 2', 'the stored response is whole');
});

// ---------------------------------------------------------------------------------------------
// Stale content (RFC 5861)

test('stale-while-revalidate: STALE at once, and exactly one background refresh for many requests', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => {
    // The refresh is slow, so the stale answers cannot have waited for it.
    const cc = n === 1 ? 'max-age=1, stale-while-revalidate=60' : 'max-age=60';
    setTimeout(() => reply(res, 200, { 'cache-control': cc }, `version ${n}`), n === 1 ? 0 : 300);
  });
  t.is((await c.get('/swr')).body, 'version 1');
  await delay(PAST_ONE_SECOND);
  const stale = await Promise.all(Array.from({ length: 5 }, () => c.get('/swr')));
  for (const r of stale) {
    t.is(r.status, 200);
    t.is(r.cache, 'STALE');
    t.is(r.body, 'version 1');
  }
  await until(() => c.stats().stores === 2, 'the background refresh to be stored');
  await delay(200);
  t.is(c.hits('/swr'), 2, 'one refresh, not one per stale answer');
  const fresh = await c.get('/swr');
  t.is(fresh.cache, 'HIT');
  t.is(fresh.body, 'version 2', 'the refresh replaced the stored response');
  t.is(c.hits('/swr'), 2);
});

test('stale-if-error: an origin answering 500, or down, within the window gets the stored body as STALE', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => {
    if (n === 1) reply(res, 200, { 'cache-control': 'max-age=1, stale-if-error=60' }, 'last good body');
    else reply(res, 500, { 'cache-control': 'no-store' }, 'origin broke');
  });
  t.is((await c.get('/sie/500')).body, 'last good body');
  t.is((await c.get('/sie/down')).body, 'last good body');
  await delay(PAST_ONE_SECOND);
  const on500 = await c.get('/sie/500');
  t.is(on500.status, 200);
  t.is(on500.cache, 'STALE');
  t.is(on500.body, 'last good body');
  t.is(c.hits('/sie/500'), 2, 'the origin was asked and failed');
  await c.origin.close();
  const onDown = await c.get('/sie/down');
  t.is(onDown.status, 200);
  t.is(onDown.cache, 'STALE');
  t.is(onDown.body, 'last good body');
});

// ---------------------------------------------------------------------------------------------
// Invalidation

test('an unsafe method (POST, PUT, DELETE) to a URL invalidates it: the next GET is a MISS', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `${req.method} ${n}`));
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const path = `/inv/${method.toLowerCase()}`;
    await c.get(path);
    t.is((await c.get(path)).cache, 'HIT');
    const unsafe = await c.get(path, { method, body: 'change' });
    t.is(unsafe.status, 200);
    t.is(unsafe.cache, 'BYPASS');
    const after = await c.get(path);
    t.is(after.cache, 'MISS', `after ${method}`);
    t.is(after.body, 'GET 3');
    t.is(c.hits(path, 'GET'), 2);
  }
});

test('an unsafe method answered with an error does not invalidate', async (t) => {
  const c = await cacheSetup(t, (req, res, n) =>
    req.method === 'PUT' ? reply(res, 500, {}, 'failed') : reply(res, 200, { 'cache-control': 'max-age=60' }, `GET ${n}`),
  );
  await c.get('/inv-error');
  t.is((await c.get('/inv-error', { method: 'PUT', body: 'x' })).status, 500);
  const after = await c.get('/inv-error');
  t.is(after.cache, 'HIT');
  t.is(after.body, 'GET 1');
});

test('an unsafe method\'s response invalidates its Location and Content-Location on the same host', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    if (req.method === 'POST') reply(res, 201, { location: '/items/1', 'content-location': '/items/latest' }, 'created');
    else reply(res, 200, { 'cache-control': 'max-age=60' }, `${req.url} ${n}`);
  });
  for (const path of ['/items/1', '/items/latest', '/items/other']) {
    await c.get(path);
    t.is((await c.get(path)).cache, 'HIT');
  }
  t.is((await c.get('/items', { method: 'POST', body: '{}' })).status, 201);
  t.is((await c.get('/items/1')).cache, 'MISS');
  t.is((await c.get('/items/latest')).cache, 'MISS');
  t.is((await c.get('/items/other')).cache, 'HIT', 'an unrelated URL stays');
});

// ---------------------------------------------------------------------------------------------
// Coalescing

test('coalescing: 100 concurrent GETs for one cold URL make one origin request', async (t) => {
  const c = await cacheSetup(t, (_req, res) => {
    setTimeout(() => reply(res, 200, { 'cache-control': 'max-age=60' }, 'shared body'), 200);
  });
  const replies = await Promise.all(Array.from({ length: 100 }, () => c.get('/coalesce')));
  t.is(c.hits('/coalesce'), 1);
  t.true(replies.every((r) => r.status === 200 && r.body === 'shared body'));
  const statuses = replies.map((r) => r.cache);
  t.is(statuses.filter((s) => s === 'MISS').length, 1, 'one leader');
  t.is(statuses.filter((s) => s === 'HIT').length, 99);
  const stats = c.stats();
  t.true(stats.coalesced >= 90 && stats.coalesced <= 99, `coalesced ${stats.coalesced}`);
  t.is(stats.stores, 1);
});

test('coalescing: concurrent requests for an expired URL make one revalidation', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => {
    if (n === 1) reply(res, 200, { etag: '"c1"', 'cache-control': 'max-age=1' }, 'body c1');
    else setTimeout(() => reply(res, 304, { etag: '"c1"', 'cache-control': 'max-age=60' }), 200);
  });
  await c.get('/coalesce-expired');
  await delay(PAST_ONE_SECOND);
  const replies = await Promise.all(Array.from({ length: 30 }, () => c.get('/coalesce-expired')));
  t.true(replies.every((r) => r.status === 200 && r.body === 'body c1'));
  t.is(c.hits('/coalesce-expired'), 2, 'one validation for all of them');
  t.is(replies.filter((r) => r.cache === 'REVALIDATED').length, 1);
});

// ---------------------------------------------------------------------------------------------
// Storage bounds

test('LRU eviction: when max_size is exceeded the least recently used entry goes first', async (t) => {
  const body = 'e'.repeat(3000);
  const c = await cacheSetup(t, (_req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, body), {
    cache: { max_size: '16kb' },
  });
  // Four ~3.7 KB entries (body, headers, key, overhead) fit in 16 KB; a fifth does not.
  for (const i of [0, 1, 2, 3]) t.is((await c.get(`/lru/${i}`)).cache, 'MISS');
  t.is(c.stats().entries, 4, 'four entries fit');
  t.is(c.stats().evictions, 0);
  t.is((await c.get('/lru/0')).cache, 'HIT', 'touch the oldest: it is now the most recently used');
  t.is((await c.get('/lru/4')).cache, 'MISS'); // evicts /lru/1
  t.is((await c.get('/lru/5')).cache, 'MISS'); // evicts /lru/2
  const stats = c.stats();
  t.true(stats.evictions >= 2, `evictions ${stats.evictions}`);
  t.true(stats.size_bytes <= 16 * 1024, `size ${stats.size_bytes}`);
  for (const i of [0, 3, 4, 5]) t.is((await c.get(`/lru/${i}`)).cache, 'HIT', `/lru/${i} survives`);
  for (const i of [1, 2]) t.is((await c.get(`/lru/${i}`)).cache, 'MISS', `/lru/${i} was evicted`);
  t.is(c.hits('/lru/0'), 1);
  t.is(c.hits('/lru/1'), 2);
});

test('max_entry_size: a bigger response passes through intact but is not stored', async (t) => {
  const big = randomBytes(40 * 1024);
  const small = randomBytes(4 * 1024);
  const c = await cacheSetup(
    t,
    (req, res) => {
      const cc = { 'cache-control': 'max-age=60', 'content-type': 'application/octet-stream' };
      if (req.url === '/big/chunked') {
        // No Content-Length: the limit is only found while the body streams.
        res.writeHead(200, cc);
        for (let i = 0; i < big.length; i += 4096) res.write(big.subarray(i, i + 4096));
        res.end();
      } else reply(res, 200, cc, req.url === '/small' ? small : big);
    },
    { cache: { max_entry_size: '8kb' } },
  );
  for (const path of ['/big/chunked', '/big/length']) {
    const first = await c.get(path);
    t.is(first.status, 200);
    t.is(first.bytes.length, big.length);
    t.is(sha256(first.bytes), sha256(big), `${path} passes through intact`);
    const second = await c.get(path);
    t.is(second.cache, 'MISS', `${path} was not stored`);
    t.is(sha256(second.bytes), sha256(big));
    t.is(c.hits(path), 2);
  }
  await c.get('/small');
  const small2 = await c.get('/small');
  t.is(small2.cache, 'HIT', 'a response under the limit is stored');
  t.is(sha256(small2.bytes), sha256(small));
  t.is(c.stats().entries, 1);
});

test('a 1 MB chunked response streams to the client while it is stored; the HIT is byte-identical', async (t) => {
  const big = randomBytes(1 << 20);
  const c = await cacheSetup(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'application/octet-stream' });
    for (let i = 0; i < big.length; i += 16384) res.write(big.subarray(i, i + 16384));
    res.end();
  });
  const first = await c.get('/stream');
  t.is(first.cache, 'MISS');
  t.is(sha256(first.bytes), sha256(big));
  const hit = await c.get('/stream');
  t.is(hit.cache, 'HIT');
  t.is(sha256(hit.bytes), sha256(big));
  t.is(c.hits('/stream'), 1);
});

test('a body cut short by the origin is not stored', async (t) => {
  const c = await cacheSetup(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 1000 });
    res.write('x'.repeat(500));
    setTimeout(() => res.destroy(), 50);
  });
  await t.throwsAsync(c.get('/short-body'), undefined, 'the client sees the response break off');
  await t.throwsAsync(c.get('/short-body'), undefined, 'not a truncated HIT');
  t.is(c.hits('/short-body'), 2);
  t.is(c.stats().entries, 0);
});

test('a purge while a response is streaming in keeps that response out of the cache', async (t) => {
  const c = await cacheSetup(t, (_req, res, n) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.write(`head of ${n}, `);
    setTimeout(() => res.end('tail'), 300);
  });
  const inFlight = c.get('/purged-in-flight');
  await until(() => c.hits('/purged-in-flight') === 1, 'the fetch to reach the origin');
  await delay(100); // the head has arrived; the body is still coming
  c.proxy.gateway.purgeCache();
  t.is((await inFlight).body, 'head of 1, tail');
  const next = await c.get('/purged-in-flight');
  t.is(next.cache, 'MISS');
  t.is(next.body, 'head of 2, tail');
});

// ---------------------------------------------------------------------------------------------
// Purge, per-route switch, keys

test('purge on the admin listener: DELETE /cache?url=/path removes one URL, DELETE /cache everything', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `${req.url} ${n}`), {
    admin: { address: '127.0.0.1:0' },
  });
  const admin = `http://${c.proxy.gateway.adminAddress}`;
  for (const path of ['/p/1', '/p/2', '/p/3']) await c.get(path);
  const one = await fetchRaw(`${admin}/cache?url=${encodeURIComponent('/p/1')}`, { method: 'DELETE' });
  t.is(one.status, 200);
  t.deepEqual(JSON.parse(one.body), { purged: 1 });
  const purged = await c.get('/p/1');
  t.is(purged.cache, 'MISS');
  t.is(purged.body, '/p/1 2');
  t.is((await c.get('/p/2')).cache, 'HIT', 'other URLs stay');
  const all = await fetchRaw(`${admin}/cache`, { method: 'DELETE' });
  t.is(all.status, 200);
  t.deepEqual(JSON.parse(all.body), { purged: 3 });
  t.is(c.stats().entries, 0);
  for (const path of ['/p/1', '/p/2', '/p/3']) t.is((await c.get(path)).cache, 'MISS', `${path} after purge-all`);
});

test('gateway.purgeCache removes a URL by its absolute form (host/path) and everything without one', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `${req.url} ${n}`));
  const host = { host: 'shop.test' };
  await c.get('/q/1', { headers: host });
  await c.get('/q/2', { headers: host });
  t.is(c.proxy.gateway.purgeCache('http://shop.test/q/1'), 1);
  t.is((await c.get('/q/1', { headers: host })).cache, 'MISS');
  t.is((await c.get('/q/2', { headers: host })).cache, 'HIT');
  t.is(c.proxy.gateway.purgeCache(), 2);
  t.is((await c.get('/q/2', { headers: host })).cache, 'MISS');
});

// The key keeps a non-default port: `site.test:8080` and `site.test:9090` are different origins,
// and a purge of the URL the client used finds its entry.
test('the key keeps the Host\'s port: other ports are other entries, and a purge by the fetched URL works', async (t) => {
  const c = await cacheSetup(t, (req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, `host ${String(req.headers.host)}`));
  t.is((await c.get('/port', { headers: { host: 'site.test:8080' } })).cache, 'MISS');
  const other = await c.get('/port', { headers: { host: 'site.test:9090' } });
  t.is(other.cache, 'MISS', 'another origin (RFC 9110 §4.3.1: scheme, host and port)');
  t.is(other.body, 'host site.test:9090');
  await c.get('/with-port');
  t.is((await c.get('/with-port')).cache, 'HIT');
  t.is(c.proxy.gateway.purgeCache(`${c.proxy.url}/with-port`), 1, 'purge by the URL the client fetched');
  t.is((await c.get('/with-port')).cache, 'MISS');
});

test('a route with cache: false is never cached and has no X-Cache-Status', async (t) => {
  const c = await cacheSetup(t, (req, res, n) => reply(res, 200, { 'cache-control': 'max-age=60' }, `${req.url} ${n}`), {
    routes: [{ path_prefix: '/nocache', upstream: 'app', cache: false }, { upstream: 'app' }],
  });
  for (let i = 1; i <= 2; i++) {
    const r = await c.get('/nocache/x');
    t.is(r.status, 200);
    t.is(r.body, `/nocache/x ${i}`);
    t.is(r.cache, undefined);
  }
  t.is(c.hits('/nocache/x'), 2);
  await c.get('/cached/x');
  t.is((await c.get('/cached/x')).cache, 'HIT', 'other routes still cache');
  const stats = c.stats();
  t.is(stats.entries, 1);
  t.is(stats.misses + stats.hits + stats.bypasses, 2, 'the disabled route does not count');
});

test('the key keeps the path\'s case: /A and /a are distinct entries', async (t) => {
  const c = await cacheSetup(t, (req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, `path ${req.url}`));
  t.is((await c.get('/Case')).cache, 'MISS');
  t.is((await c.get('/case')).cache, 'MISS');
  const upper = await c.get('/Case');
  const lower = await c.get('/case');
  t.is(upper.cache, 'HIT');
  t.is(upper.body, 'path /Case');
  t.is(lower.cache, 'HIT');
  t.is(lower.body, 'path /case');
  t.is(c.hits('/Case') + c.hits('/case'), 2);
});

test('the key includes the Host: two hosts, one path → two entries', async (t) => {
  const c = await cacheSetup(t, (req, res) => reply(res, 200, { 'cache-control': 'max-age=60' }, `host ${String(req.headers.host)}`));
  t.is((await c.get('/same', { headers: { host: 'one.test' } })).cache, 'MISS');
  t.is((await c.get('/same', { headers: { host: 'two.test' } })).cache, 'MISS');
  const one = await c.get('/same', { headers: { host: 'one.test' } });
  const two = await c.get('/same', { headers: { host: 'two.test' } });
  t.is(one.cache, 'HIT');
  t.is(two.cache, 'HIT');
  t.is(one.body, 'host one.test');
  t.is(two.body, 'host two.test');
  t.is(c.hits('/same'), 2);
  t.is(c.stats().entries, 2);
});
