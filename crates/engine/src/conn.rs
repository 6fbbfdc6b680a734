//! Per-connection bookkeeping for the two downstream idle timers.
//!
//! hyper's own `header_read_timeout` starts whenever the connection waits for a request head,
//! including the idle wait between keep-alive requests, which would cut keep-alive short to the
//! header timeout. nginx's semantics are what operators expect instead: `keepalive_timeout` for an
//! idle connection, `header_timeout` from the first byte of a request head (or from accept) until
//! the head is complete. [`ConnActivity`] records the moments those timers start from, and
//! [`TrackedStream`] notices the first byte of a new head.
//!
//! Recording is a few relaxed atomic stores and never wakes anyone: the connection's watchdog
//! (`listener::drive`) looks at the record on a timer of its own instead, at most
//! [`Watch`]-interval apart, which is what keeps it off the per-request path.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::audit::FramingAudit;
use crate::epoch::Epoch;

const NONE: u64 = u64::MAX;

#[derive(Debug)]
pub struct ConnActivity {
    base: Epoch,
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
    /// Set by the watchdog while it takes an idle HTTP/1 connection away from hyper to park it:
    /// hyper then ends the connection without shutting the socket down (see
    /// [`TrackedStream::poll_shutdown`]).
    parking: AtomicBool,
    /// HTTP/2: frames arrive while idle (pings, settings), so there is no "head" to time; only
    /// the keep-alive idle timer applies.
    multiplexed: AtomicBool,
    /// HTTP/2 with a send timeout: the watchdog looks after streams starved of flow-control
    /// window (`crate::starved`), so their bodies are worth registering.
    watches_streams: AtomicBool,
    /// Milliseconds after `base` when a write to the client last found its socket full (the
    /// client not reading), or `NONE` once a write went through: `limits.send_timeout`.
    write_blocked_since: AtomicU64,
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
    /// Idle for the park delay: give the connection's buffers back until the client writes again.
    Park,
}

impl ConnActivity {
    pub fn new() -> Self {
        Self {
            base: Epoch::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's head is timed from accept, as nginx does.
            head_since: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            ambiguous_request: AtomicU64::new(0),
            parking: AtomicBool::new(false),
            multiplexed: AtomicBool::new(false),
            watches_streams: AtomicBool::new(false),
            write_blocked_since: AtomicU64::new(NONE),
        }
    }

