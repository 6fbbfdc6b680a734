//! Listening sockets, the accept loop and the life of one downstream connection.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use gatehouse_tls::{Terminator, TlsStream};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{ConnActivity, TrackedStream, Watch};
use crate::engine::Shared;
use crate::parking::{ParkedConn, ParkingLot};
use crate::proxy::{self, ConnContext, ConnSlot};
use crate::stats::{ConnectionCount, ParkedCount, Stats};

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
    /// Cancelled once every worker's accept loop has dropped its descriptor for the socket.
    pub(crate) closed: CancellationToken,
    /// Descriptors for the socket still held by accept loops.
    sockets: AtomicUsize,
}

impl ListenerRuntime {
    pub fn redirect_to_https(&self) -> Option<u16> {
        match self.redirect_to_https.load(Ordering::Relaxed) {
            0 => None,
            port => u16::try_from(port).ok(),
        }
    }

    /// One descriptor for the socket per worker's accept loop.
    pub(crate) fn set_sockets(&self, count: usize) {
        self.sockets.store(count, Ordering::Release);
        if count == 0 {
            self.closed.cancel();
        }
    }

    /// An accept loop dropped its descriptor; the last one marks the socket closed.
    pub(crate) fn socket_closed(&self) {
        if self.sockets.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closed.cancel();
        }
    }

    pub fn set_redirect_to_https(&self, port: Option<u16>) {
        self.redirect_to_https
            .store(port.map_or(0, u32::from), Ordering::Relaxed);
    }
}

/// Binds `address` with a real backlog and `SO_REUSEADDR` (so a restart does not wait out
/// TIME_WAIT). Not `SO_REUSEPORT`: the workers share this one socket, and another process cannot
/// quietly bind the same port.
pub fn bind(
    address: &str,
    redirect: Option<u16>,
    tls: Option<Arc<Terminator>>,
) -> io::Result<(std::net::TcpListener, ListenerRuntime)> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener: std::net::TcpListener = socket.into();
    let local_addr = listener.local_addr()?;
    let runtime = ListenerRuntime {
        address: address.to_owned(),
        local_addr,
        redirect_to_https: AtomicU32::new(redirect.map_or(0, u32::from)),
        tls: ArcSwapOption::new(tls),
        stop: CancellationToken::new(),
        closed: CancellationToken::new(),
        sockets: AtomicUsize::new(0),
    };
    Ok((listener, runtime))
}

/// Accepts connections until the listener is stopped; each connection runs as its own task on
/// this worker, tracked so that shutdown can wait for them. Every worker runs one of these on the
/// same socket (`socket` is this worker's descriptor for it).
pub(crate) async fn accept_loop(
    socket: std::net::TcpListener,
    runtime: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
    connections: TaskTracker,
    draining: CancellationToken,
    lot: Arc<ParkingLot>,
) {
    // Registered with this worker's event loop, here, inside its runtime.
    match TcpListener::from_std(socket) {
        Ok(listener) => {
            accept_until_stopped(listener, &runtime, shared, connections, draining, lot).await
        }
        Err(e) => {
            tracing::error!(error = %e, address = %runtime.local_addr, "cannot watch the listening socket")
        }
    }
    runtime.socket_closed();
    tracing::debug!(address = %runtime.local_addr, "listener stopped");
}

