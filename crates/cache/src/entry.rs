//! A stored response, and the view of it that is served.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{Entry, HeaderMap, HeaderValue, AGE};
use http::{Response, StatusCode, Version};

use crate::config::{CacheConfig, ENTRY_OVERHEAD, FIELD_OVERHEAD};
use crate::directives::ResponseDirectives;
use crate::freshness::{self, ResponseTimes};
use crate::key::CacheKey;
use crate::lookup::CacheStatus;
use crate::request::CacheRequest;
use crate::validate;
use crate::vary::VaryKey;

/// What freshness and age computations derive from a header section and its timing; computed
/// when a response is stored and again when a 304 updates it.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub cc: ResponseDirectives,
    pub date: SystemTime,
    pub response_time: SystemTime,
    pub corrected_initial_age: Duration,
    pub lifetime: Duration,
}

impl Timing {
    pub(crate) fn compute(
        status: StatusCode,
        headers: &HeaderMap,
        times: &ResponseTimes,
        config: &CacheConfig,
    ) -> Self {
        let cc = ResponseDirectives::parse(headers);
        let date = freshness::date_value(headers, times);
        let corrected_initial_age = freshness::corrected_initial_age(headers, times, date);
        let lifetime = freshness::freshness_lifetime(status, headers, &cc, date, config);
        Self {
            cc,
            date,
            response_time: times.response_time,
            corrected_initial_age,
            lifetime,
        }
    }
}

/// One stored response: immutable once stored (a 304 replaces it with an updated copy that
/// shares the body), so readers hold an `Arc` and never a lock.
pub(crate) struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as it arrived, chunk by chunk: serving it clones `Bytes` handles, not data.
    pub body: Arc<[Bytes]>,
    pub body_len: u64,
    /// A response to HEAD: it has no body and can answer only HEAD requests.
    pub head_only: bool,
    pub timing: Timing,
    /// The request values of the fields its `Vary` names.
    pub vary: VaryKey,
    /// Bytes charged against `max_size`.
    pub weight: usize,
}

impl StoredResponse {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: &CacheKey,
        status: StatusCode,
        headers: HeaderMap,
        body: Arc<[Bytes]>,
        body_len: u64,
        head_only: bool,
        timing: Timing,
        vary: VaryKey,
    ) -> Self {
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + FIELD_OVERHEAD)
            .sum();
        let weight = ENTRY_OVERHEAD
            .saturating_add(key.len())
            .saturating_add(header_bytes)
            .saturating_add(vary.weight())
            .saturating_add(usize::try_from(body_len).unwrap_or(usize::MAX));
        let mut headers = detach(&headers);
        hold_served_fields(&mut headers);
        Self {
            status,
            headers,
            body,
            body_len,
            head_only,
            timing,
            vary,
            weight,
        }
    }

    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        freshness::current_age(
            self.timing.corrected_initial_age,
            self.timing.response_time,
            now,
        )
    }

    /// For choosing among variants that all match: the most recent (§4: "as determined by the
    /// Date header field"), then the one received last.
    pub(crate) fn recency(&self) -> (SystemTime, SystemTime) {
        (self.timing.date, self.timing.response_time)
    }
}

/// Room kept in a stored header section beyond its own fields: the two `hold_served_fields`
/// adds, and two more.
const SERVED_FIELDS: usize = 4;

/// Gives `Age` and `X-Cache-Status`, which every response served from the cache carries, a
/// place in the stored section (at its end, where they would be appended), with values that
/// serving always replaces. A copy of a `HeaderMap` has no spare room, so adding them to each
/// hit's copy would grow its field list (a reallocation per hit); replacing a value in place
/// does not. A stored `Age` from the origin stays where it is: it is replaced all the same.
fn hold_served_fields(headers: &mut HeaderMap) {
    if let Entry::Vacant(slot) = headers.entry(AGE) {
        slot.insert(HeaderValue::from_static("0"));
    }
    if let Entry::Vacant(slot) = headers.entry(CacheStatus::FIELD) {
        slot.insert(CacheStatus::Hit.header_value());
    }
}

