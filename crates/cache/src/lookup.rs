//! What a lookup finds, and whether a stored response may be served as it is (RFC 9111 §4,
//! §4.2.4, §5.2.1, §5.2.2; RFC 5861).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::directives::RequestDirectives;
use crate::entry::{CachedResponse, StoredResponse};
use crate::fill::Fill;
use crate::key::CacheKey;
use crate::request::BypassReason;
use crate::validate;

/// What the proxy reports in `X-Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served fresh from the cache.
    Hit,
    /// Fetched from the origin: nothing usable was stored.
    Miss,
    /// A stored response needed validation and the origin sent a new one.
    Expired,
    /// Served stale: within `stale-while-revalidate`, `stale-if-error`, or the client's
    /// `max-stale`.
    Stale,
    /// Validated with the origin (304) and served from the cache.
    Revalidated,
    /// The request does not take part in caching.
    Bypass,
}

impl CacheStatus {
    /// The response field that reports it.
    pub const FIELD: HeaderName = HeaderName::from_static("x-cache-status");

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The outcome of a lookup: what the proxy does next.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh stored response: serve it (`HIT`). Check [`CachedResponse::not_modified`] first.
    Hit(CachedResponse),
    /// A stale response that may be served as it is (`STALE`). With `refresh`, this request won
    /// the one background refresh of the entry (`stale-while-revalidate`): run it, off the
    /// request path, as a [`Revalidation`].
    Stale {
        response: CachedResponse,
        refresh: Option<Revalidation>,
    },
    /// A stored response that must be validated before use: send the request upstream with
    /// [`Revalidation::prepare_request`]. A 304 goes to [`Cache::revalidated`] (`REVALIDATED`);
    /// any other response to [`Cache::admit`] with [`Revalidation::into_fill`] (`EXPIRED`).
    ///
    /// [`Cache::revalidated`]: crate::Cache::revalidated
    /// [`Cache::admit`]: crate::Cache::admit
    Revalidate(Revalidation),
    /// Nothing usable is stored (`MISS`): fetch (with [`strip_conditionals`]) and hand the
    /// response to [`Cache::admit`] with this fill.
    ///
    /// [`strip_conditionals`]: crate::strip_conditionals
    /// [`Cache::admit`]: crate::Cache::admit
    Miss(Fill),
    /// `only-if-cached` and nothing suitable is stored: answer 504 (RFC 9111 §5.2.1.7).
    Unsatisfiable,
    /// The request does not take part in caching (`BYPASS`): forward it untouched, then show
    /// unsafe requests' responses to [`Cache::invalidate`].
    ///
    /// [`Cache::invalidate`]: crate::Cache::invalidate
    Bypass(BypassReason),
}

impl Lookup {
    /// The `X-Cache-Status` this outcome reports, before the origin answers (a revalidation
    /// reports `EXPIRED` unless it ends in a 304).
    pub fn status(&self) -> CacheStatus {
        match self {
            Lookup::Hit(_) => CacheStatus::Hit,
            Lookup::Stale { .. } => CacheStatus::Stale,
            Lookup::Revalidate(_) => CacheStatus::Expired,
            Lookup::Miss(_) | Lookup::Unsatisfiable => CacheStatus::Miss,
            Lookup::Bypass(_) => CacheStatus::Bypass,
        }
    }
}

/// A stored response that needs the origin's confirmation, and this request's part in it.
pub struct Revalidation {
    pub(crate) key: CacheKey,
    pub(crate) stale: CachedResponse,
    pub(crate) fill: Fill,
    /// How stale it may be served if the origin fails (`stale-if-error`), if at all.
    pub(crate) stale_if_error: Option<Duration>,
}

impl Revalidation {
    pub(crate) fn new(
        key: CacheKey,
        stale: CachedResponse,
        fill: Fill,
        request: &RequestDirectives,
    ) -> Self {
        let stale_if_error = stale_if_error_window(&stale.entry, request);
        Self {
            key,
            stale,
            fill,
            stale_if_error,
        }
    }

    /// The stored response being validated.
    pub fn stored(&self) -> &CachedResponse {
        &self.stale
    }

    /// `If-None-Match` / `If-Modified-Since` for the stored response's validators (§4.3.1).
    pub fn conditional_headers(&self) -> HeaderMap {
        validate::conditional_headers(&self.stale.entry.headers)
    }

