//! The gatehouse engine: everything that runs per request.
//!
//! An [`Engine`] owns a tokio runtime whose worker threads accept connections ([`listener`]),
//! speak HTTP/1.1 to clients through hyper, and run each request through the phases in
//! [`proxy`]: validation ([`headers`]), routing ([`routes`]), backend selection
//! (`gatehouse-balance`), and the exchange with the origin over a pooled connection
//! (`gatehouse-pool`). Bodies stream in both directions ([`body`], [`response`]) with
//! backpressure. Configuration arrives as JSON already validated by the TypeScript control plane
//! ([`config`]); a reload swaps an immutable [`state::ProxyState`] atomically.
//!
//! Nothing in this crate knows about Node or N-API; `bindings/` adapts it.

pub mod access_log;
pub mod audit;
pub mod body;
mod boxed;
mod caching;
pub mod config;
pub mod conn;
mod deadline;
mod engine;
mod epoch;
pub mod error;
pub mod headers;
pub mod listener;
mod parking;
pub mod proxy;
pub mod response;
pub mod routes;
mod starved;
pub mod state;
pub mod stats;
pub mod tunnel;
pub mod upstream;
mod workers;

pub use config::{ConfigError, EngineConfig};
pub use engine::{BoundListener, Engine, EngineError, Shared};
