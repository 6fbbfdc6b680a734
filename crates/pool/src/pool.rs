use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Tuning for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Open connections (idle or in use) at most. A checkout beyond it waits for one to free up.
    pub max_connections: usize,
    /// How long a checkout waits when all `max_connections` are in use.
    pub queue_timeout: Duration,
    /// Idle connections kept at most; more are closed when released.
    pub max_idle: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Time allowed for the TCP connect and the (trivial) HTTP/1.1 handshake.
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            queue_timeout: Duration::from_secs(1),
            max_idle: 16,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Why no connection could be had. The proxy maps `PoolExhausted` to 503, `Timeout` to 504 and
/// the rest to 502.
#[derive(Debug)]
pub enum ConnectError {
    /// Every connection stayed busy for the whole queue timeout.
    PoolExhausted,
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::PoolExhausted => f.write_str("connection pool exhausted"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Timeout | ConnectError::PoolExhausted => None,
            ConnectError::Io(e) => Some(e),
            ConnectError::Handshake(e) => Some(e),
        }
    }
}

/// Counters for `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections opened since the pool was created.
    pub created: u64,
    /// Checkouts served by an idle connection instead of a new one.
    pub reused: u64,
    /// Connections idle in the pool now.
    pub idle: u64,
    /// Connections checked out now.
    pub active: u64,
    /// Checkouts that found every connection busy and had to wait.
    pub exhausted: u64,
    /// Checkouts that gave up after the queue timeout.
    pub queue_timeouts: u64,
}

/// An idle connection. It keeps its slot (a semaphore permit), so idle and busy connections
/// together never exceed `max_connections`.
struct Idle<B> {
    sender: SendRequest<B>,
    slot: OwnedSemaphorePermit,
    since: Instant,
}

struct Shared<B> {
    address: String,
    config: PoolConfig,
    idle: Mutex<Vec<Idle<B>>>,
    /// One permit per connection that may be open.
    slots: Arc<Semaphore>,
    /// Wakes queued checkouts when a connection becomes idle (its slot does not come free then).
    released: Notify,
    created: AtomicU64,
    reused: AtomicU64,
    active: AtomicU64,
    exhausted: AtomicU64,
    queue_timeouts: AtomicU64,
}

/// The connection pool of one backend address (`host:port`).
pub struct UpstreamPool<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for UpstreamPool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B> fmt::Debug for UpstreamPool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("address", &self.shared.address)
            .finish_non_exhaustive()
    }
}

