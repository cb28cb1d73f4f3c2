//! The upstream registry's state across reloads and EndpointSlice changes, the panic rule,
//! the retry budget and its backoff, the fallback answer, `/debug/backends` and the
//! upstream metrics — against real origins on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, StatusCode};
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::policy::{CircuitBreaker, Fallback, OutlierDetection, RetryBudget};
use weir_dataplane::{Backend, BackendKey, DataPlane, ObjectKey, RetryPolicy, Snapshot};

fn one_backend(version: u64, backend: Backend) -> Snapshot {
    snapshot(version, vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])], vec![backend])
}

fn passive(consecutive_5xx: u32, max_ejection_percent: u8) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent,
    }
}

fn breaker(failure_threshold: u32, fallback: Fallback) -> CircuitBreaker {
    CircuitBreaker {
        failure_threshold,
        window: Duration::from_secs(60),
        open_for: Duration::from_secs(30),
        success_threshold: 1,
        max_connections: None,
        max_pending_requests: None,
        max_parallel_requests: None,
        fallback,
    }
}

fn default_fallback() -> Fallback {
    Fallback {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: None,
        content_type: HeaderValue::from_static("application/json"),
    }
}

/// The `/debug/backends` entry of `backend`.
fn described(dp: &DataPlane, backend: &BackendKey) -> serde_json::Value {
    let all = dp.registry.describe();
    all["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == backend.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{backend} not in {all}"))
}

