//! The response cache (`cache` Plugin): lookup after authentication, rate limiting and
//! request headers; answers from the store; coalesced misses; stale-while-revalidate;
//! responses copied into the store while they stream to the client.
//!
//! ```text
//! request phase (Phase::Cache)   key → store → Hit (answered, 304 when validators match)
//!                                            → Stale (answered; one request per key refreshes
//!                                              in the background, see `refresh`)
//!                                            → Miss: lead (go upstream) or wait for the leader
//! proxy, after the upstream      storable? → TeeBody copies the body (≤ maxBodySize), stores
//!                                            it at its end, then releases the waiters
//! response phase                 X-Cache-Status on every response of the rule; metrics
//! ```
//!
//! One [`CacheRuntime`] per process (owned by the [`crate::DataPlane`]), so entries survive
//! snapshot reloads; keys carry the Plugin's identity so two Plugins never share entries.
//! Rules without a cache filter never reach this module.

pub mod body;
pub mod entry;
pub mod freshness;
pub mod key;
pub mod refresh;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Method, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use entry::Entry;
pub use key::CacheKey;

use crate::filter::{Flow, RequestContext};
use crate::proxy::{ProxyBody, ProxyError};
use entry::Age;
use freshness::RequestCacheability;
use store::{MemoryStore, RedisCache};

/// `X-Cache-Status`, on every response of a rule with a cache filter.
pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");

/// How long a waiter waits for the leader of its key when the rule has no
/// `timeouts.request`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// How many leaders in a row a waiter waits for before going upstream on its own.
const WAIT_ROUNDS: usize = 3;

/// Where a Plugin's entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The process-wide memory store.
    Memory,
    /// Redis (`--redis-url`), shared by replicas; the memory store when none is configured.
    Redis,
}

/// A compiled `cache` Plugin.
#[derive(Debug)]
pub struct CachePlugin {
    /// The Plugin (`namespace/name`), part of every key.
    pub id: Arc<str>,
    /// The longest freshness.
    pub ttl: Duration,
    /// Methods answered from the cache.
    pub methods: Box<[Method]>,
    /// Statuses stored.
    pub statuses: Box<[u16]>,
    /// Request headers in the key.
    pub vary: Box<[HeaderName]>,
    /// How long past freshness an entry is served while refreshed (zero: not at all).
    pub stale_while_revalidate: Duration,
    /// The largest body stored.
    pub max_body_size: u64,
    /// Where entries live.
    pub store: StoreKind,
}

/// The cache's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a fresh entry.
    Hit,
    /// Went upstream (and the answer was stored if it could be).
    Miss,
    /// Answered from a stale entry while it is refreshed.
    Stale,
    /// The cache did not take part (method, `no-store`, a gateway answer before the lookup).
    Bypass,
}

impl CacheStatus {
    /// The `X-Cache-Status` value (and the access log's `cache`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "Hit",
            CacheStatus::Miss => "Miss",
            CacheStatus::Stale => "Stale",
            CacheStatus::Bypass => "Bypass",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// How a leader's upstream exchange ended, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still going.
    Pending,
    /// The answer is in the store.
    Stored,
    /// The answer cannot be stored (its headers say so): waiters go upstream at once.
    Uncacheable,
    /// Error, status not stored, body over the cap, client gone: one waiter leads next.
    Failed,
}

/// The process-wide cache state: stores, in-flight misses, metrics.
#[derive(Debug)]
pub struct CacheRuntime {
    memory: MemoryStore,
    redis: Option<RedisCache>,
    inflight: Mutex<HashMap<CacheKey, watch::Receiver<Outcome>>>,
    results: Family<Vec<(String, String)>, Counter>,
    counters: [Counter; 4],
    warned_no_redis: AtomicBool,
}

/// The default `--cache-memory`: 256 MiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

impl Default for CacheRuntime {
    fn default() -> Self {
        CacheRuntime::new(DEFAULT_MEMORY, None)
    }
}

