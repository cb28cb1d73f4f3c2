//! Endpoint health through the whole data plane: passive outlier ejection, active health
//! checks and the panic rule, against real origins on 127.0.0.1 (three per backend).
//!
//! Real time with short durations: the gateway's sockets are real, so paused tokio time
//! would fire timeouts while they wait. Nothing asserts speed: a time bound is only ever a
//! lower bound ("not before the ejection ends"), and check counts at the origin stand for
//! the check interval.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod upstream_support;

use std::collections::HashMap;
use std::time::Duration;

use common::{Gateway, assert_gateway_error, client, get};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use upstream_support::*;
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::policy::OutlierDetection;

type TestClient = Client<HttpConnector, common::TestBody>;

/// One request through the gateway; returns the origin that answered and the status.
async fn one(gateway: &Gateway, client: &TestClient) -> (String, u16) {
    let answer = get(client, &gateway.url("/"), HOST).await;
    let status = answer.status.as_u16();
    let name = if answer.status.is_success() || status == 500 {
        answer.origin()
    } else {
        String::from_utf8_lossy(&answer.body).into_owned()
    };
    (name, status)
}

/// How many times `/debug/backends` says `origin` was ejected.
fn ejections(gateway: &Gateway, origin: &FlipOrigin) -> u64 {
    let described = gateway.dataplane.registry.describe();
    let endpoints = described["backends"][0]["endpoints"].as_array().cloned().unwrap_or_default();
    let endpoint = endpoints
        .iter()
        .find(|e| e["address"] == origin.addr.to_string())
        .unwrap_or_else(|| panic!("{} not in /debug/backends: {described}", origin.name));
    endpoint["ejections"].as_u64().unwrap()
}

/// Sends `n` requests; the origins that answered, with their counts.
async fn spread(gateway: &Gateway, client: &TestClient, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (name, status) = one(gateway, client).await;
        assert_eq!(status, 200, "{name}");
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// Sends requests until `bad` has received `target` traffic requests (each of its answers
/// is its 500, the others' 200); returns when the last request was sent: the ejection it
/// caused began no earlier.
async fn drive_to(
    gateway: &Gateway,
    client: &TestClient,
    bad: &FlipOrigin,
    target: usize,
) -> Instant {
    for _ in 0..100 {
        let sent = Instant::now();
        let (name, status) = one(gateway, client).await;
        let expected = if name == bad.name { 500 } else { 200 };
        assert_eq!(status, expected, "answer of {name}");
        if bad.traffic() >= target {
            assert_eq!(bad.traffic(), target, "{} reached past its ejection", bad.name);
            return sent;
        }
    }
    panic!("{} never received {target} requests", bad.name);
}

/// After an ejection that began no earlier than `from` and lasts at least `at_least`:
/// requests answered before `from + at_least` never reach `bad`; then `bad` gets traffic
/// again (within 10 s), never before `from + at_least`. Returns the requests checked
/// while it was ejected, by origin.
async fn ejected_then_back(
    gateway: &Gateway,
    client: &TestClient,
    bad: &FlipOrigin,
    from: Instant,
    at_least: Duration,
) -> HashMap<String, usize> {
    let before = bad.traffic();
    let mut during = HashMap::new();
    for _ in 0..10_000 {
        let (name, status) = one(gateway, client).await;
        let answered = Instant::now();
        if bad.traffic() > before {
            assert!(
                answered >= from + at_least,
                "{} had traffic {:?} after its ejection began (it lasts {at_least:?})",
                bad.name,
                answered - from
            );
            return during;
        }
        assert_eq!(status, 200, "{name}");
        if answered < from + at_least {
            *during.entry(name).or_insert(0) += 1;
        }
        if answered > from + at_least + Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} never came back after its ejection", bad.name);
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back_and_its_second_ejection_is_twice_as_long() {
    let (a, b, c) =
        (FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await);
    b.answer(500);
    let base = Duration::from_millis(400);
    let policy = BackendPolicy {
        passive: Some(passive(2, base)),
        panic_threshold: 50,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b, &c], policy)).await;
    let client = client();

    // Two 500s in a row from b eject it for `base`.
    let first = drive_to(&gateway, &client, &b, 2).await;
    assert_eq!(ejections(&gateway, &b), 1);
    let during = ejected_then_back(&gateway, &client, &b, first, base).await;
    assert!(during.get("a").is_some_and(|n| *n >= 1), "a served while b was out: {during:?}");
    assert!(during.get("c").is_some_and(|n| *n >= 1), "c served while b was out: {during:?}");
    assert_eq!(during.get("b"), None);

    // Back, it fails again: two more 500s eject it for twice as long.
    let second = drive_to(&gateway, &client, &b, 4).await;
    assert_eq!(ejections(&gateway, &b), 2);
    ejected_then_back(&gateway, &client, &b, second, base * 2).await;
    // A healthy endpoint was never ejected.
    assert!(a.traffic() > 0 && c.traffic() > 0);
}

