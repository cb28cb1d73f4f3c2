//! Outlier ejection on explicit times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn config(
    consecutive_5xx: Option<u32>,
    consecutive_gateway_errors: Option<u32>,
) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_errors,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Records `n` outcomes at `now`; returns what the last one asked for.
fn record_n(o: &Outlier, c: &OutlierDetection, outcome: Outcome, n: u32, now: Instant) -> bool {
    (0..n).map(|_| o.record(c, outcome, now)).last().unwrap_or(false)
}

#[test]
fn consecutive_5xx_reach_the_threshold() {
    let c = config(Some(3), None);
    let o = Outlier::new();
    let t = Instant::now();
    assert!(!o.record(&c, Outcome::Status5xx, t));
    assert!(!o.record(&c, Outcome::Status5xx, t));
    assert!(o.record(&c, Outcome::Status5xx, t));
    // Not ejected until the caller says so; further failures keep asking.
    assert!(!o.is_ejected(t));
    assert!(o.record(&c, Outcome::Status5xx, t));
}

#[test]
fn a_success_resets_the_streaks() {
    let c = config(Some(3), Some(3));
    let o = Outlier::new();
    let t = Instant::now();
    for _ in 0..10 {
        assert!(!record_n(&o, &c, Outcome::GatewayError, 2, t));
        assert!(!o.record(&c, Outcome::Success, t));
    }
    assert!(!record_n(&o, &c, Outcome::Status5xx, 2, t));
    assert!(!o.record(&c, Outcome::Success, t));
    assert!(!record_n(&o, &c, Outcome::Status5xx, 2, t));
}

#[test]
fn gateway_errors_count_toward_both_thresholds() {
    let t = Instant::now();
    // consecutive5xx alone: gateway errors are 5xx too.
    let only_5xx = config(Some(2), None);
    let o = Outlier::new();
    assert!(!o.record(&only_5xx, Outcome::GatewayError, t));
    assert!(o.record(&only_5xx, Outcome::Status5xx, t));
    // consecutiveGatewayErrors alone: a plain 500 is not one, and ends the streak.
    let only_gateway = config(None, Some(2));
    let o = Outlier::new();
    assert!(!o.record(&only_gateway, Outcome::GatewayError, t));
    assert!(!o.record(&only_gateway, Outcome::Status5xx, t));
    assert!(!o.record(&only_gateway, Outcome::GatewayError, t));
    assert!(o.record(&only_gateway, Outcome::GatewayError, t));
    // Neither threshold: never asks.
    let none = config(None, None);
    let o = Outlier::new();
    assert!(!record_n(&o, &none, Outcome::GatewayError, 100, t));
}

#[test]
fn an_ejection_lasts_base_ejection_time_and_resets_the_counters() {
    let c = config(Some(2), None);
    let o = Outlier::new();
    let t = Instant::now();
    assert!(record_n(&o, &c, Outcome::Status5xx, 2, t));
    assert_eq!(o.eject(&c, t), secs(30));
    assert_eq!(o.ejections(), 1);
    assert!(o.is_ejected(t));
    assert!(o.is_ejected(t + secs(29)));
    assert_eq!(o.ejected_until(t + secs(1)), Some(t + secs(30)));
    assert!(!o.is_ejected(t + secs(30)));
    assert_eq!(o.ejected_until(t + secs(30)), None);
    // Back: the streak starts from zero.
    assert!(!o.record(&c, Outcome::Status5xx, t + secs(30)));
    assert!(o.record(&c, Outcome::Status5xx, t + secs(30)));
}

#[test]
fn outcomes_while_ejected_are_ignored() {
    let c = config(Some(2), None);
    let o = Outlier::new();
    let t = Instant::now();
    o.eject(&c, t);
    // Requests sent before the ejection end with 500s: no new streak, no longer ejection.
    assert!(!record_n(&o, &c, Outcome::Status5xx, 5, t + secs(1)));
    assert_eq!(o.ejected_until(t + secs(1)), Some(t + secs(30)));
    assert!(!o.record(&c, Outcome::Status5xx, t + secs(30)));
}

#[test]
fn ejecting_an_ejected_endpoint_does_not_extend_it() {
    let c = config(Some(1), None);
    let o = Outlier::new();
    let t = Instant::now();
    assert_eq!(o.eject(&c, t), secs(30));
    assert_eq!(o.eject(&c, t + secs(10)), secs(20));
    assert_eq!(o.ejections(), 1);
    assert_eq!(o.ejected_until(t + secs(10)), Some(t + secs(30)));
}

#[test]
fn repeated_ejections_grow_and_are_capped() {
    let c = config(Some(1), None);
    let o = Outlier::new();
    let mut t = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..12 {
        let d = o.eject(&c, t);
        seen.push(d.as_secs() / 30);
        // Ejected again right when it comes back.
        t += d;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10]);
    assert_eq!(o.ejections(), 12);
}

#[test]
fn the_multiplier_decays_by_one_per_base_ejection_time_un_ejected() {
    let c = config(Some(1), None);
    let o = Outlier::new();
    let t = Instant::now();
    assert_eq!(o.eject(&c, t), secs(30)); // until 30
    assert_eq!(o.eject(&c, t + secs(30)), secs(60)); // until 90
    assert_eq!(o.eject(&c, t + secs(90)), secs(90)); // n = 3, until 180
    // 30 s (one base) un-ejected: n = 3 - 1 + 1 = 3.
    assert_eq!(o.eject(&c, t + secs(210)), secs(90)); // until 300
    // 59 s un-ejected: still one base.
    assert_eq!(o.eject(&c, t + secs(359)), secs(90)); // until 449
    // 90 s un-ejected: three bases, the streak is gone: n = 1.
    assert_eq!(o.eject(&c, t + secs(539)), secs(30));
    // Long healthy afterwards: a fresh start.
    assert_eq!(o.eject(&c, t + secs(100_000)), secs(30));
}

#[tokio::test(start_paused = true)]
async fn second_ejection_lasts_twice_as_long_on_paused_time() {
    let c = config(Some(2), None);
    let o = Outlier::new();
    assert!(record_n(&o, &c, Outcome::Status5xx, 2, Instant::now()));
    assert_eq!(o.eject(&c, Instant::now()), secs(30));
    tokio::time::sleep(secs(30)).await;
    assert!(!o.is_ejected(Instant::now()));
    assert!(record_n(&o, &c, Outcome::GatewayError, 2, Instant::now()));
    assert_eq!(o.eject(&c, Instant::now()), secs(60));
    tokio::time::sleep(secs(59)).await;
    assert!(o.is_ejected(Instant::now()));
    tokio::time::sleep(secs(1)).await;
    assert!(!o.is_ejected(Instant::now()));
}

#[test]
fn concurrent_ejections_eject_once() {
    let c = config(Some(1), None);
    let o = std::sync::Arc::new(Outlier::new());
    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let o = std::sync::Arc::clone(&o);
            std::thread::spawn(move || o.eject(&c, t))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), secs(30));
    }
    assert_eq!(o.ejections(), 1);
}
