//! HTTP/2 streams starved by flow control.
//!
//! `limits.send_timeout` closes a client whose socket stays unwritable, but an HTTP/2 client can
//! stall one stream alone: it grants the stream no window, hyper holds the frame it has and stops
//! asking the response body for more, and the origin connection the body reads from stays held
//! for as long as the client likes (a slow read on one stream exhausts a backend's pool while
//! the connection looks busy and healthy). nginx applies `send_timeout` to a stream waiting for
//! window; so does gatehouse.
//!
//! An origin body on an HTTP/2 stream is shared with a watcher task, together with what the
//! exchange holds on the origin's behalf: the backend's in-flight count (which least-connections
//! balancing reads) and the cache's copy in the making (whose lease makes concurrent misses for
//! the URL wait). The body notes when it last answered hyper with a frame; a wait on the origin
//! is not the client's stall and clears the note (the origin's pauses are `timeouts.body`'s).
//! When hyper has not come back for more within the send timeout, the watcher drops all three:
//! the origin connection closes and its pool slot is free. The stream itself fails when hyper
//! next asks for data (hyper resets it), or ends with its connection; until then it holds only
//! the client's own stream slot and the exchange's bookkeeping (its access-log line is written
//! when the stream ends). Bodies that came whole with their head hold no connection and are not
//! watched; a streamed one costs a task, a timer and a lock per frame.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_balance::InFlight;
use gatehouse_cache::StoreHandle;
use gatehouse_pool::{BodyError, OriginBody};
use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::response::{poll_origin, Books};

const WAITING: u64 = u64::MAX;

/// An origin body whose stream the client may starve; see the module's documentation.
pub struct Starvable {
    shared: Arc<Shared>,
    watcher: AbortHandle,
}

/// What the watcher drops when the stream starves.
struct Held {
    body: OriginBody,
    backend: Option<InFlight>,
    store: Option<Box<StoreHandle>>,
}

struct Shared {
    base: Instant,
    /// `None` once the watcher has dropped it.
    held: parking_lot::Mutex<Option<Held>>,
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
        if let Some(held) = self.held.lock().take() {
            let backend = held.backend.as_ref().map(|b| b.backend().url());
            tracing::warn!(
                backend,
                "HTTP/2 stream left without flow-control window for limits.send_timeout: \
                 its origin connection is closed"
            );
        }
        None
    }
}

impl Starvable {
    /// Watches `body` (which should hold its connection) on a task of this runtime.
    pub fn new(
        body: OriginBody,
        backend: Option<InFlight>,
        store: Option<Box<StoreHandle>>,
        limit: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            held: parking_lot::Mutex::new(Some(Held {
                body,
                backend,
                store,
            })),
            // The stall clock starts with the head, for a client that grants no window at all.
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

    /// The body's next frame, its bytes counted in `bytes`. Kept out of line, as are the other
    /// two: `ResponseBody` matches on its content for every response, and these would otherwise
    /// swell the common case's code past what gets inlined.
    #[inline(never)]
    pub fn poll_frame(
        &mut self,
        bytes: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let shared = &self.shared;
        let mut held = shared.held.lock();
        let Some(Held {
            body,
            backend,
            store,
        }) = held.as_mut()
        else {
            return Poll::Ready(Some(Err(BodyError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client left the stream without window for limits.send_timeout",
            )))));
        };
        let books = Books {
            bytes,
            store,
            backend: backend.as_ref(),
        };
        let polled = poll_origin(body, books, cx);
        let ended = match &polled {
            Poll::Pending => {
                shared.answered.store(WAITING, Ordering::Relaxed);
                false
            }
            Poll::Ready(Some(Ok(_))) => {
                shared.answered.store(shared.now_ms(), Ordering::Relaxed);
                body.is_end_stream()
            }
            Poll::Ready(None | Some(Err(_))) => true,
        };
        if ended {
            // Nothing more to wait for: hyper will not ask again.
            self.watcher.abort();
        }
        polled
    }

    #[inline(never)]
    pub fn is_end_stream(&self) -> bool {
        self.shared
            .held
            .lock()
            .as_ref()
            // A body the watcher dropped is not at its end: hyper must ask, and fail the stream.
            .is_some_and(|h| h.body.is_end_stream())
    }

    #[inline(never)]
    pub fn size_hint(&self) -> SizeHint {
        self.shared
            .held
            .lock()
            .as_ref()
            .map_or_else(SizeHint::default, |h| h.body.size_hint())
    }
}

impl Drop for Starvable {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}
