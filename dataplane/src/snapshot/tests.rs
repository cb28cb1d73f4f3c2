//! Unit tests of the snapshot's types: weighted backends, endpoints, shared settings, sizes.

use super::*;

fn wb(weights: &[u32]) -> WeightedBackends {
    WeightedBackends::new(
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| WeightedBackend { id: BackendId(i as u32), weight: *w })
            .collect(),
    )
}

#[test]
fn schedule_respects_weights_exactly_per_cycle() {
    let b = wb(&[90, 10]);
    let mut counts = [0u32; 2];
    for _ in 0..1000 {
        counts[b.pick().map(|id| id.0 as usize).unwrap_or(9)] += 1;
    }
    assert_eq!(counts, [900, 100]);
}

#[test]
fn zero_weights_get_nothing_and_all_zero_picks_none() {
    let b = wb(&[0, 3]);
    for _ in 0..10 {
        assert_eq!(b.pick(), Some(BackendId(1)));
    }
    assert_eq!(wb(&[0, 0]).pick(), None);
    assert_eq!(wb(&[]).pick(), None);
}

#[test]
fn huge_weights_are_scaled_not_dropped() {
    let b = wb(&[1_000_000, 1]);
    let mut seen_small = false;
    for _ in 0..2000 {
        if b.pick() == Some(BackendId(1)) {
            seen_small = true;
        }
    }
    assert!(seen_small);
}

#[test]
fn round_robin_over_endpoints() {
    let key = BackendKey { namespace: "d".into(), service: "s".into(), port: 80 };
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
    let c: SocketAddr = "127.0.0.1:2".parse().unwrap_or_else(|_| unreachable!());
    let b = Backend::new(key.clone(), vec![a, c]);
    assert_eq!(b.next_endpoint(), Some(a));
    assert_eq!(b.next_endpoint(), Some(c));
    assert_eq!(b.next_endpoint(), Some(a));
    assert_eq!(Backend::unresolved(key, "gone").next_endpoint(), None);
}

/// Memory per Route (issue 17, target 2 KiB): every Route has at least one rule and one
/// match, so these sizes are paid 100k times on a large table. A field added inline here
/// should be a conscious choice (box what most rules do not have).
#[test]
fn a_rule_and_a_match_stay_small() {
    assert!(std::mem::size_of::<Rule>() <= 152, "Rule: {}", std::mem::size_of::<Rule>());
    assert!(
        std::mem::size_of::<RequestMatch>() <= 32,
        "RequestMatch: {}",
        std::mem::size_of::<RequestMatch>()
    );
}

#[test]
fn default_timeouts_and_no_retries_are_one_shared_allocation() {
    assert!(Arc::ptr_eq(&Timeouts::default().shared(), &Timeouts::default().shared()));
    assert!(Arc::ptr_eq(&RetryPolicy::default().shared(), &RetryPolicy::default().shared()));
    let custom = Timeouts { idle: Some(Duration::from_secs(1)), ..Timeouts::default() };
    assert_eq!(*custom.shared(), custom);
    assert!(!Arc::ptr_eq(&custom.shared(), &Timeouts::default().shared()));
}
