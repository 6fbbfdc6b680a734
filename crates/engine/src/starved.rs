//! HTTP/2 streams starved by flow control.
//!
//! `limits.send_timeout` closes a client whose socket stays unwritable, but an HTTP/2 client can
//! stall one stream alone: it grants the stream no window, hyper stops asking the response body
//! for data, and the origin connection the body reads from stays held for as long as the client
//! likes (a slow-read on one stream exhausts a backend's pool while the connection looks busy
//! and healthy). nginx applies `send_timeout` to a stream waiting for window; so does gatehouse.
//!
//! An origin body on an HTTP/2 stream is shared with a watcher task. The body notes when it last
//! answered hyper with a frame; a wait on the origin is not the client's stall and clears the
//! note (the origin's pauses are `timeouts.body`'s). When hyper has not come back for more
//! within the send timeout, the watcher drops the origin body, which closes its connection and
//! frees its pool slot; the stream fails when hyper next asks for data (hyper resets it).
//! Bodies that came whole with their head hold no connection and are not watched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_pool::{BodyError, OriginBody};
use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::Instant;

const WAITING: u64 = u64::MAX;

/// An origin body whose stream the client may starve; see the module's documentation.
pub struct Starvable {
    shared: Arc<Shared>,
    watcher: AbortHandle,
}

struct Shared {
    base: Instant,
    /// `None` once the watcher has dropped it.
    body: parking_lot::Mutex<Option<OriginBody>>,
    /// Milliseconds after `base` when the body last answered hyper with a frame, or `WAITING`
    /// while hyper waits on the origin.
    answered: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Ends the body if hyper left it unasked since its last frame for `limit`; otherwise says
    /// when to look again.
    fn look(&self, limit: Duration, now: Instant) -> Option<Instant> {
        let due = match self.answered.load(Ordering::Relaxed) {
            // A stall can only start with a frame given, so none falls due before `limit` from now.
            WAITING => return Some(now + limit),
            ms => self.base + Duration::from_millis(ms) + limit,
        };
        if due > now {
            return Some(due);
        }
        if self.body.lock().take().is_some() {
            tracing::warn!(
                "HTTP/2 stream left without flow-control window for limits.send_timeout: \
                 its origin connection is closed"
            );
        }
        None
    }
}

impl Starvable {
    /// Watches `body` (which should hold its connection) on a task of this runtime.
    pub fn new(body: OriginBody, limit: Duration) -> Self {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            body: parking_lot::Mutex::new(Some(body)),
            // The stall clock starts with the head: a stream granted no window at all is
            // never asked for its first frame.
            answered: AtomicU64::new(0),
        });
        let watched = Arc::clone(&shared);
        let watcher = tokio::spawn(async move {
            while let Some(at) = watched.look(limit, Instant::now()) {
                tokio::time::sleep_until(at).await;
            }
        })
        .abort_handle();
        Self { shared, watcher }
    }
}

impl Drop for Starvable {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

// Kept out of line: `ResponseBody` matches on its content for every response, and these would
// otherwise swell the common case's code past what gets inlined.
impl Body for Starvable {
    type Data = Bytes;
    type Error = BodyError;

    #[inline(never)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let shared = &this.shared;
        let mut body = shared.body.lock();
        let Some(inner) = body.as_mut() else {
            return Poll::Ready(Some(Err(BodyError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client left the stream without window for limits.send_timeout",
            )))));
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Pending => {
                shared.answered.store(WAITING, Ordering::Relaxed);
                false
            }
            Poll::Ready(Some(Ok(_))) => {
                shared.answered.store(shared.now_ms(), Ordering::Relaxed);
                inner.is_end_stream()
            }
            Poll::Ready(None | Some(Err(_))) => true,
        };
        if ended {
            // Nothing more to wait for: hyper will not ask again.
            this.watcher.abort();
        }
        polled
    }

    #[inline(never)]
    fn is_end_stream(&self) -> bool {
        self.shared
            .body
            .lock()
            .as_ref()
            // A body the watcher dropped is not at its end: hyper must ask, and fail the stream.
            .is_some_and(OriginBody::is_end_stream)
    }

    #[inline(never)]
    fn size_hint(&self) -> SizeHint {
        self.shared
            .body
            .lock()
            .as_ref()
            .map_or_else(SizeHint::default, OriginBody::size_hint)
    }
}
