//! An upstream: a named group of backends, how to choose among them, and their pools.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_balance::{Backend, Selector};
use gatehouse_pool::UpstreamPool;

use crate::body::UpstreamBody;

pub type Pool = UpstreamPool<UpstreamBody>;

/// A backend with the pool of connections to it. Both survive reloads that keep the backend's
/// URL, so counters, health and warm connections carry over.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    pub backend: Arc<Backend>,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// Parallel to `handles`, in the shape the selector wants.
    pub backends: Arc<[Arc<Backend>]>,
    pub handles: Vec<BackendHandle>,
    pub selector: Selector,
    pub response_timeout: Duration,
}

impl Upstream {
    pub fn new(
        name: String,
        handles: Vec<BackendHandle>,
        selector: Selector,
        response_timeout: Duration,
    ) -> Self {
        let backends = handles.iter().map(|h| Arc::clone(&h.backend)).collect();
        Self {
            name,
            backends,
            handles,
            selector,
            response_timeout,
        }
    }

    /// Picks a healthy backend, or `None` when none is healthy.
    pub fn select(&self) -> Option<&BackendHandle> {
        self.selector
            .select(&self.backends)
            .and_then(|i| self.handles.get(i))
    }
}
