//! Tests of the upstream registry: state across binds, slow start, the breaker across
//! policy changes, maxEjectionPercent and expiry, active transitions and panic mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::upstream::policy::{CircuitBreaker, Fallback};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn key() -> BackendKey {
    BackendKey { namespace: "ns".into(), service: "svc".into(), port: 80 }
}

fn table(endpoints: &[u16], policy: Option<Arc<BackendPolicy>>) -> BackendTable {
    let mut backend = Backend::new(key(), endpoints.iter().map(|p| addr(*p)).collect());
    if let Some(policy) = policy {
        backend = backend.with_policy(policy);
    }
    BackendTable { backends: vec![backend] }
}

fn breaker(failure_threshold: u32) -> CircuitBreaker {
    CircuitBreaker {
        failure_threshold,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(10),
        success_threshold: 1,
        max_connections: None,
        max_pending_requests: None,
        max_parallel_requests: None,
        fallback: Fallback {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            body: None,
            content_type: http::HeaderValue::from_static("application/json"),
        },
    }
}

fn find(rt: &ServiceRuntime, port: u16) -> Option<Arc<EndpointState>> {
    rt.endpoints().all.iter().find(|e| e.addr == addr(port)).cloned()
}

#[tokio::test(start_paused = true)]
async fn staying_endpoints_keep_their_state_and_new_ones_slow_start() {
    let registry = UpstreamRegistry::default();
    let policy = Arc::new(BackendPolicy {
        slow_start: Some(Duration::from_secs(30)),
        panic_threshold: 50,
        ..BackendPolicy::default()
    });
    let first = table(&[1, 2], Some(Arc::clone(&policy)));
    registry.bind(&first);
    let rt = registry.get(&key()).unwrap();
    assert!(Arc::ptr_eq(&rt, first.backends[0].runtime.get().unwrap()));
    let a = find(&rt, 1).unwrap();
    a.begin();
    // The first endpoints of a backend never slow start.
    assert!(!a.slow_start);
    let second = table(&[1, 3], Some(policy));
    registry.bind(&second);
    assert!(Arc::ptr_eq(&rt, &registry.get(&key()).unwrap()));
    assert!(Arc::ptr_eq(&a, &find(&rt, 1).unwrap()));
    assert_eq!(a.in_flight(), 1);
    assert!(find(&rt, 2).is_none());
    assert!(find(&rt, 3).unwrap().slow_start);
    assert!(rt.endpoints().slow_start);
    tokio::time::advance(Duration::from_secs(31)).await;
    rt.rebuild();
    assert!(!rt.endpoints().slow_start);
    // Gone from the snapshot: gone from the registry.
    registry.bind(&BackendTable::default());
    assert!(registry.get(&key()).is_none());
}

#[tokio::test(start_paused = true)]
async fn without_slow_start_new_endpoints_get_their_full_share() {
    let registry = UpstreamRegistry::default();
    registry.bind(&table(&[1], None));
    registry.bind(&table(&[1, 2], None));
    let rt = registry.get(&key()).unwrap();
    assert!(!find(&rt, 2).unwrap().slow_start);
    assert_eq!(rt.endpoints().usable.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_survives_unrelated_policy_changes_only() {
    let registry = UpstreamRegistry::default();
    let policy =
        BackendPolicy { breaker: Some(breaker(5)), panic_threshold: 50, ..Default::default() };
    registry.bind(&table(&[1], Some(Arc::new(policy.clone()))));
    let rt = registry.get(&key()).unwrap();
    let before = rt.config().breaker.clone().unwrap();
    // Same content, new Arc: nothing changes.
    registry.bind(&table(&[1], Some(Arc::new(policy.clone()))));
    assert!(Arc::ptr_eq(&before, rt.config().breaker.as_ref().unwrap()));
    // Another balancer: the breaker stays.
    let other_lb = BackendPolicy { load_balancer: LoadBalancer::Random, ..policy.clone() };
    registry.bind(&table(&[1], Some(Arc::new(other_lb.clone()))));
    assert!(Arc::ptr_eq(&before, rt.config().breaker.as_ref().unwrap()));
    assert_eq!(rt.config().policy.as_ref().unwrap().load_balancer, LoadBalancer::Random);
    // Another breaker: a new circuit.
    let other_breaker = BackendPolicy { breaker: Some(breaker(9)), ..other_lb };
    registry.bind(&table(&[1], Some(Arc::new(other_breaker))));
    assert!(!Arc::ptr_eq(&before, rt.config().breaker.as_ref().unwrap()));
    // No policy: no breaker, still a runtime.
    registry.bind(&table(&[1], None));
    assert!(rt.config().breaker.is_none());
    assert!(Arc::ptr_eq(&rt, &registry.get(&key()).unwrap()));
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_limits_passive_ejections_and_they_expire() {
    let registry = UpstreamRegistry::default();
    let passive = OutlierDetection {
        consecutive_5xx: Some(1),
        consecutive_gateway_errors: None,
        base_ejection_time: Duration::from_secs(10),
        max_ejection_percent: 50,
    };
    let policy = Arc::new(BackendPolicy {
        passive: Some(passive),
        panic_threshold: 0,
        ..BackendPolicy::default()
    });
    registry.bind(&table(&[1, 2, 3], Some(policy)));
    let rt = registry.get(&key()).unwrap();
    let now = Instant::now();
    for port in [1, 2, 3] {
        rt.record_outlier(&find(&rt, port).unwrap(), &passive, Outcome::Status5xx, now);
    }
    // 50% of 3: one ejection at a time.
    assert_eq!(rt.endpoints().usable.len(), 2);
    assert_eq!(rt.endpoint_states(now), [("healthy", 2), ("ejected", 1), ("unhealthy", 0)]);
    // Expiry is noticed by the next request after it.
    rt.expire_ejections(now + Duration::from_secs(5));
    assert_eq!(rt.endpoints().usable.len(), 2);
    tokio::time::advance(Duration::from_secs(11)).await;
    rt.expire_ejections(Instant::now());
    assert_eq!(rt.endpoints().usable.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn active_health_transitions_rebuild_the_usable_set_and_panic_past_the_threshold() {
    let registry = UpstreamRegistry::default();
    let policy = Arc::new(BackendPolicy { panic_threshold: 50, ..BackendPolicy::default() });
    registry.bind(&table(&[1, 2, 3], Some(policy)));
    let rt = registry.get(&key()).unwrap();
    rt.set_active_health(&find(&rt, 1).unwrap(), false);
    assert_eq!(rt.endpoints().usable.len(), 2);
    assert!(!rt.endpoints().panic);
    rt.set_active_health(&find(&rt, 2).unwrap(), false);
    // 1 of 3 usable is under 50%: every endpoint is used.
    assert!(rt.endpoints().panic);
    assert_eq!(rt.endpoints().usable.len(), 3);
    rt.set_active_health(&find(&rt, 1).unwrap(), true);
    assert!(!rt.endpoints().panic);
    assert_eq!(rt.endpoints().usable.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_table_republished_after_its_backend_left_is_bound_again() {
    let registry = UpstreamRegistry::default();
    let first = table(&[1, 2], None);
    registry.bind(&first);
    let rt = registry.get(&key()).unwrap();
    registry.bind(&BackendTable::default());
    assert!(rt.retired.load(Ordering::Relaxed));
    registry.bind(&first);
    assert!(Arc::ptr_eq(&rt, &registry.get(&key()).unwrap()));
    assert!(!rt.retired.load(Ordering::Relaxed));
    assert_eq!(rt.endpoints().usable.len(), 2);
}
