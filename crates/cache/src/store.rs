//! In-memory storage: sharded by URL, bounded in bytes, evicting the least recently used entry.
//!
//! All variants of a URL live in one of 16 shards, each behind its own mutex, so a hit locks one
//! shard for a map lookup and an LRU bump, and purging or invalidating a URL is one shard
//! operation. Recency is one global, atomic tick: every insert or hit takes the next tick, and
//! each shard keeps its entries ordered by tick (a `BTreeMap`). The globally least recently used
//! entry is therefore the oldest of the 16 shard tails, which eviction finds by visiting each
//! shard in turn (one eviction at a time, on the insert path, never on the hit path). That is
//! LRU without a global lock on reads. A hit on an entry that is already among the most recently
//! used (fewer than one sixteenth of the entries' count of ticks ago) keeps its place instead of
//! being moved in the tree, as memcached skips bumps of items bumped a moment ago: a hot entry
//! costs no tree operation per hit, and eviction order is exact for caches under 16 entries and
//! off by at most that sixteenth otherwise.
//!
//! Each shard also counts *generations*: a purge or invalidation bumps it, and an insert that
//! began (at the response head) in an earlier generation is refused, so a response that was in
//! flight while its URL was purged cannot bring the purged content back.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::entry::StoredResponse;
use crate::key::CacheKey;
use crate::storable::NotStorable;

const SHARDS: usize = 16;

struct Slot {
    tick: u64,
    entry: Arc<StoredResponse>,
}

#[derive(Default)]
struct Shard {
    urls: HashMap<CacheKey, Vec<Slot>>,
    /// Entries by last use, oldest first.
    lru: BTreeMap<u64, CacheKey>,
    generation: u64,
}

impl Shard {
    /// Removes every slot of `key` that `remove` picks; returns the bytes freed and the count.
    fn remove_where(
        &mut self,
        key: &CacheKey,
        mut remove: impl FnMut(&Slot) -> bool,
    ) -> (usize, usize) {
        let Some(slots) = self.urls.get_mut(key) else {
            return (0, 0);
        };
        let (mut bytes, mut count) = (0, 0);
        let lru = &mut self.lru;
        slots.retain(|slot| {
            if remove(slot) {
                lru.remove(&slot.tick);
                bytes += slot.entry.weight;
                count += 1;
                false
            } else {
                true
            }
        });
        if slots.is_empty() {
            self.urls.remove(key);
        }
        (bytes, count)
    }
}

/// Counters the store keeps itself.
#[derive(Default)]
pub(crate) struct StoreCounters {
    pub size: AtomicUsize,
    pub entries: AtomicUsize,
    pub evictions: AtomicU64,
}

pub(crate) struct Store {
    shards: Box<[Mutex<Shard>]>,
    ticks: AtomicU64,
    max_size: usize,
    max_variants: usize,
    /// One eviction pass at a time: two would each free space for the same overflow.
    evicting: Mutex<()>,
    pub counters: StoreCounters,
}

