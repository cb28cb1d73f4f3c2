//! Failures between the gateway and its upstreams: retries, timeouts, missing endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use http::Request;
use weir_dataplane::{Backend, RetryPolicy, Timeouts};

fn retry_on_connect() -> RetryPolicy {
    RetryPolicy { attempts: 1, on_connect_failure: true, ..RetryPolicy::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_the_next_endpoint() {
    let live = Origin::start("live").await;
    let dead = closed_port().await;
    let mut act = action(&[(0, 1)]);
    act.retries = retry_on_connect().into();
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![Backend::new(key("svc"), vec![dead, live.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    for i in 0..10 {
        let answer = get(&client, &gw.url(&format!("/get/{i}")), "h").await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.origin(), "live");
        // The retried attempt carries the full headers (they come back from the failed connect).
        let headers = &answer.json()["headers"];
        assert_eq!(headers["host"], "h", "{headers}");
        assert_eq!(headers["x-forwarded-host"], "h", "{headers}");
        assert!(headers["x-request-id"].is_string(), "{headers}");
    }
    // A POST with a body is re-sent too: its body never left the gateway.
    for i in 0..4 {
        let request = Request::post(gw.url(&format!("/echo-body/{i}")))
            .header("host", "h")
            .body(full(format!("payload-{i}")))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("payload-{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_without_retry_is_a_json_502() {
    let dead = closed_port().await;
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("svc"), vec![dead])],
    );
    let gw = Gateway::start(snap).await;
    assert_gateway_error(&get(&client(), &gw.url("/"), "h").await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_a_json_504() {
    let slow = Origin::start("slow").await;
    let mut act = action(&[(0, 1)]);
    act.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: Some(Duration::from_millis(200)),
        idle: None,
    }
    .into();
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![Backend::new(key("svc"), vec![slow.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    assert_gateway_error(&get(&client, &gw.url("/?sleep_ms=3000"), "h").await, 504);
    // A fast request on the same route still works.
    assert_eq!(get(&client, &gw.url("/"), "h").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_idempotent_requests() {
    let slow = Origin::start_with(
        "slow",
        OriginOptions { delay: Some(Duration::from_secs(3)), ..OriginOptions::default() },
    )
    .await;
    let fast = Origin::start("fast").await;
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy {
        attempts: 1,
        per_try_timeout: Some(Duration::from_millis(200)),
        on_timeout: true,
        ..RetryPolicy::default()
    }
    .into();
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![Backend::new(key("svc"), vec![slow.addr, fast.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    // Round robin starts at `slow`: the first try times out, the retry goes to `fast`.
    let answer = get(&client, &gw.url("/"), "h").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.origin(), "fast");
    // A PUT is idempotent, but its body already went to the slow origin: it is not re-sent
    // (a retry would reach `fast` and answer 200).
    let request = Request::put(gw.url("/")).header("host", "h").body(full("x")).unwrap();
    let answer = send(&client, request).await;
    assert_gateway_error(&answer, 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_5xx_is_retried_for_idempotent_requests_only() {
    let broken = Origin::start_with(
        "broken",
        OriginOptions { status: Some(503), ..OriginOptions::default() },
    )
    .await;
    let good = Origin::start("good").await;
    let mut act = action(&[(0, 1)]);
    act.retries = RetryPolicy { attempts: 1, on_5xx: true, ..RetryPolicy::default() }.into();
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", act)])],
        vec![Backend::new(key("svc"), vec![broken.addr, good.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    let answer = get(&client, &gw.url("/"), "h").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.origin(), "good");
    assert_eq!(broken.requests.load(Ordering::SeqCst), 1);
    // POST is not idempotent: the origin's own 503 reaches the client.
    let request = Request::post(gw.url("/")).header("host", "h").body(full("x")).unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.origin(), "broken");
    assert_eq!(broken.requests.load(Ordering::SeqCst), 2);
    assert_eq!(good.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_is_a_json_503() {
    let snap = snapshot(
        1,
        vec![
            route("empty", &["empty.test"], vec![rule("empty", "/", action(&[(0, 1)]))]),
            route("gone", &["gone.test"], vec![rule("gone", "/", action(&[(1, 1)]))]),
            route("zero", &["zero.test"], vec![rule("zero", "/", action(&[(0, 0)]))]),
        ],
        vec![
            Backend::new(key("empty"), vec![]),
            Backend::unresolved(key("gone"), "Service default/gone not found"),
        ],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    for host in ["empty.test", "gone.test", "zero.test"] {
        let answer = get(&client, &gw.url("/"), host).await;
        assert_gateway_error(&answer, 503);
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        assert!(!body.contains("default/gone"), "internal detail leaked: {body}");
    }
}