async fn accept_until_stopped(
    listener: TcpListener,
    runtime: &Arc<ListenerRuntime>,
    shared: Arc<Shared>,
    connections: TaskTracker,
    draining: CancellationToken,
    lot: Arc<ParkingLot>,
) {
    loop {
        // Holding a permit per connection caps `limits.max_connections`: at the cap the workers
        // stop accepting and the kernel backlog absorbs the burst. A permit held by a worker
        // waiting in accept goes to the next connection it takes, so the cap stays exact.
        let permit = tokio::select! {
            permit = Arc::clone(&shared.connection_slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = runtime.stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = runtime.stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, address = %runtime.local_addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnSlot {
            permit,
            count: ConnectionCount::open(Arc::clone(&shared)),
        };
        let ctx = ConnContext::new(Some(slot), peer, Arc::clone(runtime), Arc::clone(&shared));
        connections.spawn(serve_connection(
            stream,
            ctx,
            draining.clone(),
            Arc::clone(&lot),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    ctx: ConnContext,
    draining: CancellationToken,
    lot: Arc<ParkingLot>,
) {
    let limits = ctx.shared.state.load().limits.clone();
    let header_timeout = limits.header_timeout();
    match ctx.listener.tls.load_full() {
        // Boxed: a task is as large as its largest state, and the handshake's state is large.
        // Plain connections (and parked ones) should not carry it.
        Some(tls) => Box::pin(serve_tls(stream, tls, ctx, limits, draining)).await,
        None => {
            let h2 =
                match tokio::time::timeout(header_timeout, starts_with_h2_preface(&stream)).await {
                    Ok(h2) => h2,
                    Err(_) => {
                        // Nothing sent before the header timeout.
                        Stats::bump(&ctx.shared.stats.timeouts.header);
                        return;
                    }
                };
            serve_http(stream, h2, Arc::new(ctx), &limits, draining, Some(lot)).await;
        }
    }
}

/// Serves a connection the parking lot held, now that its client wrote again (or closed).
pub(crate) async fn resume_parked(
    stream: std::net::TcpStream,
    ctx: ConnContext,
    draining: CancellationToken,
    lot: Arc<ParkingLot>,
) {
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, error = %e, "cannot resume parked connection");
            return;
        }
    };
    // The request head is timed from now.
    ctx.activity.head_started();
    let limits = ctx.shared.state.load().limits.clone();
    serve_http(stream, false, Arc::new(ctx), &limits, draining, Some(lot)).await;
}

async fn serve_tls(
    stream: TcpStream,
    tls: Arc<Terminator>,
    ctx: ConnContext,
    limits: crate::config::LimitsConfig,
    draining: CancellationToken,
) {
    // The handshake counts against the header timeout, like the request head after it.
    let accepted = tokio::time::timeout(limits.header_timeout(), tls.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(peer = %ctx.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tls.count_timeout();
            Stats::bump(&ctx.shared.stats.timeouts.header);
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let ctx = Arc::new(ctx.with_scheme("https"));
    serve_http(stream, h2, ctx, &limits, draining, None).await;
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

/// An HTTP/1 connection idle this long is parked: hyper's connection (its 8 KiB read and write
/// buffers, the dispatcher) is dropped and the socket waits with no buffer at all until the client
/// writes again, as nginx frees a connection's request buffers when it goes idle. Short enough
/// that idle connections cost little within a second; long enough that a busy keep-alive
/// connection (the next request within milliseconds) never pays for a new hyper connection.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// HTTP/2 limits: enough concurrency for browsers and gRPC, bounded headers, and hyper's
/// defences against rapid reset (CVE-2023-44487) and CONTINUATION floods kept tight.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// A client stream that can park: tell when its socket has bytes without reading them (and so
/// without a buffer), and, for plain TCP, leave its task for the engine's [`ParkingLot`].
pub trait Parkable: Sized {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The bare socket, when it can wait in the parking lot.
    fn into_tcp(self) -> Result<TcpStream, Self>;
}

impl Parkable for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
}

/// An idle TLS connection has no plaintext waiting in rustls (hyper read until it would block,
/// and nothing has arrived since), so the next bytes to look for are on the socket. Its session
/// state keeps it in its task.
impl Parkable for TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}

impl<S: Parkable> Parkable for TrackedStream<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_replay() {
            return Poll::Ready(Ok(()));
        }
        self.get_ref().poll_read_ready(cx)
    }

    /// Only with nothing to replay: bytes already read must be served before the socket's.
    fn into_tcp(self) -> Result<TcpStream, Self> {
        self.try_map_inner(S::into_tcp)
    }
}

type ServedResponse = hyper::Response<crate::response::ResponseBody>;

/// What a downstream connection's hyper service is, whichever of the two below.
trait ConnService:
    hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = ServedResponse,
        Error = Infallible,
        Future: Send,
    > + Clone
{
}

impl<S> ConnService for S where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = ServedResponse,
            Error = Infallible,
            Future: Send,
        > + Clone
{
}

/// The hyper service of one HTTP/1 connection.
fn conn_service(ctx: Arc<ConnContext>) -> impl ConnService {
    service_fn(move |req| respond(req, Arc::clone(&ctx)))
}

/// The hyper service of an HTTP/2 connection: as [`conn_service`], with each request's future
/// boxed. hyper runs every HTTP/2 stream as a task of its own, and spawning a task moves its
/// future several times (into the task cell, then the stage with its output): with the request's
/// future inline (about 6 KiB) those copies cost ~5,900 instructions a request. The box is built
/// in place: `Box::pin` would build the future on the stack and copy it in (~600 more).
fn h2_conn_service(ctx: Arc<ConnContext>) -> impl ConnService {
    service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        crate::boxed::pin_in_place(|| respond(req, ctx))
    })
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    ctx: Arc<ConnContext>,
) -> Result<ServedResponse, Infallible> {
    Ok(proxy::handle(req, ctx).await)
}

