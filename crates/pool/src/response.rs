//! Reading a response head from an origin (httparse does the parsing) and deciding how its body
//! is framed (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

/// Fields in a response head at most (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Trailer fields at most (trailers are rare, and few).
const MAX_TRAILERS: usize = 32;
/// A response head larger than this is refused (nginx's `proxy_buffer_size` is 4–8 KiB).
pub(crate) const MAX_HEAD_SIZE: usize = 64 * 1024;

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: `HEAD`, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the origin closes the connection.
    UntilClose,
}

/// A parsed response head.
pub(crate) struct Head {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    /// The connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Where a field's name and value lie in a head: `[name start, name end, value start, value
/// end]`.
type Span = [usize; 4];

/// Field names remembered from a connection's earlier responses, by position, at most this
/// many, and their bytes as sent, at most this much.
const KNOWN_NAMES: usize = 32;
const KNOWN_BYTES: usize = 2048;
/// Longer names are parsed every time rather than remembered.
const KNOWN_NAME_LEN: usize = 64;

/// What parsing a response head needs besides the bytes, kept by the connection so that no
/// response pays to set it up.
#[derive(Default)]
pub(crate) struct HeadScratch {
    spans: Vec<Span>,
    names: KnownNames,
}

/// The field names of a connection's earlier responses, by position. An origin sends the same
/// fields, in the same order and spelling, on every response: a name whose bytes are those last
/// seen at its position is that name again, found by one `memcmp` instead of
/// `HeaderName::from_bytes` (which lower-cases it, looks it up among the standard names, and
/// allocates for any other name).
#[derive(Default)]
struct KnownNames {
    /// The names' bytes as the origin sent them, one after another.
    bytes: Vec<u8>,
    /// Per position: where its bytes lie in `bytes`, and the name.
    names: Vec<(usize, usize, HeaderName)>,
}

impl KnownNames {
    /// The name of the field at `index` whose bytes are `raw`.
    fn get(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, &'static str> {
        if let Some((start, end, name)) = self.names.get(index) {
            if self.bytes.get(*start..*end) == Some(raw) {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| "bad field name")?;
        if raw.len() > KNOWN_NAME_LEN {
            return Ok(name);
        }
        if self.bytes.len() + raw.len() > KNOWN_BYTES {
            // Origins whose names keep changing: start again rather than grow.
            self.bytes.clear();
            self.names.clear();
        }
        let span = (self.bytes.len(), self.bytes.len() + raw.len(), name.clone());
        if let Some(known) = self.names.get_mut(index) {
            self.bytes.extend_from_slice(raw);
            *known = span;
        } else if index == self.names.len() && index < KNOWN_NAMES {
            self.bytes.extend_from_slice(raw);
            self.names.push(span);
        }
        Ok(name)
    }
}

/// Parses the response head at the start of `buf` and splits it off. `Ok(None)`: not all of it
/// is there yet. The field values share the head's bytes; nothing is copied but unknown names.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    scratch: &mut HeadScratch,
    head_request: bool,
) -> Result<Option<Head>, &'static str> {
    let HeadScratch { spans, names } = scratch;
    // Uninitialised: httparse fills what it uses. (Zeroing 100 fields cost more than parsing.)
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_SIZE => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_SIZE => return Ok(None),
        Ok(_) => return Err("head too large"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("unparsable head"),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("bad status code")?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let reason = response
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    // Where each field's name and value lie in the head: the head is frozen (shared) only once
    // httparse's borrow of it ends, and the values are then slices of it.
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(response.headers.iter().map(|field| {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        [
            name,
            name + field.name.len(),
            value,
            value + field.value.len(),
        ]
    }));
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut lengths = Lengths::default();
    for (i, &[n0, n1, v0, v1]) in spans.iter().enumerate() {
        let name = names.get(i, &head[n0..n1])?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(v0..v1)).map_err(|_| "bad field value")?;
        if !lengths.note(&name, &value)? {
            headers.append(name, value);
        }
    }
    if lengths.chunked && lengths.content_length.is_some() {
        // The length is wrong or a smuggling attempt; a proxy must not pass it on (RFC 9112 §6.3).
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    if let Some(reason) = reason {
        parts.extensions.insert(reason);
    }
    let framing = lengths.framing(status, head_request);
    let keep_alive = lengths.keep_alive(version) && framing != Framing::UntilClose;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
    }))
}

