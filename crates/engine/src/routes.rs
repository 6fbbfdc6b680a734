//! Routing: which upstream serves a request, by Host and path prefix.
//!
//! Routes are tried in configuration order and the first match wins (as in HAProxy and Envoy),
//! so operators control precedence by ordering. The path is compared case-sensitively and as a
//! plain prefix.

use std::sync::Arc;

use crate::upstream::Upstream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-cased exact host name.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches exactly one more label.
    Wildcard(String),
}

impl HostMatch {
    pub fn parse(pattern: Option<&str>) -> Self {
        match pattern {
            None | Some("*") => HostMatch::Any,
            Some(p) => match p.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(p.to_ascii_lowercase()),
            },
        }
    }

    /// `host` must already be lower-cased and stripped of its port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => name == host,
            HostMatch::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub host: HostMatch,
    pub path_prefix: Option<String>,
    pub upstream: Arc<Upstream>,
    /// Responses of this route go through the cache.
    pub cache: bool,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The route for a request to `host` (lower case, no port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.host.matches(host)
                && r.path_prefix
                    .as_deref()
                    .is_none_or(|prefix| path.starts_with(prefix))
        })
    }
}

/// The host part of a `Host` header or authority, lower-cased, without port or IPv6 brackets'
/// port suffix. Borrowed when it is already lower case, which is the common case.
pub fn normalize_host(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        // A plain loop: `rsplit_once` calls `memrchr`, whose set-up costs more than a host.
        authority
            .bytes()
            .rposition(|b| b == b':')
            .and_then(|at| authority.get(..at))
            .unwrap_or(authority)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact = HostMatch::parse(Some("API.example.com"));
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("www.example.com"));
        let wild = HostMatch::parse(Some("*.example.com"));
        assert!(wild.matches("a.example.com"));
        assert!(!wild.matches("a.b.example.com"), "one label only");
        assert!(!wild.matches("example.com"));
        assert!(HostMatch::parse(None).matches("anything"));
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
    }
}
