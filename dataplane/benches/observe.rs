//! Per-request metrics micro benchmarks: what `RequestMetrics::on_request_end` costs per
//! request (a rule's counters and its Route's histogram; with `--metrics-per-consumer`,
//! plus the consumer lookup), and a histogram observation alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, StatusCode};
use weir_dataplane::ObjectKey;
use weir_dataplane::observe::stats::{Histogram, RequestMetrics, RouteStatsRegistry};
use weir_dataplane::observe::{RequestObserver, RequestRecord};

fn record(stats: Option<Arc<weir_dataplane::observe::stats::RuleStats>>) -> RequestRecord {
    RequestRecord {
        time: SystemTime::now(),
        request_id: HeaderValue::from_static("id"),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        method: Method::GET,
        host: HeaderValue::from_static("api.test"),
        path: "/orders".into(),
        route: None,
        rule: None,
        status: StatusCode::OK,
        duration: Duration::from_micros(830),
        upstream_duration: None,
        backend: None,
        upstream: None,
        retries: 0,
        consumer: Some(Arc::from("consumer-0042")),
        bytes_in: 0,
        bytes_out: 120,
        rate_limited: false,
        error: None,
        completed: true,
        traceparent: None,
        stats,
        trace: None,
        cache: None,
        grpc_status: None,
    }
}

fn request_end(c: &mut Criterion) {
    let registry = RouteStatsRegistry::default();
    let key = ObjectKey::new("shop", "orders");
    let rule = registry.rule(&key, &"list".into());
    let matched = record(Some(rule));
    let plain = RequestMetrics::new(false);
    c.bench_function("request_end/rule", |b| b.iter(|| plain.on_request_end(black_box(&matched))));
    let unmatched = record(None);
    c.bench_function("request_end/unmatched", |b| {
        b.iter(|| plain.on_request_end(black_box(&unmatched)))
    });
    let per_consumer = RequestMetrics::new(true);
    // 100 consumers already seen on the rule.
    for i in 0..100 {
        let mut r = record(matched.stats.clone());
        r.consumer = Some(Arc::from(format!("consumer-{i:04}")));
        per_consumer.on_request_end(&r);
    }
    c.bench_function("request_end/rule_per_consumer", |b| {
        b.iter(|| per_consumer.on_request_end(black_box(&matched)))
    });
    let histogram = Histogram::default();
    c.bench_function("histogram/observe", |b| {
        b.iter(|| histogram.observe(black_box(Duration::from_micros(830))))
    });
}

criterion_group!(benches, request_end);
criterion_main!(benches);
