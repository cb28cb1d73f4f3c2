//! One plugin's runtime limiter: its local counters, its Redis keys, and `check()`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::algorithm::{self, Limit, Step};
use super::decision::{Decision, DecisionSource, number_value};
use super::key::{LimitKey, TrustedProxies};
use super::local::LocalStore;
use super::metrics::{DecisionCounters, RateLimitMetrics, decision_result};
use super::redis::RedisStore;
use super::spec::{OnStoreError, RateLimitSpec, StoreKind};

/// Milliseconds for the algorithms: monotonic (tokio time, so paused-time tests drive it)
/// or set by hand (tests and benchmarks).
#[derive(Debug, Clone)]
pub enum Clock {
    /// `offset_ms` plus the milliseconds elapsed since `epoch`.
    Monotonic {
        /// When the clock started.
        epoch: tokio::time::Instant,
        /// Its reading then.
        offset_ms: u64,
    },
    /// Whatever the test stored.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A monotonic clock that reads the Unix time in ms when created, so that windows align
    /// with the wall clock (`1m` windows start on the minute) like the Redis store's, yet
    /// never go back when the system clock is adjusted.
    pub fn monotonic() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock::monotonic_at(unix_ms)
    }

    /// A monotonic clock reading `offset_ms` now (paused-time tests use 0).
    pub fn monotonic_at(offset_ms: u64) -> Self {
        Clock::Monotonic { epoch: tokio::time::Instant::now(), offset_ms }
    }

    /// A manual clock at `ms`, and the handle that moves it.
    pub fn manual(ms: u64) -> (Self, Arc<AtomicU64>) {
        let cell = Arc::new(AtomicU64::new(ms));
        (Clock::Manual(cell.clone()), cell)
    }

    /// The current time in ms.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::Monotonic { epoch, offset_ms } => offset_ms
                .saturating_add(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)),
            Clock::Manual(cell) => cell.load(Ordering::Relaxed),
        }
    }
}

/// The Redis side of a limiter: the store and one key prefix per limit.
#[derive(Debug)]
struct Shared {
    store: Arc<RedisStore>,
    prefixes: Box<[Bytes]>,
}

/// A plugin's limiter. Obtained from [`RateLimiters`](super::RateLimiters); lives as long
/// as a live snapshot uses its plugin with the same config.
#[derive(Debug)]
pub struct Limiter {
    spec: Arc<RateLimitSpec>,
    /// The counters of `store: Local`, or the fail-open guard of `store: Redis`.
    local: LocalStore,
    shared: Option<Shared>,
    limit_values: Box<[HeaderValue]>,
    clock: Clock,
    metrics: RateLimitMetrics,
    /// `weir_ratelimit_decisions_total` of the plugin, by result.
    decisions: DecisionCounters,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.metrics.release_decisions(&self.spec.id().plugin);
    }
}

/// How long a fail-closed refusal asks the client to wait.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

impl Limiter {
    pub(crate) fn new(
        spec: Arc<RateLimitSpec>,
        redis: Option<&Arc<RedisStore>>,
        clock: Clock,
        metrics: RateLimitMetrics,
        max_keys: usize,
    ) -> Self {
        let shared = match (spec.store(), redis) {
            (StoreKind::Redis, Some(store)) => Some(Shared {
                store: store.clone(),
                prefixes: (0..spec.limits().len())
                    // `{…}` is the Cluster hash tag: one limiter's keys share a slot, and
                    // nothing a client sends can steer where its key lands.
                    .map(|i| Bytes::from(format!("weir:rl:{{{}}}:{i}:", spec.id())))
                    .collect(),
            }),
            (StoreKind::Redis, None) => {
                tracing::warn!(limiter = %spec.id(), "rateLimit store Redis without --redis-url: counting per replica");
                None
            }
            (StoreKind::Local, _) => None,
        };
        let limit_values = spec.limits().iter().map(|l| number_value(l.quota())).collect();
        let local = LocalStore::new(spec.limits().into(), max_keys);
        let decisions = metrics.decisions(&spec.id().plugin);
        Limiter { spec, local, shared, limit_values, clock, metrics, decisions }
    }