impl<B> UpstreamPool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(address: impl Into<String>, config: PoolConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                address: address.into(),
                slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
                config,
                idle: Mutex::new(Vec::new()),
                released: Notify::new(),
                created: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                active: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                queue_timeouts: AtomicU64::new(0),
            }),
        }
    }

    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Hands out the most recently released live connection, or opens a new one when the pool
    /// has room; otherwise waits up to the queue timeout for either.
    pub async fn checkout(&self) -> Result<PooledConn<B>, ConnectError> {
        // The usual case, kept small: every request's future is as large as its largest path,
        // and the connect-or-wait path (TCP connect, hyper's handshake, the queue) is kilobytes.
        if let Some((sender, slot)) = self.pop_live() {
            self.shared.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(self.lease(sender, slot, true));
        }
        Box::pin(self.checkout_inner(true)).await
    }

    /// Like [`checkout`](Self::checkout), but always a new connection: for replaying a request
    /// that failed on a reused one.
    pub async fn checkout_new(&self) -> Result<PooledConn<B>, ConnectError> {
        Box::pin(self.checkout_inner(false)).await
    }

    async fn checkout_inner(&self, reuse: bool) -> Result<PooledConn<B>, ConnectError> {
        let deadline = Instant::now() + self.shared.config.queue_timeout;
        let mut queued = false;
        loop {
            if let Some((sender, slot)) = self.pop_live() {
                if reuse {
                    self.shared.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.lease(sender, slot, true));
                }
                // A new connection is wanted: close this idle one and use its slot.
                drop(sender);
                return self.open(slot).await;
            }
            // Listen for releases before looking for a free slot, so none is missed in between.
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let slots = Arc::clone(&self.shared.slots);
            if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
                return self.open(slot).await;
            }
            if !queued {
                queued = true;
                self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                slot = slots.acquire_owned() => match slot {
                    Ok(slot) => return self.open(slot).await,
                    Err(_) => return Err(ConnectError::PoolExhausted),
                },
                _ = released => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.shared.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(ConnectError::PoolExhausted);
                }
            }
        }
    }

    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<PooledConn<B>, ConnectError> {
        // On error the slot is dropped here, freeing it for the next checkout.
        let sender = self.connect().await?;
        Ok(self.lease(sender, slot, false))
    }

    /// Closes idle connections that outlived the idle timeout. The engine calls this
    /// periodically so that quiet pools do not hold sockets open to origins forever.
    pub fn evict_expired(&self) {
        let timeout = self.shared.config.idle_timeout;
        let now = Instant::now();
        self.shared
            .idle
            .lock()
            .retain(|c| now.duration_since(c.since) < timeout && !c.sender.is_closed());
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            created: self.shared.created.load(Ordering::Relaxed),
            reused: self.shared.reused.load(Ordering::Relaxed),
            idle: self.shared.idle.lock().len() as u64,
            active: self.shared.active.load(Ordering::Relaxed),
            exhausted: self.shared.exhausted.load(Ordering::Relaxed),
            queue_timeouts: self.shared.queue_timeouts.load(Ordering::Relaxed),
        }
    }

    fn pop_live(&self) -> Option<(SendRequest<B>, OwnedSemaphorePermit)> {
        let timeout = self.shared.config.idle_timeout;
        let mut idle = self.shared.idle.lock();
        while let Some(conn) = idle.pop() {
            if conn.sender.is_closed() || conn.since.elapsed() >= timeout {
                // Dropping the sender lets its connection task finish and close; dropping the
                // slot frees room for a new connection.
                continue;
            }
            return Some((conn.sender, conn.slot));
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<B>, ConnectError> {
        let address = self.shared.address.clone();
        let connect = async move {
            let stream = TcpStream::connect(address.as_str())
                .await
                .map_err(ConnectError::Io)?;
            // Small requests and responses must not wait on Nagle's algorithm.
            stream.set_nodelay(true).map_err(ConnectError::Io)?;
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(ConnectError::Handshake)?;
            // `with_upgrades`: a `101 Switching Protocols` hands the socket to the proxy for a
            // WebSocket tunnel instead of closing it.
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            Ok(sender)
        };
        let sender = tokio::time::timeout(self.shared.config.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        self.shared.created.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    fn lease(
        &self,
        sender: SendRequest<B>,
        slot: OwnedSemaphorePermit,
        reused: bool,
    ) -> PooledConn<B> {
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        PooledConn {
            sender: Some((sender, slot)),
            shared: Arc::clone(&self.shared),
            reused,
        }
    }
}

impl<B> Shared<B> {
    fn put_idle(&self, sender: SendRequest<B>, slot: OwnedSemaphorePermit) {
        {
            let mut idle = self.idle.lock();
            if idle.len() < self.config.max_idle {
                idle.push(Idle {
                    sender,
                    slot,
                    since: Instant::now(),
                });
            }
            // Otherwise both drop here: the connection closes and its slot frees up.
        }
        self.released.notify_one();
    }
}

/// A connection checked out of a pool. Dropping it closes the connection; [`release`] returns it.
///
/// [`release`]: PooledConn::release
pub struct PooledConn<B> {
    sender: Option<(SendRequest<B>, OwnedSemaphorePermit)>,
    shared: Arc<Shared<B>>,
    reused: bool,
}

impl<B> fmt::Debug for PooledConn<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConn")
            .field("address", &self.shared.address)
            .field("reused", &self.reused)
            .finish()
    }
}

impl<B> PooledConn<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Whether this connection served an earlier request (a failure on it before any response
    /// byte may be the origin having closed it while idle).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Sends one request. The response body streams from this connection, so the connection
    /// must be released only after that body has been read to the end. When the request could
    /// not be sent at all (the connection was found closed), the error gives it back.
    pub async fn send(
        &mut self,
        request: Request<B>,
    ) -> Result<Response<Incoming>, TrySendError<Request<B>>> {
        match self.sender.as_mut() {
            Some((sender, _)) => sender.try_send_request(request).await,
            // `sender` is only taken by `release`/`drop`, which consume `self`.
            None => unreachable!("PooledConn used after release"),
        }
    }

    /// Returns the connection to the pool once the exchange on it is complete.
    pub fn release(mut self) {
        let Some((mut sender, slot)) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.shared.put_idle(sender, slot);
            return;
        }
        // The connection task has not yet noticed that the exchange is over (it runs on its own
        // task); wait for it there instead of handing out a busy connection.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                shared.put_idle(sender, slot);
            }
        });
    }
}