    /// Since when writes to the client have been blocked, if they are.
    pub fn write_blocked_since(&self) -> Option<Instant> {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            NONE => None,
            ms => Some(self.base.at(ms)),
        }
    }

    /// Notes how a write to the client went: a clock read when it first blocks, a load and
    /// nothing more while writes go through.
    fn on_write<T>(&self, polled: &Poll<T>) {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        match (polled.is_pending(), blocked == NONE) {
            (true, true) => self
                .write_blocked_since
                .store(self.base.ms(), Ordering::Relaxed),
            (false, false) => self.write_blocked_since.store(NONE, Ordering::Relaxed),
            _ => {}
        }
    }

    /// The watchdog looks after this HTTP/2 connection's starved streams, with the send timeout
    /// the connection started with (a reload does not change it).
    pub fn watches_streams(&self) -> bool {
        self.watches_streams.load(Ordering::Relaxed)
    }

    pub fn set_watches_streams(&self) {
        self.watches_streams.store(true, Ordering::Relaxed);
    }

    /// Marks the connection as HTTP/2 (see `multiplexed`).
    pub fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
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
            self.head_started();
        }
    }

    /// The first byte of a request head is here (or, for a parked connection, readable): the
    /// header timer starts.
    pub fn head_started(&self) {
        self.head_since.store(self.base.ms(), Ordering::Relaxed);
    }

    /// When an idle connection's keep-alive runs out.
    pub fn idle_deadline(&self, keepalive: Duration) -> Instant {
        self.base.at(self.idle_since.load(Ordering::Relaxed)) + keepalive
    }

    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// Decides, at `now`, whether the connection has outstayed its welcome, or (with `park_after`)
    /// has been idle long enough to park.
    ///
    /// Nothing tells the watchdog when a request starts or ends, so the instant returned in
    /// [`Watch::Until`] is never later than `now + min(keepalive, header_timeout)`: a timer that
    /// starts after `now` cannot expire before that, so no deadline is ever missed. With
    /// `park_after`, the watchdog looks at least that often, so an idle connection is parked
    /// between one and two `park_after` after its last response.
    pub fn watch(
        &self,
        now: Instant,
        keepalive: Duration,
        header_timeout: Duration,
        park_after: Option<Duration>,
    ) -> Watch {
        let mut interval = keepalive.min(header_timeout);
        if let Some(park) = park_after {
            interval = interval.min(park);
        }
        let recheck = now + interval.max(Duration::from_millis(10));
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: nothing can expire until the response is done.
            return Watch::Until(recheck);
        }
        let (deadline, expired) = match self.head_since.load(Ordering::Relaxed) {
            NONE => {
                let idle = self.idle_since.load(Ordering::Relaxed);
                if let Some(park) = park_after {
                    if self.base.at(idle) + park <= now {
                        return Watch::Park;
                    }
                }
                (self.base.at(idle) + keepalive, Watch::Idle)
            }
            head => (self.base.at(head) + header_timeout, Watch::Close),
        };
        if deadline <= now {
            expired
        } else {
            Watch::Until(deadline.min(recheck))
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
        a.idle_since.store(a.base.ms(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client stream (TCP, or TLS over TCP) that tells [`ConnActivity`] when bytes arrive, and
/// shows the plaintext to the [`FramingAudit`].
#[derive(Debug)]
pub struct TrackedStream<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    audit: FramingAudit,
    /// Bytes hyper had read but not parsed when the connection was parked, served again first.
    /// The audit and the timers have seen them already.
    replay: Bytes,
}

impl<S> TrackedStream<S> {
    pub fn new(inner: S, activity: Arc<ConnActivity>) -> Self {
        Self {
            inner,
            activity,
            audit: FramingAudit::new(),
            replay: Bytes::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Turns the inner stream into something else (the bare socket, to park it), unless bytes
    /// wait to be replayed, or `f` gives the stream back.
    pub fn try_map_inner<T>(self, f: impl FnOnce(S) -> Result<T, S>) -> Result<T, Self> {
        if self.has_replay() {
            return Err(self);
        }
        let Self {
            inner,
            activity,
            audit,
            replay,
        } = self;
        f(inner).map_err(|inner| Self {
            inner,
            activity,
            audit,
            replay,
        })
    }

    pub fn has_replay(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Ready to be parked: keeps `unread` for the next reader and lets go of spare buffers.
    /// `unread` is a view into hyper's whole read buffer (8 KiB or more), which it would keep
    /// alive even when empty, so what is kept is a copy.
    pub fn park(&mut self, unread: &[u8]) {
        self.replay = Bytes::copy_from_slice(unread);
        self.audit.release_buffer();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.on_write(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.on_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity.on_write(&polled);
        polled
    }

    /// Skipped while the watchdog parks the connection: hyper has been told to end an idle
    /// connection so that the socket can be taken back from it, and must not close it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_client_that_stops_reading_is_noted_until_a_write_goes_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut client) = tokio::io::duplex(64);
        let a = Arc::new(ConnActivity::new());
        let mut stream = TrackedStream::new(ours, Arc::clone(&a));
        stream.write_all(&[0; 64]).await.expect("fits");
        assert!(a.write_blocked_since().is_none());
        // The client reads nothing: the next write finds the pipe full.
        let blocked = tokio::time::timeout(Duration::from_millis(20), stream.write(&[0; 1])).await;
        assert!(blocked.is_err(), "the write waited");
        assert!(a.write_blocked_since().is_some());
        client.read_exact(&mut [0; 64]).await.expect("read");
        stream.write_all(&[0; 1]).await.expect("room again");
        assert!(a.write_blocked_since().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn first_head_is_timed_from_accept() {
        let a = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(
            a.watch(Instant::now(), KA, HEAD, None),
            Watch::Until(_)
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(a.watch(Instant::now(), KA, HEAD, None), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keepalive_uses_keepalive_timeout_until_a_byte_arrives() {
        let a = Arc::new(ConnActivity::new());
        drop(a.begin_request());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD, None), Watch::Until(_)),
            "idle, not a head"
        );
        a.on_read();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            a.watch(Instant::now(), KA, HEAD, None),
            Watch::Close,
            "head started and stalled"
        );
        let b = Arc::new(ConnActivity::new());
        drop(b.begin_request());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            b.watch(Instant::now(), KA, HEAD, None),
            Watch::Idle,
            "idle too long"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_never_expire() {
        let a = Arc::new(ConnActivity::new());
        let guard = a.begin_request();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(
            a.watch(Instant::now(), KA, HEAD, None),
            Watch::Until(_)
        ));
        drop(guard);
        assert!(matches!(
            a.watch(Instant::now(), KA, HEAD, None),
            Watch::Until(_)
        ));
    }

    const PARK: Option<Duration> = Some(Duration::from_millis(250));

    #[tokio::test(start_paused = true)]
    async fn parks_only_when_idle_for_the_park_delay() {
        let a = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD, PARK), Watch::Until(_)),
            "waiting for the first head: not idle"
        );
        let guard = a.begin_request();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD, PARK), Watch::Until(_)),
            "busy"
        );
        drop(guard);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(
            a.watch(Instant::now(), KA, HEAD, PARK),
            Watch::Until(_)
        ));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(a.watch(Instant::now(), KA, HEAD, PARK), Watch::Park);
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD, None), Watch::Until(_)),
            "HTTP/2 never parks"
        );
        a.on_read();
        assert!(
            matches!(a.watch(Instant::now(), KA, HEAD, PARK), Watch::Until(_)),
            "a head has started"
        );
    }

    /// Nothing wakes the watchdog, so it must look again before any timer that could start in the
    /// meantime could expire.
    #[tokio::test(start_paused = true)]
    async fn looks_again_before_a_new_timer_could_expire() {
        let short = Duration::from_millis(300);
        let a = Arc::new(ConnActivity::new());
        drop(a.begin_request());
        let now = Instant::now();
        for park in [None, PARK] {
            let Watch::Until(at) = a.watch(now, KA, short, park) else {
                panic!("idle within keep-alive");
            };
            assert!(
                at <= now + short,
                "idle: a head starting now would expire at +300 ms"
            );
        }
        let _busy = a.begin_request();
        let Watch::Until(at) = a.watch(now, KA, short, None) else {
            panic!("busy");
        };
        assert!(at <= now + short);
    }
}
