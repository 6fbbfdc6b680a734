//! The gatehouse response cache: an RFC 9111 *shared* cache, in memory.
//!
//! This crate is caching policy and storage only; the proxy calls it at three points of a
//! request and keeps doing the I/O itself:
//!
//! 1. **Lookup**, before going upstream: [`Cache::lookup_coalesced`] (or [`Cache::lookup`])
//!    returns a [`Lookup`]: serve a fresh [`Lookup::Hit`] or an allowed [`Lookup::Stale`]
//!    response (starting the one background refresh it may hand out), validate a stored one
//!    ([`Lookup::Revalidate`]), fetch ([`Lookup::Miss`]), answer 504 to `only-if-cached`
//!    ([`Lookup::Unsatisfiable`]), or stay out of the way ([`Lookup::Bypass`]). Concurrent
//!    misses for one URL share one origin fetch: the first leads, the others wait for its fill.
//! 2. **Admission**, when the origin's response head arrives: [`Cache::admit`] decides whether
//!    RFC 9111 §3 allows storing it and returns a [`StoreHandle`] that takes the body chunk by
//!    chunk as it streams to the client (the same `Bytes`, no copy) and stores it at the end.
//! 3. **Revalidation**, when the origin answers 304: [`Cache::revalidated`] updates the stored
//!    headers (§4.3.4) and returns the stored response to serve.
//!
//! Whatever is served from the cache first goes through [`CachedResponse::not_modified`], which
//! answers clients' own conditional requests with 304. Responses to unsafe methods go through
//! [`Cache::invalidate`] (§4.4).
//!
//! The design follows the RFC's structure, one module per concern: [`CacheKey`] (`key`) and the
//! `Vary` secondary keys (`vary`), `Cache-Control` parsing (`directives`), storability
//! (`storable`), freshness and age (`freshness`), whether a stored response may be served
//! (`lookup`), validation (`validate`), invalidation (`invalidate`). Storage (`store`) is 16
//! mutex-guarded shards with an exact, global LRU order kept by atomic ticks, so a hit never
//! takes a lock shared by all requests; entries are immutable `Arc`s, so serving one holds no
//! lock at all. Coalescing (`coalesce`) is a table of tokio `watch` channels.
//!
//! Time is always passed in (`now: SystemTime`, [`ResponseTimes`]), so every rule is testable
//! without sleeping.
//!
//! ```text
//! let req = CacheRequest::from_parts(scheme, host, &parts);
//! match cache.lookup_coalesced(&req, SystemTime::now).await {
//!     Lookup::Hit(r) | Lookup::Stale { response: r, .. } =>     // (spawn the refresh, if any)
//!         serve r.not_modified(&req) or r.response_head() + r.body()
//!     Lookup::Miss(fill) => {
//!         strip_conditionals(&mut parts.headers); send upstream; times = (sent, head arrived)
//!         match cache.admit(&req, status, &headers, times, fill) {
//!             Admission::Store(h) => stream the body: h.write(&chunk) per chunk, h.finish() at end
//!             Admission::Skip(_) => stream the body
//!         }
//!     }
//!     Lookup::Revalidate(rv) => {
//!         rv.prepare_request(&mut parts.headers); send upstream
//!         304 => serve cache.revalidated(&req, rv, &headers, times)     (None: fetch again)
//!         error or 5xx => serve cache.stale_on_error(&rv, now) if Some, else the error
//!         other => as for a miss, with rv.into_fill()
//!     }
//!     Lookup::Unsatisfiable => 504,
//!     Lookup::Bypass(_) => forward; then cache.invalidate(&req, status, &headers)
//! }
//! ```

mod cache;
mod coalesce;
mod config;
mod directives;
mod entry;
mod fill;
mod freshness;
mod invalidate;
mod key;
mod lookup;
mod range;
mod request;
mod stats;
mod storable;
mod store;
mod validate;
mod vary;

pub use cache::Cache;
pub use config::{CacheConfig, ENTRY_OVERHEAD};
pub use directives::RequestDirectives;
pub use entry::CachedResponse;
pub use fill::{Admission, Fill, StoreHandle};
pub use freshness::ResponseTimes;
pub use key::CacheKey;
pub use lookup::{CacheStatus, Lookup, Revalidation};
pub use range::Ranged;
pub use request::{BypassReason, CacheRequest};
pub use stats::CacheStats;
pub use storable::NotStorable;
pub use validate::strip_conditionals;

#[cfg(test)]
mod tests;
