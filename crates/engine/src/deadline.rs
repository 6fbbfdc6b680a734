//! Response timeouts without a new timer per request.
//!
//! `tokio::time::timeout` registers a fresh `Sleep` in the runtime's timer wheel on its first
//! poll and takes it out again when dropped: about 780 instructions per proxied request (2% of
//! all its user-space work) for a timeout that almost never fires. A `Sleep` that is reset to a
//! later deadline stays where it is in the wheel (tokio only records the new deadline and moves
//! the entry when the old one comes round), and each request's deadline is later than the one
//! before. So each client connection keeps its sleeps and lends one to every request in flight
//! (one for HTTP/1.1, one per concurrent stream for HTTP/2).

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Sleeps kept beyond this many (HTTP/2 streams that ran at once) are dropped when returned.
const KEPT: usize = 16;

/// A connection's idle sleeps.
#[derive(Debug, Default)]
pub struct Deadlines {
    idle: parking_lot::Mutex<Vec<Pin<Box<Sleep>>>>,
}

impl Deadlines {
    /// Runs the future `make` builds for at most `timeout` from now: `None` when the time ran
    /// out first (and the future is dropped unfinished), like `tokio::time::timeout`. The future
    /// is built here, in place, rather than passed in: every move of a future into another
    /// async function is a copy.
    pub async fn run<F: Future>(
        &self,
        timeout: Duration,
        make: impl FnOnce() -> F,
    ) -> Option<F::Output> {
        let mut sleep = self.lend(Instant::now() + timeout);
        let mut fut = pin!(make());
        let output = poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        self.give_back(sleep);
        output
    }

    /// An idle sleep reset to `deadline`, or a new one.
    fn lend(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        let idle = self.idle.lock().pop();
        match idle {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `sleep` for the next request. One that fired is reusable too: its next reset
    /// registers it again.
    fn give_back(&self, sleep: Pin<Box<Sleep>>) {
        let mut idle = self.idle.lock();
        if idle.len() < KEPT {
            idle.push(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_run_gets_its_own_full_timeout_from_a_reused_sleep() {
        let deadlines = Deadlines::default();
        let t = Duration::from_secs(10);
        assert_eq!(deadlines.run(t, || async { 1 }).await, Some(1));
        // Longer than the timeout: cut off.
        let slow = tokio::time::sleep(Duration::from_secs(11));
        assert_eq!(deadlines.run(t, || slow).await, None);
        // The fired sleep is reused: a run that needs 9 of its 10 seconds still completes,
        // although an earlier run's deadline has long passed.
        tokio::time::advance(Duration::from_secs(30)).await;
        let nine = tokio::time::sleep(Duration::from_secs(9));
        assert_eq!(deadlines.run(t, || nine).await, Some(()));
        let eleven = tokio::time::sleep(Duration::from_secs(11));
        assert_eq!(deadlines.run(t, || eleven).await, None);
        assert_eq!(deadlines.idle.lock().len(), 1, "one sleep served every run");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_runs_each_borrow_a_sleep() {
        let deadlines = Deadlines::default();
        let t = Duration::from_secs(10);
        let (a, b, c) = tokio::join!(
            deadlines.run(t, || tokio::time::sleep(Duration::from_secs(5))),
            deadlines.run(t, || tokio::time::sleep(Duration::from_secs(15))),
            deadlines.run(t, || async { 3 }),
        );
        assert_eq!((a, b, c), (Some(()), None, Some(3)));
        assert_eq!(deadlines.idle.lock().len(), 3, "three ran at once");
    }
}
