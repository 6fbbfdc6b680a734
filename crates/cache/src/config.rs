//! What an operator can tune. Everything else follows RFC 9111.

use std::time::Duration;

/// Cache settings. `Default` gives a 100 MiB cache with 8 MiB entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes the cache may hold, counting each entry's headers, body, key and a fixed overhead
    /// (see [`ENTRY_OVERHEAD`]). The least recently used entries go first when it is exceeded.
    pub max_size: usize,
    /// The largest response body stored. Enforced while the body streams: a response that
    /// outgrows it is still passed to the client, only not stored.
    pub max_entry_size: usize,
    /// Store responses that carry `Set-Cookie`. They are stored *without* their `Set-Cookie`
    /// fields (the client that caused the fetch still gets them): a cookie meant for one user
    /// must never be replayed to another. Off by default, as in nginx.
    pub store_set_cookie: bool,
    /// Heuristic freshness as a percentage of the time since `Last-Modified` (RFC 9111 §4.2.2
    /// suggests 10%); 0 turns heuristics off.
    pub heuristic_percent: u32,
    /// The most heuristic freshness given to any response.
    pub heuristic_max: Duration,
    /// Variants kept per URL (by `Vary`); the least recently used goes beyond this. Bounds what
    /// a client can do by sending many distinct values of a varied header.
    pub max_variants: usize,
    /// How long a request waits for another request's fetch of the same URL (coalescing) before
    /// going to the origin itself.
    pub coalesce_timeout: Duration,
    /// After a fetch turned out not storable, how long further misses for that URL skip
    /// coalescing (they would only queue behind a fetch that cannot help them). Varnish calls
    /// this "hit-for-miss".
    pub uncacheable_ttl: Duration,
}

/// Bytes charged per entry on top of its headers, body and key: the entry's own structure, its
/// map and LRU slots, allocation slack. An estimate, so that many tiny entries cannot exceed
/// `max_size` by far.
pub const ENTRY_OVERHEAD: usize = 512;

/// Bytes charged per header field on top of its name and value (the HPACK estimate, RFC 7541
/// §4.1).
pub(crate) const FIELD_OVERHEAD: usize = 32;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: 100 << 20,
            max_entry_size: 8 << 20,
            store_set_cookie: false,
            heuristic_percent: 10,
            heuristic_max: Duration::from_secs(24 * 3600),
            max_variants: 16,
            coalesce_timeout: Duration::from_secs(5),
            uncacheable_ttl: Duration::from_secs(10),
        }
    }
}
