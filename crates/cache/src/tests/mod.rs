//! The cache through its public API, as the proxy drives it: each rule end to end, with the
//! clock passed in.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CONTENT_LENGTH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
};
use http::{Method, StatusCode};

use crate::*;

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn date(secs: i64) -> String {
    httpdate::fmt_http_date(
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0.saturating_add_signed(secs)),
    )
}

/// A header map from name/value pairs (test input, so unwrap is fine).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn request_to(method: Method, host: &str, path: &str, pairs: &[(&str, &str)]) -> CacheRequest {
    CacheRequest::new(
        "http",
        host,
        &method,
        &path.parse().unwrap(),
        &headers(pairs),
    )
}

fn get(path: &str, pairs: &[(&str, &str)]) -> CacheRequest {
    request_to(Method::GET, "example.com", path, pairs)
}

fn cache() -> Cache {
    Cache::new(CacheConfig::default())
}

/// The origin answers `request` at `secs` with `status`, `pairs` and `body`; the proxy feeds it
/// through admission and the store handle.
fn respond_with(
    cache: &Cache,
    request: &CacheRequest,
    fill: Fill,
    secs: u64,
    status: u16,
    pairs: &[(&str, &str)],
    body: &[&'static str],
) -> Result<(), NotStorable> {
    let status = StatusCode::from_u16(status).unwrap();
    let times = ResponseTimes::at(at(secs));
    match cache.admit(request, status, &headers(pairs), times, fill) {
        Admission::Store(mut handle) => {
            for chunk in body {
                handle.write(&Bytes::from_static(chunk.as_bytes()));
            }
            handle.finish()
        }
        Admission::Skip(reason) => Err(reason),
    }
}

fn respond(
    cache: &Cache,
    request: &CacheRequest,
    pairs: &[(&str, &str)],
    body: &'static str,
) -> Result<(), NotStorable> {
    respond_with(cache, request, Fill::none(), 0, 200, pairs, &[body])
}

fn body(response: &CachedResponse) -> String {
    response
        .body()
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn hit(lookup: Lookup) -> CachedResponse {
    match lookup {
        Lookup::Hit(response) => response,
        other => panic!("expected a hit, got {other:?}"),
    }
}

fn revalidation(lookup: Lookup) -> Revalidation {
    match lookup {
        Lookup::Revalidate(r) => r,
        other => panic!("expected a revalidation, got {other:?}"),
    }
}

fn is_miss(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Miss(_))
}

const FRESH: (&str, &str) = ("cache-control", "max-age=60");

mod coalescing;
mod serving;
mod storing;
mod validation;

/// Everything the proxy holds across awaits, or moves into a response body or a spawned
/// refresh, must be `Send + Sync`.
#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Cache>();
    check::<CacheRequest>();
    check::<Lookup>();
    check::<Fill>();
    check::<Revalidation>();
    check::<CachedResponse>();
    check::<StoreHandle>();
    check::<Admission>();
}
