//! Listening sockets, the accept loop and the life of one downstream connection.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{ConnActivity, TrackedStream, Watch};
use crate::engine::Shared;
use crate::proxy::{self, ConnContext};
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
    pub(crate) stop: CancellationToken,
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
pub fn bind(address: &str, redirect: Option<u16>) -> io::Result<(TcpListener, ListenerRuntime)> {
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
        stop: CancellationToken::new(),
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
                    peer,
                    listener: Arc::clone(&runtime),
                    shared: Arc::clone(&shared),
                    activity: Arc::new(ConnActivity::new()),
                };
                connections.spawn(serve_connection(stream, ctx, draining.clone(), permit));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, address = %runtime.local_addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::debug!(address = %runtime.local_addr, "listener stopped");
}

async fn serve_connection(
    stream: TcpStream,
    ctx: ConnContext,
    draining: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let shared = Arc::clone(&ctx.shared);
    let _count = ConnectionCount::open(&shared.stats);
    let limits = shared.state.load().limits.clone();
    let activity = Arc::clone(&ctx.activity);
    let peer = ctx.peer;
    let io = TokioIo::new(TrackedStream::new(stream, Arc::clone(&activity)));
    let ctx = Arc::new(ctx);
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(proxy::handle(req, ctx).await) }
    });
    let max_header = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(max_header.saturating_add(1024).max(MIN_READ_BUFFER))
        .max_header_size(max_header)
        .max_headers(256);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    let keepalive = limits.keepalive_timeout();
    let header_timeout = limits.header_timeout();
    let mut closing = false;
    loop {
        let next = match activity.watch(tokio::time::Instant::now(), keepalive, header_timeout) {
            Watch::Close => break, // idle or stalled mid-head: nothing in flight to lose
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
                // Finish the request in flight (its response says `Connection: close`), then close.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(next) => {}
            _ = activity.changed() => {}
        }
    }
}
