//! Whether a response may be stored, and what of it (RFC 9111 §3, shared cache).

use std::time::{Duration, SystemTime};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, DATE, ETAG,
    LAST_MODIFIED, PROXY_AUTHENTICATE, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, StatusCode};

use crate::config::CacheConfig;
use crate::directives::{list_members, ResponseDirectives};
use crate::freshness::has_explicit_expiration;
use crate::freshness::heuristically_cacheable;
use crate::request::CacheRequest;
use crate::vary::Vary;

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotStorable {
    /// The request method is not GET or HEAD.
    Method,
    /// The request said `no-store` (§5.2.1.5).
    RequestNoStore,
    /// 1xx, 206 or 304 (not complete responses this cache stores), or a status this cache does
    /// not know under `must-understand` (§5.2.2.3).
    Status,
    /// The response said `no-store` (§5.2.2.5).
    NoStore,
    /// The response said `private` (§5.2.2.7).
    Private,
    /// The request carried `Authorization` and the response did not say `public`, `s-maxage` or
    /// `must-revalidate` (§3.5).
    Authorization,
    /// The response sets a cookie and `store_set_cookie` is off.
    SetCookie,
    /// `Vary: *` (§4.1): it could never be reused.
    VaryAny,
    /// No explicit expiry, no `public`, and a status that is not heuristically cacheable (§3).
    NoExpiration,
    /// Never fresh, no stale window and no validator: it could only ever be fetched again.
    NeverReusable,
    /// The body is larger than `max_entry_size`, or the entry than the whole cache.
    TooLarge,
    /// The body ended early or did not match its `Content-Length` (§3.3).
    Incomplete,
    /// A purge or an invalidation of this URL happened while the response was arriving.
    Invalidated,
    /// A HEAD response, where a full response to GET is already stored for the same variant.
    HeadAfterGet,
}

impl NotStorable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::RequestNoStore => "request no-store",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::VaryAny => "vary *",
            NotStorable::NoExpiration => "no expiration",
            NotStorable::NeverReusable => "never reusable",
            NotStorable::TooLarge => "too large",
            NotStorable::Incomplete => "incomplete",
            NotStorable::Invalidated => "invalidated",
            NotStorable::HeadAfterGet => "head after get",
        }
    }
}

/// Status codes whose caching rules this cache implements, for `must-understand`: the final
/// codes RFC 9110 defines, less 206 and 304.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// The storage rules of RFC 9111 §3 for a shared cache, in the RFC's order.
pub(crate) fn check(
    request: &CacheRequest,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    config: &CacheConfig,
) -> Result<(), NotStorable> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Err(NotStorable::Method);
    }
    if request.directives().no_store {
        return Err(NotStorable::RequestNoStore);
    }
    // Only complete, final responses; 206 would need range combination (§3.4), 304 is not a
    // response in its own right.
    let code = status.as_u16();
    if code < 200 || code == 206 || code == 304 {
        return Err(NotStorable::Status);
    }
    if cc.must_understand {
        // §5.2.2.3: store only if the status is understood, and then `no-store` is overridden.
        if !understood(status) {
            return Err(NotStorable::Status);
        }
    } else if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    if request.headers().contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if headers.contains_key(SET_COOKIE)
        && !cc.private_fields.contains(&SET_COOKIE)
        && !config.store_set_cookie
    {
        return Err(NotStorable::SetCookie);
    }
    if Vary::parse(headers) == Vary::Any {
        return Err(NotStorable::VaryAny);
    }
    if !(cc.public || has_explicit_expiration(headers, cc) || heuristically_cacheable(status)) {
        return Err(NotStorable::NoExpiration);
    }
    // A HEAD response's Content-Length describes a body it does not have.
    let body_len = declared_length(headers).filter(|_| request.method() == Method::GET);
    if body_len.is_some_and(|len| len > config.max_entry_size as u64) {
        return Err(NotStorable::TooLarge);
    }
    Ok(())
}

/// Whether a stored response could ever be served. One that is never fresh, may not be served
/// stale and has no validator would cost memory and give nothing back.
pub(crate) fn reusable(headers: &HeaderMap, cc: &ResponseDirectives, lifetime: Duration) -> bool {
    let stale_window = !cc.forbids_stale()
        && (cc.stale_while_revalidate.is_some_and(|w| w > 0)
            || cc.stale_if_error.is_some_and(|w| w > 0));
    let served_unvalidated = !cc.no_cache && (!lifetime.is_zero() || stale_window);
    served_unvalidated || has_validator(headers)
}

pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// `Content-Length`, when it is one valid number.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut lines = headers.get_all(CONTENT_LENGTH).iter();
    let first = lines.next()?.to_str().ok()?.trim().parse().ok()?;
    lines.next().is_none().then_some(first)
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), which belong to one connection and are never stored
/// (§3.1). `Proxy-Authenticate` applies only to the next client (RFC 9110 §11.7.1).
const HOP_BY_HOP: [&str; 4] = ["keep-alive", "proxy-connection", "proxy-authenticate", "te"];

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHENTICATE
        || HOP_BY_HOP.contains(&name.as_str())
}

/// The header section to store (§3.1): without hop-by-hop fields and those `Connection` names,
/// without fields a qualified `private` names (§5.2.2.7), without `Set-Cookie` (only reachable
/// when `store_set_cookie` allows storing such responses), and with a `Date` when the origin
/// sent none (RFC 9110 §6.6.1), so that ages stay right.
pub(crate) fn stored_headers(
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    response_time: SystemTime,
) -> HeaderMap {
    let connection_listed: Vec<HeaderName> = list_members(headers, &CONNECTION)
        .filter_map(|m| HeaderName::from_bytes(&m.to_ascii_lowercase()).ok())
        .collect();
    let mut stored = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || connection_listed.contains(name)
            || cc.private_fields.contains(name)
            || name == SET_COOKIE
        {
            continue;
        }
        stored.append(name.clone(), value.clone());
    }
    if !stored.contains_key(DATE) {
        stored.insert(DATE, date_header(response_time));
    }
    stored
}

