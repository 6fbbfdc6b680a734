//! Request validation and header rewriting in both directions.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

use crate::error::ProxyError;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones clients still send. Never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

pub static VIA_11: HeaderValue = HeaderValue::from_static("1.1 gatehouse");
pub static VIA_10: HeaderValue = HeaderValue::from_static("1.0 gatehouse");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Rejects requests whose framing or headers are ambiguous or too large, before anything is
/// forwarded. hyper has already refused what its parser cannot read (obs-fold, NUL, bare CR,
/// space before the colon, differing Content-Length values); this catches what it accepts but a
/// proxy must not pass on (RFC 9112 §6.1, §6.3 and PRODUCT.md's rulings). An accepted request's
/// `Host`, length and whether it has a `Connection` field come back from the same pass, so that
/// the proxy does not look them up again.
pub fn check_request<B>(
    req: &Request<B>,
    max_header_size: u64,
) -> Result<RequestFacts<'_>, ProxyError> {
    let headers = req.headers();
    let uri = req.uri();
    // One pass over the fields gathers what the rules below need (a hashed lookup per rule
    // cost more than the pass).
    let mut size = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let mut underscored_framing = false;
    let (mut te_count, mut te_chunked) = (0usize, false);
    let (mut cl_first, mut cl_count, mut cl_consistent) = (None::<&HeaderValue>, 0usize, true);
    let (mut host, mut host_count) = (None, 0usize);
    let mut has_connection = false;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
        if name == header::TRANSFER_ENCODING {
            te_count += 1;
            te_chunked = value.as_bytes().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONTENT_LENGTH {
            cl_count += 1;
            match cl_first {
                None => cl_first = Some(value),
                Some(first) => cl_consistent &= value == first,
            }
        } else if name == header::HOST {
            host = Some(value);
            host_count += 1;
        } else if name == header::CONNECTION {
            has_connection = true;
        } else {
            // `Transfer_Encoding` and `Content_Length` are not framing headers to us, but some
            // origins (CGI-style ones) read `_` as `-`: refuse them rather than let two readings
            // differ.
            let n = name.as_str();
            underscored_framing |= n.contains('_')
                && (n.eq_ignore_ascii_case("transfer_encoding")
                    || n.eq_ignore_ascii_case("content_length"));
        }
    }
    if size as u64 > max_header_size {
        return Err(ProxyError::HeaderTooLarge);
    }
    if underscored_framing {
        return Err(ProxyError::BadRequest("framing header spelled with '_'"));
    }
    if te_count > 0 {
        if cl_count > 0 {
            return Err(ProxyError::BadRequest(
                "Content-Length with Transfer-Encoding",
            ));
        }
        if te_count > 1 || !te_chunked {
            return Err(ProxyError::BadRequest("unsupported Transfer-Encoding"));
        }
        if req.version() == Version::HTTP_10 {
            return Err(ProxyError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
    }
    let mut content_length = None;
    if let Some(first) = cl_first {
        let valid = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if !valid || !cl_consistent {
            return Err(ProxyError::BadRequest("invalid Content-Length"));
        }
        // Digits only, so this fails only past u64::MAX, which no body limit allows anyway.
        content_length = Some(
            first
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX),
        );
    }
    match host_count {
        1 => {}
        0 if req.version() == Version::HTTP_10 || uri.authority().is_some() => {}
        _ => return Err(ProxyError::BadRequest("missing or repeated Host")),
    }
    Ok(RequestFacts {
        host,
        content_length,
        has_connection,
    })
}

/// What [`check_request`] learnt about an accepted request on its way.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The `Host` field (there is at most one).
    pub host: Option<&'a HeaderValue>,
    /// The declared body length.
    pub content_length: Option<u64>,
    /// Whether a `Connection` field is present (only then can the request ask for an upgrade).
    pub has_connection: bool,
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names present tells which of the seven are there (usually none, or
    // only `Connection`), rather than a hashed removal for each.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection` is HOP_BY_HOP[0]. Its usual `keep-alive` names no other field (a `Keep-Alive`
    // field is removed below anyway): only other tokens need parsing.
    let names_others = || {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            !v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"keep-alive")
        })
    };
    if present & 1 != 0 && names_others() {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !token.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Appends `value` to a comma-separated list header, joining any repeated fields into one.
fn append_to_list(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    let mut joined = Vec::with_capacity(64);
    for existing in headers.get_all(&name) {
        joined.extend_from_slice(existing.as_bytes());
        joined.extend_from_slice(b", ");
    }
    if joined.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
        return;
    }
    joined.extend_from_slice(value);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// Adds `Via` to either direction's headers.
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    let via = if version == Version::HTTP_10 {
        &VIA_10
    } else {
        &VIA_11
    };
    if headers.contains_key(header::VIA) {
        append_to_list(headers, header::VIA, via.as_bytes());
    } else {
        headers.insert(header::VIA, via.clone());
    }
}

