//! Load balancing: *what is selectable* and *how to select*.
//!
//! [`Backend`] is one origin server with its live counters (in-flight requests, totals, health).
//! A [`BackendSet`] is the immutable list one upstream chooses from; it is swapped whole on reload
//! so selection never takes a lock. [`Selector`] is the algorithm: each policy is a small type in
//! [`selection`], picked by [`Algorithm`].

mod backend;
pub mod selection;

pub use backend::{Backend, BackendSet, BackendStats, InFlight};
pub use selection::{Algorithm, Selector};