impl<B> Drop for PooledConn<B> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An origin that answers every request on a connection with a fixed keep-alive response and
    /// counts the connections it accepted.
    async fn origin() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn exchange(pool: &UpstreamPool<Empty<Bytes>>) -> bool {
        let mut conn = pool.checkout().await.expect("checkout");
        let reused = conn.is_reused();
        let req = Request::get("/").body(Empty::new()).expect("request");
        let resp = conn.send(req).await.expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        conn.release();
        reused
    }

    #[tokio::test]
    async fn released_connections_are_reused() {
        let (address, accepted) = origin().await;
        let pool = UpstreamPool::new(address, PoolConfig::default());
        assert!(!exchange(&pool).await);
        for _ in 0..10 {
            tokio::task::yield_now().await;
            assert!(exchange(&pool).await, "second and later exchanges reuse");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let stats = pool.stats();
        assert_eq!((stats.created, stats.reused, stats.active), (1, 10, 0));
    }

    #[tokio::test]
    async fn dropped_connections_are_not_reused() {
        let (address, accepted) = origin().await;
        let pool: UpstreamPool<Empty<Bytes>> = UpstreamPool::new(address, PoolConfig::default());
        drop(pool.checkout().await.expect("checkout"));
        drop(pool.checkout().await.expect("checkout"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stats().idle, 0);
    }

    #[tokio::test]
    async fn refused_connect_is_an_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let pool: UpstreamPool<Empty<Bytes>> = UpstreamPool::new(address, PoolConfig::default());
        assert!(matches!(pool.checkout().await, Err(ConnectError::Io(_))));
    }

    #[tokio::test]
    async fn the_cap_queues_then_times_out() {
        let (address, accepted) = origin().await;
        let config = PoolConfig {
            max_connections: 2,
            queue_timeout: Duration::from_millis(100),
            ..PoolConfig::default()
        };
        let pool: UpstreamPool<Empty<Bytes>> = UpstreamPool::new(address, config);
        let a = pool.checkout().await.expect("first");
        let b = pool.checkout().await.expect("second");
        assert!(matches!(
            pool.checkout().await,
            Err(ConnectError::PoolExhausted)
        ));
        // A waiter gets the slot a dropped connection frees.
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout().await.map(|c| c.is_reused()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(matches!(waiter.await.expect("join"), Ok(false)));
        drop(b);
        let stats = pool.stats();
        assert_eq!((stats.exhausted, stats.queue_timeouts), (2, 1));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_released_connection_goes_to_the_queued_checkout() {
        let (address, accepted) = origin().await;
        let config = PoolConfig {
            max_connections: 1,
            queue_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let pool = UpstreamPool::new(address, config);
        let mut conn = pool.checkout().await.expect("first");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { exchange(&pool).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let req = Request::get("/").body(Empty::new()).expect("request");
        let resp = conn.send(req).await.expect("response");
        resp.into_body().collect().await.expect("body");
        conn.release();
        assert!(
            waiter.await.expect("join"),
            "the waiter reused the released connection"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire() {
        let (address, accepted) = origin().await;
        let config = PoolConfig {
            idle_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let pool = UpstreamPool::new(address, config);
        exchange(&pool).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.stats().idle, 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        pool.evict_expired();
        assert_eq!(pool.stats().idle, 0);
        assert!(
            !exchange(&pool).await,
            "an expired connection is not reused"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