fn endpoint(backend: &serde_json::Value, addr: std::net::SocketAddr) -> Option<&serde_json::Value> {
    backend["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == addr.to_string())
}

/// Polls `check` every 10 ms, at most 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_state_survives_a_reload_and_an_endpoint_change_for_what_stays() {
    let (a, b, c) = (Origin::start("a").await, Origin::start("b").await, Origin::start("c").await);
    let k = key("state");
    let gw = Arc::new(
        Gateway::start(one_backend(1, Backend::new(k.clone(), vec![a.addr, b.addr, c.addr]))).await,
    );
    let runtime = gw.dataplane.registry.get(&k).unwrap();
    // Round robin: the first request goes to a, and stays there for a while.
    let slow = {
        let gw = Arc::clone(&gw);
        tokio::spawn(async move { get(&client(), &gw.url("/?sleep_ms=1500"), "h").await })
    };
    eventually("a has a request in flight", || {
        endpoint(&described(&gw.dataplane, &k), a.addr).is_some_and(|e| e["inFlight"] == 1)
    })
    .await;
    // A reload with an unrelated change (another route): same runtime, same state.
    let mut snap = one_backend(2, Backend::new(k.clone(), vec![a.addr, b.addr, c.addr]));
    snap.routes = Arc::new(weir_dataplane::RouteTable::new(vec![
        route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))]),
        route("other", &["other.example"], vec![rule("other", "/", action(&[(0, 1)]))]),
    ]));
    gw.dataplane.publish(snap);
    assert!(Arc::ptr_eq(&runtime, &gw.dataplane.registry.get(&k).unwrap()));
    assert_eq!(endpoint(&described(&gw.dataplane, &k), a.addr).unwrap()["inFlight"], 1);
    // An EndpointSlice change: b goes, a stays with its request in flight.
    gw.dataplane.publish(one_backend(3, Backend::new(k.clone(), vec![a.addr, c.addr])));
    let now = described(&gw.dataplane, &k);
    assert_eq!(endpoint(&now, a.addr).unwrap()["inFlight"], 1, "{now}");
    assert!(endpoint(&now, b.addr).is_none(), "{now}");
    assert_eq!(now["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(slow.await.unwrap().origin(), "a");
    assert_eq!(endpoint(&described(&gw.dataplane, &k), a.addr).unwrap()["inFlight"], 0);
    // The backend leaves the snapshot: its state leaves the registry.
    gw.dataplane.publish(one_backend(4, Backend::new(key("state-next"), vec![a.addr])));
    assert!(gw.dataplane.registry.get(&k).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_limits_concurrent_retries() {
    let failing = Origin::start_with(
        "failing",
        OriginOptions { delay: Some(Duration::from_millis(1000)), status: Some(503) },
    )
    .await;
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        retry: Some(RetryBudget {
            budget_percent: 0,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
        }),
        ..BackendPolicy::default()
    });
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy { attempts: 1, on_5xx: true, ..RetryPolicy::default() }.into();
    let backend = Backend::new(key("budget"), vec![failing.addr]).with_policy(policy);
    let gw = Arc::new(
        Gateway::start(snapshot(
            1,
            vec![route("r", &[], vec![rule("r", "/", act)])],
            vec![backend],
        ))
        .await,
    );
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let gw = Arc::clone(&gw);
        tasks.push(tokio::spawn(async move { get(&client(), &gw.url("/"), "h").await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    // 10 first attempts; a 0% budget still allows MIN_RETRIES (3) retries in flight.
    assert_eq!(failing.requests.load(Ordering::SeqCst), 10 + RetryBudget::MIN_RETRIES as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_budget_every_request_retries() {
    let failing = Origin::start_with(
        "failing",
        OriginOptions { delay: Some(Duration::from_millis(300)), status: Some(503) },
    )
    .await;
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy { attempts: 1, on_5xx: true, ..RetryPolicy::default() }.into();
    let backend = Backend::new(key("nobudget"), vec![failing.addr]);
    let gw = Arc::new(
        Gateway::start(snapshot(
            1,
            vec![route("r", &[], vec![rule("r", "/", act)])],
            vec![backend],
        ))
        .await,
    );
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let gw = Arc::clone(&gw);
        tasks.push(tokio::spawn(async move { get(&client(), &gw.url("/"), "h").await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_past_the_deadline_is_not_waited() {
    let failing =
        Origin::start_with("failing", OriginOptions { delay: None, status: Some(503) }).await;
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        retry: Some(RetryBudget {
            budget_percent: 100,
            backoff_base: Duration::from_secs(1_000_000),
            backoff_max: Duration::from_secs(1_000_000),
        }),
        ..BackendPolicy::default()
    });
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy { attempts: 2, on_5xx: true, ..RetryPolicy::default() }.into();
    act.timeouts = weir_dataplane::Timeouts {
        request: Some(Duration::from_secs(10)),
        ..weir_dataplane::Timeouts::default()
    }
    .into();
    let backend = Backend::new(key("backoff"), vec![failing.addr]).with_policy(policy);
    let gw = Gateway::start(snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![backend],
    ))
    .await;
    // The backoff (up to 10⁶ s, jittered) almost surely ends after the 10 s deadline: the
    // upstream's 503 is the answer, no retry is sent (the client's own limit is 20 s).
    let answer = get(&client(), &gw.url("/"), "h").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.origin(), "failing");
    assert_eq!(failing.requests.load(Ordering::SeqCst), 1);
}

/// Two endpoints that answer 500, each ejected after one failure (up to all of them), under
/// `panic_threshold`.
async fn two_failing(name: &str, panic_threshold: u8) -> (Origin, Origin, BackendKey, Gateway) {
    let (a, b) = (
        Origin::start_with("a", OriginOptions { delay: None, status: Some(500) }).await,
        Origin::start_with("b", OriginOptions { delay: None, status: Some(500) }).await,
    );
    let policy = Arc::new(BackendPolicy {
        passive: Some(passive(1, 100)),
        panic_threshold,
        ..BackendPolicy::default()
    });
    let k = key(name);
    let backend = Backend::new(k.clone(), vec![a.addr, b.addr]).with_policy(policy);
    let gw = Gateway::start(one_backend(1, backend)).await;
    (a, b, k, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_threshold_zero_with_every_endpoint_ejected_is_a_503() {
    let (a, b, k, gw) = two_failing("panic0", 0).await;
    let client = client();
    assert_eq!(get(&client, &gw.url("/"), "h").await.status, 500);
    assert_eq!(get(&client, &gw.url("/"), "h").await.status, 500);
    let d = described(&gw.dataplane, &k);
    assert!(d["endpoints"].as_array().unwrap().iter().all(|e| e["health"] == "ejected"), "{d}");
    assert_gateway_error(&get(&client, &gw.url("/"), "h").await, 503);
    assert_eq!(a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_threshold_fifty_uses_every_endpoint_when_all_are_ejected() {
    let (a, b, k, gw) = two_failing("panic50", 50).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &gw.url("/"), "h").await.status, 500);
    }
    let d = described(&gw.dataplane, &k);
    assert_eq!(d["panic"], true, "{d}");
    assert!(a.requests.load(Ordering::SeqCst) >= 3 && b.requests.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_and_circuit_survive_a_reload_and_leave_with_their_endpoint() {
    let bad = Origin::start_with("bad", OriginOptions { delay: None, status: Some(500) }).await;
    let (good1, good2) = (Origin::start("good1").await, Origin::start("good2").await);
    let policy = Arc::new(BackendPolicy {
        passive: Some(passive(2, 50)),
        panic_threshold: 0,
        breaker: Some(breaker(1000, default_fallback())),
        ..BackendPolicy::default()
    });
    let k = key("survive");
    let backend = |eps: Vec<_>| Backend::new(k.clone(), eps).with_policy(Arc::clone(&policy));
    let gw = Gateway::start(one_backend(1, backend(vec![bad.addr, good1.addr, good2.addr]))).await;
    let client = client();
    for _ in 0..6 {
        get(&client, &gw.url("/"), "h").await;
    }
    let ejected =
        |dp: &DataPlane| endpoint(&described(dp, &k), bad.addr).map(|e| e["health"].clone());
    assert_eq!(ejected(&gw.dataplane), Some("ejected".into()));
    // A reload with the same policy (a new Arc, same content): still ejected.
    let same = Arc::new((*policy).clone());
    gw.dataplane.publish(one_backend(
        2,
        Backend::new(k.clone(), vec![bad.addr, good1.addr, good2.addr]).with_policy(same),
    ));
    assert_eq!(ejected(&gw.dataplane), Some("ejected".into()));
    assert_eq!(endpoint(&described(&gw.dataplane, &k), bad.addr).unwrap()["ejections"], 1);
    for _ in 0..10 {
        assert_eq!(get(&client, &gw.url("/"), "h").await.status, 200);
    }
    // It leaves the slice and comes back: a fresh, healthy endpoint.
    gw.dataplane.publish(one_backend(3, backend(vec![good1.addr, good2.addr])));
    assert!(ejected(&gw.dataplane).is_none());
    gw.dataplane.publish(one_backend(4, backend(vec![bad.addr, good1.addr, good2.addr])));
    assert_eq!(ejected(&gw.dataplane), Some("healthy".into()));
    assert_eq!(endpoint(&described(&gw.dataplane, &k), bad.addr).unwrap()["ejections"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_answers_with_the_fallback_without_contacting_the_upstream() {
    let bad = Origin::start_with("bad", OriginOptions { delay: None, status: Some(500) }).await;
    let fallback = Fallback {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: Some(Bytes::from_static(b"orders unavailable")),
        content_type: HeaderValue::from_static("text/plain"),
    };
    let policy = Arc::new(BackendPolicy {
        source: Some(ObjectKey::new("default", "orders")),
        panic_threshold: 50,
        breaker: Some(breaker(2, fallback)),
        ..BackendPolicy::default()
    });
    let k = key("fallback");
    let backend = Backend::new(k.clone(), vec![bad.addr]).with_policy(Arc::clone(&policy));
    let gw = Gateway::start(one_backend(1, backend)).await;
    let mut events = gw.dataplane.registry.subscribe();
    let client = client();
    for _ in 0..2 {
        assert_eq!(get(&client, &gw.url("/"), "h").await.status, 500);
    }
    let answer = get(&client, &gw.url("/"), "h").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["content-type"], "text/plain");
    assert_eq!(answer.body, "orders unavailable");
    assert!(answer.headers.contains_key("x-request-id"));
    assert_eq!(bad.requests.load(Ordering::SeqCst), 2);
    let event = events.try_recv().unwrap();
    assert!(
        matches!(
            event,
            weir_dataplane::upstream::registry::UpstreamEvent::CircuitOpened { failures: 2, .. }
        ),
        "{event:?}"
    );
    let d = described(&gw.dataplane, &k);
    assert_eq!(d["circuit"]["state"], "Open", "{d}");
    assert_eq!(d["policy"], "default/orders");
    // A reload (same policy content in a new Arc, another endpoint joins): still open.
    let same = Arc::new((*policy).clone());
    let extra = Origin::start("extra").await;
    gw.dataplane.publish(one_backend(
        2,
        Backend::new(k.clone(), vec![bad.addr, extra.addr]).with_policy(same),
    ));
    assert_eq!(get(&client, &gw.url("/"), "h").await.status, 429);
    assert_eq!(bad.requests.load(Ordering::SeqCst) + extra.requests.load(Ordering::SeqCst), 2);
    assert_eq!(described(&gw.dataplane, &k)["circuit"]["state"], "Open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_fallback_is_a_json_503_naming_the_backend() {
    let bad = Origin::start_with("bad", OriginOptions { delay: None, status: Some(502) }).await;
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        breaker: Some(breaker(1, default_fallback())),
        ..BackendPolicy::default()
    });
    let gw = Gateway::start(one_backend(
        1,
        Backend::new(key("fallback-default"), vec![bad.addr]).with_policy(policy),
    ))
    .await;
    let client = client();
    assert_eq!(get(&client, &gw.url("/"), "h").await.status, 502);
    let answer = get(&client, &gw.url("/"), "h").await;
    assert_gateway_error(&answer, 503);
    assert_eq!(answer.json()["error"], "circuit open for backend default/fallback-default:80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_metrics_are_present_and_leave_with_the_backend() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let k = key("metrics-svc");
    let gw = Gateway::start(one_backend(1, Backend::new(k.clone(), vec![a.addr, b.addr]))).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(get(&client, &gw.url("/"), "h").await.status, 200);
    }
    assert_eq!(get(&client, &gw.url("/?status=500"), "h").await.status, 500);
    let text = weir_dataplane::metrics::encode();
    let series = |name: &str| text.lines().find(|l| l.starts_with(name)).map(str::to_owned);
    assert_eq!(
        series(
            r#"weir_upstream_requests_total{backend="default/metrics-svc:80",result="success"}"#
        )
        .as_deref(),
        Some(
            r#"weir_upstream_requests_total{backend="default/metrics-svc:80",result="success"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"weir_upstream_requests_total{backend="default/metrics-svc:80",result="5xx"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"weir_backend_endpoints{backend="default/metrics-svc:80",state="healthy"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"weir_backend_endpoints{backend="default/metrics-svc:80",state="ejected"} 0"#
        ),
        "{text}"
    );
    // No breaker, no circuit series.
    assert!(!text.contains(r#"weir_circuit_state{backend="default/metrics-svc:80"}"#), "{text}");
    gw.dataplane.publish(one_backend(2, Backend::new(key("metrics-other"), vec![a.addr])));
    let text = weir_dataplane::metrics::encode();
    assert!(!text.contains("default/metrics-svc:80"), "{text}");
    assert!(
        text.contains(
            r#"weir_backend_endpoints{backend="default/metrics-other:80",state="healthy"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_state_is_a_gauge_of_backends_with_a_breaker() {
    let a = Origin::start("a").await;
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        breaker: Some(breaker(5, default_fallback())),
        ..BackendPolicy::default()
    });
    let gw = Gateway::start(one_backend(
        1,
        Backend::new(key("metrics-circuit"), vec![a.addr]).with_policy(policy),
    ))
    .await;
    let text = weir_dataplane::metrics::encode();
    assert!(
        text.contains(r#"weir_circuit_state{backend="default/metrics-circuit:80"} 0"#),
        "{text}"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_backends_shape() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let policy = Arc::new(BackendPolicy {
        source: Some(ObjectKey::new("default", "shop")),
        load_balancer: weir_dataplane::upstream::policy::LoadBalancer::LeastRequest,
        panic_threshold: 50,
        breaker: Some(breaker(5, default_fallback())),
        ..BackendPolicy::default()
    });
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1), (1, 1)]))])],
        vec![
            Backend::new(key("described"), vec![a.addr, b.addr]).with_policy(policy),
            Backend::new(key("plain"), vec![a.addr]),
        ],
    );
    let gw = Gateway::start(snap).await;
    let d = described(&gw.dataplane, &key("described"));
    assert_eq!(
        d,
        serde_json::json!({
            "backend": "default/described:80",
            "policy": "default/shop",
            "protocol": "Http1",
            "tls": false,
            "loadBalancer": "LeastRequest",
            "panic": false,
            "circuit": {"state": "Closed", "failures": 0},
            "endpoints": [
                {"address": a.addr.to_string(), "health": "healthy", "inFlight": 0, "ejections": 0, "ejectedForMs": null, "slowStart": false},
                {"address": b.addr.to_string(), "health": "healthy", "inFlight": 0, "ejections": 0, "ejectedForMs": null, "slowStart": false},
            ],
        })
    );
    let plain = described(&gw.dataplane, &key("plain"));
    assert_eq!(plain["policy"], serde_json::Value::Null);
    assert_eq!(plain["circuit"], serde_json::Value::Null);
    assert_eq!(plain["loadBalancer"], "RoundRobin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_active_checks_take_an_endpoint_out_and_its_checker_leaves_with_it() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use weir_dataplane::upstream::policy::{ActiveCheck, CheckKind};
    let healthy = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let handler: Handler = {
        let (healthy, checks) = (Arc::clone(&healthy), Arc::clone(&checks));
        Arc::new(move |request| {
            let mut response = http::Response::new(full(r#"{"name":"sick"}"#));
            if request.uri().path() == "/healthz" {
                checks.fetch_add(1, Ordering::SeqCst);
                if !healthy.load(Ordering::SeqCst) {
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
            response
        })
    };
    let sick = Origin::start_service("sick", handler).await;
    let well = Origin::start("well").await;
    let policy = Arc::new(BackendPolicy {
        active: Some(Arc::new(ActiveCheck {
            kind: CheckKind::Http {
                path: "/healthz".into(),
                host: None,
                expected_statuses: Box::new([StatusCode::OK]),
            },
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        })),
        panic_threshold: 50,
        ..BackendPolicy::default()
    });
    let k = key("active");
    let backend = |eps| Backend::new(k.clone(), eps).with_policy(Arc::clone(&policy));
    let gw = Gateway::start(one_backend(1, backend(vec![sick.addr, well.addr]))).await;
    let health =
        |dp: &DataPlane| endpoint(&described(dp, &k), sick.addr).map(|e| e["health"].clone());
    eventually("sick fails its checks", || health(&gw.dataplane) == Some("unhealthy".into())).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &gw.url("/"), "h").await.origin(), "well");
    }
    // It recovers: back in rotation.
    healthy.store(true, Ordering::SeqCst);
    eventually("sick passes again", || health(&gw.dataplane) == Some("healthy".into())).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        names.insert(get(&client, &gw.url("/"), "h").await.origin());
    }
    assert_eq!(names.len(), 2, "{names:?}");
    // It leaves the EndpointSlice: its checker stops.
    gw.dataplane.publish(one_backend(2, backend(vec![well.addr])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_removal = checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(checks.load(Ordering::SeqCst), after_removal);
}

/// `n` concurrent `GET /` through `gw`, their statuses.
async fn concurrent(gw: &Arc<Gateway>, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let gw = Arc::clone(gw);
        tasks.push(tokio::spawn(
            async move { get(&client(), &gw.url("/"), "h").await.status.as_u16() },
        ));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_never_goes_to_an_open_circuit() {
    let bad = Origin::start_with("bad", OriginOptions { delay: None, status: Some(500) }).await;
    let other = Origin::start("other").await;
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        breaker: Some(breaker(1, default_fallback())),
        ..BackendPolicy::default()
    });
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy { attempts: 2, on_5xx: true, ..RetryPolicy::default() }.into();
    let backend = Backend::new(key("retry-open"), vec![bad.addr, other.addr]).with_policy(policy);
    let gw = Gateway::start(snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![backend],
    ))
    .await;
    // Round robin: bad first; its 500 opens the circuit, and the retry is refused.
    let answer = get(&client(), &gw.url("/"), "h").await;
    assert_gateway_error(&answer, 503);
    assert_eq!(answer.json()["error"], "circuit open for backend default/retry-open:80");
    assert_eq!(bad.requests.load(Ordering::SeqCst), 1);
    assert_eq!(other.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_requests_answers_the_rest_with_the_fallback_at_once() {
    let slow = Origin::start_with(
        "slow",
        OriginOptions { delay: Some(Duration::from_millis(1500)), status: None },
    )
    .await;
    let mut caps = breaker(1000, default_fallback());
    caps.max_parallel_requests = Some(2);
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        breaker: Some(caps),
        ..BackendPolicy::default()
    });
    let gw = Arc::new(
        Gateway::start(one_backend(
            1,
            Backend::new(key("parallel"), vec![slow.addr]).with_policy(policy),
        ))
        .await,
    );
    let mut statuses = concurrent(&gw, 10).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503, 503, 503, 503, 503]);
    assert_eq!(slow.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_with_the_fallback_instead_of_a_new_connection() {
    let slow = Origin::start_with(
        "slow",
        OriginOptions { delay: Some(Duration::from_millis(1500)), status: None },
    )
    .await;
    let mut caps = breaker(1000, default_fallback());
    caps.max_connections = Some(1);
    let policy = Arc::new(BackendPolicy {
        panic_threshold: 50,
        breaker: Some(caps),
        ..BackendPolicy::default()
    });
    let k = key("connections");
    let gw = Arc::new(
        Gateway::start(one_backend(
            1,
            Backend::new(k.clone(), vec![slow.addr]).with_policy(policy),
        ))
        .await,
    );
    let mut statuses = concurrent(&gw, 4).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503, 503, 503]);
    assert_eq!(slow.requests.load(Ordering::SeqCst), 1);
    let text = weir_dataplane::metrics::encode();
    assert!(
        text.contains(
            r#"weir_upstream_requests_total{backend="default/connections:80",result="overflow"} 3"#
        ),
        "{text}"
    );
}