/// The client's address as an `X-Forwarded-For` element.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// What the origin learns about the original request.
pub struct Forwarded<'a> {
    /// The client's address, formatted once per connection ([`forwarded_for`]).
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    /// The `Host` an absolute-form target names (every HTTP/2 request's `:authority`), which
    /// replaces the client's `Host` field.
    pub target_host: Option<HeaderValue>,
    pub request_id: HeaderValue,
    /// The client's HTTP version, for `Via`.
    pub version: Version,
}

/// The fields [`AddedFields`] may add, in the order they are written.
static ADDED: [HeaderName; 6] = [
    header::HOST,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
    header::VIA,
];
const HOST: usize = 0;
const FOR: usize = 1;
const VIA: usize = 5;

/// The fields the proxy adds to a request for the origin: `Host` from an absolute-form target,
/// `X-Forwarded-For/-Proto/-Host`, `X-Request-Id`, `Via`. Those the client sent too are replaced
/// in its map (or, for the lists, appended to); the others are kept here and written by the
/// upstream client with the head. Inserting them would hash each and grow the client's map, which
/// hyper sizes to what it parsed: that cost more than all the rest of building the request.
#[derive(Debug)]
pub struct AddedFields {
    values: [Option<HeaderValue>; 6],
    /// The request has a `Host`, in the map or here.
    has_host: bool,
}

impl AddedFields {
    pub fn new(headers: &mut HeaderMap, f: Forwarded<'_>) -> Self {
        // One pass over the client's fields tells which of the six it sent, and its `Host`.
        let mut present = [false; 6];
        let mut client_host = None;
        for (name, value) in headers.iter() {
            if let Some(i) = ADDED.iter().position(|n| n == name) {
                if i == HOST && !present[HOST] {
                    client_host = Some(value);
                }
                present[i] = true;
            }
        }
        let forwarded_host = f.target_host.clone().or_else(|| client_host.cloned());
        let has_host = forwarded_host.is_some();
        let via = if f.version == Version::HTTP_10 {
            &VIA_10
        } else {
            &VIA_11
        };
        // `Host` only when the target names one: it then replaces the client's.
        let mut values = [
            f.target_host,
            Some(f.client_ip.clone()),
            Some(HeaderValue::from_static(f.proto)),
            forwarded_host,
            Some(f.request_id),
            Some(via.clone()),
        ];
        for (i, sent) in present.into_iter().enumerate() {
            if !sent {
                continue;
            }
            let Some(value) = values[i].take() else {
                continue;
            };
            match i {
                FOR | VIA => append_to_list(headers, ADDED[i].clone(), value.as_bytes()),
                _ => {
                    headers.insert(ADDED[i].clone(), value);
                }
            }
        }
        Self { values, has_host }
    }

    /// Whether the request has a `Host` (an HTTP/1.0 client may send none).
    pub fn has_host(&self) -> bool {
        self.has_host
    }

    /// The fields to write besides the map's.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        ADDED
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    }
}

/// The two lower-case hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