/// What the framing fields say, gathered as the fields are read.
#[derive(Default)]
struct Lengths {
    content_length: Option<u64>,
    /// The message is chunked (the only transfer coding accepted).
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Lengths {
    /// Notes what a field says about framing and persistence. `Ok(true)`: the field is used up
    /// here and is not put in the response's map. The body is decoded (`Transfer-Encoding`), and
    /// `Keep-Alive` and a `Connection` of only `keep-alive` or `close` concern the hop to the
    /// origin, which a proxy must not pass on (RFC 9110 §7.6.1): the proxy's hop-by-hop pass then
    /// has nothing to remove (an insert and a removal saved on most responses). A `Connection`
    /// naming other fields is kept for that pass, which removes those too.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<bool, &'static str> {
        if name == header::CONTENT_LENGTH {
            // `Content-Length: 5, 5` or repeated fields are one length; different ones are an
            // attempt at smuggling or a broken origin.
            for item in value.as_bytes().split(|&b| b == b',') {
                let len = parse_length(item.trim_ascii()).ok_or("bad Content-Length")?;
                if self.content_length.is_some_and(|known| known != len) {
                    return Err("conflicting Content-Length");
                }
                self.content_length = Some(len);
            }
        } else if name == header::TRANSFER_ENCODING {
            // Another coding (`gzip, chunked`, `gzip`) would reach the client still encoded
            // and no longer declared: refused, as nginx does ("unknown Transfer-Encoding").
            if !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
            {
                return Err("unsupported transfer coding");
            }
            self.chunked = true;
            return Ok(true);
        } else if name == header::CONNECTION {
            let mut names_others = false;
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                names_others |= !close && !keep_alive;
            }
            return Ok(!names_others);
        } else if name.as_str() == "keep-alive" {
            return Ok(true);
        }
        Ok(false)
    }

    fn framing(&self, status: StatusCode, head_request: bool) -> Framing {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Empty;
        }
        match (self.chunked, self.content_length) {
            (true, _) => Framing::Chunked,
            (false, Some(len)) => Framing::Length(len),
            (false, None) => Framing::UntilClose,
        }
    }

    fn keep_alive(&self, version: Version) -> bool {
        // Both framings at once: the length is ignored, and the connection must not carry on
        // (RFC 9112 §6.3, item 3). Nor may it after a transfer coding in an HTTP/1.0 message
        // (§6.1).
        let ambiguous =
            self.chunked && (self.content_length.is_some() || version == Version::HTTP_10);
        let persistent = match version {
            Version::HTTP_10 => self.keep_alive,
            _ => true,
        };
        persistent && !self.close && !ambiguous
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

/// The bytes of a trailer section (after the last chunk) as a map. `Ok(None)`: incomplete.
pub(crate) fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let (len, count) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, parsed))) => (len, parsed.len()),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_SIZE => {
            return Err("trailers too large")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("unparsable trailers"),
    };
    let mut trailers = HeaderMap::with_capacity(count);
    for field in &fields[..count] {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "bad trailer name")?;
        if is_forbidden_trailer(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value).map_err(|_| "bad trailer value")?;
        trailers.append(name, value);
    }
    let _ = buf.split_to(len);
    Ok(Some(trailers))
}