impl CacheRuntime {
    /// A runtime whose memory store holds at most `memory` bytes; `redis` is the
    /// `--redis-url` store (shared with the rate limiter).
    pub fn new(memory: u64, redis: Option<Arc<crate::ratelimit::RedisStore>>) -> Self {
        let results = Family::<Vec<(String, String)>, Counter>::default();
        let counter =
            |r: &str| results.get_or_create(&vec![("result".to_owned(), r.to_owned())]).clone();
        let counters = [counter("hit"), counter("miss"), counter("stale"), counter("bypass")];
        CacheRuntime {
            memory: MemoryStore::new(memory),
            redis: redis.map(RedisCache::new),
            inflight: Mutex::new(HashMap::new()),
            results,
            counters,
            warned_no_redis: AtomicBool::new(false),
        }
    }

    /// Registers `weir_cache_requests_total{result}` and `weir_cache_bytes`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "weir_cache_requests",
            "Responses of rules with a cache Plugin, by result (hit, miss, stale, bypass)",
            self.results.clone(),
        );
        registry.register_collector(Box::new(BytesCollector(Arc::downgrade(self))));
    }

    /// Counts one response with `status`.
    fn count(&self, status: CacheStatus) {
        let i = match status {
            CacheStatus::Hit => 0,
            CacheStatus::Miss => 1,
            CacheStatus::Stale => 2,
            CacheStatus::Bypass => 3,
        };
        self.counters[i].inc();
    }

    /// Responses counted with `result` (`hit`, `miss`, `stale`, `bypass`).
    pub fn requests(&self, status: CacheStatus) -> u64 {
        match status {
            CacheStatus::Hit => self.counters[0].get(),
            CacheStatus::Miss => self.counters[1].get(),
            CacheStatus::Stale => self.counters[2].get(),
            CacheStatus::Bypass => self.counters[3].get(),
        }
    }

    /// Bytes used by the memory store.
    pub fn bytes(&self) -> u64 {
        self.memory.bytes()
    }

    /// The Redis store for `plugin`, `None` for the memory store.
    fn redis_for(&self, plugin: &CachePlugin) -> Option<&RedisCache> {
        if plugin.store != StoreKind::Redis {
            return None;
        }
        if self.redis.is_none() && !self.warned_no_redis.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %plugin.id, "cache with store: Redis but no --redis-url: entries are kept in this replica's memory");
        }
        self.redis.as_ref()
    }

    /// The entry of `key`.
    async fn get(&self, plugin: &CachePlugin, key: &CacheKey) -> Option<Arc<Entry>> {
        match self.redis_for(plugin) {
            None => self.memory.get(key),
            Some(redis) => redis.get(key).await.map(Arc::new),
        }
    }

    /// Stores `entry` (memory at once; Redis in the background), then releases `lead`'s
    /// waiters.
    pub(crate) fn insert(
        &self,
        plugin: &CachePlugin,
        key: CacheKey,
        entry: Entry,
        lead: Option<Lead>,
    ) {
        match self.redis_for(plugin) {
            None => {
                self.memory.insert(key, Arc::new(entry));
                if let Some(lead) = lead {
                    lead.finish(Outcome::Stored);
                }
            }
            Some(redis) => {
                let index_ttl = plugin.ttl + plugin.stale_while_revalidate;
                redis.insert(&key, &entry, index_ttl, lead);
            }
        }
    }

    /// Removes every entry of `host` and `path` (both given) or every entry (neither),
    /// from memory and Redis. Returns the memory entries removed and the Redis keys
    /// deleted (`Err` when Redis could not be purged).
    pub async fn purge(
        &self,
        host: Option<&str>,
        path: Option<&str>,
    ) -> (u64, Option<Result<u64, String>>) {
        let host = host.map(key::normal_host);
        let memory = self.memory.purge(host.as_deref(), path);
        let redis = match &self.redis {
            Some(redis) => Some(redis.purge(host.as_deref(), path).await),
            None => None,
        };
        (memory, redis)
    }

    /// Leads the upstream exchange of `key`, or the receiver of the current leader's outcome.
    fn lead(self: &Arc<Self>, key: &CacheKey) -> Result<Lead, watch::Receiver<Outcome>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = inflight.get(key) {
            return Err(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        inflight.insert(key.clone(), rx);
        Ok(Lead { runtime: Arc::clone(self), key: key.clone(), tx, outcome: Outcome::Failed })
    }
}

/// Encodes `weir_cache_bytes` at scrape time (moka's weighted size).
#[derive(Debug)]
struct BytesCollector(std::sync::Weak<CacheRuntime>);

