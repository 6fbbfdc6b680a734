//! `Cache-Control` (RFC 9111 §5.2) and `Pragma` (§5.4), parsed once per message.
//!
//! Parsing is lenient in what it accepts (token or quoted arguments, any case, directives spread
//! over several field lines) and conservative in what it concludes: a freshness argument that is
//! malformed, or given twice with different values, makes a response stale rather than fresher
//! (§4.2.1 allows either; stale can only cost a revalidation, fresher can serve wrong content).

use http::header::{HeaderMap, HeaderName, CACHE_CONTROL, PRAGMA};

/// The value a delta-seconds argument saturates at (RFC 9111 §1.2.2).
pub(crate) const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The members of one list-based field value (RFC 9110 §5.6.1): split at commas outside quoted
/// strings, optional whitespace trimmed, empty members dropped.
pub(crate) fn split_list(value: &[u8]) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                push_member(&mut members, &value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push_member(&mut members, &value[start..]);
    members
}

fn push_member<'a>(members: &mut Vec<&'a [u8]>, member: &'a [u8]) {
    let member = member.trim_ascii();
    if !member.is_empty() {
        members.push(member);
    }
}

/// The members of every line of a list-based field, in order.
pub(crate) fn list_members<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| split_list(v.as_bytes()))
}

/// A quoted-string's content with its escapes resolved, or the token as it is.
pub(crate) fn unquote(value: &[u8]) -> String {
    match value {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if !escaped && b == b'\\' {
                    escaped = true;
                } else {
                    out.push(b);
                    escaped = false;
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// One directive: its name in lower case (directive names are case-insensitive, §5.2) and its
/// argument, unquoted (both token and quoted-string forms are accepted).
#[derive(Debug, PartialEq, Eq)]
struct Directive {
    name: String,
    arg: Option<String>,
}

fn directives<'a>(
    headers: &'a HeaderMap,
    field: &HeaderName,
) -> impl Iterator<Item = Directive> + 'a {
    list_members(headers, field).map(|member| {
        let (name, arg) = match member.iter().position(|&b| b == b'=') {
            Some(i) => (&member[..i], Some(member[i + 1..].trim_ascii())),
            None => (member, None),
        };
        Directive {
            name: String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase(),
            arg: arg.map(unquote),
        }
    })
}

/// A delta-seconds argument (§1.2.2): `None` when missing or malformed, saturating at 2^31.
fn delta_seconds(arg: Option<&str>) -> Option<u64> {
    let arg = arg?;
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        arg.parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |v| v.min(DELTA_SECONDS_MAX)),
    )
}

/// Header field names listed in a qualified `private` or `no-cache` (§5.2.2.4, §5.2.2.7).
fn field_names(arg: &str) -> Vec<HeaderName> {
    split_list(arg.as_bytes())
        .into_iter()
        .filter_map(|name| HeaderName::from_bytes(&name.to_ascii_lowercase()).ok())
        .collect()
}

/// A freshness argument that is malformed, or repeated with another value, means "stale".
fn merge_lifetime(slot: &mut Option<u64>, value: Option<u64>) {
    let value = value.unwrap_or(0);
    *slot = Some(match *slot {
        Some(previous) if previous != value => 0,
        _ => value,
    });
}

/// A stale-serving window that is malformed is ignored; repeated, the narrowest one holds.
fn merge_window(slot: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *slot = Some(slot.map_or(value, |previous| previous.min(value)));
    }
}

