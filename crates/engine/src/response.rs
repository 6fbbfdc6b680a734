//! The response body as it travels to the client, and the bookkeeping that ends with it.
//!
//! An [`Exchange`] travels inside the response body, so that everything that must happen when
//! the client has the last byte (or has gone away) happens exactly then, from `Drop`: the
//! backend's in-flight count drops, the access log line is written with the real byte count.
//! (The origin's connection goes back to its pool with the origin's last byte, which
//! [`OriginBody`] sees to: for a small response, before the client has its first.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gatehouse_balance::InFlight;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::conn::RequestGuard;
use crate::starved::{Starvable, StarvationWatch};
use gatehouse_cache::StoreHandle;
use gatehouse_pool::{BodyError, OriginBody};

/// Per-request state that must outlive the handler and end with the response body.
#[derive(Debug)]
pub struct Exchange {
    request_guard: RequestGuard,
    /// Boxed, as are `upgrade` and `cache_store`: all are rare on the hot path, and the exchange
    /// travels inside every response body, which hyper moves several times per request (504
    /// bytes with them inline, 120 boxed).
    pub access: Option<Box<PendingAccess>>,
    pub backend: Option<InFlight>,
    /// A protocol upgrade (WebSocket) the client asked for, kept until the origin agrees.
    pub upgrade: Option<Box<UpgradeRequest>>,
    /// `X-Cache-Status` for a response of a cache-enabled route.
    pub cache_status: Option<gatehouse_cache::CacheStatus>,
    /// Stores the origin's response body as it streams to the client.
    pub cache_store: Option<Box<gatehouse_cache::StoreHandle>>,
    status: u16,
    bytes: u64,
}

/// An access-log line in the making, written when the exchange ends.
#[derive(Debug)]
pub struct PendingAccess {
    pub log: Arc<AccessLog>,
    pub record: AccessRecord,
    /// When the request head arrived, for the line's duration (read only when there is a log).
    pub started: Instant,
}

/// The client's side of a requested protocol upgrade.
#[derive(Debug)]
pub struct UpgradeRequest {
    /// Resolves to the client's connection once hyper has sent the 101.
    pub downstream: Option<hyper::upgrade::OnUpgrade>,
    /// The `Upgrade` value the client asked for.
    pub protocol: http::HeaderValue,
    /// The tunnel's timers, if the origin agrees to switch.
    pub timeouts: crate::tunnel::TunnelTimeouts,
}

impl Exchange {
    pub fn new(request: RequestGuard) -> Self {
        Self {
            request_guard: request,
            access: None,
            backend: None,
            upgrade: None,
            cache_status: None,
            cache_store: None,
            status: 0,
            bytes: 0,
        }
    }

    pub fn request(&self) -> &RequestGuard {
        &self.request_guard
    }

    /// The origin's response has been read to the end: a response on its way into the cache is
    /// complete.
    pub fn upstream_done(&mut self) {
        finish_store(&mut self.cache_store);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(access) = &self.access {
            let elapsed = access.started.elapsed();
            access
                .log
                .log(&access.record, self.status, self.bytes, elapsed);
        }
    }
}

enum Content {
    Full(Option<Bytes>),
    Upstream(OriginBody),
    /// An origin body on an HTTP/2 stream, watched for flow-control starvation.
    Starvable(Starvable),
    /// A stored response from the cache, in the chunks it was stored in (shared with the
    /// entry, no copy), and the index of the next chunk to send.
    Cached(Option<Arc<[Bytes]>>, usize),
}

/// A cached body's chunks from index `next` on.
fn unsent(chunks: &Option<Arc<[Bytes]>>, next: usize) -> &[Bytes] {
    chunks
        .as_deref()
        .and_then(|c| c.get(next..))
        .unwrap_or_default()
}

pub struct ResponseBody {
    content: Content,
    exchange: Exchange,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub fn full(data: Bytes, mut exchange: Exchange, status: u16) -> Self {
        exchange.status = status;
        let data = (!data.is_empty()).then_some(data);
        Self {
            content: Content::Full(data),
            exchange,
        }
    }

    pub fn cached(chunks: Option<Arc<[Bytes]>>, mut exchange: Exchange, status: u16) -> Self {
        exchange.status = status;
        Self {
            content: Content::Cached(chunks, 0),
            exchange,
        }
    }

    /// The cached chunks not sent yet.
    fn cached_rest(&self) -> &[Bytes] {
        match &self.content {
            Content::Cached(chunks, next) => unsent(chunks, *next),
            _ => &[],
        }
    }

