//! Listening sockets, the accept loop and the life of one downstream connection.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use arc_swap::ArcSwapOption;
use gatehouse_tls::Terminator;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{ConnActivity, TrackedStream, Watch};
use crate::engine::Shared;
use crate::proxy::{self, ConnContext, ConnSlot};
use crate::stats::ConnectionCount;

/// Pending connections the kernel queues for us (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
/// hyper refuses read buffers smaller than this.
const MIN_READ_BUFFER: usize = 8192;

/// A bound listener and its per-listener settings, which a reload may change in place.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// The address as configured (the key that matches listeners across reloads).
    pub address: String,
    pub local_addr: SocketAddr,
    /// Port to redirect to over HTTPS, or 0 for none.
    redirect_to_https: AtomicU32,
    /// TLS termination, swapped on reload and certificate rotation.
    pub tls: ArcSwapOption<Terminator>,
    pub(crate) stop: CancellationToken,
    /// Cancelled by the accept loop once it has dropped the socket.
    pub(crate) closed: CancellationToken,
}

impl ListenerRuntime {
    pub fn redirect_to_https(&self) -> Option<u16> {
        match self.redirect_to_https.load(Ordering::Relaxed) {
            0 => None,
            port => u16::try_from(port).ok(),
        }
    }

    pub fn set_redirect_to_https(&self, port: Option<u16>) {
        self.redirect_to_https
            .store(port.map_or(0, u32::from), Ordering::Relaxed);
    }
}

/// Binds `address` with a real backlog and `SO_REUSEADDR` (so a restart does not wait out
/// TIME_WAIT). Must be called inside the runtime.
pub fn bind(
    address: &str,
    redirect: Option<u16>,
    tls: Option<Arc<Terminator>>,
) -> io::Result<(TcpListener, ListenerRuntime)> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let std_listener: std::net::TcpListener = socket.into();
    let local_addr = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    let runtime = ListenerRuntime {
        address: address.to_owned(),
        local_addr,
        redirect_to_https: AtomicU32::new(redirect.map_or(0, u32::from)),
        tls: ArcSwapOption::new(tls),
        stop: CancellationToken::new(),
        closed: CancellationToken::new(),
    };
    Ok((listener, runtime))
}

/// Accepts connections until the listener is stopped; each connection runs as its own task,
/// tracked so that shutdown can wait for them.
pub async fn accept_loop(
    listener: TcpListener,
    runtime: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
    connections: TaskTracker,
    draining: CancellationToken,
) {
    loop {
        // Holding a permit per connection caps `limits.max_connections`: at the cap we stop
        // accepting and the kernel backlog absorbs the burst.
        let permit = tokio::select! {
            permit = Arc::clone(&shared.connection_slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = runtime.stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = runtime.stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ConnContext {
                    slot: parking_lot::Mutex::new(Some(ConnSlot {
                        permit,
                        count: ConnectionCount::open(Arc::clone(&shared)),
                    })),
                    peer,
                    scheme: "http",
                    listener: Arc::clone(&runtime),
                    shared: Arc::clone(&shared),
                    activity: Arc::new(ConnActivity::new()),
                };
                connections.spawn(serve_connection(stream, ctx, draining.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, address = %runtime.local_addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    runtime.closed.cancel();
    tracing::debug!(address = %runtime.local_addr, "listener stopped");
}

async fn serve_connection(stream: TcpStream, ctx: ConnContext, draining: CancellationToken) {
    let limits = ctx.shared.state.load().limits.clone();
    let header_timeout = limits.header_timeout();
    match ctx.listener.tls.load_full() {
        Some(tls) => {
            // The handshake counts against the header timeout, like the request head after it.
            let accepted = tokio::time::timeout(header_timeout, tls.accept(stream)).await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %ctx.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tls.count_timeout();
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(stream, h2, ctx.with_scheme("https"), &limits, draining).await;
        }
        None => {
            let h2 =
                match tokio::time::timeout(header_timeout, starts_with_h2_preface(&stream)).await {
                    Ok(h2) => h2,
                    Err(_) => return, // nothing sent before the header timeout
                };
            serve_http(stream, h2, ctx, &limits, draining).await;
        }
    }
}

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection speaks HTTP/2 with prior knowledge (h2c), by peeking at its first
/// bytes without consuming them. An HTTP/1 request differs within the first two bytes.
async fn starts_with_h2_preface(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 24];
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if buf[..n] != H2_PREFACE[..n] {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        // A prefix of the preface so far: wait for the rest (rare; bounded by the caller).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A served connection the watchdog can ask to finish gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// How long an idle connection may take to close gracefully before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 limits: enough concurrency for browsers and gRPC, bounded headers, and hyper's
/// defences against rapid reset (CVE-2023-44487) and CONTINUATION floods kept tight.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

async fn serve_http<S>(
    stream: S,
    h2: bool,
    ctx: ConnContext,
    limits: &crate::config::LimitsConfig,
    draining: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&ctx.activity);
    let peer = ctx.peer;
    let io = TokioIo::new(TrackedStream::new(stream, Arc::clone(&activity)));
    let ctx = Arc::new(ctx);
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(proxy::handle(req, ctx).await) }
    });
    let max_header = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
    let keepalive = limits.keepalive_timeout();
    let header_timeout = limits.header_timeout();
    if h2 {
        activity.set_multiplexed();
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_INTERVAL);
        let conn = builder.serve_connection(io, service);
        drive(conn, &activity, keepalive, header_timeout, draining, peer).await;
    } else {
        let mut builder = http1::Builder::new();
        builder
            .max_buf_size(max_header.saturating_add(1024).max(MIN_READ_BUFFER))
            // hyper's default of 100 headers keeps its parse arrays on the stack; more would put
            // ~12 KiB on the heap for every request (measured in docs/performance.md).
            .max_header_size(max_header);
        let conn = builder.serve_connection(io, service).with_upgrades();
        drive(conn, &activity, keepalive, header_timeout, draining, peer).await;
    }
}

/// Runs a connection next to its watchdog: idle and header timers, and graceful drain.
async fn drive<C: Graceful>(
    conn: C,
    activity: &ConnActivity,
    keepalive: Duration,
    header_timeout: Duration,
    draining: CancellationToken,
    peer: SocketAddr,
) {
    tokio::pin!(conn);
    let mut closing = false;
    let mut idle_close_by = None;
    loop {
        let now = tokio::time::Instant::now();
        let next = match activity.watch(now, keepalive, header_timeout) {
            // Stalled mid-head: nothing in flight to lose.
            Watch::Close => break,
            // Idle: a graceful close (HTTP/2 sends GOAWAY, so a client never has a request cut
            // by a silent close), bounded in case the peer does not cooperate.
            Watch::Idle => match idle_close_by {
                None => {
                    if !closing {
                        conn.as_mut().graceful();
                        closing = true;
                    }
                    let by = now + IDLE_CLOSE_GRACE;
                    idle_close_by = Some(by);
                    by
                }
                Some(by) if now >= by => break,
                Some(by) => by,
            },
            Watch::Until(at) => at,
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended");
                }
                break;
            }
            _ = draining.cancelled(), if !closing => {
                // Finish what is in flight (HTTP/1: `Connection: close`; HTTP/2: GOAWAY), then close.
                conn.as_mut().graceful();
                closing = true;
            }
            _ = tokio::time::sleep_until(next) => {}
            _ = activity.changed() => {}
        }
    }
}