/// A copy of `headers` whose values live in one buffer of their own. Values parsed from an
/// origin's response are views into its connection's whole read buffer (8 KiB, up to 64 KiB
/// after a large response): stored as they are, each entry would keep that buffer alive, uncounted in
/// `max_size`.
fn detach(headers: &HeaderMap) -> HeaderMap {
    let mut buf = BytesMut::with_capacity(headers.iter().map(|(_, v)| v.len()).sum());
    for (_, v) in headers {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    // Room for the fields `hold_served_fields` adds next, so that the index is built once.
    let mut detached = HeaderMap::with_capacity(headers.len() + SERVED_FIELDS);
    let mut at = 0;
    for (name, v) in headers {
        let end = at + v.len();
        // The same bytes as a valid value: this cannot fail, but a copy would do if it did.
        let mut value =
            HeaderValue::from_maybe_shared(buf.slice(at..end)).unwrap_or_else(|_| v.clone());
        value.set_sensitive(v.is_sensitive());
        detached.append(name.clone(), value);
        at = end;
    }
    detached
}

/// A stored response as served now: the entry and its current age.
#[derive(Clone)]
pub struct CachedResponse {
    pub(crate) entry: Arc<StoredResponse>,
    pub(crate) age: Duration,
}

impl CachedResponse {
    pub(crate) fn new(entry: Arc<StoredResponse>, now: SystemTime) -> Self {
        let age = entry.current_age(now);
        Self { entry, age }
    }

    pub fn status(&self) -> StatusCode {
        self.entry.status
    }

    /// `current_age` (RFC 9111 §4.2.3).
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The stored header section with `Age` set to the current age, as §4 requires of every
    /// response served from the cache. Framing is stored complete: `Content-Length` is present
    /// for every stored body. `X-Cache-Status` is there too, saying `HIT`: the proxy replaces it
    /// with the lookup's actual status (see `hold_served_fields`).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = self.entry.headers.clone();
        headers.insert(AGE, freshness::age_header(self.age));
        headers
    }

    /// Status and headers as an `http::Response` head (HTTP/1.1).
    pub fn response_head(&self) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = self.entry.status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = self.headers();
        response
    }

    /// The body, in the chunks it arrived in. Cloning a chunk copies no data.
    pub fn body(&self) -> &[Bytes] {
        &self.entry.body
    }

    /// The body's chunks, shared with the entry: serving a hit takes a reference, not a list.
    pub fn shared_body(&self) -> Arc<[Bytes]> {
        Arc::clone(&self.entry.body)
    }

    pub fn body_len(&self) -> u64 {
        self.entry.body_len
    }

    /// Whether this is a stored response to HEAD, which has no body to send.
    pub fn is_head_only(&self) -> bool {
        self.entry.head_only
    }

    /// When the client's own conditional request (`If-None-Match`, or `If-Modified-Since`
    /// without it) finds this response unchanged, the 304 head to answer with instead of it
    /// (RFC 9111 §4.3.2, RFC 9110 §13.2.2). Call it on every response about to be served from
    /// the cache: hits, stale responses and freshly revalidated ones.
    pub fn not_modified(&self, request: &CacheRequest) -> Option<Response<()>> {
        validate::client_not_modified(request, &self.entry)
            .then(|| validate::not_modified_head(&self.entry.headers, self.age))
    }
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.entry.status)
            .field("age", &self.age)
            .field("body_len", &self.entry.body_len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};

    #[test]
    fn stored_values_are_equal_but_do_not_point_into_the_parse_buffer() {
        let raw = Bytes::from(b"text/plain max-age=60 a=1 b=2".to_vec());
        let value =
            |r: std::ops::Range<usize>| HeaderValue::from_maybe_shared(raw.slice(r)).unwrap();
        let mut headers = HeaderMap::new();
        headers.append(CONTENT_TYPE, value(0..10));
        headers.append(CACHE_CONTROL, value(11..21));
        headers.append(SET_COOKIE, value(22..25));
        let mut secret = value(26..29);
        secret.set_sensitive(true);
        headers.append(SET_COOKIE, secret);

        let detached = detach(&headers);
        assert_eq!(detached, headers);
        let cookies: Vec<_> = detached.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "repeated fields keep their order");
        assert!(cookies[1].is_sensitive());
        let source = raw.as_ptr_range();
        for v in detached.values() {
            assert!(
                !source.contains(&v.as_bytes().as_ptr()),
                "{v:?} still points into the parse buffer"
            );
        }
    }
}