/// Fields that frame a message, route it or manage the connection, which a trailer section must
/// not carry (RFC 9110 §6.5.1) and HTTP/2 refuses: dropped from trailers in both directions.
pub(crate) fn is_forbidden_trailer(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::HOST,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Whether `buf` starts with a complete final response head, after any interim ones (or with
/// something that is no head at all): asked while a request body is still going out, to stop
/// sending when the origin has already answered. Nothing is consumed.
pub(crate) fn has_final_head(buf: &[u8]) -> bool {
    let mut rest = buf;
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            rest,
            &mut fields,
        );
        match parsed {
            Ok(httparse::Status::Complete(len)) => match response.code {
                Some(100 | 102..=199) => rest = &rest[len..],
                _ => return true,
            },
            Ok(httparse::Status::Partial) => return false,
            Err(_) => return true,
        }
    }
}

/// The longest chunk-size line (digits and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Parses a chunk-size line (RFC 9112 §7.1): hex digits, optional extensions, CRLF. Returns the
/// line's length and the size; `Ok(None)`: incomplete. Stricter than httparse's parser, which
/// reads an empty line as size 0 (the last chunk) and lets anything through in extensions: a
/// body must not end early on a malformed line, with its rest taken for the next response.
pub(crate) fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 {
        return Err("chunk size too large");
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err("chunk size missing");
    }
    let size = buf[..digits].iter().fold(0u64, |size, &d| {
        let value = char::from(d).to_digit(16).unwrap_or(0);
        size << 4 | u64::from(value)
    });
    // Whitespace, then `;` and the extensions (visible text, whitespace, obs-text), then CRLF.
    let mut in_extensions = false;
    for (i, &b) in buf.iter().enumerate().skip(digits) {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err("bad chunk-size line"),
                };
            }
            b';' => in_extensions = true,
            b' ' | b'\t' => {}
            0x21..=0x7e | 0x80..=0xff if in_extensions => {}
            _ => return Err("bad chunk-size line"),
        }
        if i >= MAX_CHUNK_LINE {
            return Err("chunk-size line too long");
        }
    }
    Ok(None)
}

