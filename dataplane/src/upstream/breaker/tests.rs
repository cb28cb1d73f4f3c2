//! The circuit's state machine and caps, on explicit times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::*;
use crate::upstream::policy::{CircuitBreaker, Fallback};

fn config(failure_threshold: u32, success_threshold: u32) -> CircuitBreaker {
    CircuitBreaker {
        failure_threshold,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(30),
        success_threshold,
        max_connections: None,
        max_pending_requests: None,
        max_parallel_requests: None,
        fallback: Fallback {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: None,
            content_type: HeaderValue::from_static("application/json"),
        },
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Sends one attempt at `now` that fails; returns the transition.
fn fail(b: &Breaker, now: Instant) -> Option<Transition> {
    b.try_acquire(now).expect("admitted").record(false, now)
}

fn succeed(b: &Breaker, now: Instant) -> Option<Transition> {
    b.try_acquire(now).expect("admitted").record(true, now)
}

/// Opens `b` at `t` with `failure_threshold` failures.
fn open(b: &Breaker, t: Instant) {
    let n = b.config().failure_threshold;
    for _ in 1..n {
        assert_eq!(fail(b, t), None);
    }
    assert_eq!(fail(b, t), Some(Transition::Opened { failures: n }));
}

#[test]
fn closed_admits_and_successes_never_open_it() {
    let b = Breaker::new(config(3, 2));
    let t = Instant::now();
    for i in 0..100 {
        assert_eq!(succeed(&b, t + Duration::from_millis(i)), None);
    }
    assert_eq!(b.state(t), CircuitState::Closed);
    assert_eq!(b.in_flight(), 0, "nothing counted without maxParallelRequests");
}

#[test]
fn threshold_failures_within_the_window_open_it() {
    let b = Breaker::new(config(3, 2));
    let t = Instant::now();
    assert_eq!(fail(&b, t), None);
    // Successes in between do not reset a window count.
    assert_eq!(succeed(&b, t + secs(1)), None);
    assert_eq!(fail(&b, t + secs(2)), None);
    assert_eq!(b.state(t + secs(2)), CircuitState::Closed);
    assert_eq!(b.failures(t + secs(2)), 2);
    assert_eq!(b.failures(t + secs(11)), 1, "the first failure left the window");
    assert_eq!(fail(&b, t + secs(9)), Some(Transition::Opened { failures: 3 }));
    assert_eq!(b.failures(t + secs(9)), 0, "open");
    assert_eq!(b.state(t + secs(9)), CircuitState::Open);
}

#[test]
fn failures_spread_wider_than_the_window_do_not_open_it() {
    let b = Breaker::new(config(3, 2));
    let t = Instant::now();
    // Every failure is 6 s after the previous one: never three within 10 s.
    for i in 0..20 {
        assert_eq!(fail(&b, t + secs(6 * i)), None, "failure {i}");
    }
    assert_eq!(b.state(t + secs(200)), CircuitState::Closed);
}

#[test]
fn open_refuses_everything_until_open_for_has_passed() {
    let b = Breaker::new(config(2, 1));
    let t = Instant::now();
    open(&b, t);
    for s in [0, 1, 15, 29] {
        assert_eq!(b.try_acquire(t + secs(s)).unwrap_err(), Refusal::Open);
        assert_eq!(b.state(t + secs(s)), CircuitState::Open);
    }
    assert_eq!(b.state(t + secs(30)), CircuitState::HalfOpen);
}

#[test]
fn half_open_admits_one_probe_at_a_time() {
    let b = Breaker::new(config(2, 3));
    let t = Instant::now();
    open(&b, t);
    let at = t + secs(30);
    let probe = b.try_acquire(at).expect("the probe");
    assert!(probe.is_probe());
    assert_eq!(b.try_acquire(at).unwrap_err(), Refusal::ProbeInFlight);
    assert_eq!(b.try_acquire(at + secs(5)).unwrap_err(), Refusal::ProbeInFlight);
    assert_eq!(probe.record(true, at), None);
    // The next probe may go.
    let next = b.try_acquire(at).expect("second probe");
    assert!(next.is_probe());
    assert_eq!(b.state(at), CircuitState::HalfOpen);
}

#[test]
fn success_threshold_consecutive_probes_close_it() {
    let b = Breaker::new(config(2, 3));
    let t = Instant::now();
    open(&b, t);
    let at = t + secs(31);
    assert_eq!(succeed(&b, at), None);
    assert_eq!(succeed(&b, at), None);
    assert_eq!(succeed(&b, at), Some(Transition::Closed));
    assert_eq!(b.state(at), CircuitState::Closed);
    // Closed again: everything passes, and the failures before it opened are forgotten.
    let a = b.try_acquire(at).unwrap();
    let c = b.try_acquire(at).unwrap();
    assert!(!a.is_probe() && !c.is_probe());
    assert_eq!(a.record(false, at), None);
    assert_eq!(c.record(false, at), Some(Transition::Opened { failures: 2 }));
}

#[test]
fn one_failed_probe_reopens_it_for_open_for() {
    let b = Breaker::new(config(2, 3));
    let t = Instant::now();
    open(&b, t);
    let at = t + secs(30);
    assert_eq!(succeed(&b, at), None);
    assert_eq!(succeed(&b, at), None);
    assert_eq!(fail(&b, at + secs(1)), Some(Transition::Opened { failures: 1 }));
    assert_eq!(b.state(at + secs(1)), CircuitState::Open);
    assert_eq!(b.try_acquire(at + secs(30)).unwrap_err(), Refusal::Open);
    // Half-open again 30 s after the failed probe, counting successes from zero.
    let again = at + secs(31);
    assert_eq!(succeed(&b, again), None);
    assert_eq!(succeed(&b, again), None);
    assert_eq!(succeed(&b, again), Some(Transition::Closed));
}

#[test]
fn a_probe_dropped_without_a_record_frees_the_slot_and_counts_nothing() {
    let b = Breaker::new(config(2, 2));
    let t = Instant::now();
    open(&b, t);
    let at = t + secs(30);
    let probe = b.try_acquire(at).unwrap();
    drop(probe);
    assert_eq!(b.state(at), CircuitState::HalfOpen);
    assert_eq!(succeed(&b, at), None, "the dropped probe was not a success");
    assert_eq!(succeed(&b, at), Some(Transition::Closed));
}

#[test]
fn a_request_admitted_before_it_opened_does_not_reopen_or_close_it() {
    let b = Breaker::new(config(2, 1));
    let t = Instant::now();
    let late_failure = b.try_acquire(t).unwrap();
    let late_success = b.try_acquire(t).unwrap();
    open(&b, t);
    assert_eq!(late_failure.record(false, t + secs(20)), None);
    // Still open until t + 30 s, not t + 50 s.
    assert_eq!(b.state(t + secs(30)), CircuitState::HalfOpen);
    assert_eq!(late_success.record(true, t + secs(30)), None);
    assert_eq!(b.state(t + secs(30)), CircuitState::HalfOpen);
}

#[test]
fn max_parallel_requests_caps_permits_until_recorded_or_dropped() {
    let mut c = config(5, 1);
    c.max_parallel_requests = Some(2);
    let b = Breaker::new(c);
    let t = Instant::now();
    let first = b.try_acquire(t).unwrap();
    let second = b.try_acquire(t).unwrap();
    assert_eq!(b.in_flight(), 2);
    assert_eq!(b.try_acquire(t).unwrap_err(), Refusal::MaxParallel);
    assert_eq!(first.record(true, t), None);
    assert_eq!(b.in_flight(), 1);
    let third = b.try_acquire(t).unwrap();
    assert_eq!(b.try_acquire(t).unwrap_err(), Refusal::MaxParallel);
    drop(second);
    drop(third);
    assert_eq!(b.in_flight(), 0);
    // A refusal for the cap is not a failure.
    assert_eq!(b.state(t), CircuitState::Closed);
}

#[test]
fn parallel_slots_are_counted_across_transitions() {
    let mut c = config(1, 1);
    c.max_parallel_requests = Some(2);
    let b = Breaker::new(c);
    let t = Instant::now();
    let stale = b.try_acquire(t).unwrap();
    assert_eq!(fail(&b, t), Some(Transition::Opened { failures: 1 }));
    assert_eq!(b.in_flight(), 1);
    let at = t + secs(30);
    let probe = b.try_acquire(at).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.in_flight(), 2);
    assert_eq!(b.try_acquire(at).unwrap_err(), Refusal::ProbeInFlight);
    assert_eq!(probe.record(true, at), Some(Transition::Closed));
    assert_eq!(b.in_flight(), 1);
    let ordinary = b.try_acquire(at).unwrap();
    assert_eq!(b.try_acquire(at).unwrap_err(), Refusal::MaxParallel);
    drop(ordinary);
    drop(stale);
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn parallel_cap_holds_under_contention() {
    let mut c = config(1000, 1);
    c.max_parallel_requests = Some(3);
    let b = Arc::new(Breaker::new(c));
    let peak = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            let peak = Arc::clone(&peak);
            std::thread::spawn(move || {
                let mut admitted = 0;
                for _ in 0..2000 {
                    if let Ok(p) = b.try_acquire(Instant::now()) {
                        admitted += 1;
                        peak.fetch_max(b.in_flight(), Ordering::Relaxed);
                        p.record(true, Instant::now());
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(peak.load(Ordering::Relaxed) <= 3, "peak {}", peak.load(Ordering::Relaxed));
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn refusal_labels_are_stable() {
    assert_eq!(Refusal::Open.as_str(), "circuit_open");
    assert_eq!(Refusal::ProbeInFlight.as_str(), "probe_in_flight");
    assert_eq!(Refusal::MaxParallel.as_str(), "max_parallel");
}

#[tokio::test(start_paused = true)]
async fn runs_on_paused_tokio_time() {
    let b = Breaker::new(config(2, 1));
    open(&b, Instant::now());
    tokio::time::sleep(secs(29)).await;
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), Refusal::Open);
    tokio::time::sleep(secs(1)).await;
    assert_eq!(succeed(&b, Instant::now()), Some(Transition::Closed));
}
