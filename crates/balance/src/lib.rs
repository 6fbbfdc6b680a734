//! Load balancing: *what is selectable* and *how to select*.
//!
//! [`Backend`] is one origin server with its live counters (in-flight requests, totals, latency)
//! and health (active checks, passive ejection). [`Selector`] is the algorithm, chosen by
//! [`Algorithm`]; each policy is a small type in [`selection`]. Selection reads atomics and
//! immutable, atomically swapped tables (weighted schedules, hash rings), so it never takes a lock.

mod backend;
mod clock;
pub mod selection;

pub use backend::{Backend, BackendStats, InFlight, Outcome};
pub use selection::{Algorithm, SelectContext, Selector};
