//! HTTP/2 streams starved by flow control.
//!
//! `limits.send_timeout` closes a client whose socket stays unwritable, but an HTTP/2 client can
//! stall one stream alone: it grants the stream no window, hyper holds the frame it has and stops
//! asking the response body for more, and the origin connection the body reads from stays held
//! for as long as the client likes (a slow read on one stream exhausts a backend's pool while
//! the connection looks busy and healthy). nginx applies `send_timeout` to a stream waiting for
//! window; so does gatehouse.
//!
//! An origin body on an HTTP/2 stream is shared with the connection's watchdog, together with what the
//! exchange holds on the origin's behalf: the backend's in-flight count (which least-connections
//! balancing reads) and the cache's copy in the making (whose lease makes concurrent misses for
//! the URL wait). The body notes when it last answered hyper with a frame; a wait on the origin
//! is not the client's stall and clears the note (the origin's pauses are `timeouts.body`'s).
//! When hyper has not come back for more within the send timeout, the watchdog drops all three:
//! the origin connection closes and its pool slot is free. The stream itself fails when hyper
//! next asks for data (hyper resets it), or ends with its connection; until then it holds only
//! the client's own stream slot and the exchange's bookkeeping (its access-log line is written
//! when the stream ends). Bodies that came whole with their head hold no connection and are not
//! watched; a streamed one costs an allocation, its place in the connection's list, and an
//! uncontended lock per frame. No timer of its own: the watchdog already looks at its connection
//! at least once per send timeout (`listener::drive`), and a stall that starts after one look
//! cannot fall due before the next.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_balance::InFlight;
use gatehouse_cache::StoreHandle;
use gatehouse_pool::{BodyError, OriginBody};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::epoch::Epoch;
use crate::response::{poll_origin, Books};

const WAITING: u64 = u64::MAX;
/// The body has ended: nothing to watch.
const DONE: u64 = u64::MAX - 1;

/// An origin body whose stream the client may starve; see the module's documentation.
pub struct Starvable {
    shared: Arc<Shared>,
}

/// The watched bodies of one HTTP/2 connection.
#[derive(Debug, Default)]
pub struct StarvationWatch {
    /// Dropped streams' entries fail to upgrade and leave at the next look (or when the list
    /// doubles, so that it stays within twice the streams alive).
    entries: parking_lot::Mutex<Vec<Weak<Shared>>>,
}

impl StarvationWatch {
    /// Watches `body` (which should hold its connection) and what the exchange holds for it.
    pub fn watch(
        &self,
        body: OriginBody,
        backend: Option<InFlight>,
        store: Option<Box<StoreHandle>>,
    ) -> Starvable {
        let shared = Arc::new(Shared {
            base: Epoch::now(),
            held: parking_lot::Mutex::new(Some(Held {
                body,
                backend,
                store,
            })),
            // The stall clock starts with the head, for a client that grants no window at all.
            answered: AtomicU64::new(0),
        });
        let mut entries = self.entries.lock();
        if entries.len() >= 32 && entries.len().is_power_of_two() {
            entries.retain(|e| e.strong_count() > 0);
        }
        entries.push(Arc::downgrade(&shared));
        Starvable { shared }
    }

    /// Drops the bodies whose streams were left unasked for `limit`, counting each in `cuts`; says
    /// when to look again (`None`: nothing is watched).
    pub fn look(&self, limit: Duration, now: Instant, cuts: &AtomicU64) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        self.entries.lock().retain(|entry| {
            let due = entry
                .upgrade()
                .and_then(|shared| shared.look(limit, now, cuts));
            if let Some(at) = due {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            due.is_some()
        });
        next
    }
}

/// What the watchdog drops when the stream starves.
struct Held {
    body: OriginBody,
    backend: Option<InFlight>,
    store: Option<Box<StoreHandle>>,
}

struct Shared {
    base: Epoch,
    /// `None` once the watchdog has dropped it.
    held: parking_lot::Mutex<Option<Held>>,
    /// Milliseconds after `base` when the body last answered hyper with a frame, or `WAITING`
    /// while hyper waits on the origin.
    answered: AtomicU64,
}

impl Shared {
    /// Ends the body if hyper left it unasked since its last frame for `limit`; otherwise says
    /// when to look again (`None`: no more).
    fn look(&self, limit: Duration, now: Instant, cuts: &AtomicU64) -> Option<Instant> {
        let due = match self.answered.load(Ordering::Relaxed) {
            DONE => return None,
            // A stall can only start with a frame given, so none falls due before `limit` from now.
            WAITING => return Some(now + limit),
            ms => self.base.at(ms) + limit,
        };
        if due > now {
            return Some(due);
        }
        if let Some(held) = self.held.lock().take() {
            cuts.fetch_add(1, Ordering::Relaxed);
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
        let answered = match &polled {
            Poll::Pending => WAITING,
            // Nothing more to wait for once the body has ended: hyper will not ask again.
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => DONE,
            Poll::Ready(Some(Ok(_))) => shared.base.ms(),
            Poll::Ready(None | Some(Err(_))) => DONE,
        };
        shared.answered.store(answered, Ordering::Relaxed);
        polled
    }

    #[inline(never)]
    pub fn is_end_stream(&self) -> bool {
        self.shared
            .held
            .lock()
            .as_ref()
            // A body the watchdog dropped is not at its end: hyper must ask, and fail the stream.
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