/// Splits `n` bytes off the front of `buf` without copying.
pub(crate) fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    buf.split_to(n).freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<Head>, &'static str> {
        parse_head(
            &mut BytesMut::from(text),
            &mut HeadScratch::default(),
            head_request,
        )
    }

    fn framing(text: &str) -> (Framing, bool) {
        let head = parse(text, false).expect("valid").expect("complete");
        (head.framing, head.keep_alive)
    }

    #[test]
    fn names_remembered_from_earlier_heads_are_matched_by_position_and_exact_bytes() {
        let mut scratch = HeadScratch::default();
        let mut names = |text: &str| {
            let head = parse_head(&mut BytesMut::from(text), &mut scratch, false)
                .expect("valid")
                .expect("complete");
            let names: Vec<String> = head.parts.headers.keys().map(|n| n.to_string()).collect();
            names
        };
        let first = names("HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-Custom: 1\r\n\r\n");
        assert_eq!(first, ["content-type", "x-custom"]);
        // The same names in another case, another name where x-custom was, one more at the end.
        let second =
            names("HTTP/1.1 200 OK\r\nCONTENT-TYPE: a\r\nX-Other: 2\r\nx-custom: 1\r\n\r\n");
        assert_eq!(second, ["content-type", "x-other", "x-custom"]);
        let third = names("HTTP/1.1 200 OK\r\nx-custom: 1\r\n\r\n");
        assert_eq!(third, ["x-custom"]);
        // Another name of the same length where x-custom was seen last.
        let fourth = names("HTTP/1.1 200 OK\r\nx-cuztom: 1\r\n\r\n");
        assert_eq!(fourth, ["x-cuztom"]);
    }

    #[test]
    fn a_head_is_split_off_and_its_fields_kept_in_order() {
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\nx-a: 1\r\nX-A: 2\r\ncontent-length: 2\r\n\r\nok");
        let head = parse_head(&mut buf, &mut HeadScratch::default(), false)
            .expect("valid")
            .expect("complete");
        assert_eq!(&buf[..], b"ok");
        assert_eq!(head.parts.status, StatusCode::OK);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(head
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
    }

    #[test]
    fn connection_fields_used_up_by_the_client_are_not_passed_on() {
        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Transfer-Encoding: chunked\r\nx-a: 1\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        let names: Vec<&str> = head.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a"]);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.keep_alive);
        // `close` is noted (no reuse) and dropped; a Connection naming other fields is kept for
        // the proxy, which removes those fields too.
        let closing = parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        assert!(!closing.keep_alive);
        assert!(closing.parts.headers.is_empty());
        let naming = parse(
            "HTTP/1.1 200 OK\r\nConnection: x-a\r\nx-a: 1\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(naming.parts.headers["connection"], "x-a");
    }

    #[test]
    fn an_incomplete_head_waits_and_a_custom_reason_is_kept() {
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-le", false)
            .expect("valid")
            .is_none());
        let head = parse("HTTP/1.1 404 Nope\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        let reason = head
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .expect("reason");
        assert_eq!(reason.as_bytes(), b"Nope");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n",
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Empty, true),
            // Chunked wins over a length, and the connection is not reused after it.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                Framing::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
                Framing::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
        ];
        for (head, expected, keep_alive) in cases {
            assert_eq!(framing(head), (expected, keep_alive), "{head:?}");
        }
        for coded in ["gzip, chunked", "gzip", "chunked, chunked"] {
            let head = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {coded}\r\n\r\n");
            assert_eq!(
                parse(&head, false).err(),
                Some("unsupported transfer coding")
            );
        }
        // The length beside chunked is dropped.
        let both = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        let head = parse(both, false).expect("valid").expect("complete");
        assert!(!head.parts.headers.contains_key(header::CONTENT_LENGTH));
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn bad_heads_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?} is refused");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_SIZE));
        assert_eq!(parse(&huge, false).err(), Some("head too large"));
        assert_eq!(
            parse(&format!("{huge}\r\n\r\n"), false).err(),
            Some("head too large")
        );
    }

    #[test]
    fn chunk_size_lines_are_parsed_strictly() {
        assert_eq!(parse_chunk_size(b"1f\r\nx"), Ok(Some((4, 31))));
        assert_eq!(parse_chunk_size(b"0\r\n"), Ok(Some((3, 0))));
        assert_eq!(
            parse_chunk_size(b"5 ; name=\"v a\";x\r\n"),
            Ok(Some((18, 5)))
        );
        assert_eq!(parse_chunk_size(b"5;ext"), Ok(None));
        assert_eq!(parse_chunk_size(b"5\r"), Ok(None));
        assert_eq!(
            parse_chunk_size(b"ffffffffffffffff\r\n"),
            Ok(Some((18, u64::MAX)))
        );
        for bad in [
            &b"\r\n"[..],
            b" 5\r\n",
            b";x\r\n",
            b"5x\r\n",
            b"5\n",
            b"5\rx",
            b"5;a\nb\r\n",
            b"5;a\0\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?} is refused");
        }
        let long = [b"5;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(parse_chunk_size(&long), Err("chunk-size line too long"));
    }

    #[test]
    fn a_final_head_is_told_from_interim_ones() {
        assert!(!has_final_head(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-le"
        ));
        assert!(!has_final_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"));
        assert!(has_final_head(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 No\r\n\r\n"
        ));
        assert!(has_final_head(b"garbage\r\n\r\n"));
    }

    #[test]
    fn trailers_are_parsed_and_split_off() {
        let mut buf =
            BytesMut::from("x-sum: 1\r\ncontent-length: 9\r\nconnection: close\r\n\r\nrest");
        let trailers = parse_trailers(&mut buf).expect("valid").expect("complete");
        assert_eq!(trailers["x-sum"], "1");
        assert_eq!(
            trailers.len(),
            1,
            "framing and connection fields are no trailers"
        );
        assert_eq!(&buf[..], b"rest");
        let mut empty = BytesMut::from("\r\n");
        assert!(parse_trailers(&mut empty)
            .expect("valid")
            .expect("complete")
            .is_empty());
    }
}
