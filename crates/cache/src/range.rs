//! Byte ranges cut out of a fresh stored response (RFC 9110 §14), as nginx's cache serves them:
//! a client resuming a download or seeking in a video gets its `206` from the cache once the
//! whole response is stored. Only one range per request is cut; a request for several gets the
//! whole response (§14.2 lets a server ignore `Range`), as does one whose `If-Range` no longer
//! matches. A stored response is never partial, and a range request that finds nothing fresh
//! goes to the origin as it came, its answer not stored.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, IF_RANGE, RANGE};
use http::{HeaderMap, Response, StatusCode};

use crate::entry::CachedResponse;
use crate::validate;

/// The answer to a range request, cut from a stored response.
#[derive(Debug)]
pub enum Ranged {
    /// `206`: the head and the range's bytes.
    Partial(Response<()>, Arc<[Bytes]>),
    /// `416`: the range starts past the end (`Content-Range: bytes */<length>`).
    Unsatisfiable(Response<()>),
}

impl CachedResponse {
    /// The `206` or `416` for a request's `Range`, or `None` when the whole response is the
    /// answer: no `Range` (or one this cache does not cut: several ranges, another unit, bad
    /// syntax), an `If-Range` that does not match, a response other than `200`.
    pub fn ranged(&self, request_headers: &HeaderMap) -> Option<Ranged> {
        if self.status() != StatusCode::OK || self.is_head_only() {
            return None;
        }
        let range = request_headers.get(RANGE)?.to_str().ok()?;
        if let Some(condition) = request_headers.get(IF_RANGE) {
            if !validate::if_range_matches(condition, &self.entry.headers) {
                return None;
            }
        }
        let len = self.body_len();
        let Some((first, last)) = parse(range, len)? else {
            let mut head = Response::new(());
            *head.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = head.headers_mut();
            h.insert(CONTENT_RANGE, value(format!("bytes */{len}")));
            h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return Some(Ranged::Unsatisfiable(head));
        };
        let mut head = self.response_head();
        *head.status_mut() = StatusCode::PARTIAL_CONTENT;
        let h = head.headers_mut();
        h.insert(CONTENT_RANGE, value(format!("bytes {first}-{last}/{len}")));
        h.insert(CONTENT_LENGTH, HeaderValue::from(last - first + 1));
        Some(Ranged::Partial(head, slice(self.body(), first, last)))
    }
}

fn value(text: String) -> HeaderValue {
    // Digits, spaces, `bytes`, `-`, `*` and `/`: always a valid field value.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// `bytes=first-last`, `bytes=first-` or `bytes=-suffix` against a body of `len` bytes:
/// `None` when the field is to be ignored (not one byte range, or bad syntax), `Some(None)` when
/// the range cannot be satisfied, else the inclusive range, clipped to the body.
fn parse(field: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let (unit, spec) = field.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.trim().is_empty() {
        // The last `suffix` bytes (§14.1.2); a zero-length suffix selects nothing.
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Some(None);
        }
        return Some(Some((len.saturating_sub(suffix), len - 1)));
    }
    let first = number(first)?;
    let last = match last.trim() {
        "" => None,
        l => Some(number(l)?),
    };
    if last.is_some_and(|l| l < first) {
        return None; // invalid: ignored, not unsatisfiable (§14.1.1)
    }
    if first >= len {
        return Some(None);
    }
    Some(Some((first, last.map_or(len - 1, |l| l.min(len - 1)))))
}

/// The chunks covering `first..=last`, sliced at both ends (no bytes copied).
fn slice(chunks: &[Bytes], first: u64, last: u64) -> Arc<[Bytes]> {
    let (mut at, end) = (0u64, last + 1);
    let mut out = Vec::new();
    for chunk in chunks {
        let next = at + chunk.len() as u64;
        if next > first && at < end {
            let from = usize::try_from(first.saturating_sub(at)).unwrap_or(0);
            let to = usize::try_from(end.min(next) - at).unwrap_or(chunk.len());
            out.push(chunk.slice(from..to));
        }
        at = next;
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_parsed_and_clipped() {
        assert_eq!(parse("bytes=0-4", 10), Some(Some((0, 4))));
        assert_eq!(parse("bytes=5-", 10), Some(Some((5, 9))));
        assert_eq!(parse("bytes=5-100", 10), Some(Some((5, 9))));
        assert_eq!(parse("bytes=-3", 10), Some(Some((7, 9))));
        assert_eq!(parse("bytes=-30", 10), Some(Some((0, 9))));
        assert_eq!(parse("Bytes = 2-3", 10), Some(Some((2, 3))));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(parse("bytes=10-", 10), Some(None));
        assert_eq!(parse("bytes=10-20", 10), Some(None));
        assert_eq!(parse("bytes=-0", 10), Some(None));
        assert_eq!(parse("bytes=0-", 0), Some(None));
    }

    #[test]
    fn what_is_not_one_byte_range_is_ignored() {
        for field in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=4-2",
            "bytes=a-2",
            "bytes=-",
            "bytes=+1-2",
            "bytes 0-1",
        ] {
            assert_eq!(parse(field, 10), None, "{field}");
        }
    }

    #[test]
    fn slices_cross_chunk_boundaries_without_copying() {
        let chunks = [
            Bytes::from_static(b"0123"),
            Bytes::from_static(b"4567"),
            Bytes::from_static(b"89"),
        ];
        let cut = |a, b| {
            slice(&chunks, a, b)
                .iter()
                .flat_map(|c| c.to_vec())
                .collect::<Vec<u8>>()
        };
        assert_eq!(cut(0, 9), b"0123456789");
        assert_eq!(cut(3, 4), b"34");
        assert_eq!(cut(4, 7), b"4567");
        assert_eq!(cut(9, 9), b"9");
        assert_eq!(
            slice(&chunks, 5, 6).len(),
            1,
            "only the chunk that holds the range"
        );
    }
}
