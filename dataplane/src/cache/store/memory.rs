//! The process-wide memory store: a `moka` cache bounded in bytes (key + headers + body
//! weigh each entry), each entry expiring at the end of its stale window.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::sync::Cache;

use super::super::entry::Entry;
use super::super::key::CacheKey;

/// Entries live until their freshness plus stale window ends.
struct EntryExpiry;

impl moka::Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.remaining(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining(SystemTime::now()))
    }
}

/// The memory store.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.cache.entry_count()).finish()
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &CacheKey, v: &Arc<Entry>| {
                u32::try_from(k.weight() + v.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        MemoryStore { cache }
    }

    /// The entry of `key`, if stored.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    /// Stores `entry` under `key` (replacing an older one).
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        self.cache.insert(key, entry);
    }

    /// Removes every entry of `host` and `path` (every Plugin, method, query, vary value and
    /// consumer), or every entry when both are `None`. Returns how many were removed.
    pub fn purge(&self, host: Option<&str>, path: Option<&str>) -> u64 {
        let mut removed = 0;
        let matching: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(|(k, _)| {
                host.is_none_or(|h| *k.host == *h) && path.is_none_or(|p| *k.path == *p)
            })
            .map(|(k, _)| k)
            .collect();
        for key in matching {
            if self.cache.remove(&*key).is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// Bytes used (after moka's pending bookkeeping runs).
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}
