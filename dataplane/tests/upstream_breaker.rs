//! The circuit breaker and `maxParallelRequests` through the whole data plane, against
//! real origins on 127.0.0.1 that count the requests they receive.
//!
//! Real time with short durations (the gateway's sockets are real). Nothing asserts speed:
//! time bounds are lower bounds ("still open before `open_for` has passed"), and "at once"
//! is shown by an origin that holds its requests until the test lets them go.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod upstream_support;

use std::sync::Arc;
use std::time::Duration;

use common::{Answer, Gateway, client, get};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use upstream_support::*;
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::registry::UpstreamEvent;

type TestClient = Client<HttpConnector, common::TestBody>;

fn assert_fallback(answer: &Answer) {
    assert_eq!(answer.status.as_u16(), 503, "{:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.body, FALLBACK_BODY.as_bytes());
}

fn with_breaker(breaker: weir_dataplane::upstream::policy::CircuitBreaker) -> BackendPolicy {
    BackendPolicy { breaker: Some(breaker), panic_threshold: 50, ..BackendPolicy::default() }
}

/// The circuit state `/debug/backends` shows for the only backend.
fn circuit_state(gateway: &Gateway) -> String {
    let described = gateway.dataplane.registry.describe();
    described["backends"][0]["circuit"]["state"].as_str().unwrap_or_default().to_owned()
}

async fn request(gateway: &Gateway, client: &TestClient) -> Answer {
    get(client, &gateway.url("/"), HOST).await
}

/// Sends `n` requests the origins answer with 500 (each must reach them); returns when
/// the last one was sent: the circuit opened no earlier.
async fn fail_n(
    gateway: &Gateway,
    client: &TestClient,
    origins: &[&FlipOrigin],
    n: usize,
) -> Instant {
    let mut sent = Instant::now();
    for i in 0..n {
        let before: usize = origins.iter().map(|o| o.traffic()).sum();
        sent = Instant::now();
        let answer = request(gateway, client).await;
        assert_eq!(answer.status.as_u16(), 500, "failure {i} reached the origin");
        assert_eq!(origins.iter().map(|o| o.traffic()).sum::<usize>(), before + 1);
    }
    sent
}

/// While the circuit is surely open (answered before `from + open_for`), every request gets
/// the fallback without reaching an origin. Returns how many were checked (at least one).
async fn open_until(
    gateway: &Gateway,
    client: &TestClient,
    origins: &[&FlipOrigin],
    from: Instant,
    open_for: Duration,
) -> usize {
    let before: usize = origins.iter().map(|o| o.traffic()).sum();
    let mut checked = 0;
    for _ in 0..50 {
        let answer = request(gateway, client).await;
        if Instant::now() >= from + open_for {
            break;
        }
        assert_fallback(&answer);
        assert_eq!(
            origins.iter().map(|o| o.traffic()).sum::<usize>(),
            before,
            "open circuit reached an origin"
        );
        checked += 1;
    }
    assert!(checked >= 1, "no request answered within open_for ({open_for:?})");
    checked
}

#[tokio::test]
async fn failures_open_the_circuit_probes_close_it() {
    let (a, b) = (FlipOrigin::start("a").await, FlipOrigin::start("b").await);
    let open_for = Duration::from_millis(800);
    let policy = with_breaker(breaker(3, open_for, 2));
    let gateway = Gateway::start(one_backend(1, &[&a, &b], policy)).await;
    let mut events = gateway.dataplane.registry.subscribe();
    let client = client();
    let origins = [&a, &b];

    // Closed: answers pass, successes never open it.
    for _ in 0..5 {
        assert_eq!(request(&gateway, &client).await.status, 200);
    }
    // `failureThreshold` 500s open it.
    a.answer(500);
    b.answer(500);
    let opened = fail_n(&gateway, &client, &origins, 3).await;
    assert_eq!(circuit_state(&gateway), "Open");
    let checked = open_until(&gateway, &client, &origins, opened, open_for).await;
    assert!(checked >= 3, "only {checked} requests checked while open");
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Ok(UpstreamEvent::CircuitOpened { failures, open_for: o, .. })) => {
            assert_eq!(failures, 3);
            assert_eq!(o, open_for);
        }
        other => panic!("expected CircuitOpened, got {other:?}"),
    }

    // After `open_for`: half-open; probes pass, `successThreshold` successes close it.
    a.answer(200);
    b.answer(200);
    tokio::time::sleep_until(opened + open_for + Duration::from_millis(50)).await;
    let before = a.traffic() + b.traffic();
    assert_eq!(request(&gateway, &client).await.status, 200, "first probe");
    assert_eq!(circuit_state(&gateway), "HalfOpen", "one success of two");
    assert_eq!(request(&gateway, &client).await.status, 200, "second probe");
    assert_eq!(circuit_state(&gateway), "Closed");
    assert_eq!(a.traffic() + b.traffic(), before + 2);
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Ok(UpstreamEvent::CircuitClosed { .. })) => {}
        other => panic!("expected CircuitClosed, got {other:?}"),
    }
    // Closed: traffic flows, and two failures (under the threshold) do not open it.
    a.answer(500);
    b.answer(500);
    fail_n(&gateway, &client, &origins, 2).await;
    a.answer(200);
    b.answer(200);
    for _ in 0..5 {
        assert_eq!(request(&gateway, &client).await.status, 200);
    }
}

