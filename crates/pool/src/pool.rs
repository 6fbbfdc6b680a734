use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::OriginBody;
use crate::conn::Connection;
use crate::error::SendError;
use crate::request::Payload;

/// How long idle connections beyond `max_idle` are kept unused before the sweep closes them.
pub const SURPLUS_AGE: Duration = Duration::from_secs(1);

thread_local! {
    /// The engine worker this thread runs (see [`set_worker`]); 0 for any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as the engine's worker `index`. A pool keeps one stack of idle
/// connections per worker: a connection is registered with the reactor of the worker that
/// opened it, and one handed to another worker would have every readiness event of its exchange
/// cross threads (the owner's reactor waking the other worker's task). Each worker thus reuses
/// its own connections, and takes another worker's only when every slot is in use.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// Tuning for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Open connections (idle or in use) at most. A checkout beyond it waits for one to free up.
    pub max_connections: usize,
    /// How long a checkout waits when all `max_connections` are in use.
    pub queue_timeout: Duration,
    /// Idle connections kept once traffic falls: more stay while they are wanted, and are closed
    /// after [`SURPLUS_AGE`] unused.
    pub max_idle: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// The engine's worker count: one idle stack each (see [`set_worker`]); `max_idle` is
    /// shared out among them.
    pub workers: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            queue_timeout: Duration::from_secs(1),
            max_idle: 16,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            workers: 1,
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
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::PoolExhausted => f.write_str("connection pool exhausted"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Timeout | ConnectError::PoolExhausted => None,
            ConnectError::Io(e) => Some(e),
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
struct Idle {
    conn: Connection,
    slot: OwnedSemaphorePermit,
    since: Instant,
}

/// One worker's idle connections, most recently released last. The lock is only contended when
/// another worker takes from it or returns one of its connections (every slot in use) or the
/// sweep runs; a cache line of its own keeps the workers' stacks from sharing one (the pool's
/// counters and its semaphore are still shared by all).
#[repr(align(128))]
#[derive(Default)]
struct Stack(Mutex<Vec<Idle>>);

struct Shared {
    address: String,
    config: PoolConfig,
    /// One stack per worker.
    idle: Box<[Stack]>,
    /// One permit per connection that may be open.
    slots: Arc<Semaphore>,
    /// Wakes queued checkouts when a connection becomes idle (its slot does not come free then),
    /// the longest waiting first.
    released: Notify,
    /// Checkouts queued now. While any are, a new checkout does not take an idle connection
    /// ahead of them: it queues behind them.
    waiting: AtomicUsize,
    created: AtomicU64,
    reused: AtomicU64,
    active: AtomicU64,
    exhausted: AtomicU64,
    queue_timeouts: AtomicU64,
}

/// The connection pool of one backend address (`host:port`).
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

impl Clone for UpstreamPool {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("address", &self.shared.address)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    pub fn new(address: impl Into<String>, config: PoolConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                address: address.into(),
                slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
                idle: (0..config.workers.max(1))
                    .map(|_| Stack::default())
                    .collect(),
                config,
                released: Notify::new(),
                waiting: AtomicUsize::new(0),
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

    /// Hands out this worker's most recently released live connection, or opens a new one when
    /// the pool has room, or takes another worker's idle one; otherwise waits up to the queue
    /// timeout for any of these. While other checkouts wait, it queues behind them first.
    pub async fn checkout(&self) -> Result<PooledConn, ConnectError> {
        // The usual case, kept small: every request's future is as large as its largest path,
        // and the connect-or-wait path (TCP connect, the queue) is kilobytes.
        let shared = &self.shared;
        if shared.waiting.load(Ordering::Relaxed) == 0 {
            if let Some((conn, slot)) = shared.own().pop_live(&shared.config) {
                shared.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(self.lease(conn, slot, true));
            }
        }
        Box::pin(self.checkout_inner(true)).await
    }

    /// Like [`checkout`](Self::checkout), but always a new connection: for replaying a request
    /// that failed on a reused one.
    pub async fn checkout_new(&self) -> Result<PooledConn, ConnectError> {
        Box::pin(self.checkout_inner(false)).await
    }

    async fn checkout_inner(&self, reuse: bool) -> Result<PooledConn, ConnectError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.queue_timeout;
        let mut queued: Option<InQueue<'_>> = None;
        let slot = loop {
            // Listening for releases before looking: a connection released after the look wakes
            // this checkout (or leaves it a permit), so none sits unused while it waits.
            let released = shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // Queued checkouts are served before newer ones (HAProxy's order): one that is not
            // queued takes no idle connection while others wait.
            let may_take = queued.is_some() || shared.waiting.load(Ordering::Relaxed) == 0;
            if reuse && may_take {
                if let Some((conn, slot)) = shared.own().pop_live(&shared.config) {
                    return Ok(self.lease_queued(conn, slot, queued));
                }
            }
            // A free slot next: a connection of this worker's own rather than another's.
            if let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() {
                break slot;
            }
            // Every slot is in use: another worker's idle connection, or, when a new connection
            // is wanted, any idle connection's slot (the connection is closed).
            if let Some((conn, slot)) = may_take.then(|| shared.pop_any(reuse)).flatten() {
                if reuse {
                    return Ok(self.lease_queued(conn, slot, queued));
                }
                drop(conn);
                break slot;
            }
            if queued.is_none() {
                queued = Some(InQueue::join(&shared.waiting));
                shared.exhausted.fetch_add(1, Ordering::Relaxed);
            }
            let slots = Arc::clone(&shared.slots);
            tokio::select! {
                slot = slots.acquire_owned() => match slot {
                    Ok(slot) => break slot,
                    Err(_) => return Err(ConnectError::PoolExhausted),
                },
                _ = released => {}
                _ = tokio::time::sleep_until(deadline) => {
                    shared.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(ConnectError::PoolExhausted);
                }
            }
        };
        // Out of the queue before connecting: idle connections released meanwhile are for the
        // checkouts still waiting, not held back for this one's connect.
        drop(queued);
        self.open(slot).await
    }

    /// An idle connection for a checkout of the slow path. One that was queued leaves the queue
    /// and passes a wake-up on while others wait: two connections released at once leave one
    /// stored wake-up, and the second connection must not sit idle behind a sleeping waiter.
    fn lease_queued(
        &self,
        conn: Connection,
        slot: OwnedSemaphorePermit,
        queued: Option<InQueue<'_>>,
    ) -> PooledConn {
        if let Some(place) = queued {
            drop(place);
            if self.shared.waiting.load(Ordering::Relaxed) > 0 {
                self.shared.released.notify_one();
            }
        }
        self.shared.reused.fetch_add(1, Ordering::Relaxed);
        self.lease(conn, slot, true)
    }

    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<PooledConn, ConnectError> {
        // On error the slot is dropped here, freeing it for the next checkout.
        let conn = self.connect().await?;
        Ok(self.lease(conn, slot, false))
    }

    /// Closes idle connections that outlived the idle timeout or that the origin closed, and
    /// those beyond each worker's share of `max_idle` (rounded up) that were not wanted for
    /// [`SURPLUS_AGE`]. The engine calls this once a second, so that quiet pools do not hold
    /// sockets open to origins forever.
    pub fn evict_expired(&self) {
        let config = &self.shared.config;
        // Each worker keeps its share of `max_idle`.
        let keep = config.max_idle.div_ceil(self.shared.idle.len());
        let now = Instant::now();
        for stack in &self.shared.idle {
            let mut idle = stack.0.lock();
            idle.retain(|c| {
                now.duration_since(c.since) < config.idle_timeout && c.conn.is_usable()
            });
            // The stack's bottom is the longest unused: the surplus goes from there.
            let surplus = idle.len().saturating_sub(keep);
            let unwanted = idle
                .iter()
                .take(surplus)
                .take_while(|c| now.duration_since(c.since) >= SURPLUS_AGE)
                .count();
            idle.drain(..unwanted);
        }
    }

    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        PoolStats {
            created: shared.created.load(Ordering::Relaxed),
            reused: shared.reused.load(Ordering::Relaxed),
            idle: shared.idle.iter().map(|s| s.0.lock().len() as u64).sum(),
            active: shared.active.load(Ordering::Relaxed),
            exhausted: shared.exhausted.load(Ordering::Relaxed),
            queue_timeouts: shared.queue_timeouts.load(Ordering::Relaxed),
        }
    }

    async fn connect(&self) -> Result<Connection, ConnectError> {
        let address = self.shared.address.as_str();
        let connect = async move {
            let stream = TcpStream::connect(address)
                .await
                .map_err(ConnectError::Io)?;
            // Small requests and responses must not wait on Nagle's algorithm.
            stream.set_nodelay(true).map_err(ConnectError::Io)?;
            let mut conn = Connection::new(stream);
            conn.home = self.shared.own_index();
            Ok(conn)
        };
        let conn = tokio::time::timeout(self.shared.config.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        self.shared.created.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Idle connections on each worker's stack.
    #[cfg(test)]
    fn idle_counts(&self) -> Vec<usize> {
        self.shared.idle.iter().map(|s| s.0.lock().len()).collect()
    }

    fn lease(&self, conn: Connection, slot: OwnedSemaphorePermit, reused: bool) -> PooledConn {
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        PooledConn {
            conn: Some((conn, slot)),
            shared: Arc::clone(&self.shared),
            reused,
        }
    }
}

/// A checkout's place in the queue: counted in `waiting` until it leaves, however it leaves
/// (a connection, the queue timeout, or the request dropped).
struct InQueue<'a>(&'a AtomicUsize);

impl<'a> InQueue<'a> {
    fn join(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stack {
    /// The most recently released connection that is still open and usable; the ones found
    /// expired or closed on the way are dropped (closing them and freeing their slots).
    fn pop_live(&self, config: &PoolConfig) -> Option<(Connection, OwnedSemaphorePermit)> {
        let mut idle = self.0.lock();
        while let Some(idle) = idle.pop() {
            if idle.since.elapsed() < config.idle_timeout && idle.conn.is_usable() {
                return Some((idle.conn, idle.slot));
            }
        }
        None
    }
}

impl Shared {
    /// The calling worker's stack.
    fn own(&self) -> &Stack {
        &self.idle[self.own_index()]
    }

    /// The calling worker's index among the stacks.
    fn own_index(&self) -> usize {
        WORKER.with(Cell::get) % self.idle.len()
    }

    /// A live idle connection from any worker's stack, the caller's first unless `skip_own`
    /// (it was just found empty).
    fn pop_any(&self, skip_own: bool) -> Option<(Connection, OwnedSemaphorePermit)> {
        let own = self.own_index();
        let first = own + usize::from(skip_own);
        let mut order = self.idle[first.min(self.idle.len())..]
            .iter()
            .chain(&self.idle[..own]);
        order.find_map(|s| s.pop_live(&self.config))
    }

    /// Every released connection is kept, whatever `max_idle` says: the sweep closes the
    /// surplus once it has gone unused for [`SURPLUS_AGE`]. Closing it at once (as nginx's
    /// `keepalive N` does) meant that with more requests in flight than `max_idle`, most of each
    /// round's connections were closed as they came back and opened again a moment later: at
    /// 1,000 client connections and `max_idle` 128, every other request paid for a new
    /// connection. The slots still bound idle and busy connections together.
    ///
    /// A connection goes back to the stack of the worker that opened it (whose reactor it is
    /// registered with), whichever worker used it last.
    fn put_idle(&self, conn: Connection, slot: OwnedSemaphorePermit) {
        self.idle[conn.home % self.idle.len()].0.lock().push(Idle {
            conn,
            slot,
            since: Instant::now(),
        });
        self.released.notify_one();
    }
}

/// A connection checked out of a pool. Dropping it closes the connection; the response body
/// releases it to the pool when the exchange on it is complete.
pub struct PooledConn {
    conn: Option<(Connection, OwnedSemaphorePermit)>,
    shared: Arc<Shared>,
    reused: bool,
}

impl fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConn")
            .field("address", &self.shared.address)
            .field("reused", &self.reused)
            .finish()
    }
}

impl PooledConn {
    /// Whether this connection served an earlier request (a failure on it before any response
    /// byte may be the origin having closed it while idle).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Sends one request and reads the response head. The body streams from this connection,
    /// which goes back to the pool when the body has been read to its end (at once, when the
    /// whole body came with the head), and closes if the body is dropped before then.
    ///
    /// `head` is sent as it is (origin-form target, the fields as given) with `HTTP/1.1`, after
    /// the `extra` fields (what a proxy adds, kept out of the head's map). `body_timeout` is the
    /// longest pause allowed in the response body (`None`: no limit): an origin silent for
    /// longer mid-body has its connection closed and the body ends in an error.
    pub async fn send<'a, B>(
        self,
        head: &http::request::Parts,
        extra: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
        payload: Payload<'_, B>,
        body_timeout: Option<Duration>,
    ) -> Result<Response<OriginBody>, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<crate::error::BoxError>,
    {
        crate::exchange::send(self, head, extra, payload, body_timeout).await
    }

    pub(crate) fn connection(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut().map(|(conn, _)| conn)
    }

    /// The connection, leaving the pool for good (its slot frees up).
    pub(crate) fn into_connection(mut self) -> Option<Connection> {
        self.conn.take().map(|(conn, _)| conn)
    }

    /// Returns the connection to the pool: the exchange on it is complete. One holding bytes
    /// beyond the response (an origin that sent more than it framed) is closed instead.
    pub(crate) fn release(mut self) {
        if let Some((mut conn, slot)) = self.conn.take() {
            if conn.read.is_empty() {
                conn.trim();
                self.shared.put_idle(conn, slot);
            }
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A pool of at most `max` connections whose checkouts queue for up to `queue`.
    fn capped(address: String, max: usize, queue: Duration) -> UpstreamPool {
        let config = PoolConfig {
            max_connections: max,
            queue_timeout: queue,
            ..PoolConfig::default()
        };
        UpstreamPool::new(address, config)
    }

    fn get() -> http::request::Parts {
        http::Request::get("/")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    async fn send(conn: PooledConn) -> Response<OriginBody> {
        conn.send(&get(), [], Payload::<Empty<Bytes>>::Empty, None)
            .await
            .expect("response")
    }

    async fn exchange(pool: &UpstreamPool) -> bool {
        let conn = pool.checkout().await.expect("checkout");
        let reused = conn.is_reused();
        let resp = send(conn).await;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
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
        let pool = UpstreamPool::new(address, PoolConfig::default());
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
        let pool = UpstreamPool::new(address, PoolConfig::default());
        assert!(matches!(pool.checkout().await, Err(ConnectError::Io(_))));
    }

    #[tokio::test]
    async fn the_cap_queues_then_times_out() {
        let (address, accepted) = origin().await;
        let pool = capped(address, 2, Duration::from_millis(100));
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
        let pool = capped(address, 1, Duration::from_secs(5));
        let conn = pool.checkout().await.expect("first");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { exchange(&pool).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(conn).await.into_body().collect().await.expect("body");
        assert!(
            waiter.await.expect("join"),
            "the waiter reused the released connection"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_queued_checkout_gets_a_released_connection_before_a_newer_one() {
        let (address, _accepted) = origin().await;
        let pool = capped(address, 1, Duration::from_secs(5));
        let held = pool.checkout().await.expect("the only connection");
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let queued = {
            let (pool, order) = (pool.clone(), Arc::clone(&order));
            tokio::spawn(async move {
                let conn = pool.checkout().await.expect("queued");
                order.lock().push("queued");
                send(conn).await.into_body().collect().await.expect("body");
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Released, and at once (before the queued task runs) a newer checkout: it waits its
        // turn instead of taking the connection on the fast path.
        send(held).await.into_body().collect().await.expect("body");
        let newer = pool.checkout().await.expect("newer");
        order.lock().push("newer");
        send(newer).await.into_body().collect().await.expect("body");
        queued.await.expect("join");
        assert_eq!(*order.lock(), ["queued", "newer"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_keeps_its_connections_until_they_go_unused() {
        let (address, accepted) = origin().await;
        let config = PoolConfig {
            max_idle: 1,
            ..PoolConfig::default()
        };
        let pool = UpstreamPool::new(address, config);
        let burst = three_at_once(&pool).await;
        assert_eq!(burst, (false, false, false), "three connections at once");
        assert_eq!(pool.stats().idle, 3, "all kept, beyond max_idle");
        // Wanted again at once: reused, none opened.
        let again = three_at_once(&pool).await;
        assert_eq!(again, (true, true, true));
        pool.evict_expired();
        assert_eq!(pool.stats().idle, 3, "not yet a second unused");
        tokio::time::advance(SURPLUS_AGE).await;
        pool.evict_expired();
        assert_eq!(pool.stats().idle, 1, "the surplus closed, max_idle kept");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn each_worker_reuses_its_own_connections() {
        let (address, accepted) = origin().await;
        let config = PoolConfig {
            max_connections: 2,
            workers: 2,
            ..PoolConfig::default()
        };
        let pool = UpstreamPool::new(address, config);
        // The test's thread plays each worker in turn.
        set_worker(1);
        assert!(!exchange(&pool).await);
        set_worker(0);
        assert!(
            !exchange(&pool).await,
            "worker 1's idle connection is left to it while a slot is free"
        );
        assert_eq!(pool.stats().idle, 2);
        assert!(exchange(&pool).await);
        set_worker(1);
        assert!(exchange(&pool).await);
        // Every slot in use: worker 0 takes worker 1's idle connection rather than wait.
        set_worker(0);
        let own = pool.checkout().await.expect("own");
        assert!(own.is_reused());
        let other = pool.checkout().await.expect("the other worker's");
        assert!(other.is_reused());
        // Both released by worker 0: each goes back to the worker that opened it.
        for conn in [own, other] {
            send(conn).await.into_body().collect().await.expect("body");
        }
        assert_eq!(pool.idle_counts(), [1, 1]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Three exchanges in flight at once; whether each reused a connection.
    async fn three_at_once(pool: &UpstreamPool) -> (bool, bool, bool) {
        let (a, b, c) = tokio::join!(pool.checkout(), pool.checkout(), pool.checkout());
        let conns = [a, b, c].map(|c| c.expect("checkout"));
        let reused = conns.each_ref().map(PooledConn::is_reused);
        for conn in conns {
            send(conn).await.into_body().collect().await.expect("body");
        }
        (reused[0], reused[1], reused[2])
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
