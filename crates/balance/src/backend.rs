use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// One origin server and the counters the proxy keeps about it.
///
/// Counters are atomics because every worker thread updates them on the request path; they are
/// `Relaxed` because they are statistics, never used to order other memory.
#[derive(Debug)]
pub struct Backend {
    url: String,
    weight: AtomicU32,
    healthy: AtomicBool,
    active: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// A point-in-time copy of a backend's counters, for stats endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub url: String,
    pub weight: u32,
    pub healthy: bool,
    pub active: u64,
    pub requests: u64,
    pub failures: u64,
}

impl Backend {
    pub fn new(url: impl Into<String>, weight: u32) -> Self {
        Self {
            url: url.into(),
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
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

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> BackendStats {
        BackendStats {
            url: self.url.clone(),
            weight: self.weight(),
            healthy: self.is_healthy(),
            active: self.active(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
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

/// The backends of one upstream, in configuration order. Immutable once built.
pub type BackendSet = Arc<[Arc<Backend>]>;
