//! Moments kept in atomics: milliseconds after a start instant, so that a moment fits an
//! `AtomicU64` and noting one is a relaxed store (connection timers, tunnels, HTTP/2 streams).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    pub fn now() -> Self {
        Self(Instant::now())
    }

    /// Milliseconds since the start, now.
    pub fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    /// The instant `ms` milliseconds after the start.
    pub fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}
