//! Filling the cache: the decision at the response head, then the body, chunk by chunk, as it
//! streams to the client.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use http::StatusCode;

use crate::cache::Cache;
use crate::coalesce::{FillOutcome, Lease};
use crate::entry::{StoredResponse, Timing};
use crate::request::CacheRequest;
use crate::storable::NotStorable;
use crate::vary::VaryKey;

/// A request's part in filling the cache: whether it leads a fill others wait for, and which
/// stored response (being revalidated) a new one replaces. Comes with [`Lookup::Miss`] and
/// [`Revalidation::into_fill`]; hand it to [`Cache::admit`]. Dropping it tells any waiting
/// requests that the fill was abandoned.
///
/// [`Lookup::Miss`]: crate::Lookup::Miss
/// [`Revalidation::into_fill`]: crate::Revalidation::into_fill
#[derive(Default)]
pub struct Fill {
    pub(crate) lease: Option<Lease>,
    pub(crate) replaces: Option<Arc<StoredResponse>>,
}

impl Fill {
    /// No part: an uncoalesced fetch.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether other requests are waiting for this one's fill.
    pub fn is_leader(&self) -> bool {
        self.lease.is_some()
    }
}

impl fmt::Debug for Fill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fill")
            .field("leader", &self.is_leader())
            .field("replaces", &self.replaces.is_some())
            .finish()
    }
}

/// The decision at the response head.
#[derive(Debug)]
pub enum Admission {
    /// Storable: feed the body to the handle as it streams to the client.
    Store(StoreHandle),
    /// Not storable: pass the response through.
    Skip(NotStorable),
}

/// Everything about a response being stored except its body.
pub(crate) struct Pending {
    pub request: CacheRequest,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub timing: Timing,
    pub vary: VaryKey,
    pub head_only: bool,
    pub declared_len: Option<u64>,
    /// The store's generation for this key when the head arrived.
    pub generation: u64,
    pub replaces: Option<Arc<StoredResponse>>,
}

/// A response on its way into the cache. The proxy calls [`write`](Self::write) with each body
/// chunk it forwards to the client (cloning `Bytes` copies no data) and
/// [`finish`](Self::finish) at the end of the body. Dropped unfinished (client gone, origin
/// error), nothing is stored.
pub struct StoreHandle {
    cache: Cache,
    /// Boxed: the handle travels inside the proxy's response body, which should stay small.
    pending: Option<Box<Pending>>,
    body: Vec<Bytes>,
    body_len: u64,
    lease: Option<Lease>,
    failed: Option<NotStorable>,
}

impl StoreHandle {
    pub(crate) fn new(cache: Cache, pending: Pending, lease: Option<Lease>) -> Self {
        Self {
            cache,
            pending: Some(Box::new(pending)),
            body: Vec::new(),
            body_len: 0,
            lease,
            failed: None,
        }
    }

    /// Adds a body chunk. A body that outgrows `max_entry_size` stops being stored; the proxy
    /// keeps streaming it to the client regardless.
    pub fn write(&mut self, chunk: &Bytes) {
        if self.pending.is_none() || chunk.is_empty() {
            return;
        }
        self.body_len += chunk.len() as u64;
        if self.body_len > self.cache.config().max_entry_size as u64 {
            self.fail(NotStorable::TooLarge, FillOutcome::NotStored);
            return;
        }
        self.body.push(chunk.clone());
    }

    /// Whether the response is still on its way into the cache.
    pub fn is_storing(&self) -> bool {
        self.pending.is_some()
    }

    /// The body is complete: store the response. Returns why not when it was not stored.
    pub fn finish(mut self) -> Result<(), NotStorable> {
        let Some(pending) = self.pending.take() else {
            return Err(self.failed.unwrap_or(NotStorable::Incomplete));
        };
        let body = std::mem::take(&mut self.body);
        let result = self.store(*pending, body);
        let outcome = match result {
            Ok(()) => FillOutcome::Stored,
            Err(NotStorable::Invalidated) => FillOutcome::Abandoned,
            Err(_) => FillOutcome::NotStored,
        };
        if let Some(lease) = self.lease.take() {
            lease.complete(outcome);
        }
        result
    }

    fn store(&mut self, pending: Pending, body: Vec<Bytes>) -> Result<(), NotStorable> {
        let Pending {
            request,
            status,
            mut headers,
            timing,
            vary,
            head_only,
            declared_len,
            generation,
            replaces,
        } = pending;
        let body_len = self.body_len;
        if head_only {
            // A HEAD response has no body whatever its Content-Length says.
        } else if declared_len.is_some_and(|declared| declared != body_len) {
            // §3.3: an incomplete response is not stored as if complete.
            return Err(NotStorable::Incomplete);
        } else if declared_len.is_none() && status != StatusCode::NO_CONTENT {
            // Chunked from the origin: hits are served with the length now known.
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        }
        let key = request.key();
        let entry = Arc::new(StoredResponse::new(
            key,
            status,
            headers,
            compact(body, body_len),
            body_len,
            head_only,
            timing,
            vary,
        ));
        let store = &self.cache.inner.store;
        if let Some(old) = &replaces {
            store.remove(key, old);
        }
        let requested = request.headers();
        // The new response takes the place of every stored variant this request would have
        // selected; a HEAD response only of HEAD responses, and never of a full GET response.
        let supersedes =
            |s: &StoredResponse| s.vary.matches(requested) && (!head_only || s.head_only);
        let blocked_by =
            |s: &StoredResponse| head_only && !s.head_only && s.vary.matches(requested);
        store.insert(key, entry, generation, supersedes, blocked_by)?;
        self.cache
            .inner
            .stats
            .stores
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%key, body_len, "stored");
        Ok(())
    }

    fn fail(&mut self, reason: NotStorable, outcome: FillOutcome) {
        if let Some(pending) = self.pending.take() {
            let key = pending.request.key();
            tracing::debug!(%key, reason = reason.as_str(), "store aborted");
            // A new response too large to store still means the one it replaces is outdated.
            if let (Some(old), NotStorable::TooLarge) = (&pending.replaces, reason) {
                self.cache.inner.store.remove(key, old);
            }
        }
        self.failed = Some(reason);
        self.body = Vec::new();
        if let Some(lease) = self.lease.take() {
            lease.complete(outcome);
        }
    }
}

/// Bodies up to this size are stored as one exact-size copy.
const COMPACT_BELOW: u64 = 64 << 10;

/// The chunks of a small body copied into one buffer. A chunk from the upstream client is a
/// slice of its connection's read buffer and keeps that whole allocation alive: a 100-byte body could pin kilobytes that
/// `max_size` never counts. A large body arrives in large chunks, where that waste is small, and
/// keeps its chunks (no copy).
fn compact(body: Vec<Bytes>, body_len: u64) -> Arc<[Bytes]> {
    if body_len >= COMPACT_BELOW {
        return Arc::from(body);
    }
    let mut buf = Vec::with_capacity(body_len as usize);
    for chunk in &body {
        buf.extend_from_slice(chunk);
    }
    if buf.is_empty() {
        return Arc::from([]);
    }
    Arc::from([Bytes::from(buf)])
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.fail(NotStorable::Incomplete, FillOutcome::Abandoned);
        }
    }
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("storing", &self.is_storing())
            .field("body_len", &self.body_len)
            .finish_non_exhaustive()
    }
}
