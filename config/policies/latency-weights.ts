/**
 * Latency-aware weights: every few seconds, give each backend a weight inversely proportional to
 * its recent latency (peak-EWMA), so faster backends get more traffic. Costs nothing per request:
 * the engine balances with smooth weighted round robin on the weights this returns. Use with:
 *
 *   upstreams:
 *     app:
 *       balance: { module: ./policies/latency-weights.ts, fallback: weighted_round_robin }
 */
import { definePolicy } from 'gatehouse';

export default definePolicy({
  tuneInterval: '5s',
  tune(snapshot) {
    const weights: Record<string, number> = {};
    for (const b of snapshot.backends) {
      // No sample yet: a middling weight so the backend gets measured.
      const latency = b.latencyEwmaMs > 0 ? b.latencyEwmaMs : 10;
      weights[b.url] = b.healthy ? Math.max(1, Math.min(100, Math.round(100 / latency))) : 1;
    }
    return weights;
  },
});