impl Collector for BytesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(runtime) = self.0.upgrade() else { return Ok(()) };
        let bytes = i64::try_from(runtime.bytes()).unwrap_or(i64::MAX);
        let metric = encoder.encode_descriptor(
            "weir_cache_bytes",
            "Bytes used by the response cache's memory store (keys, headers and bodies)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(bytes).encode(metric)
    }
}

/// The one upstream exchange of a key in flight: dropping it (stored or not, the client
/// gone mid-body included) removes it from the in-flight map and wakes the waiters.
#[derive(Debug)]
pub struct Lead {
    runtime: Arc<CacheRuntime>,
    key: CacheKey,
    tx: watch::Sender<Outcome>,
    outcome: Outcome,
}

impl Lead {
    /// Ends the exchange: `stored` tells the waiters to read the store.
    pub(crate) fn done(self, stored: bool) {
        self.finish(if stored { Outcome::Stored } else { Outcome::Failed });
    }

    fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut inflight = self.runtime.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.get(&self.key).is_some_and(|rx| rx.same_channel(&self.tx.subscribe())) {
            inflight.remove(&self.key);
        }
        drop(inflight);
        self.tx.send_replace(self.outcome);
    }
}

/// What the cache decided for one request, kept in the [`RequestContext`] for the proxy
/// (store the answer, refresh a stale entry) and the response phase (`X-Cache-Status`).
#[derive(Debug)]
pub struct CacheState {
    /// The verdict.
    pub status: CacheStatus,
    plugin: Arc<CachePlugin>,
    runtime: Arc<CacheRuntime>,
    /// `None`: the answer is not stored.
    key: Option<CacheKey>,
    lead: Option<Lead>,
    /// A stale entry this request answers with while its exchange refreshes it.
    stale: Option<Arc<Entry>>,
    credentials: bool,
}

impl CacheState {
    fn new(status: CacheStatus, plugin: &Arc<CachePlugin>, runtime: &Arc<CacheRuntime>) -> Self {
        CacheState {
            status,
            plugin: Arc::clone(plugin),
            runtime: Arc::clone(runtime),
            key: None,
            lead: None,
            stale: None,
            credentials: false,
        }
    }

    /// The stale entry to answer with while this request's upstream exchange refreshes it
    /// in the background ([`refresh`]).
    pub(crate) fn take_refresh(&mut self) -> Option<Arc<Entry>> {
        self.stale.take()
    }

    /// Begins storing the upstream's answer with `parts`: the body wrapper that copies it,
    /// or `None` when it cannot be stored (waiters are then released at once).
    pub(crate) fn begin_store(&mut self, parts: &http::response::Parts) -> Option<body::Store> {
        let key = self.key.take()?;
        let lead = self.lead.take();
        let now = SystemTime::now();
        let freshness = match freshness::storable(
            &self.plugin,
            parts.status,
            &parts.headers,
            self.credentials,
            now,
        ) {
            Ok(f) => f,
            Err(why) => {
                tracing::debug!(plugin = %self.plugin.id, ?why, "cache: response not stored");
                let outcome = match why {
                    freshness::NotStored::Status => Outcome::Failed,
                    _ => Outcome::Uncacheable,
                };
                if let Some(lead) = lead {
                    lead.finish(outcome);
                }
                return None;
            }
        };
        let length = parts.headers.get(http::header::CONTENT_LENGTH);
        if length
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.plugin.max_body_size)
        {
            return None;
        }
        Some(body::Store::new(
            Arc::clone(&self.runtime),
            Arc::clone(&self.plugin),
            key,
            lead,
            parts.status,
            parts.headers.clone(),
            freshness,
        ))
    }
}

