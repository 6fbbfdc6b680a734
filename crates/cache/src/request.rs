//! The request side: what the cache needs to know about one request, parsed once.

use http::header::{
    HeaderMap, AUTHORIZATION, CACHE_CONTROL, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, PRAGMA, RANGE,
};
use http::{Method, Uri};

use crate::directives::RequestDirectives;
use crate::key::CacheKey;

/// Why a request does not take part in caching at all (`X-Cache-Status: BYPASS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BypassReason {
    /// Not GET or HEAD. Unsafe methods must still be shown to [`Cache::invalidate`] once their
    /// response arrives (RFC 9111 §4.4).
    ///
    /// [`Cache::invalidate`]: crate::Cache::invalidate
    Method,
    /// `Range` or `If-Range`: this cache stores no partial content. A GET with `Range` that finds
    /// a fresh stored response is served from it, the range cut out (`CachedResponse::ranged`);
    /// every other such request goes to the origin.
    Range,
    /// `If-Match` or `If-Unmodified-Since`: preconditions for the origin, which a cache must not
    /// evaluate (RFC 9111 §4.3.2).
    Precondition,
}

impl BypassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::Range => "range",
            BypassReason::Precondition => "precondition",
        }
    }
}

/// A request as the cache sees it: its key, method, headers (for `Vary` and conditionals) and
/// `Cache-Control`. Build one per request before the lookup and keep it to the response.
#[derive(Debug, Clone)]
pub struct CacheRequest {
    method: Method,
    key: CacheKey,
    headers: HeaderMap,
    directives: RequestDirectives,
    /// Worked out once from the headers: a lookup and the fill that may follow consult both.
    bypass: Option<BypassReason>,
    authorization: bool,
    conditional: bool,
}

impl CacheRequest {
    /// `scheme` is how the client reached the proxy (`http` or `https`), `host` the host it asked
    /// for (its `Host` field, or the authority of an absolute-form target).
    pub fn new(scheme: &str, host: &str, method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        Self::with_headers(scheme, host, method, uri, headers.clone())
    }

    /// Like [`new`](Self::new), taking the headers rather than copying them: a cache hit then
    /// costs no copy of the request's headers (the caller takes them back with
    /// [`headers`](Self::headers) when the request goes on to the origin).
    pub fn with_headers(
        scheme: &str,
        host: &str,
        method: &Method,
        uri: &Uri,
        headers: HeaderMap,
    ) -> Self {
        let Classified {
            bypass,
            authorization,
            directives,
            conditional,
        } = classify(method, &headers);
        Self {
            method: method.clone(),
            key: CacheKey::for_request(scheme, host, uri),
            // Most requests carry neither field: no lookups for them.
            directives: if directives {
                RequestDirectives::parse(&headers)
            } else {
                RequestDirectives::default()
            },
            headers,
            bypass,
            authorization,
            conditional,
        }
    }

    pub fn from_parts(scheme: &str, host: &str, parts: &http::request::Parts) -> Self {
        Self::new(scheme, host, &parts.method, &parts.uri, &parts.headers)
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn directives(&self) -> &RequestDirectives {
        &self.directives
    }

    /// Why this request bypasses the cache, if it does.
    pub fn bypass(&self) -> Option<BypassReason> {
        self.bypass
    }

    /// Whether the request carries `Range` or `If-Range` (read from its one classifying pass, so
    /// a hit without them looks no further).
    pub fn ranges(&self) -> bool {
        self.bypass == Some(BypassReason::Range)
    }

    /// Whether the client asks conditionally (`If-None-Match` or `If-Modified-Since`), so that a
    /// stored response may answer it with 304.
    pub(crate) fn is_conditional(&self) -> bool {
        self.conditional
    }

    pub(crate) fn is_get(&self) -> bool {
        self.method == Method::GET
    }

    /// Whether this request's fetch can fill the cache for others, so that concurrent misses may
    /// wait for it. Not with `no-store` (nothing will be stored) nor with `Authorization` (what
    /// is stored depends on the response, and others should not queue behind a private fetch).
    pub(crate) fn may_lead_fill(&self) -> bool {
        self.bypass().is_none() && !self.directives.no_store && !self.authorization
    }
}

/// What a request's field names alone tell the cache.
struct Classified {
    bypass: Option<BypassReason>,
    authorization: bool,
    /// `Cache-Control` or `Pragma` is present: there are directives to parse.
    directives: bool,
    /// `If-None-Match` or `If-Modified-Since` is present.
    conditional: bool,
}

/// Why a request bypasses the cache, whether it carries `Authorization`, directives or the
/// conditionals a cache answers: one pass over its field names (a request has a handful) rather
/// than a hash lookup per name asked about.
fn classify(method: &Method, headers: &HeaderMap) -> Classified {
    let (mut range, mut precondition, mut authorization, mut directives, mut conditional) =
        (false, false, false, false, false);
    for name in headers.keys() {
        if name == RANGE || name == IF_RANGE {
            range = true;
        } else if name == IF_MATCH || name == IF_UNMODIFIED_SINCE {
            precondition = true;
        } else if name == AUTHORIZATION {
            authorization = true;
        } else if name == CACHE_CONTROL || name == PRAGMA {
            directives = true;
        } else if name == IF_NONE_MATCH || name == IF_MODIFIED_SINCE {
            conditional = true;
        }
    }
    let bypass = if method != Method::GET && method != Method::HEAD {
        Some(BypassReason::Method)
    } else if range {
        Some(BypassReason::Range)
    } else if precondition {
        Some(BypassReason::Precondition)
    } else {
        None
    };
    Classified {
        bypass,
        authorization,
        directives,
        conditional,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, pairs: &[(&'static str, &'static str)]) -> CacheRequest {
        let h = crate::tests::headers(pairs);
        CacheRequest::new("http", "example.com", &method, &"/x".parse().unwrap(), &h)
    }

    #[test]
    fn directives_are_read_when_cache_control_or_pragma_is_present() {
        assert_eq!(
            *request(Method::GET, &[]).directives(),
            RequestDirectives::default()
        );
        assert!(
            request(Method::GET, &[("pragma", "no-cache")])
                .directives()
                .no_cache
        );
        let r = request(
            Method::GET,
            &[("cache-control", "no-store"), ("authorization", "x")],
        );
        assert!(r.directives().no_store);
        assert!(!r.may_lead_fill());
        assert_eq!(r.bypass(), None);
    }

    #[test]
    fn only_get_and_head_take_part() {
        assert_eq!(request(Method::GET, &[]).bypass(), None);
        assert_eq!(request(Method::HEAD, &[]).bypass(), None);
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            assert_eq!(request(m, &[]).bypass(), Some(BypassReason::Method));
        }
    }

    #[test]
    fn ranges_and_origin_preconditions_bypass() {
        let r = request(Method::GET, &[("range", "bytes=0-1")]);
        assert_eq!(r.bypass(), Some(BypassReason::Range));
        let r = request(Method::GET, &[("if-match", "\"a\"")]);
        assert_eq!(r.bypass(), Some(BypassReason::Precondition));
        let r = request(Method::GET, &[("if-none-match", "\"a\"")]);
        assert_eq!(r.bypass(), None, "If-None-Match is answered by the cache");
    }

    #[test]
    fn no_store_and_authorization_never_lead_a_fill() {
        assert!(request(Method::GET, &[]).may_lead_fill());
        assert!(!request(Method::GET, &[("cache-control", "no-store")]).may_lead_fill());
        assert!(!request(Method::GET, &[("authorization", "Basic eA==")]).may_lead_fill());
        assert!(!request(Method::POST, &[]).may_lead_fill());
    }
}
