//! The engine's threads: one current-thread tokio runtime per worker, each driven by a thread of
//! its own, as nginx runs one event loop per worker process. A connection lives its whole life
//! on the worker that accepted it, and so do the tasks it spawns; the upstream pools keep each
//! worker's idle connections apart (`gatehouse_pool::set_worker`), so the hot path does not cross
//! threads.
//!
//! Chosen by measurement against tokio's multi-thread (work-stealing) scheduler with the same
//! number of workers: on one core, 15.4 against 17.8 µs of CPU per proxied request, and at 1,000
//! connections a p99 of 62 against 250 ms (docs/performance.md, "Worker model"). Work stealing
//! buys balance across cores for uneven connections; a proxy's connections are many and alike,
//! and the kernel spreads new ones over the workers waiting in `accept` on the shared socket.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// The thread name, shown by `top -H` and used by the benchmark harness to find the engine's CPU
/// time (the kernel keeps 15 characters).
const THREAD_NAME: &str = "gatehouse-worker";

struct Worker {
    runtime: Arc<Runtime>,
    thread: Option<JoinHandle<()>>,
}

/// The running workers. Dropping them stops every thread and drops every task.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

impl Workers {
    pub fn start(count: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = Arc::new(Builder::new_current_thread().enable_all().build()?);
            let driven = Arc::clone(&runtime);
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    // The upstream pools keep this worker's idle connections apart.
                    gatehouse_pool::set_worker(index);
                    driven.block_on(stopped.cancelled())
                })?;
            workers.push(Worker {
                runtime,
                thread: Some(thread),
            });
        }
        Ok(Self { workers, stop })
    }

    /// The first worker, which also runs the engine's housekeeping.
    pub fn first(&self) -> &Handle {
        self.workers[0].runtime.handle()
    }

    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| w.runtime.handle())
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Stops the threads, then drops what is left on each runtime, waiting up to `timeout` for
    /// its blocking tasks.
    pub fn shutdown(mut self, timeout: Duration) {
        for runtime in self.stop_threads() {
            runtime.shutdown_timeout(timeout);
        }
    }

    fn stop_threads(&mut self) -> Vec<Runtime> {
        self.stop.cancel();
        let mut runtimes = Vec::new();
        for mut w in self.workers.drain(..) {
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
            // The thread held the only other reference, and has ended.
            if let Ok(runtime) = Arc::try_unwrap(w.runtime) {
                runtimes.push(runtime);
            }
        }
        runtimes
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for runtime in self.stop_threads() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.workers.len())
            .finish()
    }
}
