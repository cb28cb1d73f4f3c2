//! The runtime registry of limiters: state that outlives snapshots.
//!
//! Limiters are keyed by [`LimiterId`] (Plugin namespace/name + config hash). The publisher
//! calls [`RateLimiters::publish`] with the rate limits of each new snapshot: it binds each
//! [`RateLimit`] to its limiter (reusing the existing one when the id is unchanged, so a
//! reload keeps the counters) and drops the limiters no live plugin uses any more.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::registry::Registry;

use super::limiter::{Clock, Limiter};
use super::local::DEFAULT_MAX_KEYS;
use super::metrics::RateLimitMetrics;
use super::redis::RedisStore;
use super::spec::{LimiterId, RateLimitSpec};

/// A rate limit as a snapshot carries it (`Filter::RateLimit(Arc<RateLimit>)`): the pure
/// spec from compile(), bound to its runtime limiter on publish (or on first use).
#[derive(Debug)]
pub struct RateLimit {
    spec: Arc<RateLimitSpec>,
    bound: OnceLock<Arc<Limiter>>,
}

impl RateLimit {
    /// Wraps a compiled spec (unbound).
    pub fn new(spec: RateLimitSpec) -> Self {
        RateLimit { spec: Arc::new(spec), bound: OnceLock::new() }
    }

    /// The compiled spec.
    pub fn spec(&self) -> &Arc<RateLimitSpec> {
        &self.spec
    }
}

/// Every limiter of the process, plus the shared Redis store and the metrics.
#[derive(Debug)]
pub struct RateLimiters {
    limiters: RwLock<HashMap<LimiterId, Arc<Limiter>>>,
    redis: Option<Arc<RedisStore>>,
    clock: Clock,
    metrics: RateLimitMetrics,
    max_keys: usize,
}

impl RateLimiters {
    /// A registry whose `store: Redis` limiters use `redis` (None without `--redis-url`: such
    /// limiters then count per replica, with a warning).
    pub fn new(redis: Option<RedisStore>) -> Self {
        RateLimiters {
            limiters: RwLock::new(HashMap::new()),
            redis: redis.map(Arc::new),
            clock: Clock::monotonic(),
            metrics: RateLimitMetrics::default(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// Uses `clock` for every limiter created from now on (tests, benchmarks).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Caps the keys each limiter keeps in local memory.
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The metrics.
    pub fn metrics(&self) -> &RateLimitMetrics {
        &self.metrics
    }

    /// Registers the rate-limit metrics (`weir_ratelimit_store_errors_total`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// The shared store, when configured.
    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// The limiter for `spec`, created on first use.
    pub fn limiter(&self, spec: &Arc<RateLimitSpec>) -> Arc<Limiter> {
        if let Some(l) = self.limiters.read().unwrap_or_else(|p| p.into_inner()).get(spec.id()) {
            return l.clone();
        }
        let mut map = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        map.entry(spec.id().clone())
            .or_insert_with(|| {
                Arc::new(Limiter::new(
                    spec.clone(),
                    self.redis.as_ref(),
                    self.clock.clone(),
                    self.metrics.clone(),
                    self.max_keys,
                ))
            })
            .clone()
    }

    /// The limiter of a snapshot's rate limit: a plain load once bound.
    pub fn bind<'a>(&self, rate_limit: &'a RateLimit) -> &'a Arc<Limiter> {
        rate_limit.bound.get_or_init(|| self.limiter(&rate_limit.spec))
    }

    /// Binds every rate limit of a new snapshot and drops the limiters it no longer uses.
    /// Call it before the snapshot goes live.
    pub fn publish<'a>(&self, live: impl IntoIterator<Item = &'a RateLimit>) {
        let mut ids = HashSet::new();
        for rate_limit in live {
            self.bind(rate_limit);
            ids.insert(rate_limit.spec.id().clone());
        }
        self.retain(&ids);
    }

    /// Drops every limiter whose id is not in `live` (in-flight requests keep theirs).
    pub fn retain(&self, live: &HashSet<LimiterId>) {
        let mut map = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|id, _| live.contains(id));
    }

    /// Limiters alive.
    pub fn len(&self) -> usize {
        self.limiters.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// No limiter alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
