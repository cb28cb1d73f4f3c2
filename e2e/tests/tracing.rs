//! e2e: OpenTelemetry tracing with the real `weir` binary (`--otlp-endpoint`) and a real
//! OTLP/HTTP receiver in the test (hyper, decoding `ExportTraceServiceRequest` with the
//! `opentelemetry-proto` types): a client's `traceparent` continued through keyAuth, a
//! local rateLimit and a retried upstream attempt, the `traceparent` each attempt sent
//! naming that attempt's exported span, `tracestate` unchanged; parent-based sampling with
//! `--trace-sampling 0`; a collector that is down costs requests nothing but a counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_e2e::echo::{echo_response, serve_http1};
use weir_e2e::{ConfigDir, WeirProcess, free_port, http_request, poll_until, service_yaml};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor1=opaque,congo=t61rcWkgMzE";

/// Spans received by the OTLP receiver, and the paths they were posted to.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    paths: Vec<String>,
    resource: Vec<(String, String)>,
}

/// An OTLP/HTTP (protobuf) trace receiver on `127.0.0.1:0`; stops when dropped.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    _shutdown: watch::Sender<()>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let (shutdown, rx) = watch::channel(());
        let store = Arc::clone(&received);
        tokio::spawn(serve_http1(listener, rx, move |request: http::Request<_>| {
            let store = Arc::clone(&store);
            async move {
                let path = request.uri().path().to_owned();
                let kind = request.headers().get("content-type").cloned();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(kind.unwrap(), "application/x-protobuf");
                let export = ExportTraceServiceRequest::decode(body).unwrap();
                let mut store = store.lock().unwrap();
                store.paths.push(path);
                for resource_spans in export.resource_spans {
                    for kv in resource_spans.resource.map(|r| r.attributes).unwrap_or_default() {
                        store.resource.push((kv.key, text(kv.value.as_ref())));
                    }
                    for scope in resource_spans.scope_spans {
                        store.spans.extend(scope.spans);
                    }
                }
                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                http::Response::new(Full::new(Bytes::from(answer)))
            }
        }));
        Receiver { addr, received, _shutdown: shutdown }
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Waits (bounded) until at least `n` spans arrived.
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        poll_until(Duration::from_secs(15), "exported spans", || async {
            let spans = self.spans();
            Ok((spans.len() >= n).then_some(spans))
        })
        .await
        .unwrap()
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(|kv| text(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An origin that answers 503 to its first request and echoes after that, recording the
/// `traceparent` and `tracestate` of every request.
struct FlakyOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    _shutdown: watch::Sender<()>,
}

impl FlakyOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, rx) = watch::channel(());
        let store = Arc::clone(&seen);
        tokio::spawn(serve_http1(listener, rx, move |request: http::Request<_>| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let first = {
                let mut seen = store.lock().unwrap();
                seen.push((header("traceparent"), header("tracestate")));
                seen.len() == 1
            };
            let mut response = echo_response("flaky", &request);
            if first {
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            async move { response }
        }));
        FlakyOrigin { addr, seen, _shutdown: shutdown }
    }
}

const CONFIG: &str = r#"
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: limit}
spec:
  rateLimit: {limit: 1000, window: 1h, algorithm: TokenBucket}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: alice}
spec:
  username: alice
  credentials:
    - apiKey: {secretRef: {name: alice-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: alice-key}
stringData: {key: alice-secret-key}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: traced}
spec:
  plugins: [keys, limit]
  rules:
    - name: api
      matches: [{path: {type: Prefix, value: /api}}]
      backends: [{service: flaky, port: 80}]
      retries: {attempts: 1, on: [Status5xx]}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: open}
spec:
  rules:
    - name: open
      matches: [{path: {type: Prefix, value: /open}}]
      backends: [{service: flaky, port: 80}]
"#;

