//! Request coalescing: one origin fetch for many concurrent misses of one URL.
//!
//! The first miss for a key becomes the *leader* and holds a [`Lease`]; misses that arrive while
//! it is held become *followers* and wait (bounded by a timeout) until the leader's fill is
//! stored, turns out not storable, or is abandoned. Followers then look the key up again: a hit
//! if the fill was stored, otherwise they go to the origin themselves. Followers are released as
//! soon as the leader knows its response is not storable (at its head, not its end), and for a
//! while afterwards misses for that key skip coalescing altogether, so an uncacheable URL never
//! makes requests queue behind one another.
//!
//! The key is the URL (primary key), not the variant, which is unknown before a response says
//! what it varies on; a follower whose variant the leader did not fetch simply misses again.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::key::CacheKey;

const SHARDS: usize = 16;

/// Uncacheable-URL memos kept per shard before they are pruned.
const MAX_MEMOS_PER_SHARD: usize = 4096;

/// How a leader's fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillOutcome {
    /// The response is stored: waiters will find it.
    Stored,
    /// The response could not be stored (a property of the response, so the URL is remembered
    /// as uncacheable for a while).
    NotStored,
    /// The fetch failed or was dropped midway (origin error, client gone).
    Abandoned,
}

/// How a follower's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Filled,
    NotStored,
    Abandoned,
    TimedOut,
}

type Flight = Arc<watch::Sender<Option<FillOutcome>>>;

enum Slot {
    Flight(Flight),
    /// The last fill was not storable: no coalescing until then.
    Uncacheable(Instant),
}

struct Shards {
    shards: Box<[Mutex<HashMap<CacheKey, Slot>>]>,
    hasher: RandomState,
    uncacheable_ttl: Duration,
}

/// The coalescing table. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Coalescer(Arc<Shards>);

/// The result of [`Coalescer::join`].
pub(crate) enum Join {
    Leader(Lease),
    Follower(Waiter),
    /// Known uncacheable: fetch without coalescing.
    Alone,
}

impl Coalescer {
    pub(crate) fn new(uncacheable_ttl: Duration) -> Self {
        Self(Arc::new(Shards {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            uncacheable_ttl,
        }))
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<HashMap<CacheKey, Slot>> {
        let index = self.0.hasher.hash_one(key) as usize % SHARDS;
        &self.0.shards[index]
    }

    /// Joins the fill of `key`: leads it when none is under way, follows it otherwise.
    pub(crate) fn join(&self, key: &CacheKey) -> Join {
        let mut map = self.shard(key).lock();
        match map.get(key) {
            Some(Slot::Flight(flight)) => {
                return Join::Follower(Waiter {
                    rx: flight.subscribe(),
                })
            }
            Some(Slot::Uncacheable(until)) if *until > Instant::now() => return Join::Alone,
            _ => {}
        }
        Join::Leader(self.lead(&mut map, key))
    }

    /// Leads the fill of `key` unless one is under way: the ticket for a background refresh,
    /// so that one refresh per key runs at a time.
    pub(crate) fn try_lead(&self, key: &CacheKey) -> Option<Lease> {
        let mut map = self.shard(key).lock();
        if let Some(Slot::Flight(_)) = map.get(key) {
            return None;
        }
        Some(self.lead(&mut map, key))
    }

    fn lead(&self, map: &mut HashMap<CacheKey, Slot>, key: &CacheKey) -> Lease {
        let flight: Flight = Arc::new(watch::channel(None).0);
        map.insert(key.clone(), Slot::Flight(Arc::clone(&flight)));
        tracing::trace!(%key, "fill leader");
        Lease {
            coalescer: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        }
    }

    fn finish(&self, key: &CacheKey, flight: &Flight, outcome: FillOutcome) {
        {
            let mut map = self.shard(key).lock();
            if matches!(map.get(key), Some(Slot::Flight(f)) if Arc::ptr_eq(f, flight)) {
                let ttl = self.0.uncacheable_ttl;
                if outcome == FillOutcome::NotStored && !ttl.is_zero() {
                    let now = Instant::now();
                    map.insert(key.clone(), Slot::Uncacheable(now + ttl));
                    if map.len() > MAX_MEMOS_PER_SHARD {
                        map.retain(|_, slot| match slot {
                            Slot::Flight(_) => true,
                            Slot::Uncacheable(until) => *until > now,
                        });
                    }
                } else {
                    map.remove(key);
                }
            }
        }
        tracing::trace!(%key, ?outcome, "fill finished");
        // `send_replace` stores the outcome even when nobody is waiting yet.
        flight.send_replace(Some(outcome));
    }

    #[cfg(test)]
    pub(crate) fn flights(&self) -> usize {
        self.0
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .values()
                    .filter(|slot| matches!(slot, Slot::Flight(_)))
                    .count()
            })
            .sum()
    }
}

