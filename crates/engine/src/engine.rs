//! The engine's lifecycle: its worker threads, start, reload, stats and graceful shutdown.
//!
//! The engine owns its threads. The embedding program (the Node addon) calls in from its own
//! thread only to start, reload, read stats and stop; no request ever waits on that thread.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::{CacheSettings, ConfigError, EngineConfig, ListenerConfig, LogConfig};
use crate::listener::{self, ListenerRuntime};
use crate::parking::ParkingLot;
use crate::state::{BackendRegistry, ProxyState};
use crate::stats::Stats;
use crate::upstream::{ExternalPolicy, Upstream};
use crate::workers::Workers;
use gatehouse_cache::{Cache, CacheConfig};
use gatehouse_tls::{Terminator, TlsStats};

/// How often idle upstream connections are checked against their idle timeout, and certificate
/// files for changes.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How many more parked connections than at the last heap release make another worthwhile before
/// the count settles: each freed about 16 KiB of buffers (see [`Engine::set_heap_release`]).
const HEAP_RELEASE_BATCH: u64 = 1024;

/// Certificates expiring sooner than this are logged and flagged in stats.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// When to give freed heap memory back (see [`Engine::set_heap_release`]), judged from the number
/// of parked connections once per housekeeping tick.
#[derive(Debug, Default)]
struct HeapRelease {
    /// Parked connections at the last release (or the lowest count since).
    released_at: u64,
    /// Parked connections at the previous tick.
    last_seen: u64,
}

impl HeapRelease {
    /// Whether to release now: after [`HEAP_RELEASE_BATCH`] more connections parked than at the
    /// last release, or once any growth has settled (the count unchanged for a tick).
    ///
    /// Only growth counts: a trim locks each allocator arena while it runs (4–16 ms with 10,000
    /// parked connections), so it is kept for the moment memory was actually given up and stays
    /// unused (a burst of connections gone idle), not run under steady churn, where freed memory is
    /// reused at once anyway.
    fn due(&mut self, parked: u64) -> bool {
        let settled = parked == self.last_seen;
        self.last_seen = parked;
        self.released_at = self.released_at.min(parked);
        let due = parked >= self.released_at.saturating_add(HEAP_RELEASE_BATCH)
            || (settled && parked > self.released_at);
        if due {
            self.released_at = parked;
        }
        due
    }
}

fn warn_expiring(address: &str, tls: &Terminator) {
    for (names, not_after) in tls.expiring(std::time::SystemTime::now(), EXPIRY_WARNING) {
        tracing::warn!(address, ?names, expires = %crate::access_log::rfc3339(not_after),
            "certificate expires within 14 days");
    }
}

