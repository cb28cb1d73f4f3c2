#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::proto::{Span, Value, kind};
use super::record::{MAX_ATTEMPTS, Sampler, TraceRecord};
use super::*;
use crate::observe::RequestRecord;
use crate::proxy::trace::{
    TRACEPARENT, TRACESTATE, ensure_traced_identity, traceparent, valid_traceparent,
};
use crate::snapshot::{BackendKey, ObjectKey};

const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const PARENT: u64 = 0x00f0_67aa_0ba9_02b7;

#[test]
fn the_ratio_sampler_follows_trace_id_ratio_based() {
    let ids: Vec<u128> = (0..4000).map(|_| fastrand::u128(1..)).collect();
    let share = |ratio: f64| ids.iter().filter(|id| Sampler::new(ratio).sampled(**id)).count();
    assert_eq!(share(0.0), 0);
    assert_eq!(share(1.0), ids.len());
    assert_eq!(share(f64::NAN), 0);
    let half = share(0.5);
    assert!((1600..=2400).contains(&half), "{half}");
    // The low 64 bits decide, shifted by one: 2^62 << 1 is exactly the 0.5 bound.
    assert!(Sampler::new(0.5).sampled(((1u128 << 62) - 1) << 1));
    assert!(!Sampler::new(0.5).sampled((1u128 << 62) << 1));
    assert!(Sampler::new(1e-9).sampled(u128::MAX << 64));
}

#[test]
fn a_sampled_client_trace_is_continued_with_the_gateways_span() {
    let mut h = HeaderMap::new();
    h.insert(TRACEPARENT, HeaderValue::from_static(CLIENT));
    h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
    let (id, record) = ensure_traced_identity(&mut h, Sampler::new(0.0));
    assert_eq!(id.len(), 36);
    let record = record.expect("the client's sampled flag is followed");
    assert_eq!(record.trace_id, TRACE);
    assert_eq!(record.parent, PARENT);
    assert_eq!(record.trace_state.as_ref().unwrap(), "congo=t61rcWkgMzE");
    assert_eq!(h.get(TRACEPARENT).unwrap(), traceparent(TRACE, record.span_id, true));
    assert_eq!(h.get(TRACESTATE).unwrap(), "congo=t61rcWkgMzE");
}

#[test]
fn a_client_trace_that_is_not_sampled_goes_upstream_unchanged() {
    let not_sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let mut h = HeaderMap::new();
    h.insert(TRACEPARENT, HeaderValue::from_static(not_sampled));
    let (_, record) = ensure_traced_identity(&mut h, Sampler::new(1.0));
    assert!(record.is_none());
    assert_eq!(h.get(TRACEPARENT).unwrap(), not_sampled);
}

#[test]
fn a_new_trace_is_sampled_by_ratio_and_keeps_its_id_either_way() {
    let mut h = HeaderMap::new();
    let (_, record) = ensure_traced_identity(&mut h, Sampler::new(0.0));
    assert!(record.is_none());
    let sent = h.get(TRACEPARENT).unwrap().clone();
    assert!(valid_traceparent(&sent));
    assert!(sent.to_str().unwrap().ends_with("-00"), "{sent:?}");

    // Malformed or repeated client headers start a new trace.
    let mut h = HeaderMap::new();
    h.append(TRACEPARENT, HeaderValue::from_static(CLIENT));
    h.append(TRACEPARENT, HeaderValue::from_static(CLIENT));
    let (_, record) = ensure_traced_identity(&mut h, Sampler::new(1.0));
    let record = record.expect("ratio 1 samples every new trace");
    assert_ne!(record.trace_id, TRACE);
    assert_eq!(record.parent, 0);
    assert_eq!(h.get_all(TRACEPARENT).iter().count(), 1);
    assert_eq!(h.get(TRACEPARENT).unwrap(), traceparent(record.trace_id, record.span_id, true));
}

fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[test]
fn each_attempt_names_its_own_span_upstream() {
    let mut trace = TraceRecord::new(TRACE, PARENT, None);
    let first = trace.begin_attempt(endpoint(80), 0);
    trace.end_attempt(Some(503), None);
    let second = trace.begin_attempt(endpoint(81), 1);
    trace.end_attempt(None, Some("connect_error"));
    // Ended once: a second end does not overwrite.
    trace.end_attempt(Some(200), None);
    let attempts: Vec<_> = trace.attempts().copied().collect();
    assert_eq!(attempts.len(), 2);
    assert_eq!(first, traceparent(TRACE, attempts[0].span_id, true));
    assert_eq!(second, traceparent(TRACE, attempts[1].span_id, true));
    assert_ne!(attempts[0].span_id, attempts[1].span_id);
    assert_ne!(attempts[0].span_id, trace.span_id);
    assert_eq!((attempts[0].status, attempts[0].error, attempts[0].retry), (Some(503), None, 0));
    assert_eq!((attempts[1].status, attempts[1].error), (None, Some("connect_error")));
    assert_eq!(attempts[1].endpoint, endpoint(81));
    assert!(attempts.iter().all(|a| a.end >= a.start && a.start > 0));
    assert_eq!(trace.span_count(), 3);

    // Past MAX_ATTEMPTS the header is still right, the span is not recorded.
    for i in 0..MAX_ATTEMPTS as u32 + 3 {
        let header = trace.begin_attempt(endpoint(82), i + 2);
        assert!(valid_traceparent(&header));
    }
    assert_eq!(trace.attempts().count(), MAX_ATTEMPTS);
}

fn record(trace: TraceRecord, status: StatusCode, error: Option<&'static str>) -> RequestRecord {
    RequestRecord {
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        request_id: HeaderValue::from_static("req-1"),
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        method: Method::POST,
        host: HeaderValue::from_static("api.example.com:8443"),
        path: "/orders/7".into(),
        route: Some(ObjectKey::new("shop", "orders")),
        rule: Some("write".into()),
        status,
        duration: Duration::from_millis(25),
        upstream_duration: Some(Duration::from_millis(20)),
        backend: Some(BackendKey {
            namespace: "shop".into(),
            service: "orders".into(),
            port: 8080,
        }),
        upstream: Some(endpoint(80)),
        retries: 0,
        consumer: Some("alice".into()),
        bytes_in: 0,
        bytes_out: 0,
        rate_limited: false,
        error,
        completed: true,
        traceparent: None,
        stats: None,
        trace: Some(Box::new(trace)),
        cache: None,
        grpc_status: None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

#[test]
fn spans_follow_the_http_semantic_conventions() {
    let mut trace = TraceRecord::new(TRACE, PARENT, Some(HeaderValue::from_static("a=b")));
    trace.route_path = Some("/orders/*".into());
    trace.begin_attempt(endpoint(80), 0);
    trace.end_attempt(None, Some("timeout"));
    let record = record(trace, StatusCode::GATEWAY_TIMEOUT, Some("upstream_timeout"));
    let mut spans = Vec::new();
    spans_of_record(&record, &mut spans);
    assert_eq!(spans.len(), 2);
    let (server, attempt) = (&spans[0], &spans[1]);
    assert_eq!(server.name, "POST /orders/*");
    assert_eq!(server.kind, kind::SERVER);
    assert_eq!(server.trace_id, TRACE.to_be_bytes());
    assert_eq!(server.parent_span_id, PARENT.to_be_bytes());
    assert_eq!(server.trace_state, "a=b");
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_025_000_000);
    for (key, value) in [
        ("http.request.method", "POST"),
        ("url.path", "/orders/7"),
        ("http.response.status_code", "504"),
        ("server.address", "api.example.com"),
        ("server.port", "8443"),
        ("http.route", "/orders/*"),
        ("client.address", "192.0.2.7"),
        ("weir.route", "shop/orders"),
        ("weir.rule", "write"),
        ("weir.consumer", "alice"),
        ("error.type", "upstream_timeout"),
    ] {
        assert_eq!(attr(server, key).as_deref(), Some(value), "{key}");
    }
    assert!(attr(server, "weir.backend").is_some());
    let status = server.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (proto::STATUS_ERROR, "upstream_timeout"));

    assert_eq!(attempt.name, "upstream attempt");
    assert_eq!(attempt.kind, kind::CLIENT);
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(attr(attempt, "server.address").as_deref(), Some("10.0.0.1"));
    assert_eq!(attr(attempt, "server.port").as_deref(), Some("80"));
    assert_eq!(attr(attempt, "error.type").as_deref(), Some("timeout"));
    assert_eq!(attempt.status.as_ref().unwrap().code, proto::STATUS_ERROR);

    // Unmatched: named by the method alone; a 404 is no error.
    let unmatched = record_without_route();
    let mut spans = Vec::new();
    spans_of_record(&unmatched, &mut spans);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "GET");
    assert!(spans[0].parent_span_id.is_empty());
    assert!(spans[0].status.is_none());
}