#[tokio::test]
async fn an_endpoint_recovering_from_an_ejection_is_not_ejected_by_successes() {
    let (a, b, c) =
        (FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await);
    b.answer(500);
    let base = Duration::from_millis(300);
    let policy = BackendPolicy {
        passive: Some(passive(2, base)),
        panic_threshold: 50,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b, &c], policy)).await;
    let client = client();
    let from = drive_to(&gateway, &client, &b, 2).await;
    b.answer(200);
    ejected_then_back(&gateway, &client, &b, from, base).await;
    // Healthy again: it keeps its share of the traffic.
    let seen = spread(&gateway, &client, 30).await;
    assert!(seen.get("b").is_some_and(|n| *n >= 5), "{seen:?}");
}

/// Waits until every origin received at least one passing check (the checkers run).
async fn checkers_running(origins: &[&FlipOrigin]) {
    for o in origins {
        eventually(Duration::from_secs(5), "first health check", || {
            o.passed_checks() + o.failed_checks() > 0
        })
        .await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_active_checks_leaves_rotation_and_returns_after_the_healthy_threshold()
{
    let (a, b, c) =
        (FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await);
    let (unhealthy, healthy) = (2, 3);
    let policy = BackendPolicy {
        active: Some(active(Duration::from_millis(100), healthy, unhealthy)),
        panic_threshold: 50,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b, &c], policy.clone())).await;
    let client = client();
    checkers_running(&[&a, &b, &c]).await;
    let seen = spread(&gateway, &client, 9).await;
    assert_eq!(seen.len(), 3, "every endpoint starts in rotation: {seen:?}");

    // b's /healthz fails: once its checker has seen `unhealthy` failures (the origin has
    // received one more check since, so the verdict is in), b is out.
    b.health(503);
    eventually(Duration::from_secs(5), "b's failing checks", || {
        b.failed_checks() > unhealthy as usize
    })
    .await;
    let before = b.traffic();
    let seen = spread(&gateway, &client, 12).await;
    assert_eq!(b.traffic(), before, "b got traffic after failing its checks: {seen:?}");
    assert!(seen.contains_key("a") && seen.contains_key("c"), "{seen:?}");

    // A reload with the same backend and policy keeps b's verdict (and its checker).
    gateway.dataplane.publish(one_backend(2, &[&a, &b, &c], policy.clone()));
    let seen = spread(&gateway, &client, 12).await;
    assert_eq!(b.traffic(), before, "a reload put b back: {seen:?}");

    // b passes again: not in rotation before `healthy` passing checks...
    let passed = b.passed_checks();
    b.health(200);
    eventually(Duration::from_secs(5), "b's first passing check", || b.passed_checks() > passed)
        .await;
    let mut checked = 0;
    for _ in 0..1000 {
        let (name, status) = one(&gateway, &client).await;
        if b.passed_checks() >= passed + healthy as usize {
            break;
        }
        assert_eq!(status, 200, "{name}");
        assert_eq!(b.traffic(), before, "b back after fewer than {healthy} passing checks");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} requests before b's third passing check");
    // ...and back once they came.
    eventually(Duration::from_secs(5), "b's passing checks", || {
        b.passed_checks() > passed + healthy as usize
    })
    .await;
    let seen = spread(&gateway, &client, 12).await;
    assert!(seen.get("b").is_some_and(|n| *n >= 1), "b is not back: {seen:?}");
}

/// Starts three origins whose `/healthz` fails from the start, a gateway over them with
/// active checks and `panic_threshold`, and waits until every checker has seen its
/// endpoint fail past the threshold.
async fn all_failing(panic_threshold: u8) -> (Gateway, [FlipOrigin; 3]) {
    let origins =
        [FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await];
    for o in &origins {
        o.health(503);
    }
    let policy = BackendPolicy {
        active: Some(active(Duration::from_millis(50), 1, 2)),
        panic_threshold,
        ..BackendPolicy::default()
    };
    let gateway =
        Gateway::start(one_backend(1, &[&origins[0], &origins[1], &origins[2]], policy)).await;
    for o in &origins {
        eventually(Duration::from_secs(5), "failing checks", || o.failed_checks() > 2).await;
    }
    (gateway, origins)
}

#[tokio::test]
async fn all_endpoints_failing_with_panic_threshold_zero_answer_503() {
    let (gateway, origins) = all_failing(0).await;
    let client = client();
    for _ in 0..6 {
        let answer = get(&client, &gateway.url("/"), HOST).await;
        assert_gateway_error(&answer, 503);
    }
    for o in &origins {
        assert_eq!(o.traffic(), 0, "{} got traffic while unhealthy", o.name);
    }
}

#[tokio::test]
async fn all_endpoints_failing_with_panic_threshold_fifty_use_every_endpoint() {
    let (gateway, origins) = all_failing(50).await;
    let client = client();
    let seen = spread(&gateway, &client, 12).await;
    assert_eq!(seen.len(), 3, "the panic rule uses every endpoint: {seen:?}");
    for o in &origins {
        assert!(o.traffic() >= 1, "{}", o.name);
    }
}

