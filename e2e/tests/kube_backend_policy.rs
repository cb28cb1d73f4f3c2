//! Kubernetes mode and BackendPolicies: weir's controller in-process
//! (`weir_controller::kube::run`) against the in-memory API server double, with a real data
//! plane listener and a real echo origin. A policy applied live is attached to its
//! Service's backends and gets `Accepted=True` at its generation; a second policy for the
//! same Service is `Conflicted`; a policy for a missing Service is `BackendNotFound`; a
//! missing CA Secret is `SecretNotFound` and is watched by name, so creating it is seen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};
use tokio::sync::watch;
use weir_controller::kube::lease::LeaseConfig;
use weir_controller::kube::{KubeOptions, run};
use weir_controller::publish::Shared;
use weir_dataplane::DataPlane;
use weir_e2e::apiserver::ApiServer;
use weir_e2e::kubectl::api_for;
use weir_e2e::{EchoOrigin, http_get, poll_until, service_yaml};

const LIMIT: Duration = Duration::from_secs(10);

async fn apply(client: &Client, value: Value) {
    weir_e2e::kubectl::apply(client, &value, "test").await.unwrap();
}

async fn get(client: &Client, kind: &str, name: &str) -> Option<Value> {
    let api = api_for(
        client,
        &json!({"apiVersion": "weir.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}),
    );
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

/// Polls until the BackendPolicy's condition `type_` has `status` and `reason` at its
/// current generation.
async fn wait_policy(
    client: &Client,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Value {
    let what = format!("BackendPolicy {name} {type_}={status} {reason}");
    poll_until(LIMIT, &what, || async {
        let Some(obj) = get(client, "BackendPolicy", name).await else { return Ok(None) };
        let ok = obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            && condition(&obj, type_)
                .is_some_and(|c| c["status"] == status && c["reason"] == reason);
        Ok(ok.then_some(obj))
    })
    .await
    .unwrap()
}

fn policy(name: &str, service: &str, extra: Value) -> Value {
    let mut spec = json!({"targetRefs": [{"kind": "Service", "name": service}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "BackendPolicy",
           "metadata": {"name": name}, "spec": spec})
}

/// The source of the policy attached to the live backend of `service`.
fn live_policy(shared: &Shared, service: &str) -> Option<(String, i64)> {
    let snapshot = shared.dataplane.current();
    let backend = snapshot.backends.backends.iter().find(|b| &*b.key.service == service)?;
    let policy = backend.policy.as_ref()?;
    let source = policy.source.as_ref()?;
    Some((source.name.to_string(), policy.generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_policy_is_accepted_attached_conflicted_and_its_refs_resolved() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let orders = EchoOrigin::start("orders").await.unwrap();
    for doc in weir_e2e::kubectl::yaml_docs(&service_yaml("orders", orders.addr.port())).unwrap() {
        apply(&client, doc).await;
    }
    apply(
        &client,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route", "metadata": {"name": "shop"},
               "spec": {"hosts": ["shop.test"], "rules": [{"backends": [{"service": "orders", "port": 80}]}]}}),
    )
    .await;

    let dataplane = DataPlane::new();
    let shared = Shared::new(Arc::clone(&dataplane));
    let mut options = KubeOptions::new("weir-system", Vec::new());
    options.lease = LeaseConfig {
        duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(300),
        retry_every: Duration::from_millis(200),
        ..LeaseConfig::new("one")
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(server.client(), options, Arc::clone(&shared), stop_rx.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http: SocketAddr = listener.local_addr().unwrap();
    let mut rx = stop_rx;
    tokio::spawn(weir_dataplane::serve(listener, dataplane, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));

    // Applied live: Accepted and ResolvedRefs at its generation, attached to the backend.
    apply(&client, policy("a-first", "orders", json!({"circuitBreaker": {"failureThreshold": 3}})))
        .await;
    let first = wait_policy(&client, "a-first", "Accepted", "True", "Accepted").await;
    assert_eq!(first["status"]["observedGeneration"], 1, "{first}");
    assert_eq!(condition(&first, "ResolvedRefs").unwrap()["status"], "True", "{first}");
    assert!(condition(&first, "Accepted").unwrap()["lastTransitionTime"].is_string());
    let shared_view = Arc::clone(&shared);
    poll_until(LIMIT, "policy attached to the orders backend", || {
        let live = live_policy(&shared_view, "orders");
        async move { Ok((live == Some(("a-first".to_owned(), 1))).then_some(())) }
    })
    .await
    .unwrap();
    poll_until(LIMIT, "shop.test served", || async move {
        let reply = http_get(http, "shop.test", "/").await?;
        Ok((reply.status == 200).then_some(()))
    })
    .await
    .unwrap();

    // A second policy for the same Service: the younger one is Conflicted.
    apply(&client, policy("b-second", "orders", json!({"retry": {"budgetPercent": 10}}))).await;
    let second = wait_policy(&client, "b-second", "Accepted", "False", "Conflicted").await;
    let message = condition(&second, "Accepted").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("BackendPolicy default/a-first"), "{message}");
    assert_eq!(live_policy(&shared, "orders"), Some(("a-first".to_owned(), 1)));

    // A spec change of the winner: a new generation, observed and attached.
    apply(&client, policy("a-first", "orders", json!({"circuitBreaker": {"failureThreshold": 4}})))
        .await;
    poll_until(LIMIT, "a-first generation 2 observed", || async {
        let obj = get(&client, "BackendPolicy", "a-first").await.unwrap();
        Ok((obj["status"]["observedGeneration"] == 2).then_some(()))
    })
    .await
    .unwrap();
    let shared_view = Arc::clone(&shared);
    poll_until(LIMIT, "generation 2 attached", || {
        let live = live_policy(&shared_view, "orders");
        async move { Ok((live == Some(("a-first".to_owned(), 2))).then_some(())) }
    })
    .await
    .unwrap();

    // A missing Service, and a missing CA Secret that then appears.
    apply(&client, policy("ghost", "ghost", json!({}))).await;
    let ghost = wait_policy(&client, "ghost", "ResolvedRefs", "False", "BackendNotFound").await;
    let message = condition(&ghost, "ResolvedRefs").unwrap()["message"].to_string();
    assert!(message.contains("spec.targetRefs[0]: service \\\"ghost\\\" not found"), "{message}");
    apply(&client, policy("tls", "ghost", json!({"tls": {"caSecretRef": {"name": "ghost-ca"}}})))
        .await;
    wait_policy(&client, "tls", "ResolvedRefs", "False", "SecretNotFound").await;
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ghost-ca"},
               "stringData": {"ca.crt": "not a certificate"}}),
    )
    .await;
    // The Secret is watched by name: once seen, only the target Service is missing.
    wait_policy(&client, "tls", "ResolvedRefs", "False", "BackendNotFound").await;

    // /debug/status lists the policies too.
    let view = shared.status.load();
    let kinds: Vec<&str> = view.objects.iter().map(|o| o.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "BackendPolicy").count(), 4, "{kinds:?}");

    let _ = stop.send(true);
    tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_circuit_is_a_warning_event_on_the_backend_policy() {
    use weir_dataplane::upstream::registry::UpstreamEvent;
    use weir_dataplane::{BackendKey, ObjectKey};

    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    apply(&client, policy("orders", "orders", json!({}))).await;
    let uid = get(&client, "BackendPolicy", "orders").await.unwrap()["metadata"]["uid"]
        .as_str()
        .map(str::to_owned);
    let mut events = weir_controller::kube::events::Events::new(client.clone(), "one");
    let backend = BackendKey { namespace: "default".into(), service: "orders".into(), port: 80 };
    let opened = UpstreamEvent::CircuitOpened {
        backend: backend.clone(),
        policy: Some(ObjectKey::new("default", "orders")),
        failures: 5,
        open_for: Duration::from_secs(30),
    };
    events.upstream(&opened, uid.as_deref()).await;
    // No policy object: nothing to attach an Event to.
    events.upstream(&UpstreamEvent::CircuitClosed { backend, policy: None }, None).await;

    let api = api_for(
        &client,
        &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"}}),
    );
    let list = api.list(&Default::default()).await.unwrap();
    let all: Vec<Value> = list.items.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    assert_eq!(all.len(), 1, "{all:?}");
    let event = &all[0];
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], "CircuitOpened");
    assert_eq!(event["regarding"]["kind"], "BackendPolicy");
    assert_eq!(event["regarding"]["name"], "orders");
    assert_eq!(event["regarding"]["uid"].as_str(), uid.as_deref());
    let note = event["note"].as_str().unwrap();
    for needle in ["default/orders:80", "5 failures", "30s"] {
        assert!(note.contains(needle), "{note} lacks {needle}");
    }
}