/// The downstream timers of one connection.
#[derive(Debug, Clone, Copy)]
struct Timers {
    keepalive: Duration,
    header_timeout: Duration,
    /// How long a client may leave a response unread (`None`: no limit).
    send_timeout: Option<Duration>,
}

async fn serve_http<S>(
    stream: S,
    h2: bool,
    ctx: Arc<ConnContext>,
    limits: &crate::config::LimitsConfig,
    draining: CancellationToken,
    lot: Option<Arc<ParkingLot>>,
) where
    S: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
{
    let activity = Arc::clone(&ctx.activity);
    let conn_ctx = Arc::clone(&ctx);
    let io = TrackedStream::new(stream, Arc::clone(&activity));
    let max_header = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
    let timers = Timers {
        keepalive: limits.keepalive_timeout(),
        header_timeout: limits.header_timeout(),
        // At least 10 ms, as `watch` keeps between looks, however short the limit.
        send_timeout: limits
            .send_timeout()
            .map(|t| t.max(Duration::from_millis(10))),
    };
    if h2 {
        activity.set_multiplexed();
        if timers.send_timeout.is_some() {
            activity.set_watches_streams();
        }
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_INTERVAL);
        let conn = Box::pin(builder.serve_connection(TokioIo::new(io), h2_conn_service(ctx)));
        // Boxed, like the TLS path: HTTP/1 connections (parked ones above all) should not carry
        // the size of this state in their task.
        Box::pin(drive(
            conn, &activity, timers, None, true, &draining, &conn_ctx,
        ))
        .await;
        return;
    }
    let service = conn_service(ctx);
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(max_header.saturating_add(1024).max(MIN_READ_BUFFER))
        // hyper's default of 100 headers keeps its parse arrays on the stack; more would put
        // ~12 KiB on the heap for every request (measured in docs/performance.md).
        .max_header_size(max_header);
    let (mut io, mut service, mut conn_ctx) = (io, service, conn_ctx);
    loop {
        // Boxed, so that parking frees it.
        let conn = Box::pin(
            builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        // The watchdog's state is boxed too: a parked connection's task keeps only its own.
        let driven = Box::pin(drive(
            conn,
            &activity,
            timers,
            Some(PARK_AFTER),
            false,
            &draining,
            &conn_ctx,
        ));
        let Some(conn) = driven.await else {
            return;
        };
        // hyper ended the idle connection without shutting the socket: take it back.
        activity.set_parking(false);
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return; // upgraded meanwhile: the tunnel owns the socket
        };
        let http1::Parts {
            io: tokio_io,
            read_buf,
            service: kept,
            ..
        } = parts;
        io = tokio_io.into_inner();
        io.park(&read_buf);
        // A view into hyper's read buffer: dropped now, not after the wait, or the buffer stays.
        drop(read_buf);
        service = kept;
        if let Some(lot) = lot.as_ref().filter(|l| l.is_open()) {
            // The lot keeps the context by value, in one place with every other parked
            // connection's, rather than scattered over pages that this connection's request
            // freed: those can then go back to the system. It is still shared when a background
            // revalidation holds it; then the connection waits here.
            drop(service);
            conn_ctx = match Arc::try_unwrap(conn_ctx) {
                Ok(ctx) => match io.into_tcp() {
                    Ok(tcp) => {
                        let deadline = activity.idle_deadline(timers.keepalive);
                        lot.park(tcp, ParkedConn::from(ctx), deadline);
                        // The lot holds the connection from here; this task ends.
                        return;
                    }
                    // Bytes already read wait to be replayed: wait here.
                    Err(back) => {
                        io = back;
                        Arc::new(ctx)
                    }
                },
                Err(shared) => shared,
            };
            service = conn_service(Arc::clone(&conn_ctx));
        }
        let parked = ParkedCount::park(&conn_ctx.shared.stats);
        let resumed = wait_parked(&io, &activity, timers.keepalive, &draining).await;
        drop(parked);
        if !resumed {
            // Keep-alive ran out or the engine drains: close as hyper would have.
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, io.shutdown()).await;
            return;
        }
        // The client wrote: its request head is timed from now.
        activity.head_started();
    }
}

