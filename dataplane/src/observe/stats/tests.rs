#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::*;
use crate::observe::RequestRecord;

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey { namespace: Arc::from(ns), name: Arc::from(name) }
}

fn record(
    stats: Option<&Arc<RuleStats>>,
    status: u16,
    ms: u64,
    consumer: Option<&str>,
) -> RequestRecord {
    RequestRecord {
        time: SystemTime::UNIX_EPOCH,
        request_id: HeaderValue::from_static("r"),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        method: Method::GET,
        host: HeaderValue::from_static("h"),
        path: "/".into(),
        route: stats.map(|s| s.route().clone()),
        rule: stats.map(|s| Arc::clone(s.rule())),
        status: StatusCode::from_u16(status).unwrap(),
        duration: Duration::from_millis(ms),
        upstream_duration: None,
        backend: None,
        upstream: None,
        retries: 0,
        consumer: consumer.map(Arc::from),
        bytes_in: 0,
        bytes_out: 0,
        rate_limited: false,
        error: None,
        completed: true,
        traceparent: None,
        stats: stats.cloned(),
        trace: None,
        cache: None,
        grpc_status: None,
    }
}

#[test]
fn the_registry_hands_out_the_same_handle_while_one_is_held() {
    let registry = RouteStatsRegistry::default();
    let shop = key("shop", "orders");
    let a = registry.rule(&shop, &"list".into());
    let b = registry.clone().rule(&shop, &"list".into());
    assert!(Arc::ptr_eq(&a, &b), "a clone of the registry shares it");
    let other = registry.rule(&shop, &"create".into());
    assert!(!Arc::ptr_eq(&a, &other));
    assert!(Arc::ptr_eq(a.route_stats(), other.route_stats()), "one histogram per Route");
    let elsewhere = registry.rule(&key("shop", "users"), &"list".into());
    assert!(!Arc::ptr_eq(a.route_stats(), elsewhere.route_stats()));
    assert_eq!(registry.live_rules(), 3);

    a.record(StatusCode::OK, Duration::from_millis(1));
    drop((a, b));
    let again = registry.rule(&shop, &"list".into());
    assert_eq!(again.view().codes, [0; 5], "no holder left: a fresh handle");
    assert!(Arc::ptr_eq(again.route_stats(), other.route_stats()), "the Route lives on");
    assert_eq!(again.view().route_duration.count, 1, "the Route's histogram kept its count");

    drop((again, other));
    let fresh = registry.rule(&shop, &"list".into());
    assert_eq!(fresh.view().route_duration.count, 0, "no rule of the Route held it");
}

#[test]
fn dead_entries_are_pruned() {
    let registry = RouteStatsRegistry::default();
    let kept = registry.rule(&key("a", "kept"), &"r".into());
    for i in 0..5_000 {
        drop(registry.rule(&key("a", &format!("route-{i}")), &"r".into()));
    }
    assert!(registry.entries() <= PRUNE_SLACK + 2, "{} entries", registry.entries());
    assert_eq!(registry.live_rules(), 1);
    assert!(Arc::ptr_eq(&kept, &registry.rule(&key("a", "kept"), &"r".into())));
}

#[test]
fn status_classes() {
    let class = |s: u16| STATUS_CLASSES[status_class(StatusCode::from_u16(s).unwrap())];
    assert_eq!(class(101), "1xx");
    assert_eq!(class(200), "2xx");
    assert_eq!(class(304), "3xx");
    assert_eq!(class(429), "4xx");
    assert_eq!(class(599), "5xx");
    assert_eq!(class(999), "5xx");
}

#[test]
fn the_observer_counts_into_the_rule_or_the_unmatched_handle() {
    let metrics = RequestMetrics::new(false);
    let rule = RuleStats::detached(&key("shop", "orders"), "list");
    for _ in 0..3 {
        metrics.on_request_end(&record(Some(&rule), 200, 2, None));
    }
    metrics.on_request_end(&record(Some(&rule), 503, 40, Some("alice")));
    metrics.on_request_end(&record(None, 404, 0, None));
    let view = rule.view();
    assert_eq!(view.codes, [0, 3, 0, 0, 1]);
    assert_eq!(view.route_duration.count, 4);
    assert_eq!(view.route_duration.cumulative[2], 3, "≤ 2.5 ms");
    assert_eq!(view.route_duration.cumulative[5], 3, "≤ 25 ms");
    assert_eq!(view.route_duration.cumulative[6], 4, "≤ 50 ms");
    assert_eq!(metrics.unmatched().view().codes, [0, 0, 0, 1, 0]);
    assert!(rule.consumers().is_empty(), "no consumer counters without the flag");
}

