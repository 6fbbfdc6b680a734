//! Selection algorithms. Each picks an index into the upstream's backend list among the
//! backends that are available and not excluded (a retry excludes the ones already tried).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Backend;

/// Which algorithm an upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    IpHash,
    Random,
    P2cEwma,
}

/// What a selection may depend on besides the backends.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectContext<'a> {
    pub client_ip: Option<IpAddr>,
    /// Indexes not to pick (already tried by this request).
    pub exclude: &'a [usize],
}

impl SelectContext<'_> {
    fn eligible(&self, backends: &[Arc<Backend>], i: usize) -> bool {
        backends[i].is_available() && !self.exclude.contains(&i)
    }
}

/// A selection policy with whatever state it needs.
#[derive(Debug)]
pub enum Selector {
    RoundRobin(Cursor),
    WeightedRoundRobin(SmoothWeighted),
    LeastConn(Cursor),
    IpHash(HashRing),
    Random,
    P2cEwma,
}

impl Selector {
    pub fn new(algorithm: Algorithm, backends: &[Arc<Backend>]) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Selector::RoundRobin(Cursor::default()),
            Algorithm::WeightedRoundRobin => {
                Selector::WeightedRoundRobin(SmoothWeighted::new(backends))
            }
            Algorithm::LeastConn => Selector::LeastConn(Cursor::default()),
            Algorithm::IpHash => Selector::IpHash(HashRing::new(backends)),
            Algorithm::Random => Selector::Random,
            Algorithm::P2cEwma => Selector::P2cEwma,
        }
    }

    /// Picks an eligible backend and returns its index, or `None` when none is eligible.
    pub fn select(&self, backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
        match self {
            Selector::RoundRobin(c) => c.round_robin(backends, ctx),
            Selector::WeightedRoundRobin(w) => w.select(backends, ctx),
            Selector::LeastConn(c) => c.least_conn(backends, ctx),
            Selector::IpHash(ring) => ring.select(backends, ctx),
            Selector::Random => weighted_random(backends, ctx),
            Selector::P2cEwma => p2c_ewma(backends, ctx),
        }
    }

    /// Recomputes precomputed tables after weights changed. Atomic for readers.
    pub fn rebuild(&self, backends: &[Arc<Backend>]) {
        match self {
            Selector::WeightedRoundRobin(w) => w.rebuild(backends),
            Selector::IpHash(ring) => ring.rebuild(backends),
            _ => {}
        }
    }
}

/// A shared rotating counter.
#[derive(Debug, Default)]
pub struct Cursor(AtomicUsize);

impl Cursor {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Plain round robin; an unavailable backend's turn goes to the next eligible one.
    fn round_robin(&self, backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
        let n = backends.len();
        let start = self.next();
        (0..n)
            .map(|k| start.wrapping_add(k) % n)
            .find(|&i| ctx.eligible(backends, i))
    }

