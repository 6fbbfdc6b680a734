//! An upstream: a named group of backends, how to choose among them, their pools, and the
//! per-upstream policies for failures (passive ejection, retries and their budget).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gatehouse_balance::{Algorithm, Backend, Outcome, SelectContext, Selector};
use gatehouse_pool::UpstreamPool;

use crate::config::{PassiveHealth, RetrySettings};

pub type Pool = UpstreamPool;

/// A backend with the pool of connections to it. Both survive reloads that keep the backend,
/// so counters, health and warm connections carry over.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    pub backend: Arc<Backend>,
    pub pool: Pool,
}

/// What a per-request policy learns about the request.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub client_ip: String,
}

/// A backend as a per-request policy sees it.
#[derive(Debug, Clone)]
pub struct PolicyBackend {
    pub url: String,
    pub weight: u32,
    pub active: u64,
}

pub type PolicyFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// A selection policy supplied by the embedder (the bindings implement it with a JavaScript
/// function). Given the request and the eligible backends, it resolves to the chosen backend's
/// URL, or `None` to fall back to round robin.
pub trait ExternalPolicy: Send + Sync + fmt::Debug {
    fn select(&self, request: PolicyRequest, backends: Vec<PolicyBackend>) -> PolicyFuture;
}

/// How long a per-request policy may take before the request falls back to round robin.
pub const POLICY_TIMEOUT: Duration = Duration::from_secs(1);

/// Retries may add at most `budget_percent` to the request rate: every request deposits that
/// share of a token, every retry spends one. A small reserve allows retries at low traffic.
#[derive(Debug)]
struct RetryBudget {
    /// Thousandths of a token.
    milli_tokens: AtomicI64,
}

const BUDGET_RESERVE: i64 = 10 * 1000;

impl RetryBudget {
    fn deposit(&self, percent: u32) {
        let add = i64::from(percent) * 10;
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + add).min(BUDGET_RESERVE))
            });
    }

    fn withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}

pub struct Upstream {
    pub name: String,
    /// Parallel to `handles`, in the shape the selector wants.
    pub backends: Arc<[Arc<Backend>]>,
    pub handles: Vec<BackendHandle>,
    selector: Selector,
    /// Used when the external policy fails or has not been installed yet.
    fallback: Selector,
    pub policy: ArcSwapOption<Box<dyn ExternalPolicy>>,
    pub uses_policy: bool,
    pub response_timeout: Duration,
    /// The longest pause in a response body (`None`: no limit).
    pub body_timeout: Option<Duration>,
    /// The longest an upgraded connection may stay silent (`None`: no limit).
    pub tunnel_timeout: Option<Duration>,
    pub retries: RetrySettings,
    pub passive: PassiveHealth,
    budget: RetryBudget,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What `Upstream::new` needs besides the backends.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `None` for an external policy.
    pub algorithm: Option<Algorithm>,
    pub response_timeout: Duration,
    pub body_timeout: Option<Duration>,
    pub tunnel_timeout: Option<Duration>,
    pub retries: RetrySettings,
    pub passive: PassiveHealth,
}

impl Upstream {
    pub fn new(name: String, handles: Vec<BackendHandle>, settings: UpstreamSettings) -> Self {
        let backends: Arc<[Arc<Backend>]> =
            handles.iter().map(|h| Arc::clone(&h.backend)).collect();
        let algorithm = settings.algorithm.unwrap_or(Algorithm::RoundRobin);
        Self {
            name,
            selector: Selector::new(algorithm, &backends),
            fallback: Selector::new(Algorithm::RoundRobin, &backends),
            backends,
            handles,
            policy: ArcSwapOption::empty(),
            uses_policy: settings.algorithm.is_none(),
            response_timeout: settings.response_timeout,
            body_timeout: settings.body_timeout,
            tunnel_timeout: settings.tunnel_timeout,
            retries: settings.retries,
            passive: settings.passive,
            budget: RetryBudget {
                milli_tokens: AtomicI64::new(BUDGET_RESERVE),
            },
        }
    }

    /// Picks an eligible backend with the built-in algorithm.
    pub fn select(&self, client_ip: IpAddr, exclude: &[usize]) -> Option<usize> {
        let ctx = SelectContext {
            client_ip: Some(client_ip),
            exclude,
        };
        let selector = if self.uses_policy {
            &self.fallback
        } else {
            &self.selector
        };
        selector.select(&self.backends, &ctx)
    }