#[test]
fn per_consumer_counters() {
    let metrics = RequestMetrics::new(true);
    let rule = RuleStats::detached(&key("shop", "orders"), "list");
    metrics.on_request_end(&record(Some(&rule), 200, 1, Some("alice")));
    metrics.on_request_end(&record(Some(&rule), 200, 1, Some("alice")));
    metrics.on_request_end(&record(Some(&rule), 401, 1, None));
    metrics.on_request_end(&record(Some(&rule), 500, 1, Some("bob")));
    let consumers = rule.consumers();
    let named: Vec<(&str, [u64; 5])> = consumers.iter().map(|(n, c)| (&**n, *c)).collect();
    assert_eq!(
        named,
        vec![("", [0, 0, 0, 1, 0]), ("alice", [0, 2, 0, 0, 0]), ("bob", [0, 0, 0, 0, 1])]
    );
    assert_eq!(rule.view().codes, [0, 2, 0, 1, 1]);
}

#[test]
fn per_consumer_counting_is_exact_across_threads() {
    let rule = RuleStats::detached(&key("shop", "orders"), "list");
    let metrics = Arc::new(RequestMetrics::new(true));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (rule, metrics) = (Arc::clone(&rule), Arc::clone(&metrics));
            std::thread::spawn(move || {
                for i in 0..500 {
                    let name = format!("c{}", (i + t) % 20);
                    metrics.on_request_end(&record(Some(&rule), 200, 1, Some(&name)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let consumers = rule.consumers();
    assert_eq!(consumers.len(), 20);
    assert_eq!(consumers.iter().map(|(_, c)| c[1]).sum::<u64>(), 2_000);
    assert_eq!(rule.view().codes[1], 2_000);
}

#[derive(Debug)]
struct Fixed(Vec<Arc<RuleStats>>, bool);

impl Collector for Fixed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_rules(&mut encoder, self.0.iter(), self.1)
    }
}

fn exposition(rules: Vec<Arc<RuleStats>>, per_consumer: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(rules, per_consumer)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[test]
fn the_encoder_writes_each_rule_and_each_route_once() {
    let registry = RouteStatsRegistry::default();
    let list = registry.rule(&key("shop", "orders"), &"list".into());
    let create = registry.rule(&key("shop", "orders"), &"create".into());
    let idle = registry.rule(&key("shop", "idle"), &"0".into());
    let metrics = RequestMetrics::new(false);
    metrics.on_request_end(&record(Some(&list), 200, 1, None));
    metrics.on_request_end(&record(Some(&list), 200, 3, None));
    metrics.on_request_end(&record(Some(&create), 429, 700, None));
    metrics.on_request_end(&record(None, 404, 0, None));
    let rules = vec![
        Arc::clone(metrics.unmatched()),
        Arc::clone(&list),
        Arc::clone(&create),
        Arc::clone(&list), // a duplicate is written once
        idle,
    ];
    let text = exposition(rules, false);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let expected_counters = [
        r#"weir_http_requests_total{namespace="",route="",rule="",code="4xx"} 1"#,
        r#"weir_http_requests_total{namespace="shop",route="orders",rule="list",code="2xx"} 2"#,
        r#"weir_http_requests_total{namespace="shop",route="orders",rule="create",code="4xx"} 1"#,
    ];
    assert_eq!(lines[..3], expected_counters, "{text}");
    assert!(text.contains("# TYPE weir_http_requests counter"), "{text}");
    assert!(text.contains("# TYPE weir_http_request_duration_seconds histogram"), "{text}");
    let route = r#"namespace="shop",route="orders""#;
    for (suffix, value) in [
        ("_count{".to_owned() + route + "}", "3"),
        ("_sum{".to_owned() + route + "}", "0.704"),
        ("_bucket{le=\"0.001\",".to_owned() + route + "}", "1"),
        ("_bucket{le=\"0.005\",".to_owned() + route + "}", "2"),
        ("_bucket{le=\"0.5\",".to_owned() + route + "}", "2"),
        ("_bucket{le=\"1.0\",".to_owned() + route + "}", "3"),
        ("_bucket{le=\"+Inf\",".to_owned() + route + "}", "3"),
        (r#"_count{namespace="",route=""}"#.to_owned(), "1"),
    ] {
        let line = format!("weir_http_request_duration_seconds{suffix} {value}");
        assert_eq!(text.lines().filter(|l| *l == line).count(), 1, "{line} in\n{text}");
    }
    assert!(!text.contains("idle"), "no request, no series: {text}");
    assert_eq!(text.matches("_count{").count(), 2, "{text}");
}

#[test]
fn the_encoder_labels_consumers_when_asked() {
    let metrics = RequestMetrics::new(true);
    let rule = RuleStats::detached(&key("shop", "orders"), "list");
    metrics.on_request_end(&record(Some(&rule), 200, 1, Some("alice")));
    metrics.on_request_end(&record(Some(&rule), 401, 1, None));
    let text = exposition(vec![rule], true);
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("weir_http_requests_total")).collect();
    assert_eq!(
        lines,
        [
            r#"weir_http_requests_total{namespace="shop",route="orders",rule="list",code="4xx",consumer=""} 1"#,
            r#"weir_http_requests_total{namespace="shop",route="orders",rule="list",code="2xx",consumer="alice"} 1"#,
        ],
        "{text}"
    );
}
