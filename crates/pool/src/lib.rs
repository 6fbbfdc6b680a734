//! Upstream connection pools, and the HTTP/1.1 client that speaks over their connections.
//!
//! One [`UpstreamPool`] per backend address keeps idle HTTP/1.1 connections on LIFO stacks, one
//! per engine worker (see [`set_worker`]): the most recently used connection is the one most
//! likely still open and warm in the origin's caches, and the ones at the bottom age out through
//! the idle timeout. A connection is handed out
//! as a [`PooledConn`]; [`PooledConn::send`] writes a request on it and reads the response head,
//! in the caller's task. The response's [`OriginBody`] returns the connection to the pool when it
//! has been read to its end, and closes it when it is dropped before then. A connection the origin
//! closed, or that holds bytes nobody asked for, is never handed out again.
//!
//! The client is ours (httparse parses, the framing rules are RFC 9112's) because the pool is
//! where a proxy's cost per request lies: see `docs/architecture.md`, "The upstream client".

mod body;
mod conn;
mod error;
mod exchange;
mod pool;
mod request;
mod response;

pub use body::{OriginBody, Upgraded};
pub use error::{BodyError, BoxError, Progress, SendError};
pub use pool::{set_worker, ConnectError, PoolConfig, PoolStats, PooledConn, UpstreamPool};
pub use request::Payload;