impl Store {
    pub(crate) fn new(max_size: usize, max_variants: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ticks: AtomicU64::new(0),
            max_size,
            max_variants: max_variants.max(1),
            evicting: Mutex::new(()),
            counters: StoreCounters::default(),
        }
    }

    /// The shard of `key`, by a fast unkeyed hash: keys an attacker crowds into one shard cost
    /// contention on its mutex at worst. The shard's map itself hashes with `RandomState`
    /// (SipHash), which keeps lookups safe from collision attacks.
    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(key.as_str().as_bytes());
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    fn next_tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether an entry last used at `tick` is still among the most recently used: fewer ticks
    /// have been taken since than a sixteenth of the entries (none, for under 16 entries).
    fn recently_used(&self, tick: u64) -> bool {
        let since = self.ticks.load(Ordering::Relaxed).saturating_sub(tick + 1);
        let entries = self.counters.entries.load(Ordering::Relaxed) as u64;
        since <= entries / 16
    }

    fn freed(&self, bytes: usize, count: usize) {
        self.counters.size.fetch_sub(bytes, Ordering::Relaxed);
        self.counters.entries.fetch_sub(count, Ordering::Relaxed);
    }

    /// The generation of `key`'s shard, to hand back to [`Store::insert`].
    pub(crate) fn generation(&self, key: &CacheKey) -> u64 {
        self.shard(key).lock().generation
    }

    /// The most recent variant of `key` that `accept` takes, marked as just used.
    pub(crate) fn find(
        &self,
        key: &CacheKey,
        accept: impl Fn(&StoredResponse) -> bool,
    ) -> Option<Arc<StoredResponse>> {
        let mut guard = self.shard(key).lock();
        let shard = &mut *guard;
        let slots = shard.urls.get_mut(key)?;
        let (index, _) = slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| accept(&slot.entry))
            .max_by_key(|(_, slot)| slot.entry.recency())?;
        let slot = &mut slots[index];
        if self.recently_used(slot.tick) {
            return Some(Arc::clone(&slot.entry));
        }
        let tick = self.next_tick();
        if let Some(k) = shard.lru.remove(&slot.tick) {
            shard.lru.insert(tick, k);
        }
        slot.tick = tick;
        Some(Arc::clone(&slot.entry))
    }

    /// Stores `entry` under `key`, replacing the variants `supersedes` picks; refused when a
    /// variant that `blocked_by` picks exists, or when the shard's generation moved on.
    pub(crate) fn insert(
        &self,
        key: &CacheKey,
        entry: Arc<StoredResponse>,
        generation: u64,
        supersedes: impl Fn(&StoredResponse) -> bool,
        blocked_by: impl Fn(&StoredResponse) -> bool,
    ) -> Result<(), NotStorable> {
        let weight = entry.weight;
        if weight > self.max_size {
            return Err(NotStorable::TooLarge);
        }
        {
            let mut guard = self.shard(key).lock();
            let shard = &mut *guard;
            if shard.generation != generation {
                return Err(NotStorable::Invalidated);
            }
            let slots = shard.urls.get(key);
            if slots.is_some_and(|s| s.iter().any(|slot| blocked_by(&slot.entry))) {
                return Err(NotStorable::HeadAfterGet);
            }
            let (bytes, count) = shard.remove_where(key, |slot| supersedes(&slot.entry));
            self.freed(bytes, count);
            // Past `max_variants`, the least recently used variant of this URL makes room.
            let oldest = shard
                .urls
                .get(key)
                .filter(|slots| slots.len() >= self.max_variants)
                .and_then(|slots| slots.iter().map(|s| s.tick).min());
            if let Some(oldest) = oldest {
                let (bytes, count) = shard.remove_where(key, |slot| slot.tick == oldest);
                self.freed(bytes, count);
            }
            let tick = self.next_tick();
            shard
                .urls
                .entry(key.clone())
                .or_default()
                .push(Slot { tick, entry });
            shard.lru.insert(tick, key.clone());
            self.counters.size.fetch_add(weight, Ordering::Relaxed);
            self.counters.entries.fetch_add(1, Ordering::Relaxed);
        }
        self.evict_to_fit();
        Ok(())
    }

    /// Replaces the stored `old` with `new` (an update from a 304). False when `old` is no
    /// longer stored (evicted, purged, replaced), in which case nothing is stored.
    pub(crate) fn replace(
        &self,
        key: &CacheKey,
        old: &Arc<StoredResponse>,
        new: Arc<StoredResponse>,
    ) -> bool {
        let new_weight = new.weight;
        {
            let mut guard = self.shard(key).lock();
            let shard = &mut *guard;
            let Some(slot) = shard
                .urls
                .get_mut(key)
                .and_then(|slots| slots.iter_mut().find(|s| Arc::ptr_eq(&s.entry, old)))
            else {
                return false;
            };
            let old_weight = slot.entry.weight;
            slot.entry = new;
            let tick = self.next_tick();
            if let Some(k) = shard.lru.remove(&slot.tick) {
                shard.lru.insert(tick, k);
            }
            slot.tick = tick;
            self.counters.size.fetch_add(new_weight, Ordering::Relaxed);
            self.counters.size.fetch_sub(old_weight, Ordering::Relaxed);
        }
        self.evict_to_fit();
        true
    }

    /// Removes the stored `old`, if it still is.
    pub(crate) fn remove(&self, key: &CacheKey, old: &Arc<StoredResponse>) -> bool {
        let (bytes, count) = self
            .shard(key)
            .lock()
            .remove_where(key, |slot| Arc::ptr_eq(&slot.entry, old));
        self.freed(bytes, count);
        count > 0
    }

    /// Removes every variant of `key`; fills under way for it will not be stored.
    pub(crate) fn remove_url(&self, key: &CacheKey) -> usize {
        let mut shard = self.shard(key).lock();
        shard.generation += 1;
        let (bytes, count) = shard.remove_where(key, |_| true);
        self.freed(bytes, count);
        count
    }

    /// The stored URLs whose path and query are exactly `path_and_query`, on any host.
    pub(crate) fn keys_with_path(&self, path_and_query: &str) -> Vec<CacheKey> {
        self.shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .urls
                    .keys()
                    .filter(|k| k.path_and_query() == path_and_query)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes everything; fills under way will not be stored.
    pub(crate) fn clear(&self) -> usize {
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.generation += 1;
            let (mut bytes, mut count) = (0, 0);
            for slot in shard.urls.drain().flat_map(|(_, slots)| slots) {
                bytes += slot.entry.weight;
                count += 1;
            }
            shard.lru.clear();
            self.freed(bytes, count);
            total += count;
        }
        total
    }

    /// Evicts least recently used entries until the cache fits in `max_size`.
    fn evict_to_fit(&self) {
        if self.counters.size.load(Ordering::Relaxed) <= self.max_size {
            return;
        }
        let _one_at_a_time = self.evicting.lock();
        while self.counters.size.load(Ordering::Relaxed) > self.max_size {
            let mut oldest: Option<(u64, usize)> = None;
            for (index, shard) in self.shards.iter().enumerate() {
                if let Some((&tick, _)) = shard.lock().lru.first_key_value() {
                    if oldest.is_none_or(|(t, _)| tick < t) {
                        oldest = Some((tick, index));
                    }
                }
            }
            let Some((tick, index)) = oldest else {
                break;
            };
            let mut shard = self.shards[index].lock();
            // Used again since we looked: look again.
            let Some(key) = shard.lru.get(&tick).cloned() else {
                continue;
            };
            let (bytes, count) = shard.remove_where(&key, |slot| slot.tick == tick);
            drop(shard);
            self.freed(bytes, count);
            self.counters
                .evictions
                .fetch_add(count as u64, Ordering::Relaxed);
            tracing::trace!(%key, bytes, "evicted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheConfig, ENTRY_OVERHEAD};
    use crate::entry::Timing;
    use crate::freshness::ResponseTimes;
    use crate::vary::VaryKey;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::time::SystemTime;

    fn key(path: &str) -> CacheKey {
        CacheKey::new("http", "example.com", path)
    }

    /// An entry weighing exactly `ENTRY_OVERHEAD + key + body` bytes (no headers).
    fn entry(k: &CacheKey, body: &'static str) -> Arc<StoredResponse> {
        let headers = HeaderMap::new();
        let timing = Timing::compute(
            StatusCode::OK,
            &headers,
            &ResponseTimes::at(SystemTime::UNIX_EPOCH),
            &CacheConfig::default(),
        );
        let body_len = body.len() as u64;
        Arc::new(StoredResponse::new(
            k,
            StatusCode::OK,
            headers,
            Arc::from([Bytes::from_static(body.as_bytes())]),
            body_len,
            false,
            timing,
            VaryKey::default(),
        ))
    }

    fn put(store: &Store, k: &CacheKey, body: &'static str) -> Result<(), NotStorable> {
        store.insert(k, entry(k, body), store.generation(k), |_| true, |_| false)
    }

    fn has(store: &Store, k: &CacheKey) -> bool {
        store.find(k, |_| true).is_some()
    }

    /// A store holding exactly 64 entries, inserted in key order (`/k00` oldest).
    fn full_store_of_64() -> (Store, Vec<CacheKey>) {
        let keys: Vec<CacheKey> = (0..64).map(|i| key(&format!("/k{i:02}"))).collect();
        let store = Store::new(64 * weight(&keys[0], "x"), 4);
        for k in &keys {
            put(&store, k, "x").unwrap();
        }
        (store, keys)
    }

    fn weight(k: &CacheKey, body: &str) -> usize {
        ENTRY_OVERHEAD + k.len() + body.len()
    }

    #[test]
    fn counts_headers_body_key_and_overhead() {
        let k = key("/a");
        let e = entry(&k, "hello");
        assert_eq!(e.weight, weight(&k, "hello"));
        let store = Store::new(1 << 20, 4);
        put(&store, &k, "hello").unwrap();
        assert_eq!(store.counters.size.load(Ordering::Relaxed), e.weight);
        assert_eq!(store.counters.entries.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn evicts_the_least_recently_used_first() {
        let (a, b, c, d) = (key("/a"), key("/b"), key("/c"), key("/d"));
        // Room for exactly three entries.
        let store = Store::new(3 * weight(&a, "x"), 4);
        for k in [&a, &b, &c] {
            put(&store, k, "x").unwrap();
        }
        assert!(has(&store, &a), "a is now the most recently used");
        put(&store, &d, "x").unwrap();
        assert!(!has(&store, &b), "b was least recently used");
        assert!(has(&store, &a) && has(&store, &c) && has(&store, &d));
        assert_eq!(store.counters.evictions.load(Ordering::Relaxed), 1);
        assert_eq!(store.counters.entries.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_hit_on_a_recent_entry_keeps_its_place_and_order_stays_near_lru() {
        let (store, keys) = full_store_of_64();
        let ticks = |store: &Store| store.ticks.load(Ordering::Relaxed);
        let before = ticks(&store);
        // The newest four (64 entries / 16) are recent enough: hits take no tick.
        for k in &keys[60..] {
            assert!(has(&store, k));
        }
        assert_eq!(
            ticks(&store),
            before,
            "no tree operation for recent entries"
        );
        // An older one is moved: it is now the most recent, and survives eviction.
        assert!(has(&store, &keys[0]));
        assert_eq!(ticks(&store), before + 1);
        put(&store, &key("/new"), "x").unwrap();
        assert!(has(&store, &keys[0]), "the bumped entry was kept");
        assert!(!has(&store, &keys[1]), "the least recently used went");
    }

    #[test]
    fn lru_order_is_global_across_shards() {
        let (store, keys) = full_store_of_64();
        // Use them in reverse, so the first inserted are the most recent.
        for k in keys.iter().rev() {
            assert!(has(&store, k));
        }
        for i in 0..8 {
            put(&store, &key(&format!("/n{i:02}")), "x").unwrap();
        }
        let gone: Vec<usize> = (0..64).filter(|&i| !has(&store, &keys[i])).collect();
        assert_eq!(gone, (56..64).collect::<Vec<_>>());
    }

    #[test]
    fn entries_larger_than_the_cache_are_refused() {
        let k = key("/a");
        let store = Store::new(weight(&k, "x"), 4);
        assert_eq!(put(&store, &k, "xx"), Err(NotStorable::TooLarge));
        assert_eq!(put(&store, &k, "x"), Ok(()));
    }

    #[test]
    fn variants_are_bounded_per_url() {
        let k = key("/a");
        let store = Store::new(1 << 20, 2);
        for body in ["1", "2", "3"] {
            store
                .insert(
                    &k,
                    entry(&k, body),
                    store.generation(&k),
                    |_| false,
                    |_| false,
                )
                .unwrap();
        }
        assert_eq!(store.counters.entries.load(Ordering::Relaxed), 2);
        let bodies: Vec<u64> = ["1", "2", "3"]
            .iter()
            .filter(|b| store.find(&k, |e| e.body[0] == b.as_bytes()).is_some())
            .map(|b| b.parse().unwrap())
            .collect();
        assert_eq!(bodies, vec![2, 3]);
    }

    #[test]
    fn purge_removes_all_variants_and_refuses_fills_begun_before() {
        let k = key("/a");
        let store = Store::new(1 << 20, 4);
        let before = store.generation(&k);
        for body in ["1", "2"] {
            store
                .insert(&k, entry(&k, body), before, |_| false, |_| false)
                .unwrap();
        }
        assert_eq!(store.remove_url(&k), 2);
        assert!(!has(&store, &k));
        assert_eq!(
            store.insert(&k, entry(&k, "3"), before, |_| false, |_| false),
            Err(NotStorable::Invalidated)
        );
        assert_eq!(store.counters.size.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn clear_empties_every_shard() {
        let store = Store::new(1 << 20, 4);
        for i in 0..40 {
            put(&store, &key(&format!("/{i}")), "x").unwrap();
        }
        assert_eq!(store.clear(), 40);
        assert_eq!(store.counters.entries.load(Ordering::Relaxed), 0);
        assert_eq!(store.counters.size.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn replace_swaps_an_entry_in_place_and_fails_once_it_is_gone() {
        let k = key("/a");
        let store = Store::new(1 << 20, 4);
        put(&store, &k, "x").unwrap();
        let old = store.find(&k, |_| true).unwrap();
        let new = entry(&k, "yy");
        assert!(store.replace(&k, &old, Arc::clone(&new)));
        assert_eq!(store.counters.size.load(Ordering::Relaxed), new.weight);
        assert!(!store.replace(&k, &old, entry(&k, "z")));
        assert!(store.remove(&k, &new));
        assert!(!has(&store, &k));
    }

    #[test]
    fn blocked_inserts_are_refused() {
        let k = key("/a");
        let store = Store::new(1 << 20, 4);
        put(&store, &k, "x").unwrap();
        assert_eq!(
            store.insert(
                &k,
                entry(&k, "y"),
                store.generation(&k),
                |_| false,
                |_| true
            ),
            Err(NotStorable::HeadAfterGet)
        );
    }

    #[test]
    fn concurrent_inserts_and_hits_keep_the_accounting_exact() {
        let store = Arc::new(Store::new(100 * weight(&key("/k000"), "x"), 4));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let k = key(&format!("/k{:03}", (i * 7 + t) % 300));
                        if !has(&store, &k) {
                            let _ = put(&store, &k, "x");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let entries = store.counters.entries.load(Ordering::Relaxed);
        let size = store.counters.size.load(Ordering::Relaxed);
        assert!(entries <= 100);
        assert_eq!(size, entries * weight(&key("/k000"), "x"));
        let stored: usize = store.shards.iter().map(|s| s.lock().lru.len()).sum();
        assert_eq!(stored, entries);
    }
}
