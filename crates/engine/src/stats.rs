//! Engine-wide counters. Per-backend and per-pool counters live with the backends and pools.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    /// Idle HTTP/1 connections parked without buffers (see `listener::PARK_AFTER`).
    pub connections_parked: AtomicU64,
    pub requests_total: AtomicU64,
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    pub responses: [AtomicU64; 5],
    /// WebSocket (and other `Upgrade`) tunnels open now, and since start.
    pub upgrades_active: AtomicU64,
    pub upgrades_total: AtomicU64,
    pub timeouts: Timeouts,
}

/// What the client-side timers ended, since start: each is a client (or a tunnel's peer) too slow
/// for a limit, worth watching as a rate. The origin's timeouts count as backend failures.
#[derive(Debug, Default)]
pub struct Timeouts {
    /// Connections closed with a request head (or the TLS handshake, or on a plain listener the
    /// wait for the first bytes) unfinished after `limits.header_timeout`. An HTTP/2 connection
    /// that sends nothing is closed by the keep-alive timer instead, uncounted.
    pub header: AtomicU64,
    /// Requests answered 408: their body paused longer than `limits.body_timeout`.
    pub body: AtomicU64,
    /// Writes to a client (or to either peer of a tunnel) blocked for `limits.send_timeout`:
    /// connections and tunnels closed, HTTP/2 streams left without window cut from their origin.
    pub send: AtomicU64,
    /// Tunnels closed after carrying nothing either way for `timeouts.tunnel`.
    pub tunnel: AtomicU64,
}

impl Stats {
    pub fn count_response(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a parked connection for as long as it stays parked.
#[derive(Debug)]
pub struct ParkedCount<'a>(&'a Stats);

impl<'a> ParkedCount<'a> {
    pub fn park(stats: &'a Stats) -> Self {
        stats.connections_parked.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for ParkedCount<'_> {
    fn drop(&mut self) {
        self.0.connections_parked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts an open client connection for as long as it lives, including as an upgraded tunnel.
#[derive(Debug)]
pub struct ConnectionCount(std::sync::Arc<crate::engine::Shared>);

impl ConnectionCount {
    pub fn open(shared: std::sync::Arc<crate::engine::Shared>) -> Self {
        shared
            .stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}
