/**
 * Header-based canary: requests with `x-canary: 1` (or a `canary=1` cookie) go to the backend
 * whose URL is in CANARY_URL (the last backend by default); everything else is spread over the
 * others by least in-flight requests. Use with:
 *
 *   upstreams:
 *     app:
 *       balance: { module: ./policies/canary.ts }
 */
import { definePolicy, type PolicyBackend } from 'gatehouse';

const canaryUrl = process.env.CANARY_URL;

function isCanary(backend: PolicyBackend, all: PolicyBackend[]): boolean {
  return canaryUrl ? backend.url === canaryUrl : backend === all[all.length - 1];
}

export default definePolicy({
  select(request, backends) {
    const wantsCanary = request.headers['x-canary'] === '1' || /(?:^|;\s*)canary=1(?:;|$)/.test(request.headers.cookie ?? '');
    const pool = backends.filter((b) => isCanary(b, backends) === wantsCanary);
    const candidates = pool.length > 0 ? pool : backends;
    return candidates.reduce((best, b) => (b.active < best.active ? b : best));
  },
});
