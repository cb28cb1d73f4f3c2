//! Per-request metrics: `weir_http_requests_total{namespace,route,rule,code}` and
//! `weir_http_request_duration_seconds{namespace,route}`.
//!
//! Each compiled [`Rule`](crate::snapshot::Rule) carries an `Arc<RuleStats>` handed out by
//! the compiler's [`RouteStatsRegistry`]: the same handle for the same (Route, rule) across
//! compiles, so counters survive reloads; every rule of one Route shares that Route's
//! [`RouteStats`] (its latency histogram). Counting a request is a few relaxed atomic adds
//! on the handle the record carries ([`RequestMetrics`]): no label is hashed, no lock is
//! taken (with `--metrics-per-consumer`, one lock-free map lookup by consumer name).
//!
//! Exposition ([`register`]) reads the live snapshot at scrape time, so the series of a
//! rule no live snapshot holds any more disappear; requests that matched no route are
//! counted in one series with empty `namespace`, `route` and `rule` labels.

mod encode;
mod histogram;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use arc_swap::ArcSwapOption;
use http::StatusCode;

pub use encode::{encode_rules, register};
pub use histogram::{Histogram, LazyHistogram};

use crate::snapshot::ObjectKey;

use super::{RequestObserver, RequestRecord};

/// Upper bounds (seconds) of the latency histograms' buckets, 0.5 ms … 30 s.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The `code` label values, by status class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of a status (600–999 count as 5xx).
pub fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// Created handles after which the registry drops its dead entries (amortised: at most once
/// per this many plus the live entries).
const PRUNE_SLACK: usize = 1024;

/// Hands out the metric handles of rules: the same `Arc` for the same (Route, rule) while
/// any snapshot holds it. Clones share the registry (it lives in the compiler's memory).
/// Used at compile time only (a mutex, never on the request path).
#[derive(Debug, Clone, Default)]
pub struct RouteStatsRegistry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    /// foldhash (randomly seeded): the keys are hashed once per rule per compile.
    routes: HashMap<ObjectKey, RouteEntry, foldhash::fast::RandomState>,
    /// Handles created since the last prune.
    created: usize,
    /// Entries kept by the last prune.
    kept: usize,
}

/// One Route's handles. Rules are few per Route: a vector searched linearly, grown one
/// slot at a time (memory per Route matters more than this compile-time lookup).
#[derive(Debug)]
struct RouteEntry {
    route: Weak<RouteStats>,
    rules: Vec<(Arc<str>, Weak<RuleStats>)>,
}

impl RouteEntry {
    fn get(&self, rule: &str) -> Option<&Weak<RuleStats>> {
        self.rules.iter().find(|(name, _)| &**name == rule).map(|(_, w)| w)
    }
}

impl RouteStatsRegistry {
    /// Makes room for `routes` Routes at once (a compile of that many), instead of growing
    /// the map step by step while the compile asks for their handles.
    pub fn reserve(&self, routes: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let more = routes.saturating_sub(inner.routes.len());
        inner.routes.reserve(more);
    }

    /// The handle of `rule` of `route`: the live one when a snapshot (or a compile in
    /// progress) still holds it, else a new one sharing the Route's live [`RouteStats`]
    /// (new too when none of the Route's rules is alive). `rule` is shared, not copied (the
    /// compiler's names of unnamed rules are shared strings: memory per Route).
    pub fn rule(&self, route: &ObjectKey, rule: &Arc<str>) -> Arc<RuleStats> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) =
            inner.routes.get(route).and_then(|e| e.get(rule)).and_then(Weak::upgrade)
        {
            return live;
        }
        inner.created += 1;
        if inner.created > inner.kept + PRUNE_SLACK {
            inner.prune();
        }
        let entry = inner
            .routes
            .entry(route.clone())
            .or_insert_with(|| RouteEntry { route: Weak::new(), rules: Vec::new() });
        let route_stats = match entry.route.upgrade() {
            Some(live) => live,
            None => {
                let fresh = Arc::new(RouteStats::new(route.clone()));
                entry.route = Arc::downgrade(&fresh);
                fresh
            }
        };
        let name = Arc::clone(rule);
        let stats = Arc::new(RuleStats::with_route(route_stats, Arc::clone(&name)));
        match entry.rules.iter_mut().find(|(n, _)| **n == *name) {
            Some((_, dead)) => *dead = Arc::downgrade(&stats),
            None => {
                entry.rules.reserve_exact(1);
                entry.rules.push((name, Arc::downgrade(&stats)));
            }
        }
        stats
    }

    /// Rule handles some snapshot (or caller) still holds.
    pub fn live_rules(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.routes.values().flat_map(|e| &e.rules).filter(|(_, w)| w.strong_count() > 0).count()
    }

    /// Entries kept for rules, dead or alive (tests: pruning bounds it).
    pub fn entries(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.routes.values().map(|e| e.rules.len()).sum()
    }
}

impl RegistryInner {
    fn prune(&mut self) {
        self.routes.retain(|_, entry| {
            entry.rules.retain(|(_, w)| w.strong_count() > 0);
            !entry.rules.is_empty()
        });
        self.kept = self.routes.values().map(|e| e.rules.len()).sum();
        self.created = 0;
    }
}