/// The client's `X-Request-Id` when it is sane (short, visible ASCII), or a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        let bytes = id.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return id.clone();
        }
    }
    let mut buf = [0u8; 32];
    // A byte at a time, through a table of digit pairs: half the steps of a nibble at a time.
    let bytes = fastrand::u128(..).to_le_bytes();
    for (pair, byte) in buf.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/x");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn ambiguous_framing_is_rejected() {
        let ok = req(&[("host", "a"), ("content-length", "5")]);
        let facts = check_request(&ok, 16384).expect("accepted");
        assert_eq!(facts.host.map(|h| h.as_bytes()), Some(&b"a"[..]));
        assert_eq!(facts.content_length, Some(5));
        assert!(!facts.has_connection);
        let upgrade = req(&[("host", "a"), ("connection", "upgrade")]);
        let facts = check_request(&upgrade, 16384).expect("accepted");
        assert_eq!((facts.content_length, facts.has_connection), (None, true));
        let huge = req(&[("host", "a"), ("content-length", "99999999999999999999999")]);
        let facts = check_request(&huge, 16384).expect("digits only");
        assert_eq!(
            facts.content_length,
            Some(u64::MAX),
            "too large for any body limit"
        );
        let cases = [
            vec![
                ("host", "a"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("host", "a"), ("transfer-encoding", "xchunked")],
            vec![("host", "a"), ("transfer-encoding", "chunked, identity")],
            vec![
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "6"),
            ],
            vec![("host", "a"), ("content-length", "+5")],
            vec![("content-length", "0")],
            vec![("host", "a"), ("host", "b")],
            vec![("host", "a"), ("transfer_encoding", "chunked")],
            vec![("host", "a"), ("content_length", "5")],
        ];
        for headers in cases {
            assert!(
                matches!(
                    check_request(&req(&headers), 16384),
                    Err(ProxyError::BadRequest(_))
                ),
                "{headers:?} must be rejected"
            );
        }
    }

    #[test]
    fn oversized_headers_are_431() {
        let big = "x".repeat(2000);
        let r = req(&[("host", "a"), ("x-big", &big)]);
        assert_eq!(check_request(&r, 1024), Err(ProxyError::HeaderTooLarge));
        assert!(check_request(&r, 4096).is_ok());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // Without `Connection`, each hop-by-hop name found is still removed, repeats included.
        let mut h = HeaderMap::new();
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.append("transfer-encoding", HeaderValue::from_static("gzip"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert("host", HeaderValue::from_static("a"));
        plain.insert("accept", HeaderValue::from_static("*/*"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    fn forwarded(target_host: Option<&'static str>) -> Forwarded<'static> {
        static CLIENT: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
        Forwarded {
            client_ip: CLIENT.get_or_init(|| forwarded_for("127.0.0.1".parse().expect("ip"))),
            proto: "https",
            target_host: target_host.map(HeaderValue::from_static),
            request_id: HeaderValue::from_static("abc"),
            version: Version::HTTP_11,
        }
    }

    fn added(fields: &AddedFields) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("text").to_owned()))
            .collect()
    }

    #[test]
    fn fields_the_client_did_not_send_are_added_beside_its_map() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.com"));
        let before = h.clone();
        let fields = AddedFields::new(&mut h, forwarded(None));
        assert_eq!(h, before, "the client's map is left alone");
        assert!(fields.has_host());
        let expected = [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-request-id", "abc"),
            ("via", "1.1 gatehouse"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(added(&fields), expected);

        // An HTTP/2 request: the target's host is added, first; an HTTP/1.0 one may have none.
        let fields = AddedFields::new(&mut HeaderMap::new(), forwarded(Some("h2.example")));
        assert_eq!(
            added(&fields)[0],
            ("host".to_owned(), "h2.example".to_owned())
        );
        let mut bare = forwarded(None);
        bare.version = Version::HTTP_10;
        let fields = AddedFields::new(&mut HeaderMap::new(), bare);
        assert!(!fields.has_host());
        assert!(added(&fields).contains(&("via".to_owned(), "1.0 gatehouse".to_owned())));
    }

    #[test]
    fn fields_the_client_sent_are_replaced_or_appended_to_in_its_map() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("client.example"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("spoofed"));
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        h.insert("x-request-id", HeaderValue::from_static("client-id"));
        h.insert("via", HeaderValue::from_static("1.1 edge"));
        let fields = AddedFields::new(&mut h, forwarded(Some("target.example")));
        assert_eq!(
            added(&fields),
            [] as [(String, String); 0],
            "nothing is written twice"
        );
        assert_eq!(h["host"], "target.example");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "target.example");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["via"], "1.1 edge, 1.1 gatehouse");
        add_via(&mut h, Version::HTTP_11);
        assert_eq!(h["via"], "1.1 edge, 1.1 gatehouse, 1.1 gatehouse");
    }

    #[test]
    fn request_ids_are_kept_or_generated() {
        let mut h = HeaderMap::new();
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        let digits = generated.as_bytes();
        assert!(digits
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_ne!(generated, request_id(&h));
        assert_eq!(HEX_PAIRS[0x0f], *b"0f");
        assert_eq!(HEX_PAIRS[0xab], *b"ab");
        h.insert("x-request-id", HeaderValue::from_static("client-id-1"));
        assert_eq!(request_id(&h), "client-id-1");
    }
}