pub(crate) fn date_header(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, pairs: &[(&'static str, &'static str)]) -> CacheRequest {
        let h = crate::tests::headers(pairs);
        CacheRequest::new("http", "example.com", &method, &"/x".parse().unwrap(), &h)
    }

    use crate::tests::headers;

    fn verdict_with(
        req: &CacheRequest,
        status: u16,
        pairs: &[(&'static str, &'static str)],
        config: &CacheConfig,
    ) -> Result<(), NotStorable> {
        let h = headers(pairs);
        let cc = ResponseDirectives::parse(&h);
        check(req, StatusCode::from_u16(status).unwrap(), &h, &cc, config)
    }

    fn verdict(status: u16, pairs: &[(&'static str, &'static str)]) -> Result<(), NotStorable> {
        verdict_with(
            &request(Method::GET, &[]),
            status,
            pairs,
            &CacheConfig::default(),
        )
    }

    const FRESH: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn only_get_and_head_responses_are_stored() {
        let config = CacheConfig::default();
        assert_eq!(
            verdict_with(&request(Method::HEAD, &[]), 200, &[FRESH], &config),
            Ok(())
        );
        assert_eq!(
            verdict_with(&request(Method::POST, &[]), 200, &[FRESH], &config),
            Err(NotStorable::Method)
        );
    }

    #[test]
    fn request_no_store_forbids_storing() {
        let req = request(Method::GET, &[("cache-control", "no-store")]);
        assert_eq!(
            verdict_with(&req, 200, &[FRESH], &CacheConfig::default()),
            Err(NotStorable::RequestNoStore)
        );
    }

    #[test]
    fn partial_not_modified_and_interim_responses_are_not_stored() {
        for status in [100, 206, 304] {
            assert_eq!(
                verdict(status, &[FRESH]),
                Err(NotStorable::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn response_no_store_and_private_forbid_storing() {
        assert_eq!(
            verdict(200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            verdict(200, &[("cache-control", "private, max-age=60")]),
            Err(NotStorable::Private)
        );
        assert_eq!(
            verdict(200, &[("cache-control", "private=\"x-user\", max-age=60")]),
            Ok(())
        );
    }

    #[test]
    fn must_understand_overrides_no_store_for_understood_status_only() {
        let cc = ("cache-control", "must-understand, no-store, max-age=60");
        assert_eq!(verdict(200, &[cc]), Ok(()));
        assert_eq!(verdict(299, &[cc]), Err(NotStorable::Status));
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let req = request(Method::GET, &[("authorization", "Bearer t")]);
        let config = CacheConfig::default();
        assert_eq!(
            verdict_with(&req, 200, &[FRESH], &config),
            Err(NotStorable::Authorization)
        );
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            let pairs = [("cache-control", cc)];
            assert_eq!(verdict_with(&req, 200, &pairs, &config), Ok(()), "{cc}");
        }
    }

    #[test]
    fn set_cookie_is_stored_only_when_allowed_or_privately_qualified() {
        let pairs = [FRESH, ("set-cookie", "a=b")];
        assert_eq!(verdict(200, &pairs), Err(NotStorable::SetCookie));
        let config = CacheConfig {
            store_set_cookie: true,
            ..CacheConfig::default()
        };
        assert_eq!(
            verdict_with(&request(Method::GET, &[]), 200, &pairs, &config),
            Ok(())
        );
        let qualified = [
            ("cache-control", "max-age=60, private=\"set-cookie\""),
            ("set-cookie", "a=b"),
        ];
        assert_eq!(verdict(200, &qualified), Ok(()));
    }

    #[test]
    fn vary_star_is_not_stored() {
        assert_eq!(
            verdict(200, &[FRESH, ("vary", "*")]),
            Err(NotStorable::VaryAny)
        );
    }

    #[test]
    fn needs_explicit_expiry_public_or_heuristically_cacheable_status() {
        assert_eq!(verdict(200, &[]), Ok(()));
        assert_eq!(verdict(404, &[]), Ok(()));
        assert_eq!(verdict(302, &[]), Err(NotStorable::NoExpiration));
        assert_eq!(verdict(500, &[]), Err(NotStorable::NoExpiration));
        assert_eq!(verdict(302, &[FRESH]), Ok(()));
        assert_eq!(verdict(302, &[("expires", "0")]), Ok(()));
        assert_eq!(verdict(302, &[("cache-control", "public")]), Ok(()));
    }

    #[test]
    fn declared_length_over_the_entry_limit_is_not_stored() {
        let config = CacheConfig {
            max_entry_size: 10,
            ..CacheConfig::default()
        };
        let req = request(Method::GET, &[]);
        assert_eq!(
            verdict_with(&req, 200, &[FRESH, ("content-length", "11")], &config),
            Err(NotStorable::TooLarge)
        );
        assert_eq!(
            verdict_with(&req, 200, &[FRESH, ("content-length", "10")], &config),
            Ok(())
        );
        let head = request(Method::HEAD, &[]);
        assert_eq!(
            verdict_with(&head, 200, &[FRESH, ("content-length", "11")], &config),
            Ok(()),
            "a HEAD response has no body to store"
        );
    }

    #[test]
    fn never_reusable_responses_are_recognised() {
        let none = headers(&[]);
        let cc = ResponseDirectives::default();
        assert!(!reusable(&none, &cc, Duration::ZERO));
        assert!(reusable(&none, &cc, Duration::from_secs(1)));
        let etag = headers(&[("etag", "\"v\"")]);
        assert!(reusable(&etag, &cc, Duration::ZERO));
        let no_cache =
            ResponseDirectives::parse(&headers(&[("cache-control", "no-cache, max-age=60")]));
        assert!(!reusable(&none, &no_cache, Duration::from_secs(60)));
        assert!(reusable(&etag, &no_cache, Duration::from_secs(60)));
        let swr = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "max-age=0, stale-while-revalidate=30",
        )]));
        assert!(reusable(&none, &swr, Duration::ZERO));
    }

    #[test]
    fn stored_headers_drop_hop_by_hop_private_fields_and_cookies() {
        let h = headers(&[
            ("connection", "x-conn"),
            ("x-conn", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-user", "alice"),
            ("set-cookie", "a=b"),
            ("content-type", "text/plain"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ]);
        let cc = ResponseDirectives::parse(&headers(&[("cache-control", "private=\"x-user\"")]));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let stored = stored_headers(&h, &cc, now);
        let names: Vec<&str> = stored.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["content-type", "x-multi", "date"]);
        assert_eq!(stored.get_all("x-multi").iter().count(), 2);
        assert_eq!(stored[DATE], httpdate::fmt_http_date(now).as_str());
    }
}