#[tokio::test]
async fn checkers_stop_when_their_endpoint_or_the_policy_goes() {
    let (a, b) = (FlipOrigin::start("a").await, FlipOrigin::start("b").await);
    let policy = BackendPolicy {
        active: Some(active(Duration::from_millis(30), 1, 1)),
        panic_threshold: 50,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b], policy.clone())).await;
    checkers_running(&[&a, &b]).await;

    // b leaves the EndpointSlice: its checks stop, a's go on.
    gateway.dataplane.publish(one_backend(2, &[&a], policy));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (b_checks, a_checks) = (b.passed_checks(), a.passed_checks());
    eventually(Duration::from_secs(5), "a's checks go on", || a.passed_checks() >= a_checks + 3)
        .await;
    assert_eq!(b.passed_checks(), b_checks, "b is still checked after it went");

    // The policy goes: no more checks at all.
    gateway.dataplane.publish(one_backend(3, &[&a], BackendPolicy::default()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a_checks = a.passed_checks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.passed_checks(), a_checks, "a is still checked without a health check policy");
}

#[tokio::test]
async fn connect_failures_eject_a_dead_endpoint_after_consecutive_gateway_errors() {
    let (a, c) = (FlipOrigin::start("a").await, FlipOrigin::start("c").await);
    let dead = common::closed_port().await;
    let base = Duration::from_secs(10);
    let policy = BackendPolicy {
        passive: Some(OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway_errors: Some(2),
            base_ejection_time: base,
            max_ejection_percent: 50,
        }),
        panic_threshold: 50,
        ..BackendPolicy::default()
    };
    let backend = weir_dataplane::Backend::new(common::key("svc"), vec![a.addr, dead, c.addr])
        .with_policy(std::sync::Arc::new(policy));
    let snapshot = common::snapshot(
        1,
        vec![common::route("r", &[HOST], vec![common::rule("r", "/", common::action(&[(0, 1)]))])],
        vec![backend],
    );
    let gateway = Gateway::start(snapshot).await;
    let client = client();
    let mut failures = 0;
    let mut from = Instant::now();
    for _ in 0..20 {
        from = Instant::now();
        let answer = get(&client, &gateway.url("/"), HOST).await;
        if answer.status.as_u16() == 502 {
            assert_gateway_error(&answer, 502);
            failures += 1;
            if failures == 2 {
                break;
            }
        } else {
            assert_eq!(answer.status, 200);
        }
    }
    assert_eq!(failures, 2, "the dead endpoint was never tried twice");
    let mut checked = 0;
    for _ in 0..12 {
        let answer = get(&client, &gateway.url("/"), HOST).await;
        if Instant::now() >= from + base {
            break;
        }
        assert_eq!(answer.status, 200, "the dead endpoint was tried while ejected");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} requests within the ejection");
}

#[tokio::test]
async fn max_ejection_percent_keeps_failing_endpoints_in_rotation_past_it() {
    let (a, b, c) =
        (FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await);
    b.answer(500);
    c.answer(500);
    let base = Duration::from_secs(10);
    let policy = BackendPolicy {
        passive: Some(passive(2, base)),
        panic_threshold: 0,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b, &c], policy)).await;
    let client = client();
    // Both fail twice in a row (one of them is ejected on the way).
    let started = Instant::now();
    for _ in 0..30 {
        one(&gateway, &client).await;
        if b.traffic() >= 2 && c.traffic() >= 2 {
            break;
        }
    }
    // 50% of three: one ejected at most; the other stays in rotation with its 500s.
    let (b0, c0) = (b.traffic(), c.traffic());
    let mut checked = 0;
    for _ in 0..12 {
        one(&gateway, &client).await;
        if Instant::now() >= started + base {
            break;
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} requests within the ejection");
    let (b_more, c_more) = (b.traffic() > b0, c.traffic() > c0);
    assert!(b_more != c_more, "exactly one of b, c is ejected (b: {b_more}, c: {c_more})");
}

#[tokio::test]
async fn endpoints_failing_active_checks_leave_rotation_past_max_ejection_percent() {
    let (a, b, c) =
        (FlipOrigin::start("a").await, FlipOrigin::start("b").await, FlipOrigin::start("c").await);
    b.health(503);
    c.health(503);
    let policy = BackendPolicy {
        active: Some(active(Duration::from_millis(50), 1, 2)),
        // At most 10% ejected by outlier detection: never one of three.
        passive: Some(OutlierDetection {
            max_ejection_percent: 10,
            ..passive(1000, Duration::from_secs(10))
        }),
        panic_threshold: 0,
        ..BackendPolicy::default()
    };
    let gateway = Gateway::start(one_backend(1, &[&a, &b, &c], policy)).await;
    let client = client();
    for o in [&b, &c] {
        eventually(Duration::from_secs(5), "failing checks", || o.failed_checks() > 2).await;
    }
    let seen = spread(&gateway, &client, 9).await;
    assert_eq!(seen.get("a"), Some(&9), "only a is in rotation: {seen:?}");
    assert_eq!((b.traffic(), c.traffic()), (0, 0));
}
