//! What `/debug/backends` and the gauges of `/metrics` read from a [`ServiceRuntime`]:
//! each endpoint's health, the circuit's state, and the JSON of one backend.

use tokio::time::Instant;

use super::{EndpointState, ServiceRuntime};
use crate::upstream::breaker::{Breaker, CircuitState};
use crate::upstream::policy::LoadBalancer;

impl ServiceRuntime {
    /// Endpoints by state (healthy, ejected, unhealthy) at `now`.
    pub fn endpoint_states(&self, now: Instant) -> [(&'static str, usize); 3] {
        let set = self.endpoints.load();
        let (mut healthy, mut ejected, mut unhealthy) = (0, 0, 0);
        for e in set.all.iter() {
            match endpoint_health(e, now) {
                "ejected" => ejected += 1,
                "unhealthy" => unhealthy += 1,
                _ => healthy += 1,
            }
        }
        [("healthy", healthy), ("ejected", ejected), ("unhealthy", unhealthy)]
    }

    /// The circuit's state at `now`, when the policy has a breaker.
    pub fn circuit_state(&self, now: Instant) -> Option<CircuitState> {
        self.config.load().breaker.as_ref().map(|b| b.state(now))
    }

    pub(super) fn describe(&self, now: Instant) -> serde_json::Value {
        let config = self.config.load_full();
        let policy = config.policy.as_deref();
        let set = self.endpoints.load();
        let slow_window = policy.and_then(|p| p.slow_start);
        let endpoints: Vec<serde_json::Value> = set
            .all
            .iter()
            .map(|e| {
                let ejected_for = e
                    .outlier
                    .ejected_until(now)
                    .map(|until| until.saturating_duration_since(now).as_millis() as u64);
                let slow = slow_window.is_some_and(|w| {
                    crate::upstream::balance::slow_start_share(e, w, now).is_some()
                });
                serde_json::json!({
                    "address": e.addr.to_string(),
                    "health": endpoint_health(e, now),
                    "inFlight": e.in_flight(),
                    "ejections": e.outlier.ejections(),
                    "ejectedForMs": ejected_for,
                    "slowStart": slow,
                })
            })
            .collect();
        let load_balancer = match policy.map(|p| &p.load_balancer) {
            None | Some(LoadBalancer::RoundRobin) => "RoundRobin",
            Some(LoadBalancer::LeastRequest) => "LeastRequest",
            Some(LoadBalancer::Random) => "Random",
            Some(LoadBalancer::ConsistentHash(_)) => "ConsistentHash",
        };
        let circuit = config.breaker.as_ref().map(
            |b| serde_json::json!({ "state": b.state(now), "failures": breaker_failures(b, now) }),
        );
        serde_json::json!({
            "backend": self.key.to_string(),
            "policy": policy.and_then(|p| p.source.as_ref()).map(ToString::to_string),
            "protocol": config.protocol,
            "tls": config.transport.tls.is_some(),
            "loadBalancer": load_balancer,
            "panic": set.panic,
            "circuit": circuit,
            "endpoints": endpoints,
        })
    }
}

/// Failures counted in the breaker's window while closed; the threshold once open (the
/// window that opened it was full).
fn breaker_failures(breaker: &Breaker, now: Instant) -> u32 {
    match breaker.state(now) {
        CircuitState::Closed => breaker.failures(now),
        // Open (or probing): the window that opened it was full.
        CircuitState::Open | CircuitState::HalfOpen => breaker.config().failure_threshold,
    }
}

/// `healthy`, `unhealthy` (failing active checks) or `ejected` (outlier detection).
fn endpoint_health(endpoint: &EndpointState, now: Instant) -> &'static str {
    if !endpoint.active_healthy() {
        "unhealthy"
    } else if endpoint.outlier.is_ejected(now) {
        "ejected"
    } else {
        "healthy"
    }
}
