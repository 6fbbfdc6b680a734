//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the origin has answered
//! `101 Switching Protocols`, bytes are piped both ways until either side closes, or a timer ends
//! the tunnel:
//!
//! - **idle** (`upstreams.<name>.timeouts.tunnel`): no byte moved either way for that long.
//!   HAProxy's `timeout tunnel`; nginx applies `proxy_read_timeout` to upgraded connections.
//!   Without it a peer that vanished without a FIN held a connection slot and an origin socket
//!   for ever.
//! - **send** (`limits.send_timeout`): a write to one side stayed blocked that long, because that
//!   peer stopped reading while the other kept the tunnel busy (so it never became idle).
//!
//! Progress is noted by the streams themselves ([`Watched`]: a clock read per read or write that
//! moved bytes, a store when a write first blocks); a watcher in the same task looks at the
//! record when the earliest deadline falls due, so traffic never touches a timer.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_pool::Upgraded;
use http::header::{self, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::epoch::Epoch;
use crate::proxy::ConnContext;
use crate::response::{Exchange, UpgradeRequest};
use crate::stats::Stats;

/// The timers of one tunnel, fixed when it opens (a reload does not change an open tunnel).
#[derive(Debug, Clone, Copy, Default)]
pub struct TunnelTimeouts {
    /// No byte either way for this long closes the tunnel (`None`: no limit).
    pub idle: Option<Duration>,
    /// A write blocked this long closes the tunnel (`None`: no limit).
    pub send: Option<Duration>,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Either side closed it, or an I/O error did.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A peer left its side's writes blocked for the send timeout.
    Stalled,
}

const NONE: u64 = u64::MAX;

/// What both directions of a tunnel have done, in milliseconds after `base`.
#[derive(Debug)]
struct Progress {
    base: Epoch,
    /// When bytes last moved, either way.
    moved: AtomicU64,
    /// Per side, since when its writes have been blocked, or `NONE`.
    blocked: [AtomicU64; 2],
}

impl Progress {
    fn new() -> Self {
        Self {
            base: Epoch::now(),
            moved: AtomicU64::new(0),
            blocked: [AtomicU64::new(NONE), AtomicU64::new(NONE)],
        }
    }

    fn note_moved(&self) {
        self.moved.store(self.base.ms(), Ordering::Relaxed);
    }

    /// The first pending write of a side starts its send timer; a completed one stops it.
    fn note_write<T>(&self, side: usize, polled: &Poll<io::Result<T>>) {
        let Some(blocked) = self.blocked.get(side) else {
            return;
        };
        match polled {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == NONE {
                    blocked.store(self.base.ms(), Ordering::Relaxed);
                }
            }
            Poll::Ready(Ok(_)) => {
                blocked.store(NONE, Ordering::Relaxed);
                self.note_moved();
            }
            Poll::Ready(Err(_)) => {}
        }
    }

    /// What is due at `now`: an end, or the instant to look again (`None`: nothing to watch).
    fn due(&self, timeouts: TunnelTimeouts, now: Instant) -> Result<Option<Instant>, TunnelEnd> {
        let mut next: Option<Instant> = None;
        let mut earliest = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        if let Some(idle) = timeouts.idle {
            let due = self.base.at(self.moved.load(Ordering::Relaxed)) + idle;
            if due <= now {
                return Err(TunnelEnd::Idle);
            }
            earliest(due);
        }
        if let Some(send) = timeouts.send {
            for blocked in &self.blocked {
                match blocked.load(Ordering::Relaxed) {
                    // Nothing blocked: a block that starts now falls due no earlier than this.
                    NONE => earliest(now + send),
                    since => {
                        let due = self.base.at(since) + send;
                        if due <= now {
                            return Err(TunnelEnd::Stalled);
                        }
                        earliest(due);
                    }
                }
            }
        }
        Ok(next)
    }

    /// Resolves when a timer ends the tunnel; never, without timers.
    async fn watch(&self, timeouts: TunnelTimeouts) -> TunnelEnd {
        loop {
            match self.due(timeouts, Instant::now()) {
                Err(end) => return end,
                Ok(Some(at)) => tokio::time::sleep_until(at).await,
                Ok(None) => std::future::pending::<()>().await,
            }
        }
    }
}

/// One side of a tunnel, noting its progress in the tunnel's record.
struct Watched<'a, S> {
    io: S,
    progress: &'a Progress,
    side: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.note_moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        self.progress.note_write(self.side, &polled);
        polled
    }

    // A TLS stream takes writes into its buffer and blocks in the flush that sends them.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.progress.note_write(self.side, &polled);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The origin accepted a protocol upgrade: completes the client's `101` head and, once both sides