/// The right, and duty, to fill the cache for a key. Followers wait until it completes; dropped
/// without completing, it tells them the fill was abandoned.
pub(crate) struct Lease {
    coalescer: Coalescer,
    key: CacheKey,
    flight: Flight,
    done: bool,
}

impl Lease {
    pub(crate) fn complete(mut self, outcome: FillOutcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: FillOutcome) {
        if !self.done {
            self.done = true;
            self.coalescer.finish(&self.key, &self.flight, outcome);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.finish(FillOutcome::Abandoned);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

/// A follower's place in line.
#[derive(Debug)]
pub(crate) struct Waiter {
    rx: watch::Receiver<Option<FillOutcome>>,
}

impl Waiter {
    /// Waits for the leader's fill, at most `timeout`.
    pub(crate) async fn wait(mut self, timeout: Duration) -> Waited {
        let outcome = match tokio::time::timeout(timeout, self.rx.wait_for(Option::is_some)).await {
            Err(_) => return Waited::TimedOut,
            Ok(Err(_)) => return Waited::Abandoned,
            Ok(Ok(value)) => *value,
        };
        match outcome {
            Some(FillOutcome::Stored) => Waited::Filled,
            Some(FillOutcome::NotStored) => Waited::NotStored,
            Some(FillOutcome::Abandoned) | None => Waited::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> CacheKey {
        CacheKey::new("http", "example.com", path)
    }

    fn lead(c: &Coalescer, k: &CacheKey) -> Lease {
        match c.join(k) {
            Join::Leader(lease) => lease,
            _ => panic!("expected to lead"),
        }
    }

    fn follow(c: &Coalescer, k: &CacheKey) -> Waiter {
        match c.join(k) {
            Join::Follower(w) => w,
            _ => panic!("expected to follow"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn followers_learn_the_leaders_outcome() {
        let c = Coalescer::new(Duration::ZERO);
        let k = key("/a");
        let lease = lead(&c, &k);
        let waiter = follow(&c, &k);
        let other = lead(&c, &key("/b"));
        let wait = tokio::spawn(waiter.wait(Duration::from_secs(5)));
        lease.complete(FillOutcome::Stored);
        assert_eq!(wait.await.unwrap(), Waited::Filled);
        assert_eq!(c.flights(), 1, "only /b is still in flight");
        drop(other);
        assert_eq!(c.flights(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_lease_abandons_the_fill() {
        let c = Coalescer::new(Duration::ZERO);
        let k = key("/a");
        let lease = lead(&c, &k);
        let waiter = follow(&c, &k);
        drop(lease);
        assert_eq!(waiter.wait(Duration::from_secs(5)).await, Waited::Abandoned);
        assert!(
            matches!(c.join(&k), Join::Leader(_)),
            "the next miss leads again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn followers_time_out() {
        let c = Coalescer::new(Duration::ZERO);
        let k = key("/a");
        let _lease = lead(&c, &k);
        let started = Instant::now();
        assert_eq!(
            follow(&c, &k).wait(Duration::from_secs(2)).await,
            Waited::TimedOut
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn uncacheable_urls_skip_coalescing_for_a_while() {
        let c = Coalescer::new(Duration::from_secs(10));
        let k = key("/a");
        let lease = lead(&c, &k);
        let waiter = follow(&c, &k);
        lease.complete(FillOutcome::NotStored);
        assert_eq!(waiter.wait(Duration::from_secs(5)).await, Waited::NotStored);
        assert!(matches!(c.join(&k), Join::Alone));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(c.join(&k), Join::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_refresh_ticket_per_key() {
        let c = Coalescer::new(Duration::from_secs(10));
        let k = key("/a");
        let ticket = c.try_lead(&k).expect("first refresh");
        assert!(c.try_lead(&k).is_none());
        assert!(matches!(c.join(&k), Join::Follower(_)));
        ticket.complete(FillOutcome::Stored);
        assert!(c.try_lead(&k).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_concurrent_joins_elect_one_leader() {
        let c = Coalescer::new(Duration::ZERO);
        let k = key("/a");
        let barrier = Arc::new(tokio::sync::Barrier::new(100));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (c, k, barrier) = (c.clone(), k.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    match c.join(&k) {
                        Join::Leader(lease) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            lease.complete(FillOutcome::Stored);
                            None
                        }
                        Join::Follower(w) => Some(w.wait(Duration::from_secs(5)).await),
                        Join::Alone => panic!("not uncacheable"),
                    }
                })
            })
            .collect();
        let mut leaders = 0;
        for task in tasks {
            match task.await.unwrap() {
                None => leaders += 1,
                Some(waited) => assert_eq!(waited, Waited::Filled),
            }
        }
        assert_eq!(leaders, 1);
    }
}
