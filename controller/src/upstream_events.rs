//! What the data plane's upstream layer reports (a circuit opened or closed), turned into
//! a log line (both modes) and, in Kubernetes mode, an Event on the BackendPolicy
//! ([`crate::kube::events::Events::upstream`], written by the lease holder).

use tokio::sync::{broadcast, watch};
use weir_dataplane::upstream::registry::UpstreamEvent;

use crate::index::ObjectRef;

/// An upstream event as an Event would carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The BackendPolicy the event is about (`None`: no policy object, log only).
    pub policy: Option<ObjectRef>,
    /// `Warning` (true) or `Normal`.
    pub warning: bool,
    /// `CircuitOpened` or `CircuitClosed`.
    pub reason: &'static str,
    /// The human-readable note.
    pub note: String,
}

/// Describes an upstream event.
pub fn describe(event: &UpstreamEvent) -> Described {
    let policy_ref = |p: &Option<weir_dataplane::ObjectKey>| {
        p.as_ref().map(|k| ObjectRef::new(&*k.namespace, &*k.name))
    };
    match event {
        UpstreamEvent::CircuitOpened { backend, policy, failures, open_for } => Described {
            policy: policy_ref(policy),
            warning: true,
            reason: "CircuitOpened",
            note: format!(
                "circuit of backend {backend} opened after {failures} failures within the \
                 window: requests get the fallback for {open_for:?}, then probes decide"
            ),
        },
        UpstreamEvent::CircuitClosed { backend, policy } => Described {
            policy: policy_ref(policy),
            warning: false,
            reason: "CircuitClosed",
            note: format!("circuit of backend {backend} closed: probes succeeded"),
        },
    }
}

/// Logs an upstream event: an opened circuit at warn, a closed one at info.
pub fn log(event: &UpstreamEvent) {
    let d = describe(event);
    let policy = d.policy.as_ref().map(ToString::to_string).unwrap_or_default();
    if d.warning {
        tracing::warn!(reason = d.reason, policy = %policy, "{}", d.note);
    } else {
        tracing::info!(reason = d.reason, policy = %policy, "{}", d.note);
    }
}

/// Logs every upstream event of `events` until `stop` turns true (standalone mode).
pub async fn log_all(
    mut events: broadcast::Receiver<UpstreamEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            event = events.recv() => match event {
                Ok(event) => log(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "upstream events dropped (the log fell behind)");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use weir_dataplane::{BackendKey, ObjectKey};

    use super::*;

    #[test]
    fn an_opened_circuit_is_a_warning_on_its_policy_naming_backend_failures_and_open_for() {
        let backend = BackendKey { namespace: "shop".into(), service: "orders".into(), port: 80 };
        let d = describe(&UpstreamEvent::CircuitOpened {
            backend: backend.clone(),
            policy: Some(ObjectKey::new("shop", "orders-policy")),
            failures: 5,
            open_for: Duration::from_secs(30),
        });
        assert_eq!(d.policy, Some(ObjectRef::new("shop", "orders-policy")));
        assert!(d.warning);
        assert_eq!(d.reason, "CircuitOpened");
        for needle in ["shop/orders:80", "5 failures", "30s"] {
            assert!(d.note.contains(needle), "{} lacks {needle}", d.note);
        }
        let d = describe(&UpstreamEvent::CircuitClosed { backend, policy: None });
        assert_eq!((d.policy, d.warning, d.reason), (None, false, "CircuitClosed"));
    }

    #[tokio::test]
    async fn log_all_ends_on_stop() {
        let (tx, rx) = broadcast::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(log_all(rx, stop_rx));
        let backend = BackendKey { namespace: "a".into(), service: "b".into(), port: 1 };
        tx.send(UpstreamEvent::CircuitClosed { backend, policy: None }).unwrap();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