fn record_without_route() -> RequestRecord {
    let mut r = record(TraceRecord::new(TRACE, 0, None), StatusCode::NOT_FOUND, Some("no_route"));
    r.method = Method::GET;
    r.route = None;
    r.rule = None;
    r.backend = None;
    r.consumer = None;
    r
}

fn spans_of_record(record: &RequestRecord, out: &mut Vec<Span>) {
    spans::spans_of(record, record.trace.as_ref().unwrap(), out);
}

#[test]
fn endpoints_are_checked_and_completed() {
    let ok = |e: &str| traces_url(e).unwrap().to_string();
    assert_eq!(ok("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(ok("http://collector:4318/"), "http://collector:4318/v1/traces");
    assert_eq!(ok("https://otel.example.com/custom/path"), "https://otel.example.com/custom/path");
    for (bad, says) in [
        ("", "not a URL"),
        ("collector:4318", "no scheme"),
        ("grpc://collector:4317", "scheme grpc is not supported"),
        ("http://", "not a URL"),
        ("http://exa mple", "not a URL"),
    ] {
        let err = traces_url(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn start_refuses_a_bad_ratio_and_a_missing_runtime() {
    let options = |sampling| TracingOptions {
        endpoint: "http://127.0.0.1:4318".into(),
        sampling,
        service_name: "weir".into(),
    };
    assert!(Tracing::start(options(1.5)).unwrap_err().contains("0.0-1.0"));
    assert!(Tracing::start(options(0.5)).unwrap_err().contains("Tokio runtime"));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    // Nothing listens on a port of a just-closed listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tracing = Tracing::start_with_queue(
        TracingOptions {
            endpoint: format!("http://127.0.0.1:{port}"),
            sampling: 1.0,
            service_name: "weir".into(),
        },
        1,
    )
    .unwrap();
    let traced = record(TraceRecord::new(TRACE, 0, None), StatusCode::OK, None);
    let mut untraced = traced.clone();
    untraced.trace = None;
    // The exporter has not run yet (current-thread runtime, no await): one fits.
    tracing.on_request_end(&traced);
    tracing.on_request_end(&traced);
    tracing.on_request_end(&untraced);
    assert_eq!(tracing.metrics().dropped.get(), 1);
    // The queued one fails to export (connection refused) at shutdown: dropped too.
    tracing.shutdown().await;
    assert_eq!(tracing.metrics().dropped.get(), 2);
    assert_eq!(tracing.metrics().exported.get(), 0);
    // A second shutdown returns at once.
    tracing.shutdown().await;
}

#[test]
fn http_route_is_the_path_condition_as_a_template() {
    use crate::snapshot::PathMatch;
    let template = |p: PathMatch| super::record::route_template(&p).to_string();
    assert_eq!(template(PathMatch::Exact("/healthz".into())), "/healthz");
    assert_eq!(template(PathMatch::Prefix("/api".into())), "/api/*");
    assert_eq!(template(PathMatch::Prefix("".into())), "/*");
}
