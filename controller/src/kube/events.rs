//! Kubernetes Events for accepted and rejected changes, rate-limited.
//!
//! Published with kube's [`Recorder`] (`events.k8s.io/v1`; repeats of the same event within
//! six minutes become a series, patched instead of created). On top of that a [`Limiter`]
//! lets through at most one event per object and reason per [`PER_OBJECT`], and at most
//! [`BURST`] events at once refilled at [`PER_SECOND`] across all objects, so a flapping
//! object cannot flood the API server.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;
use weir_crds::Condition;

use crate::index::{Kind, ObjectRef};
use crate::kube::convert::api_version;

/// At most one event per object and reason in this window.
pub const PER_OBJECT: Duration = Duration::from_secs(60);
/// Global burst of events.
pub const BURST: f64 = 20.0;
/// Global refill rate, events per second.
pub const PER_SECOND: f64 = 1.0;

/// Per-object and global event rate limits.
#[derive(Debug)]
pub struct Limiter {
    last: HashMap<(Kind, ObjectRef, String), Instant>,
    tokens: f64,
    refilled: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { last: HashMap::new(), tokens: BURST, refilled: Instant::now() }
    }
}

impl Limiter {
    /// Whether an event for `(kind, key, reason)` may be sent now (and records it if so).
    pub fn allow(&mut self, kind: Kind, key: &ObjectRef, reason: &str) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        self.refilled = now;
        let id = (kind, key.clone(), reason.to_owned());
        if self.last.get(&id).is_some_and(|t| now.duration_since(*t) < PER_OBJECT) {
            return false;
        }
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        self.last.retain(|_, t| now.duration_since(*t) < PER_OBJECT);
        self.last.insert(id, now);
        true
    }
}

/// Publishes the events of the status writer.
pub struct Events {
    recorder: Recorder,
    limiter: Limiter,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("limiter", &self.limiter).finish_non_exhaustive()
    }
}

impl Events {
    /// Events reported as controller `weir`, instance `identity`.
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter =
            Reporter { controller: "weir".to_owned(), instance: Some(identity.to_owned()) };
        Events { recorder: Recorder::new(client, reporter), limiter: Limiter::default() }
    }

    /// Reports a change of the `Accepted` condition: `Normal`/`Accepted`, or
    /// `Warning`/`Invalid` with the message.
    pub async fn accepted(
        &mut self,
        kind: Kind,
        key: &ObjectRef,
        uid: Option<&str>,
        condition: &Condition,
    ) {
        let accepted = condition.status == "True";
        let reason = if accepted { "Accepted" } else { condition.reason.as_str() };
        if !self.limiter.allow(kind, key, reason) {
            tracing::debug!(kind = kind.as_str(), object = %key, reason, "event rate-limited");
            return;
        }
        let generation = condition.observed_generation.unwrap_or(0);
        let note = if accepted {
            format!("generation {generation} accepted")
        } else {
            format!("generation {generation} rejected: {}", condition.message)
        };
        let event = Event {
            type_: if accepted { EventType::Normal } else { EventType::Warning },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Compile".to_owned(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some(api_version(kind)),
            kind: Some(kind.as_str().to_owned()),
            namespace: Some(key.namespace.to_string()),
            name: Some(key.name.to_string()),
            uid: uid.map(str::to_owned),
            ..ObjectReference::default()
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(kind = kind.as_str(), object = %key, "publishing an event: {e}");
        }
    }
}

impl Events {
    /// Reports an upstream event (a circuit opened or closed) on its BackendPolicy:
    /// `Warning`/`CircuitOpened` naming the backend, the failures and `openFor`, or
    /// `Normal`/`CircuitClosed`. Events of backends without a policy object are not sent.
    pub async fn upstream(
        &mut self,
        event: &weir_dataplane::upstream::registry::UpstreamEvent,
        uid: Option<&str>,
    ) {
        let d = crate::upstream_events::describe(event);
        let Some(key) = d.policy else { return };
        if !self.limiter.allow(Kind::BackendPolicy, &key, d.reason) {
            tracing::debug!(object = %key, reason = d.reason, "event rate-limited");
            return;
        }
        let event = Event {
            type_: if d.warning { EventType::Warning } else { EventType::Normal },
            reason: d.reason.to_owned(),
            note: Some(d.note.chars().take(1000).collect()),
            action: "Proxy".to_owned(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some(api_version(Kind::BackendPolicy)),
            kind: Some(Kind::BackendPolicy.as_str().to_owned()),
            namespace: Some(key.namespace.to_string()),
            name: Some(key.name.to_string()),
            uid: uid.map(str::to_owned),
            ..ObjectReference::default()
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(object = %key, "publishing an event: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_event_per_object_and_reason_per_window_and_a_global_cap() {
        let mut limiter = Limiter::default();
        let a = ObjectRef::new("ns", "a");
        assert!(limiter.allow(Kind::Route, &a, "Invalid"));
        assert!(!limiter.allow(Kind::Route, &a, "Invalid"));
        assert!(limiter.allow(Kind::Route, &a, "Accepted"));
        tokio::time::advance(PER_OBJECT).await;
        assert!(limiter.allow(Kind::Route, &a, "Invalid"));

        let mut limiter = Limiter::default();
        let sent = (0..100)
            .filter(|i| {
                limiter.allow(Kind::Plugin, &ObjectRef::new("ns", format!("p{i}")), "Invalid")
            })
            .count();
        assert_eq!(sent, BURST as usize);
        tokio::time::advance(Duration::from_secs(3)).await;
        let more = (100..200)
            .filter(|i| {
                limiter.allow(Kind::Plugin, &ObjectRef::new("ns", format!("p{i}")), "Invalid")
            })
            .count();
        assert_eq!(more, 3);
    }
}