    pub fn upstream(body: OriginBody, mut exchange: Exchange, status: u16) -> Self {
        exchange.status = status;
        if body.is_end_stream() {
            exchange.upstream_done();
        }
        Self {
            content: Content::Upstream(body),
            exchange,
        }
    }

    /// HTTP/2: an origin body still reading from its connection is dropped, with the connection,
    /// the backend's in-flight count and the cache's copy, when the client leaves its stream
    /// without window for the send timeout (the connection's watchdog looks: see
    /// [`crate::starved`]).
    pub fn watch_starvation(&mut self, watch: &StarvationWatch) {
        let content = std::mem::replace(&mut self.content, Content::Full(None));
        self.content = match content {
            Content::Upstream(body) if body.holds_connection() => {
                let exchange = &mut self.exchange;
                let (backend, store) = (exchange.backend.take(), exchange.cache_store.take());
                Content::Starvable(watch.watch(body, backend, store))
            }
            other => other,
        };
    }
}

/// A response on its way into the cache is complete.
fn finish_store(store: &mut Option<Box<StoreHandle>>) {
    if let Some(store) = store.take() {
        if let Err(reason) = (*store).finish() {
            tracing::debug!(reason = reason.as_str(), "response not cached");
        }
    }
}

/// What an origin body's frames are accounted to: the bytes sent, the cache's copy, and the
/// backend (named in logs).
pub(crate) struct Books<'a> {
    pub bytes: &'a mut u64,
    pub store: &'a mut Option<Box<StoreHandle>>,
    pub backend: Option<&'a InFlight>,
}

/// Polls an origin's body for the client, keeping its books; the cache's copy is finished with
/// the origin's last byte.
pub(crate) fn poll_origin(
    body: &mut OriginBody,
    books: Books<'_>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let polled = Pin::new(&mut *body).poll_frame(cx);
    match &polled {
        Poll::Ready(Some(Ok(frame))) => {
            if let Some(data) = frame.data_ref() {
                *books.bytes += data.len() as u64;
                if let Some(store) = books.store {
                    store.write(data);
                }
            }
            if body.is_end_stream() {
                finish_store(books.store);
            }
        }
        Poll::Ready(None) => finish_store(books.store),
        Poll::Ready(Some(Err(e))) => {
            let backend = books.backend.map(|b| b.backend().url());
            if matches!(e, BodyError::TimedOut) {
                // nginx logs "upstream timed out … while reading upstream" as an error.
                tracing::warn!(backend, "response body cut short: {e}");
            } else {
                tracing::debug!(backend, error = %e, "upstream response body failed");
            }
            // The body has closed its connection; dropping the store handle stores nothing.
            *books.store = None;
        }
        Poll::Pending => {}
    }
    polled
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.content {
            Content::Full(data) => Poll::Ready(data.take().map(|d| {
                this.exchange.bytes += d.len() as u64;
                Ok(Frame::data(d))
            })),
            Content::Cached(chunks, next) => {
                // An empty chunk is skipped: as a frame it would say nothing.
                let found = unsent(chunks, *next)
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !c.is_empty());
                Poll::Ready(found.map(|(skip, d)| {
                    *next += skip + 1;
                    this.exchange.bytes += d.len() as u64;
                    Ok(Frame::data(d.clone()))
                }))
            }
            Content::Upstream(body) => {
                let exchange = &mut this.exchange;
                let books = Books {
                    bytes: &mut exchange.bytes,
                    store: &mut exchange.cache_store,
                    backend: exchange.backend.as_ref(),
                };
                poll_origin(body, books, cx)
            }
            Content::Starvable(body) => body.poll_frame(&mut this.exchange.bytes, cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Full(data) => data.is_none(),
            Content::Upstream(body) => body.is_end_stream(),
            Content::Starvable(body) => body.is_end_stream(),
            Content::Cached(..) => self.cached_rest().iter().all(Bytes::is_empty),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Content::Upstream(body) => body.size_hint(),
            Content::Starvable(body) => body.size_hint(),
            Content::Cached(..) => {
                SizeHint::with_exact(self.cached_rest().iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// hyper moves every response, and so the exchange inside its body, several times per
    /// request: what only some requests need stays boxed.
    #[test]
    fn an_exchange_stays_small() {
        let size = std::mem::size_of::<super::Exchange>();
        assert!(size <= 120, "Exchange is {size} bytes");
    }
}
