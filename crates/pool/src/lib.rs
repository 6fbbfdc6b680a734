//! Upstream connection pools.
//!
//! One [`UpstreamPool`] per backend address keeps idle HTTP/1.1 connections on a LIFO stack: the
//! most recently used connection is the one most likely still open and warm in the origin's
//! caches, and the ones at the bottom age out through the idle timeout. A connection is handed out
//! as a [`PooledConn`]; the caller gives it back with [`PooledConn::release`] once the response
//! body has been read to the end, and simply drops it when the exchange went wrong, which closes
//! it. A connection the origin closed is never handed out again.

mod pool;

pub use hyper::client::conn::TrySendError;
pub use pool::{ConnectError, PoolConfig, PoolStats, PooledConn, UpstreamPool};
