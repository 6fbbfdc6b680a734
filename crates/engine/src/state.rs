//! The configuration-derived state every request reads: routes, upstreams, limits, access log.
//!
//! A [`ProxyState`] is immutable. A reload builds a new one and swaps it in atomically; requests
//! already running keep the `Arc` they started with and finish on the old configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_balance::{Algorithm, Backend};
use gatehouse_pool::PoolConfig;

use crate::access_log::AccessLog;
use crate::config::{backend_address, BalanceConfig, ConfigError, EngineConfig, LimitsConfig};
use crate::routes::{HostMatch, Route, Router};
use crate::upstream::{BackendHandle, ExternalPolicy, Pool, Upstream, UpstreamSettings};

#[derive(Debug)]
pub struct ProxyState {
    pub router: Router,
    /// Present when `cache.enabled`; kept across reloads (see `Engine::reload`).
    pub cache: Option<gatehouse_cache::Cache>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub limits: LimitsConfig,
    pub access_log: Option<Arc<AccessLog>>,
}

/// Backends and pools by upstream and URL, kept across reloads so that a backend that stays in
/// the configuration keeps its counters, health and idle connections.
#[derive(Debug)]
pub struct BackendRegistry {
    handles: HashMap<(String, String), (BackendHandle, PoolConfig)>,
    /// The engine's worker count: each pool keeps an idle stack per worker.
    workers: usize,
}

impl BackendRegistry {
    pub fn new(workers: usize) -> Self {
        Self {
            handles: HashMap::new(),
            workers,
        }
    }

    fn handle(
        &self,
        key: &(String, String),
        weight: u32,
        pool: &PoolConfig,
    ) -> Result<BackendHandle, String> {
        let url = key.1.as_str();
        if let Some((handle, existing)) = self.handles.get(key) {
            handle.backend.set_weight(weight);
            if existing == pool {
                return Ok(handle.clone());
            }
            // New pool settings: a fresh pool, the same backend and its counters.
            return Ok(BackendHandle {
                backend: Arc::clone(&handle.backend),
                pool: Pool::new(backend_address(url)?, pool.clone()),
            });
        }
        Ok(BackendHandle {
            backend: Arc::new(Backend::new(url, weight)),
            pool: Pool::new(backend_address(url)?, pool.clone()),
        })
    }
}

impl ProxyState {
    /// Builds the state for `config`, reusing what `registry` already has. On success returns the
    /// registry to keep for the next reload; on error nothing has changed.
    pub fn build(
        config: &EngineConfig,
        registry: &BackendRegistry,
        policies: &HashMap<String, Arc<Box<dyn ExternalPolicy>>>,
        access_log: Option<Arc<AccessLog>>,
        cache: Option<gatehouse_cache::Cache>,
    ) -> Result<(ProxyState, BackendRegistry), ConfigError> {
        let mut next = BackendRegistry::new(registry.workers);
        let mut upstreams = BTreeMap::new();
        for (name, up) in &config.upstreams {
            if up.backends.is_empty() {
                return Err(ConfigError {
                    path: format!("upstreams.{name}.backends"),
                    message: "at least one backend is required".into(),
                });
            }
            let pool = PoolConfig {
                max_connections: up.pool.max_connections as usize,
                queue_timeout: Duration::from_millis(up.pool.queue_timeout_ms),
                max_idle: up.pool.max_idle as usize,
                idle_timeout: Duration::from_millis(up.pool.idle_timeout_ms),
                connect_timeout: Duration::from_millis(up.pool.connect_timeout_ms),
                workers: registry.workers,
            };
            let mut handles = Vec::with_capacity(up.backends.len());
            for (i, b) in up.backends.iter().enumerate() {
                let key = (name.clone(), b.url.clone());
                if next.handles.contains_key(&key) {
                    return Err(ConfigError {
                        path: format!("upstreams.{name}.backends[{i}].url"),
                        message: "listed twice in this upstream (use weight instead)".into(),
                    });
                }
                let handle =
                    registry
                        .handle(&key, b.weight, &pool)
                        .map_err(|message| ConfigError {
                            path: format!("upstreams.{name}.backends[{i}].url"),
                            message,
                        })?;
                next.handles.insert(key, (handle.clone(), pool.clone()));
                handles.push(handle);
            }
            let algorithm = match up.balance {
                BalanceConfig::RoundRobin => Some(Algorithm::RoundRobin),
                BalanceConfig::WeightedRoundRobin => Some(Algorithm::WeightedRoundRobin),
                BalanceConfig::LeastConn => Some(Algorithm::LeastConn),
                BalanceConfig::IpHash => Some(Algorithm::IpHash),
                BalanceConfig::Random => Some(Algorithm::Random),
                BalanceConfig::P2cEwma => Some(Algorithm::P2cEwma),
                BalanceConfig::External => None,
            };
            let upstream = Upstream::new(
                name.clone(),
                handles,
                UpstreamSettings {
                    algorithm,
                    response_timeout: Duration::from_millis(up.timeouts.response_ms),
                    body_timeout: (up.timeouts.body_ms > 0)
                        .then(|| Duration::from_millis(up.timeouts.body_ms)),
                    tunnel_timeout: (up.timeouts.tunnel_ms > 0)
                        .then(|| Duration::from_millis(up.timeouts.tunnel_ms)),
                    retries: up.retries.clone(),
                    passive: up.passive_health.clone(),
                },
            );
            if let Some(policy) = policies.get(name) {
                upstream.policy.store(Some(Arc::clone(policy)));
            }
            upstreams.insert(name.clone(), Arc::new(upstream));
        }
        let router = build_router(config, &upstreams, cache.is_some())?;
        let state = ProxyState {
            router,
            cache,
            upstreams,
            limits: config.limits.clone(),
            access_log,
        };
        Ok((state, next))
    }
}

fn build_router(
    config: &EngineConfig,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    caching: bool,
) -> Result<Router, ConfigError> {
    if config.routes.is_empty() {
        // Without routes, a single upstream takes everything.
        let mut only = upstreams.values();
        return match (only.next(), only.next()) {
            (Some(up), None) => Ok(Router::new(vec![Route {
                host: HostMatch::Any,
                path_prefix: None,
                upstream: Arc::clone(up),
                cache: caching,
            }])),
            _ => Err(ConfigError {
                path: "routes".into(),
                message: "routes are required unless there is exactly one upstream".into(),
            }),
        };
    }
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let upstream = upstreams.get(&r.upstream).ok_or_else(|| ConfigError {
            path: format!("routes[{i}].upstream"),
            message: format!("no upstream named '{}'", r.upstream),
        })?;
        routes.push(Route {
            host: HostMatch::parse(r.host.as_deref()),
            path_prefix: r.path_prefix.clone(),
            upstream: Arc::clone(upstream),
            cache: caching && r.cache.unwrap_or(true),
        });
    }
    Ok(Router::new(routes))
}
