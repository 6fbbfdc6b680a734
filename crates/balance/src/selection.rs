//! Selection algorithms. Each takes the backend set and returns an index into it.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Backend;
use std::sync::Arc;

/// Which algorithm an upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
}

/// A selection policy with whatever state it needs (a cursor, a hash ring…).
#[derive(Debug)]
pub enum Selector {
    RoundRobin(RoundRobin),
}

impl Selector {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Selector::RoundRobin(RoundRobin::default()),
        }
    }

    /// Picks a healthy backend and returns its index, or `None` when no backend is healthy.
    pub fn select(&self, backends: &[Arc<Backend>]) -> Option<usize> {
        match self {
            Selector::RoundRobin(rr) => rr.select(backends),
        }
    }
}

/// Plain round robin over the healthy backends.
///
/// One shared cursor; unhealthy backends are skipped by probing forward from it, so a dead
/// backend's share goes to the next healthy one instead of failing requests.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn select(&self, backends: &[Arc<Backend>]) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| start.wrapping_add(offset) % n)
            .find(|&i| backends[i].is_healthy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| Arc::new(Backend::new(format!("http://b{i}"), 1)))
            .collect()
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let backends = set(3);
        let sel = Selector::new(Algorithm::RoundRobin);
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            counts[sel.select(&backends).expect("a backend")] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn round_robin_skips_unhealthy_and_reports_none_when_all_down() {
        let backends = set(3);
        backends[1].set_healthy(false);
        let sel = Selector::new(Algorithm::RoundRobin);
        for _ in 0..10 {
            assert_ne!(sel.select(&backends), Some(1));
        }
        backends.iter().for_each(|b| b.set_healthy(false));
        assert!(sel.select(&backends).is_none());
        assert!(sel.select(&[]).is_none());
    }
}