/// The request phase of a cache filter: answers from the store, or lets the request go
/// upstream with what the proxy needs to store its answer.
pub async fn lookup(
    plugin: &Arc<CachePlugin>,
    request: &http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<Flow, ProxyError> {
    let Some(runtime) = ctx.cache_runtime else {
        return Ok(Flow::Continue);
    };
    let runtime = Arc::clone(runtime);
    let method = &request.method;
    // HEAD is answered from GET entries when GET is cached (never stored under GET).
    let head_from_get = method == Method::HEAD && plugin.methods.contains(&Method::GET);
    let cached_method = head_from_get || plugin.methods.contains(method);
    let cacheability = freshness::request(&request.headers);
    // A WebSocket upgrade is never answered from (or stored in) the cache.
    let upgrade = request.headers.contains_key(http::header::UPGRADE);
    if !cached_method || cacheability == RequestCacheability::Bypass || upgrade {
        ctx.cache = Some(Box::new(CacheState::new(CacheStatus::Bypass, plugin, &runtime)));
        return Ok(Flow::Continue);
    }
    let host = crate::proxy::original_host(request);
    let key_method = if head_from_get { &Method::GET } else { method };
    let key = CacheKey::new(
        plugin,
        host.to_str().unwrap_or(""),
        key_method,
        request.uri.path(),
        request.uri.query(),
        &request.headers,
        ctx,
    );
    let mut state = CacheState::new(CacheStatus::Miss, plugin, &runtime);
    state.credentials = ctx.authenticated || request.headers.contains_key(AUTHORIZATION);
    let wait = ctx.request_timeout.unwrap_or(DEFAULT_WAIT);
    let mut look = cacheability == RequestCacheability::Normal;
    for round in 0..=WAIT_ROUNDS {
        if look && let Some(entry) = runtime.get(plugin, &key).await {
            let now = SystemTime::now();
            match entry.age_at(now) {
                Age::Fresh => {
                    state.status = CacheStatus::Hit;
                    ctx.cache = Some(Box::new(state));
                    return Ok(Flow::Respond(Box::new(entry.respond(
                        method,
                        &request.headers,
                        now,
                    ))));
                }
                Age::Stale if !head_from_get => {
                    state.status = CacheStatus::Stale;
                    // One refresh per key: the request that leads carries it out.
                    if let Ok(lead) = runtime.lead(&key) {
                        state.key = Some(key);
                        state.lead = Some(lead);
                        state.stale = Some(entry);
                        ctx.cache = Some(Box::new(state));
                        return Ok(Flow::Continue);
                    }
                    ctx.cache = Some(Box::new(state));
                    return Ok(Flow::Respond(Box::new(entry.respond(
                        method,
                        &request.headers,
                        now,
                    ))));
                }
                Age::Stale | Age::Expired => {}
            }
        }
        if head_from_get {
            // A HEAD miss goes upstream as HEAD; its answer has no body to store.
            break;
        }
        match runtime.lead(&key) {
            Ok(lead) => {
                state.key = Some(key);
                state.lead = Some(lead);
                break;
            }
            Err(mut rx) if round < WAIT_ROUNDS => {
                let waited = {
                    let done = rx.wait_for(|o| *o != Outcome::Pending);
                    match tokio::time::timeout(wait, done).await {
                        Ok(Ok(outcome)) => Some(*outcome),
                        Ok(Err(_)) => None,
                        // The leader is slow: go upstream without waiting longer.
                        Err(_) => Some(Outcome::Uncacheable),
                    }
                };
                // The sender is gone: its last value is the outcome.
                let outcome = waited.unwrap_or_else(|| *rx.borrow());
                match outcome {
                    // A fresh answer that the leader stored serves this request too.
                    Outcome::Stored => look = true,
                    Outcome::Pending | Outcome::Uncacheable => break,
                    // A revalidation never takes an entry older than its request.
                    Outcome::Failed => look = cacheability == RequestCacheability::Normal,
                }
            }
            Err(_) => {
                // Past the rounds: go upstream, and store the answer if it can be.
                state.key = Some(key);
                break;
            }
        }
    }
    ctx.cache = Some(Box::new(state));
    Ok(Flow::Continue)
}

/// The response phase of a cache filter: `X-Cache-Status` (`Bypass` when the gateway
/// answered before the lookup ran, e.g. 401 or 429), counted.
pub fn response(response: &mut Response<ProxyBody>, ctx: &RequestContext<'_>) {
    let status = ctx.cache.as_ref().map_or(CacheStatus::Bypass, |c| c.status);
    response.headers_mut().insert(X_CACHE_STATUS, status.header());
    if let Some(runtime) = ctx.cache_runtime {
        runtime.count(status);
    }
}