    /// The compiled plugin.
    pub fn spec(&self) -> &Arc<RateLimitSpec> {
        &self.spec
    }

    /// Keys held in local memory (the counters of a local limiter, or the fail-open guard's).
    pub fn local_keys(&self) -> usize {
        self.local.len()
    }

    /// Builds the request's key (see [`KeySource::key`](super::KeySource::key)) and decides
    /// it: the whole request phase of the filter.
    pub async fn check_request(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        consumer: Option<&Arc<str>>,
        tier: Option<&str>,
        trusted: &TrustedProxies,
    ) -> Decision {
        let key = self.spec.key().key(peer, headers, consumer, trusted);
        self.check(&key, tier).await
    }

    /// [`check_request`](Self::check_request) for a local limiter, synchronously: the
    /// decision, or None for a limiter with a Redis store (which must await its round trip).
    /// The filter chain calls this first, so a local limit never builds the async path.
    pub fn check_request_local(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        consumer: Option<&Arc<str>>,
        tier: Option<&str>,
        trusted: &TrustedProxies,
    ) -> Option<Decision> {
        if self.shared.is_some() {
            return None;
        }
        let key = self.spec.key().key(peer, headers, consumer, trusted);
        let index = self.spec.limit_index(tier);
        Some(self.check_local(index, &key))
    }

    fn check_local(&self, index: usize, key: &LimitKey) -> Decision {
        let limit = self.spec.limits()[index];
        let step = self.local.step(index, key, self.clock.now_ms());
        self.decision(index, &limit, &step, DecisionSource::Store)
    }

    /// Decides one request with key `key` from a consumer of `tier` (None = anonymous or no
    /// tier). Local limiters answer without awaiting anything; Redis limiters make one
    /// round trip, bounded by the store's timeout.
    pub async fn check(&self, key: &LimitKey, tier: Option<&str>) -> Decision {
        let index = self.spec.limit_index(tier);
        let Some(shared) = &self.shared else {
            return self.check_local(index, key);
        };
        let limit = self.spec.limits()[index];
        let now = self.clock.now_ms();
        let redis_key = [shared.prefixes[index].as_ref(), &key.redis_suffix()].concat();
        match shared.store.step(Bytes::from(redis_key), &limit, now).await {
            Ok(step) => self.decision(index, &limit, &step, DecisionSource::Store),
            Err(error) => {
                self.metrics.store_error();
                tracing::debug!(limiter = %self.spec.id(), %error, "rate limit store error");
                match self.spec.on_store_error() {
                    OnStoreError::Allow => {
                        let step = self.local.step(index, key, now);
                        self.decision(index, &limit, &step, DecisionSource::FailOpen)
                    }
                    OnStoreError::Deny => self.counted(Decision {
                        allowed: false,
                        limit: limit.quota(),
                        remaining: 0,
                        reset: FAIL_CLOSED_RETRY,
                        retry_after: Some(FAIL_CLOSED_RETRY),
                        source: DecisionSource::FailClosed,
                        limit_value: self.limit_values[index].clone(),
                    }),
                }
            }
        }
    }

    fn decision(
        &self,
        index: usize,
        limit: &Limit,
        step: &Step,
        source: DecisionSource,
    ) -> Decision {
        let q = algorithm::quota(limit, step);
        self.counted(Decision {
            allowed: step.allowed,
            limit: limit.quota(),
            remaining: q.remaining,
            reset: Duration::from_millis(q.reset_ms),
            retry_after: (!step.allowed).then(|| Duration::from_millis(q.wait_ms)),
            source,
            limit_value: self.limit_values[index].clone(),
        })
    }

    /// Counts `decision` in `weir_ratelimit_decisions_total`.
    fn counted(&self, decision: Decision) -> Decision {
        if let Some(counter) = self.decisions.get(decision_result(&decision)) {
            counter.inc();
        }
        decision
    }
}