    /// Asks the external policy; `None` means "use the built-in selection".
    pub async fn select_with_policy(
        &self,
        request: PolicyRequest,
        exclude: &[usize],
    ) -> Option<usize> {
        let policy = self.policy.load_full()?;
        let candidates: Vec<PolicyBackend> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(i, b)| b.is_available() && !exclude.contains(i))
            .map(|(_, b)| PolicyBackend {
                url: b.url().to_owned(),
                weight: b.weight(),
                active: b.active(),
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match tokio::time::timeout(POLICY_TIMEOUT, policy.select(request, candidates))
            .await
        {
            Ok(Some(url)) => url,
            Ok(None) => return None,
            Err(_) => {
                tracing::error!(upstream = %self.name, "balancing policy timed out; using round robin");
                return None;
            }
        };
        let index = self.backends.iter().position(|b| b.url() == chosen);
        match index {
            Some(i) if self.backends[i].is_available() && !exclude.contains(&i) => Some(i),
            _ => {
                tracing::error!(upstream = %self.name, chosen, "balancing policy chose no eligible backend; using round robin");
                None
            }
        }
    }

    /// Recomputes the selector's tables after weights changed.
    pub fn weights_changed(&self) {
        self.selector.rebuild(&self.backends);
    }

    /// Records how an exchange with backend `i` went and ejects it when it keeps failing,
    /// never below the floor: at most `max_ejection_percent` of the backends ejected at once, and
    /// never the last available one.
    pub fn record(&self, i: usize, outcome: Outcome, latency: Option<Duration>) {
        let Some(backend) = self.backends.get(i) else {
            return;
        };
        if let Some(latency) = latency {
            backend.observe_latency(latency);
        }
        let failures = backend.record(outcome);
        let threshold = self.passive.consecutive_failures;
        if outcome == Outcome::Success || threshold == 0 || failures < threshold {
            return;
        }
        let n = self.backends.len();
        let ejected = self.backends.iter().filter(|b| b.is_ejected()).count();
        let available = self.backends.iter().filter(|b| b.is_available()).count();
        let max_ejected = n * self.passive.max_ejection_percent as usize / 100;
        if ejected >= max_ejected || available <= 1 || backend.is_ejected() {
            tracing::warn!(upstream = %self.name, backend = backend.url(), failures,
                "backend keeps failing but ejecting it would go below the floor");
            return;
        }
        let time = backend.eject(Duration::from_millis(self.passive.ejection_time_ms));
        tracing::warn!(upstream = %self.name, backend = backend.url(), failures,
            ejected_for_ms = time.as_millis() as u64, "backend ejected after consecutive failures");
    }

    /// Counts a request towards the retry budget.
    pub fn note_request(&self) {
        if self.retries.max > 0 {
            self.budget.deposit(self.retries.budget_percent);
        }
    }

    /// Whether the budget allows one more retry (and spends it).
    pub fn allow_retry(&self) -> bool {
        self.budget.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_pool::PoolConfig;

    fn upstream(n: usize, passive: PassiveHealth) -> Upstream {
        let handles = (0..n)
            .map(|i| BackendHandle {
                backend: Arc::new(Backend::new(format!("http://127.0.0.1:{}", 1000 + i), 1)),
                pool: Pool::new(format!("127.0.0.1:{}", 1000 + i), PoolConfig::default()),
            })
            .collect();
        Upstream::new(
            "app".into(),
            handles,
            UpstreamSettings {
                algorithm: Some(Algorithm::RoundRobin),
                response_timeout: Duration::from_secs(1),
                body_timeout: None,
                tunnel_timeout: None,
                retries: RetrySettings {
                    max: 2,
                    ..RetrySettings::default()
                },
                passive,
            },
        )
    }

    #[test]
    fn passive_ejection_respects_the_floor() {
        let up = upstream(
            2,
            PassiveHealth {
                consecutive_failures: 3,
                ..PassiveHealth::default()
            },
        );
        for _ in 0..3 {
            up.record(0, Outcome::Failure, None);
        }
        assert!(
            up.backends[0].is_ejected(),
            "three consecutive failures eject"
        );
        for _ in 0..10 {
            up.record(1, Outcome::Failure, None);
        }
        assert!(
            !up.backends[1].is_ejected(),
            "never the last available backend"
        );
        let up = upstream(
            4,
            PassiveHealth {
                consecutive_failures: 1,
                max_ejection_percent: 50,
                ..PassiveHealth::default()
            },
        );
        (0..4).for_each(|i| up.record(i, Outcome::Failure, None));
        assert_eq!(
            up.backends.iter().filter(|b| b.is_ejected()).count(),
            2,
            "at most half"
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let up = upstream(
            3,
            PassiveHealth {
                consecutive_failures: 3,
                ..PassiveHealth::default()
            },
        );
        up.record(0, Outcome::Failure, None);
        up.record(0, Outcome::Failure, None);
        up.record(0, Outcome::Success, None);
        up.record(0, Outcome::Failure, None);
        assert!(!up.backends[0].is_ejected());
    }

    #[test]
    fn the_retry_budget_caps_retries_at_a_share_of_requests() {
        let up = upstream(2, PassiveHealth::default());
        let reserve = (0..100).take_while(|_| up.allow_retry()).count();
        assert_eq!(reserve, 10, "a small reserve for low traffic");
        for _ in 0..40 {
            up.note_request();
        }
        let earned = (0..100).take_while(|_| up.allow_retry()).count();
        assert_eq!(earned, 8, "20% of 40 requests");
        for _ in 0..1000 {
            up.note_request();
        }
        let capped = (0..100).take_while(|_| up.allow_retry()).count();
        assert_eq!(
            capped, 10,
            "saved-up retries are capped, so a burst cannot spend them all"
        );
    }
}