    /// Fewest in-flight requests relative to weight (nginx's weighted least_conn). The scan
    /// starts at a rotating offset, so ties go to each tied backend in turn.
    fn least_conn(&self, backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next();
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = start.wrapping_add(k) % n;
            let weight = u64::from(backends[i].weight());
            if weight == 0 || !ctx.eligible(backends, i) {
                continue;
            }
            let active = backends[i].active();
            let better = match best {
                None => true,
                // active/weight < best_active/best_weight, without division
                Some((_, ba, bw)) => {
                    u128::from(active) * u128::from(bw) < u128::from(ba) * u128::from(weight)
                }
            };
            if better {
                best = Some((i, active, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

/// Weighted round robin with nginx's smooth interleaving (weights 1:2:3 give C B A C B C, never
/// A B B C C C). The sequence of one period is precomputed and indexed by an atomic cursor, so
/// selection is lock-free; weight changes swap in a new sequence.
#[derive(Debug)]
pub struct SmoothWeighted {
    schedule: ArcSwap<Vec<u32>>,
    cursor: AtomicUsize,
}

/// Longest schedule kept; larger weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

impl SmoothWeighted {
    fn new(backends: &[Arc<Backend>]) -> Self {
        Self {
            schedule: ArcSwap::from_pointee(smooth_schedule(backends)),
            cursor: AtomicUsize::new(0),
        }
    }

    fn rebuild(&self, backends: &[Arc<Backend>]) {
        self.schedule.store(Arc::new(smooth_schedule(backends)));
    }

    fn select(&self, backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
        let schedule = self.schedule.load();
        let len = schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| schedule[start.wrapping_add(k) % len] as usize)
            .find(|&i| i < backends.len() && ctx.eligible(backends, i))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One period of nginx's smooth weighted round robin: each step adds every weight to its
/// backend's current value, picks the largest, and subtracts the total from it.
fn smooth_schedule(backends: &[Arc<Backend>]) -> Vec<u32> {
    let mut weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight())).collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter_mut().for_each(|w| *w /= divisor);
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        for w in weights.iter_mut().filter(|w| **w > 0) {
            *w = (*w * MAX_SCHEDULE / total).max(1);
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

/// Consistent hashing of the client address on a ring with virtual nodes (weight × 100 per
/// backend): removing one of N backends moves only the clients that hashed to it (about 1/N),
/// and an unavailable backend's clients spill to the next point on the ring.
#[derive(Debug)]
pub struct HashRing {
    ring: ArcSwap<Vec<(u64, u32)>>,
}

const VNODES_PER_WEIGHT: u64 = 100;
const MAX_VNODES_PER_BACKEND: u64 = 10_000;

impl HashRing {
    fn new(backends: &[Arc<Backend>]) -> Self {
        Self {
            ring: ArcSwap::from_pointee(build_ring(backends)),
        }
    }

    fn rebuild(&self, backends: &[Arc<Backend>]) {
        self.ring.store(Arc::new(build_ring(backends)));
    }

    fn select(&self, backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
        let ring = self.ring.load();
        if ring.is_empty() {
            return None;
        }
        let key = ctx.client_ip.map_or(0, |ip| stable_hash(&ip));
        let start = ring.partition_point(|(h, _)| *h < key);
        (0..ring.len())
            .map(|k| ring[(start + k) % ring.len()].1 as usize)
            .find(|&i| i < backends.len() && ctx.eligible(backends, i))
    }
}

/// A hash that is the same in every process and version (unlike `RandomState`), so that a
/// client keeps its backend across restarts and instances.
fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    // FNV-1a over the bytes `Hash` feeds in, then a final mix so nearby keys spread out.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            let mut x = self.0;
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^ (x >> 33)
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut h);
    h.finish()
}

fn build_ring(backends: &[Arc<Backend>]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let vnodes = (u64::from(b.weight()) * VNODES_PER_WEIGHT).min(MAX_VNODES_PER_BACKEND);
        for v in 0..vnodes {
            ring.push((stable_hash(&(b.url(), v)), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Random, in proportion to weight.
fn weighted_random(backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
    let eligible = |i: &usize| ctx.eligible(backends, *i) && backends[*i].weight() > 0;
    let total: u64 = (0..backends.len())
        .filter(eligible)
        .map(|i| u64::from(backends[i].weight()))
        .sum();
    if total == 0 {
        return None;
    }
    let mut pick = fastrand::u64(..total);
    (0..backends.len()).filter(eligible).find(|&i| {
        let w = u64::from(backends[i].weight());
        if pick < w {
            true
        } else {
            pick -= w;
            false
        }
    })
}

/// Power of two choices: two random eligible backends, the one with the lower expected cost
/// (peak-EWMA latency, decayed since its last sample, × (in-flight + 1)) wins. Backends without
/// a latency sample yet cost nothing, so they are tried early.
fn p2c_ewma(backends: &[Arc<Backend>], ctx: &SelectContext<'_>) -> Option<usize> {
    p2c_ewma_at(backends, ctx, crate::clock::now_ms())
}

fn p2c_ewma_at(backends: &[Arc<Backend>], ctx: &SelectContext<'_>, now: u64) -> Option<usize> {
    let n = backends.len();
    let cost = |i: usize| backends[i].latency_cost_us(now) * (backends[i].active() + 1) as f64;
    let a = pick_eligible(n, fastrand::usize(..n.max(1)), |i| {
        ctx.eligible(backends, i)
    })?;
    let b = pick_eligible(n, fastrand::usize(..n.max(1)), |i| {
        i != a && ctx.eligible(backends, i)
    });
    match b {
        Some(b) if cost(b) < cost(a) => Some(b),
        _ => Some(a),
    }
}

fn pick_eligible(n: usize, start: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn set(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Arc::new(Backend::new(format!("http://b{i}"), *w)))
            .collect()
    }

    fn counts(sel: &Selector, backends: &[Arc<Backend>], n: usize) -> Vec<usize> {
        let mut counts = vec![0usize; backends.len()];
        for _ in 0..n {
            counts[sel
                .select(backends, &SelectContext::default())
                .expect("a backend")] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_the_unavailable() {
        let backends = set(&[1, 1, 1]);
        let sel = Selector::new(Algorithm::RoundRobin, &backends);
        assert_eq!(counts(&sel, &backends, 300), [100, 100, 100]);
        backends[1].set_checks_healthy(false);
        assert_eq!(counts(&sel, &backends, 100)[1], 0);
        backends.iter().for_each(|b| b.set_checks_healthy(false));
        assert!(sel.select(&backends, &SelectContext::default()).is_none());
    }

    #[test]
    fn smooth_weighted_is_exact_and_interleaved() {
        let backends = set(&[1, 2, 3]);
        let sel = Selector::new(Algorithm::WeightedRoundRobin, &backends);
        let picks: Vec<usize> = (0..60)
            .map(|_| {
                sel.select(&backends, &SelectContext::default())
                    .expect("a backend")
            })
            .collect();
        let mut c = [0; 3];
        picks.iter().for_each(|&i| c[i] += 1);
        assert_eq!(c, [10, 20, 30]);
        assert_eq!(&picks[..6], &[2, 1, 0, 2, 1, 2], "nginx's smooth order");
        assert!(
            picks.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
            "no runs of three"
        );
        backends[0].set_weight(3);
        sel.rebuild(&backends);
        assert_eq!(counts(&sel, &backends, 80), [30, 20, 30]);
    }

    #[test]
    fn least_conn_prefers_idle_and_rotates_ties() {
        let backends = set(&[1, 1, 1]);
        let sel = Selector::new(Algorithm::LeastConn, &backends);
        let _busy = [backends[0].begin_request(), backends[1].begin_request()];
        assert_eq!(counts(&sel, &backends, 10), [0, 0, 10]);
        drop(_busy);
        assert_eq!(
            counts(&sel, &backends, 30),
            [10, 10, 10],
            "ties are shared fairly"
        );
    }

    #[test]
    fn ip_hash_is_sticky_and_moves_only_the_removed_share() {
        let backends = set(&[1, 1, 1, 1]);
        let sel = Selector::new(Algorithm::IpHash, &backends);
        let clients: Vec<IpAddr> = (0..2000u32)
            .map(|i| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
            .collect();
        let pick = |sel: &Selector, backends: &[Arc<Backend>], ip: IpAddr| {
            let ctx = SelectContext {
                client_ip: Some(ip),
                exclude: &[],
            };
            backends[sel.select(backends, &ctx).expect("a backend")]
                .url()
                .to_owned()
        };
        let before: HashMap<IpAddr, String> = clients
            .iter()
            .map(|ip| (*ip, pick(&sel, &backends, *ip)))
            .collect();
        for ip in &clients[..50] {
            assert_eq!(pick(&sel, &backends, *ip), before[ip], "sticky");
        }
        let fewer: Vec<Arc<Backend>> = backends[..3].to_vec();
        let sel3 = Selector::new(Algorithm::IpHash, &fewer);
        let moved = clients
            .iter()
            .filter(|ip| before[*ip] != "http://b3" && pick(&sel3, &fewer, **ip) != before[*ip])
            .count();
        assert_eq!(moved, 0, "clients of the remaining backends stay put");
        let share = before.values().filter(|u| *u == "http://b3").count();
        assert!(
            (300..700).contains(&share),
            "about a quarter hashed to b3: {share}"
        );
    }

    #[test]
    fn random_follows_weights_roughly() {
        let backends = set(&[1, 3, 0]);
        let sel = Selector::new(Algorithm::Random, &backends);
        let c = counts(&sel, &backends, 4000);
        assert_eq!(c[2], 0);
        assert!((2700..3300).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn p2c_prefers_the_faster_backend() {
        let backends = set(&[1, 1]);
        backends[0].observe_latency(std::time::Duration::from_millis(50));
        backends[1].observe_latency(std::time::Duration::from_millis(1));
        let sel = Selector::new(Algorithm::P2cEwma, &backends);
        assert_eq!(counts(&sel, &backends, 100), [0, 100]);
    }

    #[test]
    fn p2c_tries_a_backend_again_once_its_slow_spell_has_decayed() {
        use std::time::Duration;
        let backends = set(&[1, 1]);
        let ctx = SelectContext {
            client_ip: None,
            exclude: &[],
        };
        let picks = |at: u64| -> [usize; 2] {
            let mut c = [0; 2];
            for _ in 0..50 {
                if let Some(i) = p2c_ewma_at(&backends, &ctx, at) {
                    c[i] += 1;
                }
            }
            c
        };
        let t0 = crate::clock::now_ms();
        // One slow answer, and from then on no samples: never picked, nothing would lower it.
        backends[0].observe_latency_at(Duration::from_secs(2), t0);
        backends[1].observe_latency_at(Duration::from_millis(5), t0);
        assert_eq!(picks(t0), [0, 50], "right after the spike");
        // The other keeps answering in 5 ms.
        backends[1].observe_latency_at(Duration::from_millis(5), t0 + 20_000);
        assert_eq!(picks(t0 + 20_000), [0, 50], "20 s on: 270 ms against 5 ms");
        backends[1].observe_latency_at(Duration::from_millis(5), t0 + 70_000);
        assert_eq!(
            picks(t0 + 70_000),
            [50, 0],
            "70 s on: 1.8 ms against 5 ms, tried again"
        );
    }

    #[test]
    fn excluded_backends_are_not_picked() {
        let backends = set(&[1, 1, 1]);
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConn,
            Algorithm::IpHash,
            Algorithm::Random,
            Algorithm::P2cEwma,
        ] {
            let sel = Selector::new(algorithm, &backends);
            let ctx = SelectContext {
                client_ip: None,
                exclude: &[0, 2],
            };
            for _ in 0..20 {
                assert_eq!(sel.select(&backends, &ctx), Some(1), "{algorithm:?}");
            }
            let none = SelectContext {
                client_ip: None,
                exclude: &[0, 1, 2],
            };
            assert_eq!(sel.select(&backends, &none), None, "{algorithm:?}");
        }
    }
}
