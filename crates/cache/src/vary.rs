//! Secondary keys: the request headers a stored response's `Vary` names (RFC 9111 §4.1).
//!
//! Each stored response remembers the values, in the request that caused it, of the fields its
//! own `Vary` names. A later request may reuse it only if its values for those fields match after
//! normalisation: field lines combined, whitespace around list members and at the ends dropped
//! (§4.1 allows exactly such transformations). A field absent from one request matches only its
//! absence in the other. `Vary: *` never matches, so such responses are not stored at all.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, VARY};

use crate::directives::{list_members, split_list};

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vary {
    /// Varies on the listed fields (empty: not at all).
    Fields(Vec<HeaderName>),
    /// `*`, or a member that is not a field name: it can never be matched.
    Any,
}

impl Vary {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut fields: Vec<HeaderName> = Vec::new();
        for member in list_members(headers, &VARY) {
            if member == b"*" {
                return Vary::Any;
            }
            match HeaderName::from_bytes(&member.to_ascii_lowercase()) {
                Ok(name) if !fields.contains(&name) => fields.push(name),
                Ok(_) => {}
                Err(_) => return Vary::Any,
            }
        }
        Vary::Fields(fields)
    }
}

/// The normalised request values of the fields a stored response varies on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VaryKey {
    values: Vec<(HeaderName, Option<Bytes>)>,
}

impl VaryKey {
    /// Captures `request`'s values for `fields`.
    pub(crate) fn capture(fields: &[HeaderName], request: &HeaderMap) -> Self {
        Self {
            values: fields
                .iter()
                .map(|name| (name.clone(), normalized(request, name)))
                .collect(),
        }
    }

    /// Whether `request` selects the response this key was captured for.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.values
            .iter()
            .all(|(name, value)| normalized(request, name) == *value)
    }

    /// Bytes this key adds to an entry's size.
    pub(crate) fn weight(&self) -> usize {
        self.values
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// A field's value in `request`, its lines combined and its list members trimmed and joined with
/// `,`; `None` when absent. Splitting respects quoted strings, so a comma inside quotes stays.
fn normalized(request: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = Vec::new();
    for line in lines {
        for member in split_list(line.as_bytes()) {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(member);
        }
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tests::headers;

    fn fields(vary: &str) -> Vec<HeaderName> {
        match Vary::parse(&headers(&[("vary", vary)])) {
            Vary::Fields(f) => f,
            Vary::Any => panic!("unexpected *"),
        }
    }

    #[test]
    fn parses_field_names_case_insensitively_without_duplicates() {
        assert_eq!(
            fields("Accept-Encoding, accept-encoding, User-Agent"),
            vec!["accept-encoding", "user-agent"]
        );
        assert_eq!(Vary::parse(&HeaderMap::new()), Vary::Fields(vec![]));
    }

    #[test]
    fn star_or_invalid_member_never_matches() {
        assert_eq!(Vary::parse(&headers(&[("vary", "accept, *")])), Vary::Any);
        assert_eq!(Vary::parse(&headers(&[("vary", "bad name")])), Vary::Any);
    }

    #[test]
    fn values_match_after_whitespace_and_line_normalisation() {
        let names = fields("accept-encoding");
        let stored = VaryKey::capture(&names, &headers(&[("accept-encoding", "gzip, br")]));
        assert!(stored.matches(&headers(&[("accept-encoding", " gzip,br ")])));
        assert!(stored.matches(&headers(&[
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br")
        ])));
        assert!(!stored.matches(&headers(&[("accept-encoding", "br, gzip")])));
        assert!(!stored.matches(&headers(&[("accept-encoding", "gzip")])));
    }

    #[test]
    fn absent_matches_only_absent() {
        let names = fields("accept-language");
        let absent = VaryKey::capture(&names, &HeaderMap::new());
        assert!(absent.matches(&headers(&[("accept", "x")])));
        assert!(!absent.matches(&headers(&[("accept-language", "")])));
        assert!(!absent.matches(&headers(&[("accept-language", "en")])));
    }

    #[test]
    fn no_vary_matches_everything() {
        let key = VaryKey::capture(&[], &headers(&[("accept", "x")]));
        assert!(key.matches(&HeaderMap::new()));
    }
}
