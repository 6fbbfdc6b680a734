//! Validation: conditional requests to the origin, updating from a 304 (RFC 9111 §4.3), and
//! answering clients' own conditional requests from the cache.

use std::time::{Duration, SystemTime};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_RANGE, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, VARY,
};
use http::{Method, Response, StatusCode, Version};

use crate::directives::{list_members, ResponseDirectives};
use crate::entry::StoredResponse;
use crate::freshness::{self, http_date};
use crate::request::CacheRequest;
use crate::storable::stored_headers;

/// An entity tag (RFC 9110 §8.8.3): weakness and opaque-tag (with its quotes).
#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

fn entity_tag(value: &[u8]) -> Option<EntityTag<'_>> {
    let (weak, rest) = match value.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let valid = rest.len() >= 2 && rest.starts_with(b"\"") && rest.ends_with(b"\"");
    valid.then_some(EntityTag { weak, opaque: rest })
}

/// Weak comparison: the opaque tags match, weakness aside (RFC 9110 §8.8.3.2).
fn weak_eq(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    a.opaque == b.opaque
}

/// Strong comparison: both strong and the opaque tags match.
fn strong_eq(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    !a.weak && !b.weak && a.opaque == b.opaque
}

/// The conditional fields to revalidate a stored response with (§4.3.1): `If-None-Match` with
/// its entity tag, `If-Modified-Since` with its `Last-Modified`. Empty when it has neither; the
/// request then fetches the full response.
pub(crate) fn conditional_headers(stored: &HeaderMap) -> HeaderMap {
    let mut conditional = HeaderMap::new();
    if let Some(etag) = stored.get(ETAG) {
        conditional.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(last_modified) = stored.get(LAST_MODIFIED) {
        conditional.insert(IF_MODIFIED_SINCE, last_modified.clone());
    }
    conditional
}

/// Removes a client's conditional fields from a request about to go upstream for the cache
/// (a miss or a revalidation): the cache needs the full response, or a 304 about *its* copy, and
/// answers the client's conditions itself from what it then holds.
pub fn strip_conditionals(headers: &mut HeaderMap) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
    ] {
        headers.remove(name);
    }
}

/// Whether a 304 is about this stored response (§4.3.4): a strong validator in the 304 must be
/// the stored one, a weak one must match weakly; a `Last-Modified` in both must agree. A 304
/// without validators answers the conditional request sent for this very response.
pub(crate) fn validators_match(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let new_tag = not_modified.get(ETAG).map(HeaderValue::as_bytes);
    let old_tag = stored.get(ETAG).map(HeaderValue::as_bytes);
    match (new_tag, old_tag) {
        (Some(new), Some(old)) => match (entity_tag(new), entity_tag(old)) {
            (Some(n), Some(o)) if n.weak => weak_eq(&n, &o),
            (Some(n), Some(o)) => strong_eq(&n, &o),
            _ => new == old,
        },
        (Some(_), None) => false,
        (None, _) => match (not_modified.get(LAST_MODIFIED), stored.get(LAST_MODIFIED)) {
            (Some(new), Some(old)) => http_date_eq(new, old),
            _ => true,
        },
    }
}