#[derive(Debug)]
pub enum EngineError {
    Config(ConfigError),
    Bind {
        path: String,
        address: String,
        source: std::io::Error,
    },
    Io(std::io::Error),
    /// An upstream or backend named in a runtime call does not exist.
    NotFound(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Config(e) => e.fmt(f),
            EngineError::Bind {
                path,
                address,
                source,
            } => write!(f, "{path}: cannot listen on {address}: {source}"),
            EngineError::Io(e) => write!(f, "{e}"),
            EngineError::NotFound(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<ConfigError> for EngineError {
    fn from(e: ConfigError) -> Self {
        EngineError::Config(e)
    }
}

/// What every connection and request shares.
#[derive(Debug)]
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
    pub stats: Stats,
    pub connection_slots: Arc<Semaphore>,
    pub tls_stats: Arc<TlsStats>,
    /// The listeners, for the background certificate-rotation check.
    pub listeners: ArcSwap<Vec<Arc<ListenerRuntime>>>,
    /// Gives freed heap memory back to the OS (see [`Engine::set_heap_release`]).
    heap_release: std::sync::OnceLock<fn()>,
}

/// What only start/reload/stop touch.
#[derive(Debug)]
struct Control {
    listeners: Vec<Arc<ListenerRuntime>>,
    registry: BackendRegistry,
    log: LogConfig,
    access_log: Option<Arc<AccessLog>>,
    max_connections: u32,
    /// Per-request policies installed by the embedder, by upstream name.
    policies: HashMap<String, Arc<Box<dyn ExternalPolicy>>>,
    /// The response cache and the settings it was built with: a reload keeps its contents
    /// unless its size settings change.
    cache: Option<(CacheSettings, Cache)>,
}

/// The cache for `settings`, reusing `current` when its settings are unchanged.
fn cache_for(
    settings: &CacheSettings,
    current: Option<&(CacheSettings, Cache)>,
) -> Option<(CacheSettings, Cache)> {
    if !settings.enabled {
        return None;
    }
    if let Some((s, c)) = current {
        if s == settings {
            return Some((s.clone(), c.clone()));
        }
    }
    let config = CacheConfig {
        max_size: usize::try_from(settings.max_size).unwrap_or(usize::MAX),
        max_entry_size: usize::try_from(settings.max_entry_size).unwrap_or(usize::MAX),
        ..CacheConfig::default()
    };
    Some((settings.clone(), Cache::new(config)))
}

/// A bound listener, as reported to the embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub address: String,
    pub local_addr: std::net::SocketAddr,
}

pub struct Engine {
    workers: Option<Workers>,
    /// Where idle plain HTTP/1 connections wait, and the thread that watches them.
    lot: Arc<ParkingLot>,
    lot_thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    control: Mutex<Control>,
    connections: TaskTracker,
    draining: CancellationToken,
    sweeper: CancellationToken,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn open_access_log(log: &LogConfig) -> Result<Option<Arc<AccessLog>>, EngineError> {
    if log.access_log == "off" {
        return Ok(None);
    }
    AccessLog::open(&log.access_log, log.access_format)
        .map(|l| Some(Arc::new(l)))
        .map_err(|e| {
            EngineError::Config(ConfigError {
                path: "log.access_log".into(),
                message: format!("cannot open {}: {e}", log.access_log),
            })
        })
}

impl Engine {
    /// Starts the runtime, binds every listener and begins serving. Nothing listens if any part
    /// of this fails.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = Workers::start(workers).map_err(EngineError::Io)?;
        let access_log = open_access_log(&config.log)?;
        let cache = cache_for(&config.cache, None);
        let (state, registry) = ProxyState::build(
            &config,
            &BackendRegistry::new(workers.len()),
            &HashMap::new(),
            access_log.clone(),
            cache.as_ref().map(|(_, c)| c.clone()),
        )?;
        let max_connections = config.limits.max_connections;
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            stats: Stats::default(),
            connection_slots: Arc::new(Semaphore::new(max_connections as usize)),
            tls_stats: Arc::default(),
            listeners: ArcSwap::from_pointee(Vec::new()),
            heap_release: std::sync::OnceLock::new(),
        });
        // Started last of the fallible steps: from here on a failure drops the engine, whose
        // `Drop` stops the lot's thread.
        let connections = TaskTracker::new();
        let draining = CancellationToken::new();
        let (lot, lot_thread) =
            ParkingLot::start(connections.clone(), draining.clone()).map_err(EngineError::Io)?;
        let engine = Engine {
            workers: Some(workers),
            lot,
            lot_thread: Some(lot_thread),
            shared,
            control: Mutex::new(Control {
                listeners: Vec::new(),
                registry,
                log: config.log.clone(),
                access_log,
                max_connections,
                policies: HashMap::new(),
                cache,
            }),
            connections,
            draining,
            sweeper: CancellationToken::new(),
        };
        let (bound, _) = engine.bind_all(&config.listeners, &[])?;
        {
            let mut control = engine.control.lock();
            control.listeners = bound
                .into_iter()
                .map(|(l, rt)| engine.serve(l, rt))
                .collect();
            engine
                .shared
                .listeners
                .store(Arc::new(control.listeners.clone()));
        }
        engine.spawn_pool_sweeper();
        for l in engine.listeners() {
            tracing::info!(address = %l.address, bound = %l.local_addr, "listening");
        }
        Ok(engine)
    }

    fn workers(&self) -> &Workers {
        // `workers` is only taken by `shutdown`, which consumes the engine.
        self.workers
            .as_ref()
            .unwrap_or_else(|| unreachable!("engine used after shutdown"))
    }

    /// The first worker's runtime: housekeeping, and blocking on the engine from outside.
    fn handle(&self) -> &tokio::runtime::Handle {
        self.workers().first()
    }

    /// Loads the TLS configuration of every listener in `wanted` (re-reading certificate files,
    /// so a reload also rotates certificates), and binds those not already in `existing` (by
    /// configured address). Returns the new listeners and the TLS to apply to each existing one.
    /// Any failure leaves everything as it was.
    #[allow(clippy::type_complexity)]
    fn bind_all(
        &self,
        wanted: &[ListenerConfig],
        existing: &[Arc<ListenerRuntime>],
    ) -> Result<
        (
            Vec<(std::net::TcpListener, ListenerRuntime)>,
            Vec<(Arc<ListenerRuntime>, Option<Arc<Terminator>>)>,
        ),
        EngineError,
    > {
        let mut bound = Vec::new();
        let mut kept = Vec::new();
        for (i, l) in wanted.iter().enumerate() {
            let tls = match &l.tls {
                Some(t) => {
                    let terminator =
                        Terminator::new(t.settings(), Arc::clone(&self.shared.tls_stats)).map_err(
                            |e| ConfigError {
                                path: format!("listeners[{i}].tls.{}", e.setting()),
                                message: e.to_string(),
                            },
                        )?;
                    warn_expiring(&l.address, &terminator);
                    Some(Arc::new(terminator))
                }
                None => None,
            };
            // Each configured listener claims one running listener with its address (several
            // may share `host:0`).
            let claimed = existing
                .iter()
                .find(|e| e.address == l.address && !kept.iter().any(|(k, _)| Arc::ptr_eq(k, e)));
            if let Some(runtime) = claimed {
                kept.push((Arc::clone(runtime), tls));
                continue;
            }
            let pair = listener::bind(&l.address, l.redirect_to_https, tls).map_err(|source| {
                EngineError::Bind {
                    path: format!("listeners[{i}].address"),
                    address: l.address.clone(),
                    source,
                }
            })?;
            bound.push(pair);
        }
        Ok((bound, kept))
    }

    /// Accepts on `listener` in every worker: each registers the shared socket with its own event
    /// loop, and the kernel hands each new connection to one of the workers waiting in accept.
    fn serve(
        &self,
        listener: std::net::TcpListener,
        runtime: ListenerRuntime,
    ) -> Arc<ListenerRuntime> {
        let runtime = Arc::new(runtime);
        runtime.set_sockets(self.workers().len());
        let mut socket = Some(listener);
        let handles: Vec<_> = self.workers().handles().collect();
        for (i, handle) in handles.iter().enumerate() {
            // Every worker but the last gets its own descriptor for the socket.
            let fd = if i + 1 == handles.len() {
                socket.take()
            } else {
                socket.as_ref().and_then(|s| s.try_clone().ok())
            };
            let Some(fd) = fd else {
                runtime.socket_closed();
                continue;
            };
            handle.spawn(listener::accept_loop(
                fd,
                Arc::clone(&runtime),
                Arc::clone(&self.shared),
                self.connections.clone(),
                self.draining.clone(),
                Arc::clone(&self.lot),
            ));
        }
        runtime
    }

    fn spawn_pool_sweeper(&self) {
        let shared = Arc::clone(&self.shared);
        let stop = self.sweeper.clone();
        self.handle().spawn(async move {
            let mut tick = tokio::time::interval(POOL_SWEEP_INTERVAL);
            let mut heap = HeapRelease::default();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                if let Some(&release) = shared.heap_release.get() {
                    if heap.due(Stats::get(&shared.stats.connections_parked)) {
                        tokio::task::spawn_blocking(release);
                    }
                }
                for upstream in shared.state.load().upstreams.values() {
                    upstream.handles.iter().for_each(|h| h.pool.evict_expired());
                }
                for l in shared.listeners.load().iter() {
                    if let Some(tls) = l.tls.load_full() {
                        match tls.rotate_if_changed() {
                            Some(Ok(())) => {
                                tracing::info!(address = %l.address, "certificates reloaded from changed files");
                                warn_expiring(&l.address, &tls);
                            }
                            Some(Err(e)) => tracing::error!(address = %l.address, error = %e,
                                "changed certificate files are unusable; the previous certificates keep serving"),
                            None => {}
                        }
                    }
                }
            }
        });
    }

    /// Installs the function that gives the allocator's free memory back to the OS (glibc's
    /// `malloc_trim`, from the bindings). Idle connections free their buffers when they park (see
    /// `listener::PARK_AFTER`), but glibc keeps freed memory between live allocations resident,
    /// so without it RSS would stay at its high-water mark; Envoy's `shrink_heap` overload action
    /// exists for the same reason. Called from a blocking thread, at most once a second, and only
    /// when more connections are parked than at the last call (`HeapRelease::due`). The first
    /// call wins.
    pub fn set_heap_release(&self, release: fn()) {
        let _ = self.shared.heap_release.set(release);
    }

    /// Swaps in a new configuration atomically. Requests in flight finish on the old one. On any
    /// error (a listener that cannot bind, a bad backend URL) the old configuration stays.
    pub fn reload(&self, config: EngineConfig) -> Result<(), EngineError> {
        let mut control = self.control.lock();
        let access_log = if config.log == control.log {
            control.access_log.clone()
        } else {
            open_access_log(&config.log)?
        };
        let cache = cache_for(&config.cache, control.cache.as_ref());
        let (state, registry) = ProxyState::build(
            &config,
            &control.registry,
            &control.policies,
            access_log.clone(),
            cache.as_ref().map(|(_, c)| c.clone()),
        )?;
        let (new_listeners, tls_updates) = self.bind_all(&config.listeners, &control.listeners)?;

        // From here on nothing can fail: commit.
        self.shared.state.store(Arc::new(state));
        control.registry = registry;
        control.cache = cache;
        control.log = config.log.clone();
        control.access_log = access_log;
        let max = config.limits.max_connections;
        if max > control.max_connections {
            self.shared
                .connection_slots
                .add_permits((max - control.max_connections) as usize);
        } else if max < control.max_connections {
            // Permits held by open connections are forgotten as those connections close.
            let excess = (control.max_connections - max) as usize;
            let slots = Arc::clone(&self.shared.connection_slots);
            self.handle().spawn(async move {
                if let Ok(permits) = slots.acquire_many(excess as u32).await {
                    permits.forget();
                }
            });
        }
        control.max_connections = max;
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        for l in control.listeners.drain(..) {
            if !tls_updates.iter().any(|(k, _)| Arc::ptr_eq(k, &l)) {
                tracing::info!(address = %l.local_addr, "listener removed");
                l.stop.cancel();
                removed.push(l);
            }
        }
        // When reload returns, a removed listener refuses connections (its open ones carry on).
        if !removed.is_empty() {
            self.handle().block_on(async {
                for l in &removed {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), l.closed.cancelled()).await;
                }
            });
        }
        for (listener, tls) in tls_updates {
            if let Some(c) = config
                .listeners
                .iter()
                .find(|c| c.address == listener.address)
            {
                listener.set_redirect_to_https(c.redirect_to_https);
            }
            listener.tls.store(tls);
            kept.push(listener);
        }
        for (listener, runtime) in new_listeners {
            let l = self.serve(listener, runtime);
            tracing::info!(address = %l.address, bound = %l.local_addr, "listening");
            kept.push(l);
        }
        control.listeners = kept;
        self.shared
            .listeners
            .store(Arc::new(control.listeners.clone()));
        Ok(())
    }

    fn upstream(&self, name: &str) -> Result<Arc<Upstream>, EngineError> {
        self.shared
            .state
            .load()
            .upstreams
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no upstream named '{name}'")))
    }

    /// Sets backends' weights in one step: the next pick uses all of them. Unknown URLs are an
    /// error and change nothing.
    pub fn set_weights(
        &self,
        upstream: &str,
        weights: &[(String, u32)],
    ) -> Result<(), EngineError> {
        let up = self.upstream(upstream)?;
        let mut targets = Vec::with_capacity(weights.len());
        for (url, weight) in weights {
            let backend = up.backends.iter().find(|b| b.url() == url).ok_or_else(|| {
                EngineError::NotFound(format!("upstream '{upstream}' has no backend {url}"))
            })?;
            targets.push((backend, *weight));
        }
        for (backend, weight) in targets {
            backend.set_weight(weight);
        }
        up.weights_changed();
        Ok(())
    }

    /// Applies the active health checks' verdict for one backend.
    pub fn set_backend_health(
        &self,
        upstream: &str,
        url: &str,
        healthy: bool,
    ) -> Result<(), EngineError> {
        let up = self.upstream(upstream)?;
        let backend = up.backends.iter().find(|b| b.url() == url).ok_or_else(|| {
            EngineError::NotFound(format!("upstream '{upstream}' has no backend {url}"))
        })?;
        backend.set_checks_healthy(healthy);
        Ok(())
    }

    /// Purges the cache: everything (`None`), one URL (`https://host/path?q` or `host/path?q`),
    /// or a path on every host (`/path?q`). Returns how many stored responses were removed.
    pub fn purge_cache(&self, url: Option<&str>) -> Result<usize, EngineError> {
        let control = self.control.lock();
        let Some((_, cache)) = &control.cache else {
            return Err(EngineError::NotFound("the cache is not enabled".into()));
        };
        match url {
            None => Ok(cache.purge_all()),
            Some(path) if path.starts_with('/') => Ok(cache.purge_path(path)),
            Some(url) => cache
                .purge_url(url)
                .ok_or_else(|| EngineError::NotFound(format!("not a URL or path: {url}"))),
        }
    }

    /// Installs (or with `None` removes) the per-request policy of an upstream configured with
    /// an external policy. It survives reloads.
    pub fn set_policy(
        &self,
        upstream: &str,
        policy: Option<Box<dyn ExternalPolicy>>,
    ) -> Result<(), EngineError> {
        let up = self.upstream(upstream)?;
        let mut control = self.control.lock();
        match policy {
            Some(p) => {
                let p = Arc::new(p);
                control.policies.insert(upstream.to_owned(), Arc::clone(&p));
                up.policy.store(Some(p));
            }
            None => {
                control.policies.remove(upstream);
                up.policy.store(None);
            }
        }
        Ok(())
    }

    pub fn listeners(&self) -> Vec<BoundListener> {
        self.control
            .lock()
            .listeners
            .iter()
            .map(|l| BoundListener {
                address: l.address.clone(),
                local_addr: l.local_addr,
            })
            .collect()
    }

    /// The `/stats` document (without the parts the control plane adds).
    pub fn stats(&self) -> Value {
        let s = &self.shared.stats;
        let get = Stats::get;
        let state = self.shared.state.load();
        let upstreams: serde_json::Map<String, Value> = state
            .upstreams
            .iter()
            .map(|(name, up)| {
                let backends: Vec<Value> = up
                    .handles
                    .iter()
                    .map(|h| {
                        let b = h.backend.stats();
                        let p = h.pool.stats();
                        json!({
                            "url": b.url, "healthy": b.healthy, "weight": b.weight,
                            "checks_healthy": b.checks_healthy, "ejected": b.ejected,
                            "ejections": b.ejections, "latency_ewma_ms": b.latency_ewma_ms,
                            "active": b.active, "requests": b.requests, "failures": b.failures,
                            "pool": { "created": p.created, "reused": p.reused,
                                      "idle": p.idle, "active": p.active,
                                      "exhausted": p.exhausted, "queue_timeouts": p.queue_timeouts },
                        })
                    })
                    .collect();
                let balance = if up.uses_policy { "module" } else { "builtin" };
                (name.clone(), json!({ "balance": balance, "backends": backends }))
            })
            .collect();
        let control = self.control.lock();
        let listeners: Vec<Value> = control
            .listeners
            .iter()
            .map(|l| json!({ "address": l.address, "bound": l.local_addr.to_string() }))
            .collect();
        let dropped = control.access_log.as_ref().map_or(0, |l| l.dropped());
        let now = std::time::SystemTime::now();
        let certificates: Vec<Value> = control
            .listeners
            .iter()
            .filter_map(|l| l.tls.load_full().map(|t| (l.address.clone(), t)))
            .flat_map(|(address, t)| {
                t.certificates()
                    .into_iter()
                    .map(move |(names, not_after, file)| {
                        let left = not_after.duration_since(now).unwrap_or_default();
                        json!({
                            "listener": address, "names": names, "file": file,
                            "not_after": crate::access_log::rfc3339(not_after),
                            "expires_in_days": left.as_secs() / 86_400,
                            "expiring_soon": left < EXPIRY_WARNING,
                        })
                    })
            })
            .collect();
        let t = &self.shared.tls_stats;
        let cache = control.cache.as_ref().map(|(_, c)| {
            let c = c.stats();
            json!({
                "hits": c.hits, "misses": c.misses, "stale": c.stale, "expired": c.expired,
                "revalidations": c.revalidations, "bypasses": c.bypasses, "coalesced": c.coalesced,
                "stores": c.stores, "evictions": c.evictions, "entries": c.entries,
                "size_bytes": c.size_bytes,
            })
        });
        json!({
            "listeners": listeners,
            "connections": {
                "active": get(&s.connections_active), "total": get(&s.connections_total),
                "parked": get(&s.connections_parked),
            },
            "requests": {
                "total": get(&s.requests_total),
                "by_status": {
                    "1xx": get(&s.responses[0]), "2xx": get(&s.responses[1]),
                    "3xx": get(&s.responses[2]), "4xx": get(&s.responses[3]),
                    "5xx": get(&s.responses[4]),
                },
            },
            "upstreams": upstreams,
            "upgrades": { "active": get(&s.upgrades_active), "total": get(&s.upgrades_total) },
            "timeouts": {
                "header": get(&s.timeouts.header), "body": get(&s.timeouts.body),
                "send": get(&s.timeouts.send), "tunnel": get(&s.timeouts.tunnel),
            },
            "tls": {
                "handshakes": get(&t.handshakes), "failures": get(&t.failures),
                "failure_reasons": t.failure_reasons(), "resumed": get(&t.resumed),
                "versions": { "TLSv1.2": get(&t.tls12), "TLSv1.3": get(&t.tls13) },
                "certificates": certificates,
            },
            "access_log": { "dropped": dropped },
            "cache": cache,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then stops every
    /// thread. Blocks; call it from a thread that is not one of the engine's.
    pub fn shutdown(mut self, grace: Duration) {
        let listeners: Vec<_> = self.control.lock().listeners.drain(..).collect();
        for l in &listeners {
            l.stop.cancel();
        }
        self.draining.cancel();
        self.stop_lot();
        self.connections.close();
        let connections = self.connections.clone();
        let drained = self
            .handle()
            .block_on(async move { tokio::time::timeout(grace, connections.wait()).await });
        if drained.is_err() {
            tracing::warn!(
                remaining = self.connections.len(),
                "grace period over, closing remaining connections"
            );
        }
        self.sweeper.cancel();
        if let Some(workers) = self.workers.take() {
            workers.shutdown(Duration::from_secs(1));
        }
        // Listener sockets were owned by their accept loops, which the workers have now dropped.
        drop(listeners);
    }

    /// Closes the parked connections and ends the parking lot's thread: the engine drains.
    fn stop_lot(&mut self) {
        self.lot.stop();
        if let Some(thread) = self.lot_thread.take() {
            let _ = thread.join();
        }
    }

    /// Whether new connections are refused and existing ones are being drained.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(workers) = self.workers.take() {
            self.draining.cancel();
            self.stop_lot();
            drop(workers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_release_follows_parked_growth_only() {
        let mut h = HeapRelease::default();
        assert!(!h.due(0), "nothing parked");
        assert!(!h.due(100), "growing");
        assert!(h.due(100), "settled after growth");
        assert!(!h.due(100), "released already");
        assert!(!h.due(40), "connections woke up: nothing freed");
        assert!(!h.due(90), "growing again");
        assert!(
            h.due(40 + HEAP_RELEASE_BATCH),
            "a large burst does not wait to settle"
        );
        // Steady churn around a level: no release while the count keeps moving below the batch.
        let mut h = HeapRelease::default();
        let releases = (0..20).filter(|i| h.due(1000 + (i % 2) * 100)).count();
        assert_eq!(releases, 1, "only the first climb to the level is released");
    }
}