/// What every rule of one Route shares: its request duration histogram.
#[derive(Debug)]
pub struct RouteStats {
    key: ObjectKey,
    /// `weir_http_request_duration_seconds{namespace,route}`.
    pub duration: LazyHistogram,
}

impl RouteStats {
    fn new(key: ObjectKey) -> Self {
        RouteStats { key, duration: LazyHistogram::default() }
    }

    /// The Route (empty namespace and name for requests that matched none).
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }
}

/// Counters by status class.
#[derive(Debug, Default)]
struct Codes([AtomicU64; 5]);

impl Codes {
    fn read(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

type ConsumerMap = HashMap<Arc<str>, Arc<Codes>, foldhash::fast::RandomState>;

/// The label of requests without an authenticated consumer (`--metrics-per-consumer`).
static ANONYMOUS: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// The counters of one rule, and (shared by every rule of the Route) its Route's latency
/// histogram.
#[derive(Debug)]
pub struct RuleStats {
    route: Arc<RouteStats>,
    rule: Arc<str>,
    codes: Codes,
    /// By consumer (`--metrics-per-consumer` only): copied on write, read without a lock.
    /// Consumers are bounded by configuration (authenticated usernames only).
    consumers: ArcSwapOption<ConsumerMap>,
}

impl RuleStats {
    fn with_route(route: Arc<RouteStats>, rule: Arc<str>) -> Self {
        RuleStats { route, rule, codes: Codes::default(), consumers: ArcSwapOption::empty() }
    }

    /// A handle registered nowhere (tests, benches).
    pub fn detached(route: &ObjectKey, rule: &str) -> Arc<Self> {
        Arc::new(RuleStats::with_route(Arc::new(RouteStats::new(route.clone())), Arc::from(rule)))
    }

    /// The Route.
    pub fn route(&self) -> &ObjectKey {
        &self.route.key
    }

    /// The Route's shared stats.
    pub fn route_stats(&self) -> &Arc<RouteStats> {
        &self.route
    }

    /// The rule's name.
    pub fn rule(&self) -> &Arc<str> {
        &self.rule
    }

    /// Counts one request that ended with `status` after `duration`: a relaxed add on the
    /// status class and the Route's histogram.
    pub fn record(&self, status: StatusCode, duration: std::time::Duration) {
        self.codes.0[status_class(status)].fetch_add(1, Ordering::Relaxed);
        self.route.duration.observe(duration);
    }

    /// Counts one request of `consumer` (`""`: anonymous) in status class `class`.
    fn count_consumer(&self, consumer: &Arc<str>, class: usize) {
        if let Some(codes) = self.consumers.load().as_deref().and_then(|m| m.get(&**consumer)) {
            codes.0[class].fetch_add(1, Ordering::Relaxed);
            return;
        }
        // First request of this consumer on this rule: copy the map with it added.
        self.consumers.rcu(|old| {
            let mut map = old.as_deref().cloned().unwrap_or_default();
            map.entry(Arc::clone(consumer)).or_default();
            Some(Arc::new(map))
        });
        if let Some(codes) = self.consumers.load().as_deref().and_then(|m| m.get(&**consumer)) {
            codes.0[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests by status class ([`STATUS_CLASSES`] order) of each consumer seen
    /// (`--metrics-per-consumer`; `""` is anonymous), sorted by consumer.
    pub fn consumers(&self) -> Vec<(Arc<str>, [u64; 5])> {
        let map = self.consumers.load_full();
        let mut all: Vec<(Arc<str>, [u64; 5])> = map
            .iter()
            .flat_map(|m| m.iter())
            .map(|(name, codes)| (Arc::clone(name), codes.read()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Current values (dashboard, tests).
    pub fn view(&self) -> RuleStatsView {
        RuleStatsView { codes: self.codes.read(), route_duration: self.route.duration.view() }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramView {
    /// Cumulative count of observations ≤ each bound of [`DURATION_BUCKETS`].
    pub cumulative: Vec<u64>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// One rule's counters read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleStatsView {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub codes: [u64; 5],
    /// The Route's request duration histogram (shared by its rules).
    pub route_duration: HistogramView,
}

/// The end-of-request observer that counts requests into their rule's handle (or the
/// "unmatched" handle when no route matched).
#[derive(Debug)]
pub struct RequestMetrics {
    /// `--metrics-per-consumer`: also count by consumer.
    pub per_consumer: bool,
    unmatched: Arc<RuleStats>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics::new(false)
    }
}

impl RequestMetrics {
    /// The observer; `per_consumer` adds the `consumer` label.
    pub fn new(per_consumer: bool) -> Self {
        let nowhere = ObjectKey { namespace: Arc::from(""), name: Arc::from("") };
        RequestMetrics { per_consumer, unmatched: RuleStats::detached(&nowhere, "") }
    }

    /// The counters of requests that matched no route (empty route and rule).
    pub fn unmatched(&self) -> &Arc<RuleStats> {
        &self.unmatched
    }
}

impl RequestObserver for RequestMetrics {
    fn on_request_end(&self, record: &RequestRecord) {
        let stats = record.stats.as_deref().unwrap_or(&self.unmatched);
        stats.record(record.status, record.duration);
        if self.per_consumer {
            let consumer = record.consumer.as_ref().unwrap_or(&ANONYMOUS);
            stats.count_consumer(consumer, status_class(record.status));
        }
    }
}