async fn start_weir(dir: &ConfigDir, endpoint: &str, sampling: &str) -> WeirProcess {
    WeirProcess::start_with(&[
        OsString::from("--config-dir"),
        dir.path().as_os_str().to_owned(),
        OsString::from("--otlp-endpoint"),
        OsString::from(endpoint),
        OsString::from("--trace-sampling"),
        OsString::from(sampling),
    ])
    .await
    .unwrap()
}

fn config(origin: SocketAddr) -> ConfigDir {
    let dir = ConfigDir::new("tracing").unwrap();
    dir.write("services.yaml", &service_yaml("flaky", origin.port())).unwrap();
    dir.write("routes.yaml", CONFIG).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trace_is_continued_through_auth_rate_limit_and_a_retry() {
    let receiver = Receiver::start().await;
    let origin = FlakyOrigin::start().await;
    let dir = config(origin.addr);
    let weir = start_weir(&dir, &format!("http://{}", receiver.addr), "1.0").await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = http_request(
        weir.http_addr,
        "GET",
        "localhost",
        "/api/orders",
        &[
            ("x-api-key", "alice-secret-key"),
            ("traceparent", &traceparent),
            ("tracestate", TRACESTATE),
        ],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Server, auth, rate_limit and two attempts.
    let spans = receiver.wait_for(5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CLIENT_TRACE), "{spans:#?}");
    let server: Vec<_> = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "GET /api/*");
    assert_eq!(attr(server, "http.route").as_deref(), Some("/api/*"));
    assert_eq!(attr(server, "server.address").as_deref(), Some("localhost"));
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/api/orders"));
    assert_eq!(attr(server, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(server, "weir.route").as_deref(), Some("default/traced"));
    assert_eq!(attr(server, "weir.rule").as_deref(), Some("api"));
    assert_eq!(attr(server, "weir.consumer").as_deref(), Some("alice"));
    assert_eq!(attr(server, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(server.trace_state, TRACESTATE);
    assert!(server.status.as_ref().is_none_or(|s| s.code != StatusCode::Error as i32));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);

    let children: Vec<_> = spans.iter().filter(|s| s.span_id != server.span_id).collect();
    assert!(children.iter().all(|s| s.parent_span_id == server.span_id), "{spans:#?}");
    let named =
        |name: &str| children.iter().filter(|s| s.name == name).copied().collect::<Vec<_>>();
    let auth = named("auth");
    assert_eq!(auth.len(), 1, "{spans:#?}");
    assert_eq!(attr(auth[0], "weir.auth.outcome").as_deref(), Some("authenticated"));
    assert_eq!(attr(auth[0], "weir.auth.methods").as_deref(), Some("keyAuth"));
    assert_eq!(attr(auth[0], "weir.consumer").as_deref(), Some("alice"));
    let limit = named("rate_limit");
    assert_eq!(limit.len(), 1, "{spans:#?}");
    assert_eq!(attr(limit[0], "weir.ratelimit.decision").as_deref(), Some("allowed"));
    let mut attempts = named("upstream attempt");
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|s| s.kind == SpanKind::Client as i32));
    assert_eq!(attr(attempts[0], "http.response.status_code").as_deref(), Some("503"));
    assert_eq!(attempts[0].status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    assert_eq!(attr(attempts[1], "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(attempts[1], "http.request.resend_count").as_deref(), Some("1"));
    let port = origin.addr.port().to_string();
    for attempt in &attempts {
        assert_eq!(attr(attempt, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(attr(attempt, "server.port").as_deref(), Some(port.as_str()));
    }

    // Each attempt carried a traceparent naming its own span; tracestate unchanged.
    let seen = origin.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (attempt, (traceparent, tracestate)) in attempts.iter().zip(&seen) {
        assert_eq!(
            traceparent,
            &format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)),
            "{seen:?}"
        );
        assert_eq!(tracestate, TRACESTATE);
    }

    {
        let received = receiver.received.lock().unwrap();
        assert!(received.paths.iter().all(|p| p == "/v1/traces"), "{:?}", received.paths);
        assert!(received.resource.contains(&("service.name".to_owned(), "weir".to_owned())));
        assert!(received.resource.iter().any(|(k, _)| k == "service.version"));
    }
    // Counted once the receiver's answer is read.
    let metrics = poll_until(Duration::from_secs(10), "exported spans counted", || async {
        let metrics = weir.admin("/metrics").await?.text();
        Ok(metrics.contains("weir_trace_spans_exported_total 5").then_some(metrics))
    })
    .await
    .unwrap();
    assert!(metrics.contains("weir_trace_spans_dropped_total 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_follows_the_clients_sampled_flag() {
    let receiver = Receiver::start().await;
    let origin = FlakyOrigin::start().await;
    // The origin's first answer is a 503: spend it outside the traced requests.
    http_request(origin.addr, "GET", "localhost", "/warmup", &[]).await.unwrap();
    let dir = config(origin.addr);
    let weir = start_weir(&dir, &format!("http://{}/v1/traces", receiver.addr), "0").await;

    // Not sampled: no spans, a new trace id with flags 00 upstream.
    for _ in 0..5 {
        let reply = http_request(weir.http_addr, "GET", "localhost", "/open/x", &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let not_sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let reply = http_request(
        weir.http_addr,
        "GET",
        "localhost",
        "/open/y",
        &[("traceparent", &not_sampled)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    {
        let seen = origin.seen.lock().unwrap();
        assert_eq!(seen.len(), 7, "{seen:?}");
        for (traceparent, _) in &seen[1..6] {
            assert_eq!(traceparent.len(), 55, "{traceparent}");
            assert!(traceparent.ends_with("-00"), "{traceparent}");
        }
        // The client's own traceparent, unchanged.
        assert_eq!(seen[6].0, not_sampled);
    }

    // The client's sampled flag wins over the ratio.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply =
        http_request(weir.http_addr, "GET", "localhost", "/open/z", &[("traceparent", &sampled)])
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    let spans = receiver.wait_for(2).await;
    // The batch of the sampled request holds it alone: nothing before it was sampled.
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CLIENT_TRACE));
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    assert_eq!(server.name, "GET /open/*");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    let attempt = spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap();
    let upstream = origin.seen.lock().unwrap()[7].0.clone();
    assert_eq!(upstream, format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_a_counter() {
    let origin = FlakyOrigin::start().await;
    http_request(origin.addr, "GET", "localhost", "/warmup", &[]).await.unwrap();
    let dir = config(origin.addr);
    // A port nothing listens on.
    let closed = free_port().unwrap();
    let weir = start_weir(&dir, &format!("http://127.0.0.1:{closed}"), "1").await;
    for i in 0..20 {
        let reply = http_request(weir.http_addr, "GET", "localhost", &format!("/open/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // 20 requests of two spans each (server, one attempt), all dropped.
    let dropped = poll_until(Duration::from_secs(15), "dropped spans counted", || async {
        let metrics = weir.admin("/metrics").await?.text();
        Ok(metrics.contains("weir_trace_spans_dropped_total 40").then_some(metrics))
    })
    .await
    .unwrap();
    assert!(dropped.contains("weir_trace_spans_exported_total 0"), "{dropped}");
    assert!(weir.log().contains("trace export failed"), "{}", weir.log());
}

#[test]
fn a_malformed_endpoint_is_a_startup_error() {
    let dir = ConfigDir::new("tracing-bad").unwrap();
    for (endpoint, says) in [
        ("not a url", "--otlp-endpoint not a url"),
        ("ftp://127.0.0.1:4318", "scheme ftp is not supported"),
        ("127.0.0.1:4318", "no scheme"),
    ] {
        let dir_arg = dir.path().to_str().unwrap();
        let output = weir_e2e::run_weir(&[
            "run",
            "--config-dir",
            dir_arg,
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--otlp-endpoint",
            endpoint,
        ])
        .unwrap();
        assert!(!output.status.success(), "{endpoint}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{endpoint}: {stderr}");
    }
}