/// have switched, pipes them into each other in a task of their own. The tunnel keeps the
/// configuration it opened with, so it survives reloads; it is counted in stats.
pub(crate) fn open(
    ctx: &ConnContext,
    parts: &mut http::response::Parts,
    upstream: Option<Upgraded>,
    exchange: &mut Exchange,
) {
    let Some(UpgradeRequest {
        downstream: Some(downstream),
        protocol,
        timeouts,
    }) = exchange.upgrade.take().map(|u| *u)
    else {
        return;
    };
    let Some(upstream) = upstream else {
        return;
    };
    parts.headers.insert(header::UPGRADE, protocol);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let shared = Arc::clone(&ctx.shared);
    let slot = ctx.slot.lock().take();
    tokio::spawn(async move {
        // Until the tunnel closes, it counts as the client connection it was.
        let _slot = slot;
        let Ok(down) = downstream.await else {
            return;
        };
        let down = hyper_util::rt::TokioIo::new(down);
        let Upgraded {
            stream: up,
            read_ahead,
        } = upstream;
        let stats = &shared.stats;
        stats.upgrades_total.fetch_add(1, Ordering::Relaxed);
        stats.upgrades_active.fetch_add(1, Ordering::Relaxed);
        match pipe(down, up, read_ahead, timeouts).await {
            TunnelEnd::Closed => {}
            TunnelEnd::Idle => {
                Stats::bump(&stats.timeouts.tunnel);
                tracing::debug!("tunnel closed: idle for timeouts.tunnel")
            }
            TunnelEnd::Stalled => {
                Stats::bump(&stats.timeouts.send);
                tracing::info!("tunnel closed: a peer left it unread for limits.send_timeout")
            }
        }
        stats.upgrades_active.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Pipes `client` and `origin` into each other until either closes or a timer ends the tunnel;
/// both are closed when this returns. `read_ahead` (what the origin sent right after its 101,
/// read with the response head) goes to the client first, under the same timers.
pub async fn pipe<C, O>(
    client: C,
    origin: O,
    read_ahead: Bytes,
    timeouts: TunnelTimeouts,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let progress = Progress::new();
    let mut client = Watched {
        io: client,
        progress: &progress,
        side: 0,
    };
    let mut origin = Watched {
        io: origin,
        progress: &progress,
        side: 1,
    };
    let copy = async {
        client.write_all(&read_ahead).await?;
        tokio::io::copy_bidirectional(&mut client, &mut origin).await
    };
    tokio::select! {
        copied = copy => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
            TunnelEnd::Closed
        }
        end = progress.watch(timeouts) => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(10);
    const SEND: Duration = Duration::from_secs(3);

    fn timeouts(idle: Option<Duration>, send: Option<Duration>) -> TunnelTimeouts {
        TunnelTimeouts { idle, send }
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_pass_both_ways_and_a_close_ends_the_tunnel() {
        let (client, mut client_peer) = duplex(64);
        let (origin, mut origin_peer) = duplex(64);
        let tunnel = tokio::spawn(pipe(
            client,
            origin,
            Bytes::new(),
            timeouts(Some(IDLE), Some(SEND)),
        ));
        client_peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        origin_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        origin_peer.write_all(b"pong").await.unwrap();
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        drop(client_peer);
        drop(origin_peer);
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_tunnel_open_and_silence_ends_it() {
        let (client, mut client_peer) = duplex(64);
        let (origin, mut origin_peer) = duplex(64);
        let started = Instant::now();
        let tunnel = tokio::spawn(pipe(
            client,
            origin,
            Bytes::new(),
            timeouts(Some(IDLE), None),
        ));
        // A message every 6 s for 30 s: more than the idle timeout in all, never that long apart.
        let mut got = [0u8; 2];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_peer.write_all(b"hi").await.unwrap();
            origin_peer.read_exact(&mut got).await.unwrap();
        }
        assert!(!tunnel.is_finished(), "open while messages keep coming");
        let last = Instant::now();
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Idle);
        let quiet = Instant::now() - last;
        assert!(
            quiet >= IDLE && quiet < IDLE + Duration::from_secs(1),
            "{quiet:?}"
        );
        assert!(Instant::now() - started >= Duration::from_secs(40));
        // Both peers see their end closed.
        assert_eq!(client_peer.read(&mut got).await.unwrap(), 0);
        assert_eq!(origin_peer.read(&mut got).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_while_the_other_talks_is_cut_at_the_send_timeout() {
        // The client reads nothing; the origin keeps sending, and the client keeps talking,
        // so the tunnel is never idle.
        let (client, mut client_peer) = duplex(16);
        let (origin, mut origin_peer) = duplex(1 << 20);
        let tunnel = tokio::spawn(pipe(
            client,
            origin,
            Bytes::new(),
            timeouts(Some(IDLE), Some(SEND)),
        ));
        origin_peer.write_all(&[7u8; 4096]).await.unwrap();
        let mut got = [0u8; 2];
        for _ in 0..20 {
            if tunnel.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Ignored once the tunnel has closed its side.
            let _ = client_peer.write_all(b"hi").await;
            let _ = origin_peer.read_exact(&mut got).await;
        }
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn what_came_with_the_origins_head_goes_first_under_the_same_timers() {
        let (client, mut client_peer) = duplex(64);
        let (origin, mut origin_peer) = duplex(64);
        let read_ahead = Bytes::from_static(b"early");
        let tunnel = tokio::spawn(pipe(client, origin, read_ahead, timeouts(None, Some(SEND))));
        origin_peer.write_all(b"-late").await.unwrap();
        let mut got = [0u8; 10];
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early-late");
        // A client that reads nothing while the origin's first burst is bigger than its socket.
        let (client, _client_peer) = duplex(16);
        let (origin, _origin_peer) = duplex(64);
        let burst = Bytes::from(vec![1u8; 4096]);
        let stalled = tokio::spawn(pipe(client, origin, burst, timeouts(None, Some(SEND))));
        assert_eq!(stalled.await.unwrap(), TunnelEnd::Stalled);
        tunnel.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_timeouts_a_silent_tunnel_stays_open() {
        let (client, _client_peer) = duplex(64);
        let (origin, _origin_peer) = duplex(64);
        let tunnel = tokio::spawn(pipe(
            client,
            origin,
            Bytes::new(),
            TunnelTimeouts::default(),
        ));
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert!(!tunnel.is_finished());
        tunnel.abort();
    }
}