fn http_date_eq(a: &HeaderValue, b: &HeaderValue) -> bool {
    let parse = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// `If-Range` (RFC 9110 §13.1.5) against a stored response: an entity tag must match its `ETag`
/// by strong comparison, a date must be its `Last-Modified`. Otherwise the whole response is sent.
pub(crate) fn if_range_matches(condition: &HeaderValue, stored: &HeaderMap) -> bool {
    match entity_tag(condition.as_bytes()) {
        Some(tag) => stored
            .get(ETAG)
            .and_then(|etag| entity_tag(etag.as_bytes()))
            .is_some_and(|etag| strong_eq(&tag, &etag)),
        None => stored
            .get(LAST_MODIFIED)
            .is_some_and(|modified| http_date_eq(condition, modified)),
    }
}

/// Fields a 304 never updates (§3.2): `Content-Length` (the stored body's own), and
/// `Content-Range`, which describes a partial body. Hop-by-hop fields, those `Connection` names,
/// `Set-Cookie` and `private`-qualified fields are dropped earlier, as from any stored response
/// (§3.1).
const NOT_UPDATED: [HeaderName; 2] = [CONTENT_LENGTH, CONTENT_RANGE];

/// The stored header section updated from a 304 (§3.2, §4.3.4): every field the 304 carries
/// replaces all lines of that field. `Date` and `Age` then describe the 304: a 304 without `Date`
/// gets the time it arrived, and an `Age` the 304 does not repeat is dropped, so the entry's age
/// restarts from this validation.
pub(crate) fn merge_not_modified(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    response_time: SystemTime,
) -> HeaderMap {
    let cc = ResponseDirectives::parse(not_modified);
    let update = stored_headers(not_modified, &cc, response_time);
    let mut merged = stored.clone();
    for name in update.keys() {
        if NOT_UPDATED.contains(name) {
            continue;
        }
        merged.remove(name);
        for value in update.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    if !not_modified.contains_key(AGE) {
        merged.remove(AGE);
    }
    merged
}

/// Whether a client's conditional GET or HEAD is answered with 304 by this stored response
/// (RFC 9111 §4.3.2 with RFC 9110 §13.2.2's order). Only a stored 200 is evaluated; for any other
/// status a server ignores preconditions (RFC 9110 §13.2.1).
pub(crate) fn client_not_modified(request: &CacheRequest, stored: &StoredResponse) -> bool {
    if !request.is_conditional()
        || stored.status != StatusCode::OK
        || (request.method() != Method::GET && request.method() != Method::HEAD)
    {
        return false;
    }
    let headers = request.headers();
    if headers.contains_key(IF_NONE_MATCH) {
        let stored_tag = stored.headers.get(ETAG).map(HeaderValue::as_bytes);
        return list_members(headers, &IF_NONE_MATCH).any(|member| {
            // `*` matches any current representation, and this is one.
            member == b"*"
                || match (entity_tag(member), stored_tag.and_then(entity_tag)) {
                    (Some(asked), Some(ours)) => weak_eq(&asked, &ours),
                    _ => false,
                }
        });
    }
    let Some(since) = http_date(headers, &IF_MODIFIED_SINCE) else {
        // Absent, or not a valid date: ignored (RFC 9110 §13.1.3).
        return false;
    };
    // §4.3.2: Last-Modified, else Date, else when it was received.
    let modified = http_date(&stored.headers, &LAST_MODIFIED)
        .or_else(|| http_date(&stored.headers, &DATE))
        .unwrap_or(stored.timing.response_time);
    modified <= since
}

/// The head of a 304 answering a client from the cache: the fields RFC 9110 §15.4.5 requires a
/// 304 to repeat (`Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary`), plus
/// `Last-Modified` (useful to caches downstream) and `Age`.
pub(crate) fn not_modified_head(stored: &HeaderMap, age: Duration) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.version_mut() = Version::HTTP_11;
    let headers = response.headers_mut();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(AGE, freshness::age_header(age));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;
    use crate::entry::Timing;
    use crate::freshness::ResponseTimes;
    use crate::key::CacheKey;
    use crate::vary::VaryKey;
    use std::sync::Arc;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    use crate::tests::headers;

    fn stored(status: u16, pairs: &[(&str, &str)]) -> StoredResponse {
        let h = headers(pairs);
        let status = StatusCode::from_u16(status).unwrap();
        let times = ResponseTimes::at(at(T0));
        let timing = Timing::compute(status, &h, &times, &CacheConfig::default());
        let key = CacheKey::new("http", "example.com", "/");
        StoredResponse::new(
            &key,
            status,
            h,
            Arc::from([]),
            0,
            false,
            timing,
            VaryKey::default(),
        )
    }

    fn request(method: Method, pairs: &[(&str, &str)]) -> CacheRequest {
        let uri = "/".parse().unwrap();
        CacheRequest::new("http", "example.com", &method, &uri, &headers(pairs))
    }

    #[test]
    fn entity_tags_parse_and_compare() {
        let strong = entity_tag(b"\"a\"").unwrap();
        let weak = entity_tag(b"W/\"a\"").unwrap();
        assert!(!strong.weak && weak.weak);
        assert!(weak_eq(&strong, &weak));
        assert!(!strong_eq(&strong, &weak));
        assert!(strong_eq(&strong, &entity_tag(b"\"a\"").unwrap()));
        assert!(entity_tag(b"a").is_none());
    }

    #[test]
    fn conditional_request_carries_etag_and_last_modified() {
        let lm = httpdate::fmt_http_date(at(T0 - 100));
        let c = conditional_headers(&headers(&[("etag", "W/\"v1\""), ("last-modified", &lm)]));
        assert_eq!(c[IF_NONE_MATCH], "W/\"v1\"");
        assert_eq!(c[IF_MODIFIED_SINCE], lm.as_str());
        assert!(conditional_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn client_conditionals_are_stripped_before_going_upstream() {
        let mut h = headers(&[
            ("if-none-match", "\"x\""),
            ("if-modified-since", "Sat, 29 Oct 1994 19:43:31 GMT"),
            ("accept", "*/*"),
        ]);
        strip_conditionals(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_304_must_carry_the_stored_validator() {
        let stored = headers(&[("etag", "\"v1\"")]);
        assert!(validators_match(&stored, &headers(&[("etag", "\"v1\"")])));
        assert!(!validators_match(&stored, &headers(&[("etag", "\"v2\"")])));
        assert!(validators_match(&stored, &headers(&[("etag", "W/\"v1\"")])));
        assert!(!validators_match(
            &headers(&[("etag", "W/\"v1\"")]),
            &headers(&[("etag", "\"v1\"")])
        ));
        assert!(validators_match(&stored, &HeaderMap::new()));
        assert!(!validators_match(
            &HeaderMap::new(),
            &headers(&[("etag", "\"v1\"")])
        ));
        let (a, b) = (
            httpdate::fmt_http_date(at(T0)),
            httpdate::fmt_http_date(at(T0 + 1)),
        );
        let lm = headers(&[("last-modified", &a)]);
        assert!(validators_match(&lm, &headers(&[("last-modified", &a)])));
        assert!(!validators_match(&lm, &headers(&[("last-modified", &b)])));
    }

    #[test]
    fn a_304_replaces_fields_except_framing_and_resets_date_and_age() {
        let old_date = httpdate::fmt_http_date(at(T0 - 500));
        let stored = headers(&[
            ("content-length", "5"),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=10"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("date", &old_date),
            ("age", "30"),
            ("etag", "\"v\""),
        ]);
        let nm = headers(&[
            ("cache-control", "max-age=60"),
            ("x-a", "3"),
            ("x-new", "n"),
            ("content-length", "0"),
            ("connection", "close"),
            ("set-cookie", "a=b"),
        ]);
        let merged = merge_not_modified(&stored, &nm, at(T0));
        assert_eq!(merged[CONTENT_LENGTH], "5");
        assert_eq!(merged[CACHE_CONTROL], "max-age=60");
        assert_eq!(merged.get_all("x-a").iter().collect::<Vec<_>>(), vec!["3"]);
        assert_eq!(merged["x-new"], "n");
        assert_eq!(merged[DATE], httpdate::fmt_http_date(at(T0)).as_str());
        assert!(!merged.contains_key(AGE));
        assert!(!merged.contains_key("connection"));
        assert!(!merged.contains_key("set-cookie"));
        assert_eq!(merged["content-type"], "text/plain");
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let entry = stored(200, &[("etag", "\"v1\"")]);
        for inm in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\"", "*"] {
            assert!(
                client_not_modified(&request(Method::GET, &[("if-none-match", inm)]), &entry),
                "{inm}"
            );
        }
        assert!(!client_not_modified(
            &request(Method::GET, &[("if-none-match", "\"v2\"")]),
            &entry
        ));
        assert!(client_not_modified(
            &request(Method::HEAD, &[("if-none-match", "\"v1\"")]),
            &entry
        ));
    }

    #[test]
    fn if_modified_since_only_without_if_none_match() {
        let lm = httpdate::fmt_http_date(at(T0 - 100));
        let entry = stored(200, &[("etag", "\"v1\""), ("last-modified", &lm)]);
        let later = httpdate::fmt_http_date(at(T0 - 50));
        let earlier = httpdate::fmt_http_date(at(T0 - 150));
        assert!(client_not_modified(
            &request(Method::GET, &[("if-modified-since", &later)]),
            &entry
        ));
        assert!(client_not_modified(
            &request(Method::GET, &[("if-modified-since", &lm)]),
            &entry
        ));
        assert!(!client_not_modified(
            &request(Method::GET, &[("if-modified-since", &earlier)]),
            &entry
        ));
        assert!(!client_not_modified(
            &request(Method::GET, &[("if-modified-since", "garbage")]),
            &entry
        ));
        let both = [
            ("if-modified-since", later.as_str()),
            ("if-none-match", "\"other\""),
        ];
        assert!(
            !client_not_modified(&request(Method::GET, &both), &entry),
            "If-None-Match decides"
        );
    }

    #[test]
    fn if_modified_since_falls_back_to_date() {
        let date = httpdate::fmt_http_date(at(T0 - 100));
        let entry = stored(200, &[("date", &date)]);
        let later = httpdate::fmt_http_date(at(T0 - 50));
        assert!(client_not_modified(
            &request(Method::GET, &[("if-modified-since", &later)]),
            &entry
        ));
    }

    #[test]
    fn only_stored_200s_answer_conditionals() {
        let entry = stored(404, &[("etag", "\"v1\"")]);
        assert!(!client_not_modified(
            &request(Method::GET, &[("if-none-match", "*")]),
            &entry
        ));
    }

    #[test]
    fn not_modified_head_repeats_the_required_fields() {
        let h = headers(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("vary", "accept"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("date", "Sat, 29 Oct 1994 19:43:31 GMT"),
        ]);
        let head = not_modified_head(&h, Duration::from_secs(3));
        assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
        let names: Vec<&str> = head.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["cache-control", "date", "etag", "vary", "age"]);
        assert_eq!(head.headers()[AGE], "3");
    }

    #[test]
    fn if_range_needs_the_same_strong_etag_or_date() {
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, HeaderValue::from_static("\"v1\""));
        stored.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
        );
        let matches = |c: &'static str| if_range_matches(&HeaderValue::from_static(c), &stored);
        assert!(matches("\"v1\""));
        assert!(!matches("\"v2\""));
        assert!(!matches("W/\"v1\""));
        assert!(matches("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(!matches("Wed, 02 Jan 2030 00:00:00 GMT"));
    }
}
