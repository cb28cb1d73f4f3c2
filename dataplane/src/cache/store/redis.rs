//! The Redis store (`store: Redis`): entries shared by every replica through the
//! `--redis-url` connection pool of the rate limiter.
//!
//! One value per entry (`weir:cache:e:<sha256 of the key>`, the layout of
//! [`Entry::encode`]) with a TTL of its freshness plus stale window. For the admin purge,
//! each host and path has a set of its entry keys (`weir:cache:i:<sha256 of host, path>`),
//! and `weir:cache:idx` lists those sets: a purge is `SMEMBERS` + `DEL`, never `KEYS` or
//! `SCAN`. A read waits at most `--redis-timeout` (100 ms by default); a Redis that is
//! down or slow is a miss (logged at debug), never an error for the client.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::prelude::{Expiration, KeysInterface, SetsInterface};

use super::super::Lead;
use super::super::entry::Entry;
use super::super::key::{CacheKey, host_path_digest, normal_host};
use crate::ratelimit::RedisStore;

/// The longest wait for one write or purge.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The set of every purge index.
const INDEXES: &str = "weir:cache:idx";

/// The cache's view of the shared Redis pool.
#[derive(Debug, Clone)]
pub struct RedisCache {
    store: Arc<RedisStore>,
}

fn entry_key(key: &CacheKey) -> String {
    format!("weir:cache:e:{}", key.digest())
}

fn index_key(host: &str, path: &str) -> String {
    format!("weir:cache:i:{}", host_path_digest(host, path))
}

impl RedisCache {
    /// The cache over `store`'s pool.
    pub fn new(store: Arc<RedisStore>) -> Self {
        RedisCache { store }
    }

    /// The entry of `key`; `None` when absent, undecodable, or Redis is down or slow.
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        if !self.store.is_connected() {
            tracing::debug!("cache: Redis not connected, answering as a miss");
            return None;
        }
        let client = self.store.pool().next_connected();
        let read = client.get::<Option<Bytes>, _>(entry_key(key));
        match tokio::time::timeout(self.store.options().timeout, read).await {
            Ok(Ok(Some(value))) => Entry::decode(value),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cache: Redis read failed, answering as a miss");
                None
            }
            Err(_) => {
                tracing::debug!("cache: Redis read timed out, answering as a miss");
                None
            }
        }
    }

    /// Stores `entry` under `key` in the background (the caller is a response body).
    /// `index_ttl` bounds the purge index's life (the Plugin's longest entry life).
    /// `lead`'s waiters are released once the write is done.
    pub fn insert(&self, key: &CacheKey, entry: &Entry, index_ttl: Duration, lead: Option<Lead>) {
        let ttl = entry.remaining(SystemTime::now());
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if millis <= 0 {
            return;
        }
        let value = entry.encode();
        let name = entry_key(key);
        let index = index_key(&key.host, &key.path);
        let index_ms = i64::try_from(index_ttl.as_millis()).unwrap_or(i64::MAX).max(millis);
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let client = store.pool().next_connected();
            let write = async {
                client
                    .set::<(), _, _>(&name, value, Some(Expiration::PX(millis)), None, false)
                    .await?;
                client.sadd::<(), _, _>(&index, name.as_str()).await?;
                client.pexpire::<(), _>(&index, index_ms, None).await?;
                client.sadd::<(), _, _>(INDEXES, index.as_str()).await?;
                client.pexpire::<(), _>(INDEXES, index_ms, None).await
            };
            let stored = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cache: Redis write failed");
                    false
                }
                Err(_) => {
                    tracing::debug!("cache: Redis write timed out");
                    false
                }
            };
            if let Some(lead) = lead {
                lead.done(stored);
            }
        });
    }

    /// Deletes every entry of `host` and `path`, or every entry when both are `None`.
    /// Returns how many entry keys were deleted.
    pub async fn purge(&self, host: Option<&str>, path: Option<&str>) -> Result<u64, String> {
        let client = self.store.pool().next_connected();
        let purge = async {
            let indexes: Vec<String> = match (host, path) {
                (Some(h), Some(p)) => vec![index_key(&normal_host(h), p)],
                _ => client.smembers(INDEXES).await?,
            };
            let mut deleted = 0u64;
            for index in &indexes {
                let keys: Vec<String> = client.smembers(index.as_str()).await?;
                if !keys.is_empty() {
                    deleted += client.del::<u64, _>(keys).await?;
                }
                client.del::<u64, _>(index.as_str()).await?;
            }
            if host.is_none() && path.is_none() {
                client.del::<u64, _>(INDEXES).await?;
            }
            Ok::<u64, fred::prelude::Error>(deleted)
        };
        match tokio::time::timeout(WRITE_TIMEOUT, purge).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("Redis purge failed: {e}")),
            Err(_) => Err("Redis purge timed out".to_owned()),
        }
    }
}