    /// Makes an upstream request's headers ask about the stored response: the client's own
    /// conditionals out (the cache answers those itself), the cache's in.
    pub fn prepare_request(&self, headers: &mut HeaderMap) {
        validate::strip_conditionals(headers);
        headers.extend(self.conditional_headers());
    }

    /// Whether this request leads the fill (others are waiting for it).
    pub fn is_leader(&self) -> bool {
        self.fill.is_leader()
    }

    /// The stored response, when the origin failed (no answer, or 500, 502, 503, 504; RFC 5861
    /// §4) and `stale-if-error` from the response or the request still covers it. `None` under
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache` or a request `no-cache`.
    pub fn stale_if_error(&self, now: SystemTime) -> Option<CachedResponse> {
        let window = self.stale_if_error?;
        let response = CachedResponse::new(self.stale.entry.clone(), now);
        let staleness = response
            .age
            .saturating_sub(self.stale.entry.timing.lifetime);
        (staleness <= window).then_some(response)
    }

    /// This request's part in filling the cache, for [`Cache::admit`] when the origin answered
    /// with a full response: it replaces the stored one.
    ///
    /// [`Cache::admit`]: crate::Cache::admit
    pub fn into_fill(self) -> Fill {
        self.fill
    }
}

impl fmt::Debug for Revalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revalidation")
            .field("key", &self.key)
            .field("stored", &self.stale)
            .field("leader", &self.fill.is_leader())
            .finish()
    }
}

fn stale_if_error_window(entry: &StoredResponse, request: &RequestDirectives) -> Option<Duration> {
    let cc = &entry.timing.cc;
    if cc.no_cache || cc.forbids_stale() || request.no_cache {
        return None;
    }
    // The client's own limit, when it gives one, else the origin's (RFC 5861 §4).
    request
        .stale_if_error
        .or(cc.stale_if_error)
        .map(Duration::from_secs)
}

/// May a stored response of this age be served without contacting the origin?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fresh,
    /// Stale but servable; `refresh` when that is thanks to `stale-while-revalidate`, which asks
    /// for a background revalidation.
    Stale {
        refresh: bool,
    },
    Revalidate,
}

pub(crate) fn judge(entry: &StoredResponse, request: &RequestDirectives, age: Duration) -> Verdict {
    let cc = &entry.timing.cc;
    // §5.2.2.4 (response) and §5.2.1.4 (request): never without a successful validation.
    if cc.no_cache || request.no_cache {
        return Verdict::Revalidate;
    }
    // §5.2.1.1: the client accepts nothing older than max-age.
    if request
        .max_age
        .is_some_and(|max| age > Duration::from_secs(max))
    {
        return Verdict::Revalidate;
    }
    let lifetime = entry.timing.lifetime;
    // §4.2: fresh while freshness_lifetime > current_age.
    if lifetime > age {
        // §5.2.1.3: and fresh for at least min-fresh more.
        let left = lifetime - age;
        if request
            .min_fresh
            .is_some_and(|min| left < Duration::from_secs(min))
        {
            return Verdict::Revalidate;
        }
        return Verdict::Fresh;
    }
    // §4.2.4: stale responses only where explicitly allowed, and never under
    // must-revalidate, proxy-revalidate or s-maxage; min-fresh asks for a fresh one.
    if cc.forbids_stale() || request.min_fresh.is_some() {
        return Verdict::Revalidate;
    }
    let staleness = age - lifetime;
    // §5.2.1.2: the client accepts this much staleness.
    if request
        .max_stale
        .is_some_and(|max| staleness <= Duration::from_secs(max))
    {
        return Verdict::Stale { refresh: false };
    }
    // RFC 5861 §3: serve stale while one request revalidates in the background.
    if cc
        .stale_while_revalidate
        .is_some_and(|window| staleness <= Duration::from_secs(window))
    {
        return Verdict::Stale { refresh: true };
    }
    Verdict::Revalidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;
    use crate::entry::Timing;
    use crate::freshness::ResponseTimes;
    use crate::vary::VaryKey;
    use http::{HeaderName, StatusCode};
    use std::sync::Arc;

    fn stored(cc: &str) -> StoredResponse {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(cc).unwrap(),
        );
        let times = ResponseTimes::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let timing = Timing::compute(StatusCode::OK, &h, &times, &CacheConfig::default());
        let key = CacheKey::new("http", "example.com", "/");
        StoredResponse::new(
            &key,
            StatusCode::OK,
            h,
            Arc::from([]),
            0,
            false,
            timing,
            VaryKey::default(),
        )
    }

    fn request(cc: &str) -> RequestDirectives {
        let mut h = HeaderMap::new();
        if !cc.is_empty() {
            h.insert(
                HeaderName::from_static("cache-control"),
                HeaderValue::from_str(cc).unwrap(),
            );
        }
        RequestDirectives::parse(&h)
    }

    fn judged(response_cc: &str, request_cc: &str, age: u64) -> Verdict {
        judge(
            &stored(response_cc),
            &request(request_cc),
            Duration::from_secs(age),
        )
    }

    const STALE: Verdict = Verdict::Stale { refresh: false };
    const SWR: Verdict = Verdict::Stale { refresh: true };

    #[test]
    fn fresh_until_age_reaches_the_lifetime() {
        assert_eq!(judged("max-age=10", "", 9), Verdict::Fresh);
        assert_eq!(judged("max-age=10", "", 10), Verdict::Revalidate);
    }

    #[test]
    fn no_cache_response_is_always_revalidated() {
        assert_eq!(judged("no-cache, max-age=100", "", 0), Verdict::Revalidate);
    }

    #[test]
    fn request_no_cache_forces_revalidation() {
        assert_eq!(judged("max-age=100", "no-cache", 0), Verdict::Revalidate);
    }

    #[test]
    fn request_max_age_limits_age() {
        assert_eq!(judged("max-age=100", "max-age=5", 5), Verdict::Fresh);
        assert_eq!(judged("max-age=100", "max-age=5", 6), Verdict::Revalidate);
        assert_eq!(judged("max-age=100", "max-age=0", 1), Verdict::Revalidate);
    }

    #[test]
    fn request_min_fresh_needs_that_much_freshness_left() {
        assert_eq!(judged("max-age=100", "min-fresh=10", 90), Verdict::Fresh);
        assert_eq!(
            judged("max-age=100", "min-fresh=10", 91),
            Verdict::Revalidate
        );
        assert_eq!(
            judged("max-age=10, stale-while-revalidate=60", "min-fresh=1", 20),
            Verdict::Revalidate
        );
    }

    #[test]
    fn request_max_stale_accepts_staleness() {
        assert_eq!(judged("max-age=10", "max-stale=5", 15), STALE);
        assert_eq!(judged("max-age=10", "max-stale=5", 16), Verdict::Revalidate);
        assert_eq!(judged("max-age=10", "max-stale", 1_000_000), STALE);
    }

    #[test]
    fn revalidate_directives_and_s_maxage_forbid_stale() {
        for cc in [
            "max-age=10, must-revalidate",
            "max-age=10, proxy-revalidate",
            "s-maxage=10",
        ] {
            assert_eq!(judged(cc, "max-stale", 11), Verdict::Revalidate, "{cc}");
            let swr = format!("{cc}, stale-while-revalidate=60");
            assert_eq!(judged(&swr, "", 11), Verdict::Revalidate, "{cc}");
        }
    }

    #[test]
    fn stale_while_revalidate_window() {
        let cc = "max-age=10, stale-while-revalidate=30";
        assert_eq!(judged(cc, "", 9), Verdict::Fresh);
        assert_eq!(judged(cc, "", 40), SWR);
        assert_eq!(judged(cc, "", 41), Verdict::Revalidate);
    }

    #[test]
    fn stale_if_error_window_from_response_or_request() {
        let e = stored("max-age=10, stale-if-error=30");
        assert_eq!(
            stale_if_error_window(&e, &request("")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            stale_if_error_window(&e, &request("stale-if-error=5")),
            Some(Duration::from_secs(5))
        );
        let plain = stored("max-age=10");
        assert_eq!(
            stale_if_error_window(&plain, &request("stale-if-error=5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(stale_if_error_window(&plain, &request("")), None);
        for cc in [
            "max-age=10, stale-if-error=30, must-revalidate",
            "s-maxage=10, stale-if-error=30",
            "no-cache, stale-if-error=30",
        ] {
            assert_eq!(
                stale_if_error_window(&stored(cc), &request("")),
                None,
                "{cc}"
            );
        }
        assert_eq!(stale_if_error_window(&e, &request("no-cache")), None);
    }
}