/// The response directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub no_store: bool,
    /// Qualified `no-cache="field"` is treated as unqualified: always revalidate. §5.2.2.4 notes
    /// this is how caches commonly handle it, and it is the conservative reading.
    pub no_cache: bool,
    /// Unqualified `private`: a shared cache must not store the response (§5.2.2.7).
    pub private: bool,
    /// Qualified `private="field, …"`: those fields must not be stored; the rest may be.
    pub private_fields: Vec<HeaderName>,
    pub public: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl ResponseDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for Directive { name, arg } in directives(headers, &CACHE_CONTROL) {
            let arg = arg.as_deref();
            match name.as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => match arg.map(field_names) {
                    Some(fields) if !fields.is_empty() => d.private_fields.extend(fields),
                    _ => d.private = true,
                },
                "public" => d.public = true,
                "max-age" => merge_lifetime(&mut d.max_age, delta_seconds(arg)),
                "s-maxage" => merge_lifetime(&mut d.s_maxage, delta_seconds(arg)),
                "must-revalidate" => d.must_revalidate = true,
                "proxy-revalidate" => d.proxy_revalidate = true,
                "must-understand" => d.must_understand = true,
                "stale-while-revalidate" => {
                    merge_window(&mut d.stale_while_revalidate, delta_seconds(arg));
                }
                "stale-if-error" => merge_window(&mut d.stale_if_error, delta_seconds(arg)),
                _ => {}
            }
        }
        d
    }

    /// Whether a stale copy may never be served without validation: `must-revalidate`
    /// (§5.2.2.2), `proxy-revalidate` (§5.2.2.8), and `s-maxage`, which carries the semantics of
    /// `proxy-revalidate` for a shared cache (§5.2.2.10).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// The request directives a cache acts on (RFC 9111 §5.2.1, §5.4; RFC 5861 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`, or `Pragma: no-cache` in a request without `Cache-Control`.
    pub no_cache: bool,
    pub no_store: bool,
    /// Malformed means 0: the client gets a validated response, never an older one.
    pub max_age: Option<u64>,
    /// `Some(u64::MAX)` for `max-stale` without an argument: any staleness is accepted.
    pub max_stale: Option<u64>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u64>,
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for Directive { name, arg } in directives(headers, &CACHE_CONTROL) {
            let arg = arg.as_deref();
            match name.as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "max-age" => {
                    let value = delta_seconds(arg).unwrap_or(0);
                    d.max_age = Some(d.max_age.map_or(value, |p| p.min(value)));
                }
                "max-stale" => {
                    // Without an argument any staleness is fine; a malformed one is ignored
                    // (the client then gets what it would have got without it).
                    let value = match arg {
                        None => Some(u64::MAX),
                        Some(a) => delta_seconds(Some(a)),
                    };
                    merge_window(&mut d.max_stale, value);
                }
                "min-fresh" => {
                    if let Some(value) = delta_seconds(arg) {
                        d.min_fresh = Some(d.min_fresh.map_or(value, |p| p.max(value)));
                    }
                }
                "only-if-cached" => d.only_if_cached = true,
                "stale-if-error" => merge_window(&mut d.stale_if_error, delta_seconds(arg)),
                _ => {}
            }
        }
        // §5.4: without Cache-Control, `Pragma: no-cache` MUST count as `no-cache`.
        if !headers.contains_key(CACHE_CONTROL)
            && directives(headers, &PRAGMA).any(|d| d.name == "no-cache")
        {
            d.no_cache = true;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tests::headers;

    fn response(cc: &str) -> ResponseDirectives {
        ResponseDirectives::parse(&headers(&[("cache-control", cc)]))
    }

    fn request(pairs: &[(&str, &str)]) -> RequestDirectives {
        RequestDirectives::parse(&headers(pairs))
    }

    #[test]
    fn list_splitting_respects_quotes_and_whitespace() {
        let members = split_list(br#" a , b="x, y" ,, c="q\"," "#);
        assert_eq!(members, vec![&b"a"[..], br#"b="x, y""#, br#"c="q\",""#]);
    }

    #[test]
    fn directive_names_are_case_insensitive_and_args_may_be_quoted() {
        let d = response(r#"Public, MAX-AGE="60", S-MaxAge=30"#);
        assert!(d.public);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
    }

    #[test]
    fn directives_span_field_lines() {
        let h = headers(&[("cache-control", "public"), ("cache-control", "max-age=5")]);
        let d = ResponseDirectives::parse(&h);
        assert!(d.public);
        assert_eq!(d.max_age, Some(5));
    }

    #[test]
    fn malformed_or_conflicting_max_age_means_stale() {
        assert_eq!(response("max-age=abc").max_age, Some(0));
        assert_eq!(response("max-age").max_age, Some(0));
        assert_eq!(response("max-age=10, max-age=20").max_age, Some(0));
        assert_eq!(response("max-age=10, max-age=10").max_age, Some(10));
    }

    #[test]
    fn delta_seconds_saturate_at_2_pow_31() {
        assert_eq!(
            response("max-age=99999999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(
            response("max-age=4294967296").max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn qualified_private_lists_fields_and_unqualified_forbids_storing() {
        let d = response(r#"private="Set-Cookie, X-User""#);
        assert!(!d.private);
        assert_eq!(d.private_fields, vec!["set-cookie", "x-user"]);
        assert!(response("private").private);
        assert!(
            response(r#"private="""#).private,
            "an empty list is unqualified"
        );
    }

    #[test]
    fn qualified_no_cache_is_no_cache() {
        assert!(response(r#"no-cache="set-cookie""#).no_cache);
    }

    #[test]
    fn s_maxage_and_revalidate_directives_forbid_stale() {
        assert!(response("s-maxage=5").forbids_stale());
        assert!(response("must-revalidate").forbids_stale());
        assert!(response("proxy-revalidate").forbids_stale());
        assert!(!response("max-age=5").forbids_stale());
    }

    #[test]
    fn stale_windows_ignore_malformed_and_keep_narrowest() {
        let d = response("stale-while-revalidate=30, stale-if-error=x, stale-while-revalidate=10");
        assert_eq!(d.stale_while_revalidate, Some(10));
        assert_eq!(d.stale_if_error, None);
    }

    #[test]
    fn request_directives() {
        let d = request(&[(
            "cache-control",
            "no-cache, no-store, max-age=5, max-stale, min-fresh=3, only-if-cached, stale-if-error=9",
        )]);
        assert!(d.no_cache && d.no_store && d.only_if_cached);
        assert_eq!(d.max_age, Some(5));
        assert_eq!(d.max_stale, Some(u64::MAX));
        assert_eq!(d.min_fresh, Some(3));
        assert_eq!(d.stale_if_error, Some(9));
        assert_eq!(
            request(&[("cache-control", "max-stale=7")]).max_stale,
            Some(7)
        );
        assert_eq!(request(&[("cache-control", "max-age=x")]).max_age, Some(0));
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        assert!(request(&[("pragma", "no-cache")]).no_cache);
        assert!(!request(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache);
        assert!(!request(&[("pragma", "x-other")]).no_cache);
    }
}
