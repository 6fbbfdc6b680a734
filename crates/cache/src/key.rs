//! The primary cache key: which URL a stored response answers (RFC 9111 §2, §4).
//!
//! The key is the target URI, `scheme://host[:port]/path?query`: the host lower-cased (hosts are
//! case-insensitive, RFC 3986 §3.2.2) with the scheme's default port and a trailing root dot
//! dropped, the path and query exactly as the client sent them (never lower-cased or decoded:
//! `/A` and `/a` are different resources). The method is part of the key implicitly: only GET
//! responses (and HEAD responses, which serve HEAD only) are stored, and HEAD requests look up
//! the GET entry, so every stored response is keyed under "GET". The request headers named by
//! `Vary` form the secondary key of each variant stored under one primary key (see `vary`).

use std::fmt;

use http::Uri;

/// Identifies a URL in the cache. Built for every cacheable request, hits included, so it is one
/// allocation; cloning copies its text (a miss or an insert does, a hit does not).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    /// Length of `scheme://authority`.
    origin_len: usize,
}

impl CacheKey {
    /// The key for `path_and_query` on `host` (a `Host` field value or an authority, with or
    /// without port) over `scheme` (`http` or `https`).
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Self {
        let path = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        // Built in one buffer: a key is made for every cacheable request, hits included.
        let mut text = String::with_capacity(scheme.len() + 3 + host.len() + path.len());
        text.push_str(scheme);
        text.make_ascii_lowercase();
        text.push_str("://");
        push_normalized_authority(&mut text, host);
        let origin_len = text.len();
        text.push_str(path);
        Self { text, origin_len }
    }

    /// The key for a request: `host` is what the client asked for (its `Host` field or the
    /// authority of an absolute-form target), `uri` its request target.
    pub fn for_request(scheme: &str, host: &str, uri: &Uri) -> Self {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Self::new(scheme, host, path)
    }

    /// Parses an absolute URL (`https://example.com/a?b`). `None` when it has no scheme or host.
    pub fn from_url(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?;
        let host = uri.authority()?.as_str();
        Some(Self::for_request(scheme, host, &uri))
    }

    /// `scheme://host[:port]`: what RFC 9110 §4.3.1 calls the origin.
    pub fn origin(&self) -> &str {
        &self.text[..self.origin_len]
    }

    /// The path and query, as sent.
    pub fn path_and_query(&self) -> &str {
        &self.text[self.origin_len..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Bytes this key adds to an entry's size.
    pub(crate) fn len(&self) -> usize {
        self.text.len()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Lower-cases the host, drops a trailing root dot and the scheme's default port, so that
/// spellings of one origin share entries (RFC 9110 §4.2.3 normalisation).
/// Appends `authority` normalised (lower case, no trailing dot, no userinfo, no default port for
/// the scheme already in `text`).
fn push_normalized_authority(text: &mut String, authority: &str) {
    // Userinfo is deprecated and never part of the origin.
    let authority = rsplit_once_byte(authority, b'@').map_or(authority, |(_, a)| a);
    let (host, port) = if authority.starts_with('[') {
        match authority.split_once(']') {
            Some((h, rest)) => (&authority[..h.len() + 1], rest.strip_prefix(':')),
            None => (authority, None),
        }
    } else {
        match rsplit_once_byte(authority, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let default_port = if text.starts_with("https:") {
        "443"
    } else if text.starts_with("http:") {
        "80"
    } else {
        ""
    };
    let start = text.len();
    text.push_str(host);
    if let Some(pushed) = text.get_mut(start..) {
        pushed.make_ascii_lowercase();
    }
    if let Some(p) = port.filter(|p| !p.is_empty() && *p != default_port) {
        text.push(':');
        text.push_str(p);
    }
}

/// `str::rsplit_once` for an ASCII byte. Authorities are a few bytes long: a plain loop beats
/// `memrchr`, whose set-up costs more than such a string, and a key is made for every hit.
fn rsplit_once_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let at = s.bytes().rposition(|b| b == byte)?;
    // An ASCII byte is a character boundary on both sides.
    Some((s.get(..at)?, s.get(at + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lower_cased_and_path_and_query_kept_exactly() {
        let key = CacheKey::new("HTTP", "Example.COM", "/A/b?Q=X&a=%2F");
        assert_eq!(key.as_str(), "http://example.com/A/b?Q=X&a=%2F");
        assert_ne!(key, CacheKey::new("http", "example.com", "/a/b?Q=X&a=%2F"));
        assert_ne!(key, CacheKey::new("http", "example.com", "/A/b?q=x&a=%2F"));
    }

    #[test]
    fn default_ports_and_trailing_dots_are_one_origin() {
        let plain = CacheKey::new("http", "example.com", "/");
        assert_eq!(CacheKey::new("http", "example.com:80", "/"), plain);
        assert_eq!(CacheKey::new("http", "example.com.", "/"), plain);
        assert_ne!(CacheKey::new("http", "example.com:8080", "/"), plain);
        assert_eq!(
            CacheKey::new("https", "example.com:443", "/").origin(),
            "https://example.com"
        );
        assert_eq!(
            CacheKey::new("http", "[::1]:80", "/x").as_str(),
            "http://[::1]/x"
        );
        assert_eq!(
            CacheKey::new("http", "[::1]:81", "/x").as_str(),
            "http://[::1]:81/x"
        );
    }

    #[test]
    fn scheme_separates_entries() {
        assert_ne!(
            CacheKey::new("http", "example.com", "/"),
            CacheKey::new("https", "example.com", "/")
        );
    }

    #[test]
    fn request_targets_in_origin_and_absolute_form_agree() {
        let origin_form: Uri = "/p?q".parse().unwrap();
        let absolute: Uri = "http://example.com/p?q".parse().unwrap();
        assert_eq!(
            CacheKey::for_request("http", "example.com", &origin_form),
            CacheKey::for_request("http", "example.com", &absolute)
        );
    }

    #[test]
    fn parses_absolute_urls() {
        let key = CacheKey::from_url("https://Example.com:443/a?b").unwrap();
        assert_eq!(key.as_str(), "https://example.com/a?b");
        assert_eq!(key.path_and_query(), "/a?b");
        assert!(CacheKey::from_url("/relative").is_none());
    }
}
