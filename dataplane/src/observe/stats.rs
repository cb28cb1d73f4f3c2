//! Per-request metrics: `weir_http_requests_total{namespace,route,rule,code}` and
//! `weir_http_request_duration_seconds{namespace,route}` (CONTRACT STUB — issue 14, metrics).
//!
//! Each compiled [`Rule`](crate::snapshot::Rule) carries an `Arc<RuleStats>` handed out by
//! the compiler's [`RouteStatsRegistry`]: the same handle for the same (Route, rule) across
//! compiles, so counters survive reloads; the series of a rule no snapshot holds any more
//! disappear. Counting a request is a few atomic increments on that handle.

use std::sync::Arc;

use crate::snapshot::ObjectKey;

use super::{RequestObserver, RequestRecord};

/// Upper bounds (seconds) of the latency histograms' buckets, 0.5 ms … 30 s.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Hands out the metric handles of rules: the same `Arc` for the same (Route, rule) while
/// any snapshot holds it. Clones share the registry (it lives in the compiler's memory).
#[derive(Debug, Clone, Default)]
pub struct RouteStatsRegistry {}

impl RouteStatsRegistry {
    /// The handle of `rule` of `route`.
    pub fn rule(&self, route: &ObjectKey, rule: &str) -> Arc<RuleStats> {
        RuleStats::detached(route, rule)
    }
}

/// The counters of one rule, and (shared by every rule of the Route) its Route's latency
/// histogram.
#[derive(Debug)]
pub struct RuleStats {}

impl RuleStats {
    /// A handle registered nowhere (tests, benches).
    pub fn detached(_route: &ObjectKey, _rule: &str) -> Arc<Self> {
        Arc::new(RuleStats {})
    }

    /// Current values (dashboard, tests).
    pub fn view(&self) -> RuleStatsView {
        RuleStatsView::default()
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

/// The end-of-request observer that counts requests into their rule's handle.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// `--metrics-per-consumer`: also count by consumer.
    pub per_consumer: bool,
}

impl RequestMetrics {
    /// The observer; `per_consumer` adds the `consumer` label.
    pub fn new(per_consumer: bool) -> Self {
        RequestMetrics { per_consumer }
    }
}

impl RequestObserver for RequestMetrics {
    fn on_request_end(&self, _record: &RequestRecord) {}
}
