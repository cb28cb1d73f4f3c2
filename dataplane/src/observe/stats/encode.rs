//! Exposition of the per-request metrics: a prometheus-client [`Collector`] that reads the
//! live snapshot's rules at scrape time (so deleted routes' series disappear) and encodes
//! each rule's counters and each Route's histogram once.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use super::{RequestMetrics, RuleStats, STATUS_CLASSES};
use crate::server::DataPlane;

/// Registers `weir_http_requests_total` and `weir_http_request_duration_seconds` of
/// `dataplane`'s request metrics in `registry` (nothing when `--request-metrics false`).
pub fn register(registry: &mut Registry, dataplane: &Arc<DataPlane>) {
    let Some(metrics) = dataplane.observability.metrics.clone() else { return };
    registry.register_collector(Box::new(RequestCollector {
        dataplane: Arc::downgrade(dataplane),
        metrics,
    }));
}

#[derive(Debug)]
struct RequestCollector {
    dataplane: Weak<DataPlane>,
    metrics: Arc<RequestMetrics>,
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.dataplane.upgrade().map(|d| d.current());
        let rules = std::iter::once(&self.metrics.unmatched)
            .chain(snapshot.iter().flat_map(|s| s.routes.rules().map(|r| &r.stats)));
        encode_rules(&mut encoder, rules, self.metrics.per_consumer)
    }
}

/// Encodes `weir_http_requests_total` for every rule of `rules` and
/// `weir_http_request_duration_seconds` for their Routes (each handle once; a Route whose
/// rules share one histogram once). Only status classes and histograms with requests are
/// written. `per_consumer`: the counters by consumer, with a `consumer` label.
pub fn encode_rules<'a>(
    encoder: &mut DescriptorEncoder,
    rules: impl Iterator<Item = &'a Arc<RuleStats>>,
    per_consumer: bool,
) -> Result<(), std::fmt::Error> {
    let mut seen = HashSet::new();
    let rules: Vec<&RuleStats> =
        rules.filter(|r| seen.insert(Arc::as_ptr(r) as usize)).map(|r| &**r).collect();
    let mut requests = encoder.encode_descriptor(
        "weir_http_requests",
        "Requests by Route, rule and status class (empty route: no route matched)",
        None,
        MetricType::Counter,
    )?;
    for rule in &rules {
        let key = rule.route();
        if per_consumer {
            for (consumer, codes) in rule.consumers() {
                for (class, n) in STATUS_CLASSES.iter().zip(codes).filter(|(_, n)| *n > 0) {
                    let labels: [(&str, &str); 5] = [
                        ("namespace", &key.namespace),
                        ("route", &key.name),
                        ("rule", &rule.rule),
                        ("code", class),
                        ("consumer", &consumer),
                    ];
                    ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
                }
            }
        } else {
            for (class, n) in STATUS_CLASSES.iter().zip(rule.codes.read()).filter(|(_, n)| *n > 0) {
                let labels: [(&str, &str); 4] = [
                    ("namespace", &key.namespace),
                    ("route", &key.name),
                    ("rule", &rule.rule),
                    ("code", class),
                ];
                ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
            }
        }
    }
    let mut durations = encoder.encode_descriptor(
        "weir_http_request_duration_seconds",
        "Request duration from arrival to the end of the response body, by Route",
        None,
        MetricType::Histogram,
    )?;
    let mut routes = HashSet::new();
    for rule in &rules {
        if !routes.insert(Arc::as_ptr(&rule.route) as usize) {
            continue;
        }
        let (buckets, count, sum) = rule.route.duration.encodable();
        if count == 0 {
            continue;
        }
        let key = rule.route();
        let labels: [(&str, &str); 2] = [("namespace", &key.namespace), ("route", &key.name)];
        durations
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}
