//! Per-connection bookkeeping for the two downstream idle timers.
//!
//! hyper's own `header_read_timeout` starts whenever the connection waits for a request head,
//! including the idle wait between keep-alive requests, which would cut keep-alive short to the
//! header timeout. nginx's semantics are what operators expect instead: `keepalive_timeout` for an
//! idle connection, `header_timeout` from the first byte of a request head (or from accept) until
//! the head is complete. [`ConnActivity`] records the moments those timers start from, and
//! [`TrackedStream`] notices the first byte of a new head.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::audit::FramingAudit;

const NONE: u64 = u64::MAX;

#[derive(Debug)]
pub struct ConnActivity {
    base: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `base` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds after `base` when the pending request head started, or `NONE`.
    head_since: AtomicU64,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// 1-based index of the first request whose head had both Content-Length and
    /// Transfer-Encoding (see [`crate::audit`]), or 0.
    ambiguous_request: AtomicU64,
    /// Wakes the watchdog when a timer's starting point moves (a request ends, a head starts).
    changed: Notify,
    /// HTTP/2: frames arrive while idle (pings, settings), so there is no "head" to time; only
    /// the keep-alive idle timer applies.
    multiplexed: AtomicBool,
}

/// What the connection's watchdog should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing is due before this instant; look again then.
    Until(Instant),
    /// A request head is overdue (a slow or stalled client): close at once.
    Close,
    /// Idle past the keep-alive timeout: close politely (HTTP/2 says GOAWAY first).
    Idle,
}

impl ConnActivity {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's head is timed from accept, as nginx does.
            head_since: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            ambiguous_request: AtomicU64::new(0),
            changed: Notify::new(),
            multiplexed: AtomicBool::new(false),
        }
    }

    /// Marks the connection as HTTP/2 (see `multiplexed`).
    pub fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Called when hyper hands a complete request head to the proxy.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        let index = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        RequestGuard {
            activity: Arc::clone(self),
            index,
        }
    }

    fn on_read(&self) {
        if !self.multiplexed.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Resolves when the idle or head timer may have a new starting point.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Decides, at `now`, whether the connection has outstayed its welcome.
    pub fn watch(&self, now: Instant, keepalive: Duration, header_timeout: Duration) -> Watch {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: nothing can expire until the response is done; look again later.
            return Watch::Until(
                now + keepalive.min(header_timeout).max(Duration::from_millis(50)),
            );
        }
        let (deadline, expired) = match self.head_since.load(Ordering::Relaxed) {
            NONE => (
                self.at(self.idle_since.load(Ordering::Relaxed)) + keepalive,
                Watch::Idle,
            ),
            head => (self.at(head) + header_timeout, Watch::Close),
        };
        if deadline <= now {
            expired
        } else {
            Watch::Until(deadline)
        }
    }
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request as finished (its response body sent or abandoned) when dropped.
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<ConnActivity>,
    index: u64,
}

impl RequestGuard {
    /// Whether this request's head carried both `Content-Length` and `Transfer-Encoding`, which
    /// hyper forgives by dropping `Content-Length` (see [`crate::audit`]).
    pub fn had_ambiguous_framing(&self) -> bool {
        self.activity.ambiguous_request.load(Ordering::Relaxed) == self.index
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.activity;
        a.idle_since.store(a.now_ms(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
        a.changed.notify_one();
    }
}

/// A client stream (TCP, or TLS over TCP) that tells [`ConnActivity`] when bytes arrive, and
/// shows the plaintext to the [`FramingAudit`].
#[derive(Debug)]
pub struct TrackedStream<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    audit: FramingAudit,
}

impl<S> TrackedStream<S> {
    pub fn new(inner: S, activity: Arc<ConnActivity>) -> Self {
        Self {
            inner,
            activity,
            audit: FramingAudit::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
            let first_ambiguous = this.audit.ambiguous();
            this.audit.feed(&buf.filled()[before..]);
            if first_ambiguous.is_none() {
                if let Some(index) = this.audit.ambiguous() {
                    this.activity
                        .ambiguous_request
                        .store(index, Ordering::Relaxed);
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn first_head_is_timed_from_accept() {
        let a = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(a.watch(Instant::now(), KA, HEAD), Watch::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(a.watch(Instant::now(), KA, HEAD), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keepalive_uses_keepalive_timeout_until_a_byte_arrives() {
        let a = Arc::new(ConnActivity::new());
        drop(a.begin_request());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD), Watch::Until(_)),
            "idle, not a head"
        );
        a.on_read();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            a.watch(Instant::now(), KA, HEAD),
            Watch::Close,
            "head started and stalled"
        );
        let b = Arc::new(ConnActivity::new());
        drop(b.begin_request());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            b.watch(Instant::now(), KA, HEAD),
            Watch::Idle,
            "idle too long"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_never_expire() {
        let a = Arc::new(ConnActivity::new());
        let guard = a.begin_request();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(a.watch(Instant::now(), KA, HEAD), Watch::Until(_)));
        drop(guard);
        assert!(matches!(a.watch(Instant::now(), KA, HEAD), Watch::Until(_)));
    }
}
