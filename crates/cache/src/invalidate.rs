//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! A non-error response (2xx, 3xx) to a method that is not known to be safe invalidates the
//! stored responses for the target URI, and for the URIs in `Location` and `Content-Location`
//! when they share its origin; a different origin is never touched, so that one site cannot
//! flush another's entries.

use http::header::{HeaderMap, CONTENT_LOCATION, LOCATION};
use http::{Method, StatusCode};

use crate::key::CacheKey;
use crate::request::CacheRequest;

/// Safe methods (RFC 9110 §9.2.1). Anything else, including unknown methods, is unsafe.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The URLs whose stored responses this exchange invalidates.
pub(crate) fn targets(
    request: &CacheRequest,
    status: StatusCode,
    headers: &HeaderMap,
) -> Vec<CacheKey> {
    if is_safe(request.method()) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let base = request.key();
    let mut keys = vec![base.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(key) = resolve(base, reference.trim()) {
            if key.origin() == base.origin() && !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Resolves a URI reference against the request's URL (RFC 3986 §5.2).
fn resolve(base: &CacheKey, reference: &str) -> Option<CacheKey> {
    let reference = reference.split_once('#').map_or(reference, |(r, _)| r);
    let (scheme, host) = base.origin().split_once("://")?;
    if has_scheme(reference) {
        return CacheKey::from_url(reference);
    }
    if reference.starts_with("//") {
        return CacheKey::from_url(&format!("{scheme}:{reference}"));
    }
    let base_path = base.path_and_query();
    let base_path = base_path.split_once('?').map_or(base_path, |(p, _)| p);
    let target = if reference.is_empty() {
        base.path_and_query().to_owned()
    } else if reference.starts_with('?') {
        format!("{base_path}{reference}")
    } else {
        let (path, query) = match reference.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (reference, None),
        };
        let merged = if path.starts_with('/') {
            path.to_owned()
        } else {
            let directory = base_path.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{directory}/{path}")
        };
        let path = remove_dot_segments(&merged);
        match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        }
    };
    Some(CacheKey::new(scheme, host, &target))
}

/// `scheme ":"` at the start (RFC 3986 §3.1).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        // A trailing "." or ".." leaves a directory: "/a/b/.." is "/a/".
        if last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(method: Method, path: &str) -> CacheRequest {
        let uri = path.parse().unwrap();
        CacheRequest::new("https", "example.com", &method, &uri, &HeaderMap::new())
    }

    fn keys(method: Method, status: u16, pairs: &[(&'static str, &'static str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        targets(
            &request(method, "/a/b?x=1"),
            StatusCode::from_u16(status).unwrap(),
            &h,
        )
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
    }

    #[test]
    fn unsafe_methods_with_non_error_responses_invalidate_the_target() {
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(keys(m, 200, &[]), vec!["https://example.com/a/b?x=1"]);
        }
        assert_eq!(
            keys(Method::from_bytes(b"PURGE").unwrap(), 302, &[]).len(),
            1
        );
    }

    #[test]
    fn safe_methods_and_error_responses_invalidate_nothing() {
        assert!(keys(Method::GET, 200, &[]).is_empty());
        assert!(keys(Method::POST, 404, &[]).is_empty());
        assert!(keys(Method::POST, 500, &[]).is_empty());
    }

    #[test]
    fn same_origin_location_and_content_location_are_invalidated() {
        let k = keys(
            Method::POST,
            201,
            &[
                ("location", "/items/7"),
                ("content-location", "https://EXAMPLE.com:443/c"),
            ],
        );
        assert_eq!(
            k,
            vec![
                "https://example.com/a/b?x=1",
                "https://example.com/items/7",
                "https://example.com/c"
            ]
        );
    }

    #[test]
    fn other_origins_are_never_invalidated() {
        let k = keys(
            Method::POST,
            200,
            &[
                ("location", "https://other.example/x"),
                ("content-location", "http://example.com/c"),
            ],
        );
        assert_eq!(k, vec!["https://example.com/a/b?x=1"]);
    }

    #[test]
    fn relative_references_resolve_against_the_target() {
        let base = CacheKey::new("https", "example.com", "/a/b?x=1");
        let r = |s| resolve(&base, s).unwrap().as_str().to_owned();
        assert_eq!(r("c"), "https://example.com/a/c");
        assert_eq!(r("../c?y"), "https://example.com/c?y");
        assert_eq!(r("./"), "https://example.com/a/");
        assert_eq!(r("?z"), "https://example.com/a/b?z");
        assert_eq!(r(""), "https://example.com/a/b?x=1");
        assert_eq!(r("//example.com/d#frag"), "https://example.com/d");
        assert_eq!(r("/e/./f/../g"), "https://example.com/e/g");
    }
}
