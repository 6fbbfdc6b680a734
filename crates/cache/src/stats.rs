//! Counters for `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::lookup::Lookup;

/// A snapshot of the cache's counters. Totals since start, except `entries` and `size_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Served fresh.
    pub hits: u64,
    /// Nothing usable stored.
    pub misses: u64,
    /// Served stale (stale-while-revalidate, stale-if-error, max-stale).
    pub stale: u64,
    /// Stored responses that needed validation.
    pub expired: u64,
    /// Validations answered 304 that refreshed a stored response.
    pub revalidations: u64,
    /// Requests that did not take part in caching.
    pub bypasses: u64,
    /// Requests served from another request's fetch (coalescing).
    pub coalesced: u64,
    /// Responses stored.
    pub stores: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Entries stored now.
    pub entries: u64,
    /// Bytes charged now (headers, bodies, keys, per-entry overhead).
    pub size_bytes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub expired: AtomicU64,
    pub revalidations: AtomicU64,
    pub bypasses: AtomicU64,
    pub coalesced: AtomicU64,
    pub stores: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, lookup: &Lookup) {
        let counter = match lookup {
            Lookup::Hit(_) => &self.hits,
            Lookup::Stale { .. } => &self.stale,
            Lookup::Revalidate(_) => &self.expired,
            Lookup::Miss(_) | Lookup::Unsatisfiable => &self.misses,
            Lookup::Bypass(_) => &self.bypasses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            expired: get(&self.expired),
            revalidations: get(&self.revalidations),
            bypasses: get(&self.bypasses),
            coalesced: get(&self.coalesced),
            stores: get(&self.stores),
            ..CacheStats::default()
        }
    }
}