#[tokio::test]
async fn a_failed_probe_reopens_the_circuit() {
    let a = FlipOrigin::start("a").await;
    let open_for = Duration::from_millis(600);
    let gateway =
        Gateway::start(one_backend(1, &[&a], with_breaker(breaker(2, open_for, 2)))).await;
    let client = client();
    a.answer(500);
    let opened = fail_n(&gateway, &client, &[&a], 2).await;
    open_until(&gateway, &client, &[&a], opened, open_for).await;

    // Half-open: one probe passes, still failing: open again for `open_for`.
    tokio::time::sleep_until(opened + open_for + Duration::from_millis(50)).await;
    let reopened = fail_n(&gateway, &client, &[&a], 1).await;
    open_until(&gateway, &client, &[&a], reopened, open_for).await;

    // Half-open again; the upstream recovered: two probes close it.
    a.answer(200);
    tokio::time::sleep_until(reopened + open_for + Duration::from_millis(50)).await;
    for _ in 0..6 {
        assert_eq!(request(&gateway, &client).await.status, 200);
    }
}

#[tokio::test]
async fn half_open_lets_one_probe_through_at_a_time() {
    let a = FlipOrigin::start("a").await;
    let open_for = Duration::from_millis(500);
    let gateway =
        Gateway::start(one_backend(1, &[&a], with_breaker(breaker(2, open_for, 1)))).await;
    let client = client();
    a.answer(500);
    let opened = fail_n(&gateway, &client, &[&a], 2).await;
    a.answer(200);
    tokio::time::sleep_until(opened + open_for + Duration::from_millis(50)).await;

    // The probe is held by the origin; every other request meanwhile gets the fallback.
    a.close();
    let probe = {
        let (gateway_url, client) = (gateway.url("/"), client.clone());
        tokio::spawn(async move { get(&client, &gateway_url, HOST).await })
    };
    eventually(Duration::from_secs(5), "the probe reaches the origin", || a.traffic() == 3).await;
    for _ in 0..4 {
        // Held upstream (never answered while the gate is closed) if it went as a probe.
        let answer = tokio::time::timeout(Duration::from_secs(5), request(&gateway, &client))
            .await
            .expect("a second request went upstream while the probe was in flight");
        assert_fallback(&answer);
    }
    assert_eq!(a.traffic(), 3, "only the probe reached the origin");
    a.open();
    assert_eq!(probe.await.unwrap().status, 200);
    // `successThreshold: 1`: closed.
    for _ in 0..4 {
        assert_eq!(request(&gateway, &client).await.status, 200);
    }
    assert_eq!(a.traffic(), 7);
}

#[tokio::test]
async fn max_parallel_requests_answers_the_excess_with_the_fallback_at_once() {
    let (a, b) = (FlipOrigin::start("a").await, FlipOrigin::start("b").await);
    let mut config = breaker(1000, Duration::from_secs(10), 1);
    config.max_parallel_requests = Some(2);
    let gateway = Arc::new(Gateway::start(one_backend(1, &[&a, &b], with_breaker(config))).await);
    let client = client();
    // The upstream holds every request until the test lets it answer.
    a.close();
    b.close();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (gateway, client, tx) = (Arc::clone(&gateway), client.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(request(&gateway, &client).await);
        });
    }
    // Eight fallbacks while two requests are held upstream: nothing waits for a slot.
    for i in 0..8 {
        let answer = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("answer {i} never came while the upstream held two"))
            .unwrap();
        assert_fallback(&answer);
    }
    eventually(Duration::from_secs(5), "two requests upstream", || a.traffic() + b.traffic() == 2)
        .await;
    assert_eq!(a.answered.load(std::sync::atomic::Ordering::SeqCst), 0);
    a.open();
    b.open();
    for _ in 0..2 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(answer.status, 200);
    }
    // Nothing was queued to go later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.traffic() + b.traffic(), 2);
    // The slots are free again.
    for _ in 0..4 {
        assert_eq!(request(&gateway, &client).await.status, 200);
    }
}

#[tokio::test]
async fn connect_errors_open_the_circuit() {
    let dead = common::closed_port().await;
    let policy = with_breaker(breaker(2, Duration::from_secs(10), 1));
    let backend =
        weir_dataplane::Backend::new(common::key("svc"), vec![dead]).with_policy(Arc::new(policy));
    let snapshot = common::snapshot(
        1,
        vec![common::route("r", &[HOST], vec![common::rule("r", "/", common::action(&[(0, 1)]))])],
        vec![backend],
    );
    let gateway = Gateway::start(snapshot).await;
    let client = client();
    for _ in 0..2 {
        common::assert_gateway_error(&request(&gateway, &client).await, 502);
    }
    for _ in 0..3 {
        assert_fallback(&request(&gateway, &client).await);
    }
}

#[tokio::test]
async fn client_errors_never_open_the_circuit() {
    let a = FlipOrigin::start("a").await;
    a.answer(404);
    let gateway =
        Gateway::start(one_backend(1, &[&a], with_breaker(breaker(2, Duration::from_secs(10), 1))))
            .await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(request(&gateway, &client).await.status, 404);
    }
    assert_eq!(a.traffic(), 10);
}

#[tokio::test]
async fn without_a_fallback_body_the_open_circuit_answers_the_gateway_503() {
    let a = FlipOrigin::start("a").await;
    let mut config = breaker(2, Duration::from_secs(10), 1);
    config.fallback.body = None;
    let gateway = Gateway::start(one_backend(1, &[&a], with_breaker(config))).await;
    let client = client();
    a.answer(500);
    fail_n(&gateway, &client, &[&a], 2).await;
    for _ in 0..3 {
        common::assert_gateway_error(&request(&gateway, &client).await, 503);
    }
    assert_eq!(a.traffic(), 2);
}