/// Waits, holding no buffer, for a parked connection's client to write again. False when the
/// connection should close instead: keep-alive ran out, or the engine drains.
async fn wait_parked<S: Parkable>(
    io: &S,
    activity: &ConnActivity,
    keepalive: Duration,
    draining: &CancellationToken,
) -> bool {
    tokio::select! {
        biased;
        _ = draining.cancelled() => false,
        ready = std::future::poll_fn(|cx| io.poll_read_ready(cx)) => ready.is_ok(),
        _ = tokio::time::sleep_until(activity.idle_deadline(keepalive)) => false,
    }
}

/// Runs a connection next to its watchdog: idle and header timers, graceful drain, and (with
/// `park_after`) parking when idle; with `streams` (HTTP/2), the send timeout of streams
/// starved of flow-control window ([`crate::starved`]). Returns the connection when it ended
/// because it was parked.
async fn drive<C: Graceful>(
    mut conn: Pin<Box<C>>,
    activity: &ConnActivity,
    timers: Timers,
    park_after: Option<Duration>,
    streams: bool,
    draining: &CancellationToken,
    ctx: &ConnContext,
) -> Option<Pin<Box<C>>> {
    let (peer, timeouts) = (ctx.peer, &ctx.shared.stats.timeouts);
    let mut closing = false;
    let mut parking = false;
    let mut idle_close_by = None;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let now = tokio::time::Instant::now();
        let park = park_after.filter(|_| !closing && !parking);
        let next = match activity.watch(now, timers.keepalive, timers.header_timeout, park) {
            // Stalled mid-head: nothing in flight to lose.
            Watch::Close => {
                Stats::bump(&timeouts.header);
                return None;
            }
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
                Some(by) if now >= by => return None,
                Some(by) => by,
            },
            // Tell hyper to end the idle connection; the socket's shutdown is skipped meanwhile.
            Watch::Park => {
                activity.set_parking(true);
                conn.as_mut().graceful();
                parking = true;
                now + IDLE_CLOSE_GRACE
            }
            Watch::Until(at) => at,
        };
        let next = match timers.send_timeout {
            Some(limit) => match activity.write_blocked_since() {
                // A client that stopped reading holds its response's origin connection: closed,
                // as nginx's `send_timeout` does.
                Some(since) if since + limit <= now => {
                    tracing::info!(%peer, "client stopped reading a response; closed");
                    Stats::bump(&timeouts.send);
                    return None;
                }
                Some(since) => next.min(since + limit),
                // Nothing wakes the watchdog when a write blocks: it looks that often.
                None => next.min(now + limit),
            },
            None => next,
        };
        let watch = streams.then(|| ctx.starvation_watch()).flatten();
        let next = match (timers.send_timeout, watch) {
            (Some(limit), Some(watch)) => watch
                .look(limit, now, &timeouts.send)
                .map_or(next, |at| next.min(at)),
            _ => next,
        };
        timer.as_mut().reset(next);
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                return match result {
                    Ok(()) if parking && !closing => Some(conn),
                    Ok(()) => None,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "connection ended");
                        None
                    }
                };
            }
            _ = draining.cancelled(), if !closing => {
                // Finish what is in flight (HTTP/1: `Connection: close`; HTTP/2: GOAWAY), then close.
                conn.as_mut().graceful();
                closing = true;
            }
            _ = &mut timer => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F: Future>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open connection holds one task as large as `serve_connection`'s largest state, parked
    /// or not: the bulk of an idle connection's memory once hyper's buffers are gone. The TLS
    /// handshake, HTTP/2 and the watchdog are boxed so that they do not set that size.
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(serve_connection);
        assert!(size <= 1536, "serve_connection's future is {size} bytes");
        let size = future_size(resume_parked);
        assert!(size <= 1536, "resume_parked's future is {size} bytes");
    }
}
