use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;

/// One origin server and what the proxy knows about it.
///
/// Counters are atomics updated by every worker thread; `Relaxed` because they are statistics
/// and hints for selection, never used to order other memory.
#[derive(Debug)]
pub struct Backend {
    url: String,
    weight: AtomicU32,
    /// Verdict of the active health checks (true until a check says otherwise).
    checks_healthy: AtomicBool,
    /// Passive ejection: unavailable until this time (`clock::now_ms`), 0 when not ejected.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU64,
    active: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Peak-EWMA of response latency in microseconds (f64 bits), and when it was last updated.
    latency_ewma: AtomicU64,
    latency_stamp: AtomicU64,
}

/// A point-in-time copy of a backend's counters, for stats endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStats {
    pub url: String,
    pub weight: u32,
    /// Takes new requests: healthy by the active checks and not ejected.
    pub healthy: bool,
    pub checks_healthy: bool,
    pub ejected: bool,
    pub ejections: u64,
    pub active: u64,
    pub requests: u64,
    pub failures: u64,
    /// The latency estimate as selection weighs it now (see [`Backend::latency_cost_us`]).
    pub latency_ewma_ms: f64,
}

/// How an exchange with a backend ended, for passive health and latency tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that does not count against the backend (anything but 5xx).
    Success,
    /// Connect failure, reset, timeout or a 5xx response.
    Failure,
}

/// Decay time of the latency average: older samples weigh e^-1 after this long.
const LATENCY_DECAY_MS: f64 = 10_000.0;

impl Backend {
    pub fn new(url: impl Into<String>, weight: u32) -> Self {
        Self {
            url: url.into(),
            weight: AtomicU32::new(weight),
            checks_healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_ewma: AtomicU64::new(0f64.to_bits()),
            latency_stamp: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the weight. Selectors that precompute tables must be told (`Selector::rebuild`).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Whether the backend takes new requests: healthy by the active checks and not ejected.
    /// An unavailable backend drains: requests already sent to it finish.
    pub fn is_available(&self) -> bool {
        self.checks_healthy.load(Ordering::Relaxed) && !self.is_ejected()
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Applies the active health checks' verdict. Passing checks also end a passive ejection:
    /// the active checker has just seen the backend answer.
    pub fn set_checks_healthy(&self, healthy: bool) {
        self.checks_healthy.store(healthy, Ordering::Relaxed);
        if healthy {
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Requests currently in flight to this backend.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Marks the start of a request; the returned guard marks its end when dropped, so the
    /// in-flight count stays right on every early return and cancellation.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend: Arc::clone(self),
        }
    }

    /// Records how an exchange ended. Returns the number of consecutive failures so far, which
    /// the caller compares with its ejection threshold.
    pub fn record(&self, outcome: Outcome) -> u32 {
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                0
            }
            Outcome::Failure => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
            }
        }
    }

    /// Takes the backend out of rotation for `base × 2^(earlier ejections)`, capped at 16×, so a
    /// backend that keeps failing stays out longer each time. Returns how long.
    pub fn eject(&self, base: Duration) -> Duration {
        let earlier = self.ejections.fetch_add(1, Ordering::Relaxed).min(4);
        let time = base * (1u32 << earlier);
        self.ejected_until
            .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        time
    }

    /// Feeds one response latency into the peak-EWMA: a slower sample is taken at once (peak),
    /// faster ones pull the average down with exponential decay over time.
    pub fn observe_latency(&self, latency: Duration) {
        self.observe_latency_at(latency, now_ms());
    }

    /// [`Self::observe_latency`] at `now` (a [`now_ms`] reading).
    pub(crate) fn observe_latency_at(&self, latency: Duration, now: u64) {
        let sample = latency.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        let last = self.latency_stamp.swap(now, Ordering::Relaxed);
        let next = if old == 0.0 || sample > old {
            sample
        } else {
            let w = (-((now.saturating_sub(last)) as f64) / LATENCY_DECAY_MS).exp();
            old * w + sample * (1.0 - w)
        };
        self.latency_ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Latency EWMA in microseconds; 0 before the first response.
    pub fn latency_ewma_us(&self) -> f64 {
        f64::from_bits(self.latency_ewma.load(Ordering::Relaxed))
    }

    /// The latency estimate as selection weighs it at `now` (a [`now_ms`] reading): the average
    /// decayed toward zero for the time since its last sample. A backend that stopped being
    /// picked after a slow spell gets no new samples, so without the decay its spike would keep
    /// it out for ever; with it, it is tried again once its estimate has fallen to the others'
    /// (peak EWMA as Finagle and Linkerd do it).
    pub fn latency_cost_us(&self, now: u64) -> f64 {
        let since = now.saturating_sub(self.latency_stamp.load(Ordering::Relaxed));
        let ewma = self.latency_ewma_us();
        if since == 0 {
            return ewma;
        }
        ewma * (-(since as f64) / LATENCY_DECAY_MS).exp()
    }

    pub fn stats(&self) -> BackendStats {
        BackendStats {
            url: self.url.clone(),
            weight: self.weight(),
            healthy: self.is_available(),
            checks_healthy: self.checks_healthy.load(Ordering::Relaxed),
            ejected: self.is_ejected(),
            ejections: self.ejections.load(Ordering::Relaxed),
            active: self.active(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            // As selection weighs it now.
            latency_ewma_ms: self.latency_cost_us(now_ms()) / 1000.0,
        }
    }
}

/// Decrements the backend's in-flight count when the request (including its response body) ends.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_backs_off_and_checks_end_it() {
        let b = Backend::new("http://a", 1);
        assert_eq!(b.record(Outcome::Failure), 1);
        assert_eq!(b.record(Outcome::Failure), 2);
        assert_eq!(b.record(Outcome::Success), 0);
        assert_eq!(b.eject(Duration::from_secs(10)), Duration::from_secs(10));
        assert!(!b.is_available());
        assert_eq!(b.eject(Duration::from_secs(10)), Duration::from_secs(20));
        b.set_checks_healthy(true);
        assert!(b.is_available());
        b.set_checks_healthy(false);
        assert!(!b.is_available());
        assert_eq!(b.stats().failures, 2);
    }

    #[test]
    fn latency_is_a_peak_ewma() {
        let b = Backend::new("http://a", 1);
        b.observe_latency(Duration::from_millis(10));
        assert!((b.latency_ewma_us() - 10_000.0).abs() < 1.0);
        b.observe_latency(Duration::from_millis(50));
        assert!(
            (b.latency_ewma_us() - 50_000.0).abs() < 1.0,
            "a slower sample is taken at once"
        );
        b.observe_latency(Duration::from_millis(1));
        assert!(b.latency_ewma_us() <= 50_000.0);
    }
}
