//! The cache as the proxy sees it: lookup, admission, revalidation, invalidation, purge.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, RANGE};
use http::StatusCode;

use crate::coalesce::{Coalescer, FillOutcome, Join, Waited};
use crate::config::CacheConfig;
use crate::directives::ResponseDirectives;
use crate::entry::{CachedResponse, StoredResponse, Timing};
use crate::fill::{Admission, Fill, Pending, StoreHandle};
use crate::freshness::ResponseTimes;
use crate::invalidate;
use crate::key::CacheKey;
use crate::lookup::{judge, Lookup, Revalidation, Verdict};
use crate::request::{BypassReason, CacheRequest};
use crate::stats::{CacheStats, Counters};
use crate::storable::{self, NotStorable};
use crate::validate;
use crate::vary::{Vary, VaryKey};

pub(crate) struct Inner {
    pub config: CacheConfig,
    pub store: crate::store::Store,
    pub coalescer: Coalescer,
    pub stats: Counters,
}

/// A shared HTTP cache. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Self {
        let store = crate::store::Store::new(config.max_size, config.max_variants);
        let coalescer = Coalescer::new(config.uncacheable_ttl);
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                coalescer,
                stats: Counters::default(),
            }),
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Phase 1, before going upstream: what is stored for this request, and whether it can be
    /// served. Never waits; see [`lookup_coalesced`](Self::lookup_coalesced) for misses that
    /// should share one origin fetch.
    pub fn lookup(&self, request: &CacheRequest, now: SystemTime) -> Lookup {
        let lookup = self.find(request, now);
        self.inner.stats.count(&lookup);
        lookup
    }

    /// [`lookup`](Self::lookup), coalescing misses and revalidations: when another request is
    /// already fetching this URL, waits for it (at most `coalesce_timeout`) and looks again,
    /// usually finding what it stored. Otherwise this request leads: its [`Fill`] makes the
    /// others wait until its response is stored or known not storable. `now` is read after
    /// any wait. Needs a tokio runtime with the time driver.
    pub async fn lookup_coalesced(
        &self,
        request: &CacheRequest,
        now: impl Fn() -> SystemTime,
    ) -> Lookup {
        let mut lookup = self.find(request, now());
        if coalescable(request, &lookup) {
            match self.inner.coalescer.join(request.key()) {
                Join::Leader(lease) => {
                    // Another leader may have stored it between the look and the join.
                    lookup = self.find(request, now());
                    if needs_origin(&lookup) {
                        lookup = with_lease(lookup, lease);
                    } else {
                        lease.complete(FillOutcome::Stored);
                    }
                }
                Join::Follower(waiter) => {
                    let waited = waiter.wait(self.inner.config.coalesce_timeout).await;
                    lookup = self.find(request, now());
                    let served = matches!(lookup, Lookup::Hit(_) | Lookup::Stale { .. });
                    if waited == Waited::Filled && served {
                        self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Join::Alone => {}
            }
        }
        self.inner.stats.count(&lookup);
        lookup
    }

    fn find(&self, request: &CacheRequest, now: SystemTime) -> Lookup {
        match request.bypass() {
            // A range is cut from a fresh stored response (`CachedResponse::ranged`); anything
            // else, the origin answers as asked, and its partial answer is not stored.
            Some(BypassReason::Range)
                if request.is_get() && request.headers().contains_key(RANGE) =>
            {
                return match self.find_whole(request, now) {
                    hit @ Lookup::Hit(_) => hit,
                    _ => Lookup::Bypass(BypassReason::Range),
                };
            }
            Some(reason) => return Lookup::Bypass(reason),
            None => {}
        }
        self.find_whole(request, now)
    }

    /// [`find`](Self::find) for a request the cache takes part in.
    fn find_whole(&self, request: &CacheRequest, now: SystemTime) -> Lookup {
        let key = request.key();
        let headers = request.headers();
        let directives = request.directives();
        // §4: HEAD may use a stored GET response; GET never a stored HEAD response.
        let get = request.is_get();
        let found = self
            .inner
            .store
            .find(key, |e| (!get || !e.head_only) && e.vary.matches(headers));
        let Some(entry) = found else {
            return if directives.only_if_cached {
                Lookup::Unsatisfiable
            } else {
                Lookup::Miss(Fill::none())
            };
        };
        let response = CachedResponse::new(Arc::clone(&entry), now);
        match judge(&entry, directives, response.age) {
            Verdict::Fresh => Lookup::Hit(response),
            Verdict::Stale { refresh: false } => Lookup::Stale {
                response,
                refresh: None,
            },
            Verdict::Stale { refresh: true } => {
                let lease = request
                    .may_lead_fill()
                    .then(|| self.inner.coalescer.try_lead(key))
                    .flatten();
                let refresh = lease.map(|lease| {
                    let fill = Fill {
                        lease: Some(lease),
                        replaces: Some(entry),
                    };
                    Revalidation::new(key.clone(), response.clone(), fill, directives)
                });
                Lookup::Stale { response, refresh }
            }
            Verdict::Revalidate if directives.only_if_cached => Lookup::Unsatisfiable,
            Verdict::Revalidate => {
                let fill = Fill {
                    lease: None,
                    replaces: Some(entry),
                };
                Lookup::Revalidate(Revalidation::new(key.clone(), response, fill, directives))
            }
        }
    }

    /// Phase 2, when the origin's response head arrives (after a miss, or a revalidation that
    /// did not end in 304): stores it if RFC 9111 §3 allows. Pass the origin's status and
    /// headers as received (before the proxy's downstream edits), and `times` as measured
    /// around the exchange.
    pub fn admit(
        &self,
        request: &CacheRequest,
        status: StatusCode,
        headers: &HeaderMap,
        times: ResponseTimes,
        fill: Fill,
    ) -> Admission {
        let Fill { lease, replaces } = fill;
        match self.pending(request, status, headers, &times) {
            Ok(mut pending) => {
                pending.replaces = replaces;
                Admission::Store(StoreHandle::new(self.clone(), pending, lease))
            }
            Err(reason) => {
                tracing::debug!(key = %request.key(), reason = reason.as_str(), "not stored");
                // §4.3.3: a 5xx while revalidating may be treated as no answer at all, so the
                // stored response stays (for stale-if-error); any other full response
                // supersedes it.
                let server_error = status.is_server_error();
                if let (Some(old), false) = (&replaces, server_error) {
                    self.inner.store.remove(request.key(), old);
                }
                if let Some(lease) = lease {
                    lease.complete(if server_error {
                        FillOutcome::Abandoned
                    } else {
                        FillOutcome::NotStored
                    });
                }
                Admission::Skip(reason)
            }
        }
    }

    fn pending(
        &self,
        request: &CacheRequest,
        status: StatusCode,
        headers: &HeaderMap,
        times: &ResponseTimes,
    ) -> Result<Pending, NotStorable> {
        let config = &self.inner.config;
        let cc = ResponseDirectives::parse(headers);
        storable::check(request, status, headers, &cc, config)?;
        let stored = storable::stored_headers(headers, &cc, times.response_time);
        let timing = Timing::compute(status, &stored, times, config);
        if !storable::reusable(&stored, &timing.cc, timing.lifetime) {
            return Err(NotStorable::NeverReusable);
        }
        let vary = match Vary::parse(&stored) {
            Vary::Fields(fields) => VaryKey::capture(&fields, request.headers()),
            Vary::Any => return Err(NotStorable::VaryAny),
        };
        Ok(Pending {
            request: request.clone(),
            status,
            headers: stored,
            timing,
            vary,
            head_only: !request.is_get(),
            declared_len: storable::declared_length(headers),
            generation: self.inner.store.generation(request.key()),
            replaces: None,
        })
    }

    /// Phase 3, when a revalidation is answered 304: updates the stored response's headers from
    /// the 304 (RFC 9111 §4.3.4) and returns it to serve, body and all (`REVALIDATED`). `None`
    /// when the 304 names a different representation (its validator differs): the stored
    /// response is dropped and the request must be sent again without conditionals.
    pub fn revalidated(
        &self,
        request: &CacheRequest,
        revalidation: Revalidation,
        not_modified: &HeaderMap,
        times: ResponseTimes,
    ) -> Option<CachedResponse> {
        let Revalidation {
            key, stale, fill, ..
        } = revalidation;
        let lease = fill.lease;
        let old = stale.entry;
        let store = &self.inner.store;
        if !validate::validators_match(&old.headers, not_modified) {
            store.remove(&key, &old);
            return None;
        }
        let config = &self.inner.config;
        let headers = validate::merge_not_modified(&old.headers, not_modified, times.response_time);
        let timing = Timing::compute(old.status, &headers, &times, config);
        let vary = match Vary::parse(&headers) {
            Vary::Fields(fields) => VaryKey::capture(&fields, request.headers()),
            Vary::Any => old.vary.clone(),
        };
        let updated = Arc::new(StoredResponse::new(
            &key,
            old.status,
            headers,
            Arc::clone(&old.body),
            old.body_len,
            old.head_only,
            timing,
            vary,
        ));
        // The update must itself be storable: a 304 can bring `no-store`, `private`, `Vary: *`.
        let verdict = storable::check(
            request,
            old.status,
            &updated.headers,
            &updated.timing.cc,
            config,
        );
        let stored = match verdict {
            Ok(()) if Vary::parse(&updated.headers) != Vary::Any => {
                store.replace(&key, &old, Arc::clone(&updated))
            }
            // §5.2.1.5: nothing of a no-store request's exchange is stored, not even an update.
            Err(NotStorable::RequestNoStore) => false,
            _ => {
                store.remove(&key, &old);
                false
            }
        };
        self.inner
            .stats
            .revalidations
            .fetch_add(1, Ordering::Relaxed);
        if let Some(lease) = lease {
            lease.complete(if stored {
                FillOutcome::Stored
            } else {
                FillOutcome::NotStored
            });
        }
        Some(CachedResponse::new(updated, times.response_time))
    }

    /// When the origin failed during a revalidation (no response, or 500/502/503/504): the
    /// stored response if `stale-if-error` still covers it (`STALE`), else `None` (pass the error
    /// on).
    pub fn stale_on_error(
        &self,
        revalidation: &Revalidation,
        now: SystemTime,
    ) -> Option<CachedResponse> {
        let response = revalidation.stale_if_error(now)?;
        self.inner.stats.stale.fetch_add(1, Ordering::Relaxed);
        Some(response)
    }

    /// After the response to an unsafe request (POST, PUT, DELETE, PATCH, …): removes what RFC
    /// 9111 §4.4 invalidates. Returns how many stored responses were removed.
    pub fn invalidate(
        &self,
        request: &CacheRequest,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> usize {
        invalidate::targets(request, status, headers)
            .iter()
            .map(|key| self.inner.store.remove_url(key))
            .sum()
    }

    /// Removes every stored response (all variants, GET and HEAD) for a URL.
    pub fn purge(&self, key: &CacheKey) -> usize {
        self.inner.store.remove_url(key)
    }

    /// [`purge`](Self::purge) by URL text: `https://host/path?q`, or `host/path?q` for both
    /// schemes. `None` when it is not a URL.
    pub fn purge_url(&self, url: &str) -> Option<usize> {
        if url.contains("://") {
            return CacheKey::from_url(url).map(|key| self.purge(&key));
        }
        let keys: Vec<CacheKey> = ["http", "https"]
            .iter()
            .filter_map(|scheme| CacheKey::from_url(&format!("{scheme}://{url}")))
            .collect();
        (!keys.is_empty()).then(|| keys.iter().map(|k| self.purge(k)).sum())
    }

    /// Removes every stored response for `path_and_query` (starting with `/`) on every host and
    /// scheme: what an operator means by purging a path.
    pub fn purge_path(&self, path_and_query: &str) -> usize {
        self.inner
            .store
            .keys_with_path(path_and_query)
            .iter()
            .map(|k| self.purge(k))
            .sum()
    }

    /// Removes everything.
    pub fn purge_all(&self) -> usize {
        self.inner.store.clear()
    }

    pub fn stats(&self) -> CacheStats {
        let counters = &self.inner.store.counters;
        CacheStats {
            evictions: counters.evictions.load(Ordering::Relaxed),
            entries: counters.entries.load(Ordering::Relaxed) as u64,
            size_bytes: counters.size.load(Ordering::Relaxed) as u64,
            ..self.inner.stats.snapshot()
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Whether waiting for another request's fetch could let this one be served from the cache.
/// Not for requests that cannot lead a fill, nor when validation is required for each use
/// (`no-cache` in the request or the stored response, §5.2.1.4, §5.2.2.4): they go to the
/// origin whatever the others fetch.
fn coalescable(request: &CacheRequest, lookup: &Lookup) -> bool {
    if !request.may_lead_fill() || request.directives().no_cache {
        return false;
    }
    match lookup {
        Lookup::Miss(_) => true,
        Lookup::Revalidate(r) => !r.stale.entry.timing.cc.no_cache,
        _ => false,
    }
}

fn needs_origin(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Miss(_) | Lookup::Revalidate(_))
}

fn with_lease(lookup: Lookup, lease: crate::coalesce::Lease) -> Lookup {
    match lookup {
        Lookup::Miss(mut fill) => {
            fill.lease = Some(lease);
            Lookup::Miss(fill)
        }
        Lookup::Revalidate(mut revalidation) => {
            revalidation.fill.lease = Some(lease);
            Lookup::Revalidate(revalidation)
        }
        other => other,
    }
}
