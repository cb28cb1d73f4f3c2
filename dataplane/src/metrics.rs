//! Data-plane metrics (prometheus-client): authentication failures by reason, JWKS fetch
//! failures, `extAuth` decisions, open upgraded connections, and the upstream layer's
//! `weir_upstream_requests_total{backend,result}` (counters resolved once per backend) with
//! `weir_upstream_duration_seconds{backend}` (a histogram per backend runtime),
//! `weir_backend_endpoints{backend,state}` and `weir_circuit_state{backend}` (read from the
//! live registries at scrape time, so removed backends' series disappear). They live in the
//! data plane's own registry; the admin server appends them to its `/metrics` answer with
//! [`append_to`].

use std::sync::LazyLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::filter::AuthFailure;
use crate::filter::extauth::Outcome;

/// A single label: `reason` of `weir_auth_failures_total`, `result` of `weir_ext_auth_decisions_total`.
type ReasonLabel = [(&'static str, &'static str); 1];

/// `backend` and `result` of `weir_upstream_requests_total`.
type UpstreamLabels = [(&'static str, String); 2];

/// The data plane's metrics.
#[derive(Debug)]
pub struct DataPlaneMetrics {
    registry: Registry,
    /// `weir_auth_failures_total{reason}`: requests answered 401, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// `weir_jwks_fetch_failures_total`: failed JWKS fetches (keys are served stale).
    pub jwks_fetch_failures: Counter,
    /// `weir_ext_auth_decisions_total{result}`: `extAuth` outcomes (allowed, refused,
    /// error_denied, error_allowed).
    pub ext_auth_decisions: Family<ReasonLabel, Counter>,
    /// `weir_upgraded_connections`: upgraded (WebSocket) connections open now.
    pub upgraded_connections: Gauge,
    /// `weir_upstream_requests_total{backend,result}`: attempts to each backend by result.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
}

/// Produces `weir_backend_endpoints` and `weir_circuit_state` at scrape time from every
/// live [`crate::upstream::UpstreamRegistry`].
#[derive(Debug)]
struct UpstreamCollector;

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtimes = crate::upstream::registry::live_runtimes();
        let now = tokio::time::Instant::now();
        let mut endpoints = encoder.encode_descriptor(
            "weir_backend_endpoints",
            "Endpoints of each backend by state: healthy, ejected (outlier detection), unhealthy (failing active checks)",
            None,
            MetricType::Gauge,
        )?;
        for runtime in &runtimes {
            let backend = runtime.key.to_string();
            for (state, count) in runtime.endpoint_states(now) {
                let labels: [(&str, &str); 2] = [("backend", &backend), ("state", state)];
                ConstGauge::new(count as i64).encode(endpoints.encode_family(&labels)?)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "weir_upstream_duration_seconds",
            "Upstream attempts' duration, from sending the request to the response headers (or the failure), by backend",
            None,
            MetricType::Histogram,
        )?;
        for runtime in &runtimes {
            let (buckets, count, sum) = runtime.duration.encodable();
            if count == 0 {
                continue;
            }
            let backend = runtime.key.to_string();
            let labels: [(&str, &str); 1] = [("backend", &backend)];
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut circuits = encoder.encode_descriptor(
            "weir_circuit_state",
            "Circuit of each backend with a circuit breaker: 0 closed, 1 open, 2 half-open",
            None,
            MetricType::Gauge,
        )?;
        for runtime in &runtimes {
            if let Some(state) = runtime.circuit_state(now) {
                let backend = runtime.key.to_string();
                let labels: [(&str, &str); 1] = [("backend", &backend)];
                ConstGauge::new(state as i64).encode(circuits.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

static METRICS: LazyLock<DataPlaneMetrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let auth_failures = Family::<ReasonLabel, Counter>::default();
    let jwks_fetch_failures = Counter::default();
    registry.register(
        "weir_auth_failures",
        "Requests refused by authentication (401), by reason",
        auth_failures.clone(),
    );
    registry.register(
        "weir_jwks_fetch_failures",
        "Failed JWKS fetches; cached keys keep serving",
        jwks_fetch_failures.clone(),
    );
    let ext_auth_decisions = Family::<ReasonLabel, Counter>::default();
    registry.register(
        "weir_ext_auth_decisions",
        "extAuth outcomes: allowed, refused (the auth service's answer returned), error_denied (503), error_allowed (fail open)",
        ext_auth_decisions.clone(),
    );
    let upgraded_connections = Gauge::default();
    registry.register(
        "weir_upgraded_connections",
        "Upgraded (WebSocket) connections open now",
        upgraded_connections.clone(),
    );
    let upstream_requests = Family::<UpstreamLabels, Counter>::default();
    registry.register(
        "weir_upstream_requests",
        "Attempts to each backend by result: success, 5xx, connect_error, timeout, bad_response, circuit_open, overflow",
        upstream_requests.clone(),
    );
    registry.register_collector(Box::new(UpstreamCollector));
    DataPlaneMetrics {
        registry,
        upstream_requests,
        auth_failures,
        jwks_fetch_failures,
        ext_auth_decisions,
        upgraded_connections,
    }
});

/// The process-wide data-plane metrics.
pub fn metrics() -> &'static DataPlaneMetrics {
    &METRICS
}

/// Counts a 401 with its reason.
pub fn auth_failure(reason: AuthFailure) {
    METRICS.auth_failures.get_or_create(&[("reason", reason.as_str())]).inc();
}

/// Counts an `extAuth` decision.
pub fn ext_auth_decision(outcome: Outcome) {
    METRICS.ext_auth_decisions.get_or_create(&[("result", outcome.as_str())]).inc();
}

/// Runtimes holding each backend's `weir_upstream_requests_total` series (several registries
/// may know one backend, e.g. two data planes in one test process).
static UPSTREAM_HOLDERS: std::sync::Mutex<Option<std::collections::HashMap<String, u32>>> =
    std::sync::Mutex::new(None);

/// The `weir_upstream_requests_total` counters of `backend`, one per result in
/// [`AttemptResult::ALL`](crate::upstream::registry::AttemptResult::ALL) order (resolved
/// once per backend runtime, so requests count without a label lookup). Give them back with
/// [`release_upstream_requests`].
pub fn upstream_requests(backend: &str) -> [Counter; 7] {
    let mut holders = UPSTREAM_HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *holders.get_or_insert_with(Default::default).entry(backend.to_owned()).or_default() += 1;
    crate::upstream::registry::AttemptResult::ALL.map(|result| {
        METRICS
            .upstream_requests
            .get_or_create(&[
                ("backend", backend.to_owned()),
                ("result", result.as_str().to_owned()),
            ])
            .clone()
    })
}

/// A runtime of `backend` is gone: when it was the last, every
/// `weir_upstream_requests_total` series of `backend` is removed.
pub fn release_upstream_requests(backend: &str) {
    let mut holders = UPSTREAM_HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let holders = holders.get_or_insert_with(Default::default);
    let Some(count) = holders.get_mut(backend) else { return };
    *count = count.saturating_sub(1);
    if *count > 0 {
        return;
    }
    holders.remove(backend);
    for result in crate::upstream::registry::AttemptResult::ALL {
        METRICS
            .upstream_requests
            .remove(&[("backend", backend.to_owned()), ("result", result.as_str().to_owned())]);
    }
}

/// Counts a failed JWKS fetch.
pub fn jwks_fetch_failure() {
    METRICS.jwks_fetch_failures.inc();
}

/// The data plane's metrics in the Prometheus text format (ending with `# EOF`).
pub fn encode() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

/// Appends the data plane's metrics to another registry's text exposition, keeping a
/// single `# EOF` at the end.
pub fn append_to(mut exposition: String) -> String {
    let trimmed = exposition.trim_end().strip_suffix("# EOF").map(str::len);
    if let Some(len) = trimmed {
        exposition.truncate(len);
    }
    exposition.push_str(&encode());
    exposition
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn failures_are_counted_by_reason_and_merged_with_one_eof() {
        auth_failure(AuthFailure::Expired);
        let text = append_to("# HELP x y\n# TYPE x counter\nx_total 1\n# EOF\n".to_owned());
        assert!(text.contains("weir_auth_failures_total{reason=\"expired\"}"), "{text}");
        assert!(text.contains("x_total 1"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }
}
