//! TLS termination.
//!
//! Certificates come from PEM files ([`certs`]): each chain is checked against its key and
//! indexed by the DNS names in its subject alternative names. [`CertStore`] answers rustls'
//! certificate lookups by SNI — exact name, then a one-label wildcard, then the first
//! certificate as the default — from an index swapped atomically, so a rotation takes effect on
//! the next handshake while established connections carry on. [`Terminator`] owns the rustls
//! server configuration (versions, cipher suites, ALPN `h2`/`http/1.1`, session tickets with
//! rotating keys) and the handshake counters.

mod certs;
mod store;
mod terminator;

pub use certs::{load_certificate, CertSource, LoadedCert, TlsError};
pub use store::CertStore;
pub use terminator::{Terminator, TlsSettings, TlsStats, TlsVersion};
pub use tokio_rustls::server::TlsStream;
