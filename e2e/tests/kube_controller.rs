//! Controller integration: weir's Kubernetes mode in-process (`weir_controller::kube::run`)
//! against the in-memory API server double, with real data-plane listeners and real echo
//! origins: objects flow into the snapshot, EndpointSlice churn takes the endpoints-only
//! path, watches resume after errors, statuses are written once per change and never on a
//! no-op, only the lease holder writes, and every API call is listed in `API_CALLS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_controller::kube::lease::LeaseConfig;
use weir_controller::kube::rbac;
use weir_controller::kube::{KubeOptions, run};
use weir_controller::publish::Shared;
use weir_dataplane::DataPlane;
use weir_e2e::apiserver::{ApiRequest, ApiServer};
use weir_e2e::kubectl::api_for;
use weir_e2e::{EchoOrigin, http_get, poll_until, prefix_route_yaml, service_yaml};

const LIMIT: Duration = Duration::from_secs(10);

/// The documents of a multi-document YAML text.
fn docs(yaml: &str) -> Vec<Value> {
    weir_e2e::kubectl::yaml_docs(yaml).unwrap()
}

/// The document of `kind` in `yaml`.
fn doc_of(yaml: &str, kind: &str) -> Value {
    docs(yaml).into_iter().find(|d| d["kind"] == kind).unwrap()
}

/// Server-side applies every document of `yaml` (like `kubectl apply --server-side`).
async fn apply_yaml(client: &Client, yaml: &str) {
    for value in docs(yaml) {
        apply(client, value).await;
    }
}

async fn apply(client: &Client, value: Value) {
    weir_e2e::kubectl::apply(client, &value, "test").await.unwrap();
}

async fn delete(client: &Client, api_version: &str, kind: &str, name: &str) {
    let api = api_for(
        client,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}),
    );
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

async fn get(client: &Client, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    let api = api_for(
        client,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}),
    );
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

fn route_json(name: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route", "metadata": {"name": name},
           "spec": {"hosts": [host], "rules": [{"backends": [{"service": service, "port": 80}]}]}})
}

/// The condition `type_` of an object's status.
fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

/// One in-process controller with its own data plane listener.
struct Controller {
    shared: Arc<Shared>,
    http: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Controller {
    async fn start(server: &ApiServer, identity: &str) -> Controller {
        Self::start_in(server, identity, Vec::new()).await
    }

    async fn start_in(server: &ApiServer, identity: &str, namespaces: Vec<String>) -> Controller {
        Self::start_with(server, identity, KubeOptions::new("weir-system", namespaces)).await
    }

    async fn start_with(
        server: &ApiServer,
        identity: &str,
        mut options: KubeOptions,
    ) -> Controller {
        let dataplane = DataPlane::new();
        let shared = Shared::new(Arc::clone(&dataplane));
        options.lease = LeaseConfig {
            duration: Duration::from_secs(3),
            renew_every: Duration::from_millis(300),
            retry_every: Duration::from_millis(200),
            ..LeaseConfig::new(identity)
        };
        let (stop, stop_rx) = watch::channel(false);
        let task =
            tokio::spawn(run(server.client(), options, Arc::clone(&shared), stop_rx.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let mut rx = stop_rx;
        tokio::spawn(weir_dataplane::serve(listener, dataplane, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Controller { shared, http, stop, task }
    }

    async fn wait_ready(&self) {
        let shared = Arc::clone(&self.shared);
        poll_until(LIMIT, "controller ready", || {
            let ready = shared.status.load().ready;
            async move { Ok(ready.then_some(())) }
        })
        .await
        .unwrap();
    }

    /// Polls until a request for `host` is answered by origin `backend`.
    async fn wait_backend(&self, host: &str, backend: &str) {
        let addr = self.http;
        poll_until(LIMIT, &format!("{host} served by {backend}"), || async move {
            let reply = http_get(addr, host, "/").await?;
            Ok((reply.status == 200 && reply.json()?["backend"] == backend).then_some(()))
        })
        .await
        .unwrap();
    }

    async fn status_of(&self, host: &str) -> u16 {
        http_get(self.http, host, "/").await.unwrap().status
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(LIMIT, self.task).await.unwrap().unwrap();
    }
}

/// Polls the double until the object's condition `type_` has `status` at its generation.
async fn wait_condition(
    client: &Client,
    kind: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> Value {
    poll_until(LIMIT, &format!("{kind} {name} {type_}={status}"), || async {
        let Some(obj) = get(client, "weir.dev/v1alpha1", kind, name).await else { return Ok(None) };
        let generation = obj["metadata"]["generation"].clone();
        let ok = obj["status"]["observedGeneration"] == generation
            && condition(&obj, type_).is_some_and(|c| c["status"] == status);
        Ok(ok.then_some(obj))
    })
    .await
    .unwrap()
}

fn status_patches(server: &ApiServer, resource: &str, name: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.resource == resource
                && r.subresource.as_deref() == Some("status")
                && r.name.as_deref() == Some(name)
                && r.verb == "patch"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_flow_into_the_snapshot_and_statuses_are_written_once_per_change() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let orders = EchoOrigin::start("orders").await.unwrap();
    apply_yaml(&client, &service_yaml("orders", orders.addr.port())).await;
    apply(&client, route_json("a", "a.test", "orders")).await;

    let ctl = Controller::start(&server, "one").await;
    ctl.wait_ready().await;
    ctl.wait_backend("a.test", "orders").await;
    let a = wait_condition(&client, "Route", "a", "Programmed", "True").await;
    let accepted_time = condition(&a, "Accepted").unwrap()["lastTransitionTime"].clone();
    assert!(accepted_time.is_string(), "{a}");
    assert_eq!(a["status"]["effectivePlugins"], Value::Null, "no plugins apply: {a}");
    assert_eq!(status_patches(&server, "routes", "a"), 1);
    let patch =
        server.requests().into_iter().find(|r| r.subresource.as_deref() == Some("status")).unwrap();
    assert_eq!(patch.field_manager.as_deref(), Some("weir"));
    assert_eq!(patch.patch_type.as_deref(), Some("application/apply-patch+yaml"));

    // A change that compiles to the same statuses (a Service label) writes nothing; a later
    // real change (a new Plugin) is written, proving the no-op was processed before it.
    let mut svc = doc_of(&service_yaml("orders", orders.addr.port()), "Service");
    svc["metadata"]["labels"] = json!({"touched": "yes"});
    apply(&client, svc).await;
    apply(
        &client,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Plugin", "metadata": {"name": "cors"},
        "spec": {"cors": {"allowOrigins": ["https://app.test"]}}}),
    )
    .await;
    wait_condition(&client, "Plugin", "cors", "Accepted", "True").await;
    assert_eq!(status_patches(&server, "routes", "a"), 1, "no-op wrote a status");

    // A spec change: one more write, observedGeneration 2, Accepted time kept.
    let mut a2 = route_json("a", "a.test", "orders");
    a2["spec"]["plugins"] = json!(["cors"]);
    apply(&client, a2).await;
    let a = poll_until(LIMIT, "route a generation 2 with cors", || async {
        let obj = get(&client, "weir.dev/v1alpha1", "Route", "a").await.unwrap();
        Ok((obj["status"]["observedGeneration"] == 2
            && obj["status"]["effectivePlugins"].is_array())
        .then_some(obj))
    })
    .await;
    let Ok(a) = a else {
        let obj = get(&client, "weir.dev/v1alpha1", "Route", "a").await;
        panic!(
            "{a:?}: route a is {obj:?}; controller view: {:?}",
            ctl.shared.status.load().objects
        );
    };
    assert_eq!(condition(&a, "Accepted").unwrap()["lastTransitionTime"], accepted_time);
    assert_eq!(a["status"]["effectivePlugins"][0]["type"], "cors", "{a}");
    assert_eq!(status_patches(&server, "routes", "a"), 2);

    // Create, update and delete of each kind reach the data plane.
    let users = EchoOrigin::start("users").await.unwrap();
    apply_yaml(&client, &service_yaml("users", users.addr.port())).await;
    apply(&client, route_json("b", "b.test", "users")).await;
    ctl.wait_backend("b.test", "users").await;
    apply(&client, route_json("b", "b.test", "orders")).await;
    ctl.wait_backend("b.test", "orders").await;
    delete(&client, "weir.dev/v1alpha1", "Route", "b").await;
    let addr = ctl.http;
    poll_until(LIMIT, "route b gone", || async move {
        Ok((http_get(addr, "b.test", "/").await?.status == 404).then_some(()))
    })
    .await
    .unwrap();
    let b_writes = status_patches(&server, "routes", "b");
    // Deleting the Service makes Route a lose its backend (503), and it comes back.
    delete(&client, "v1", "Service", "orders").await;
    poll_until(LIMIT, "a.test without service", || async {
        Ok((ctl.status_of("a.test").await == 503).then_some(()))
    })
    .await
    .unwrap();
    wait_condition(&client, "Route", "a", "ResolvedRefs", "False").await;
    apply_yaml(&client, &service_yaml("orders", orders.addr.port())).await;
    ctl.wait_backend("a.test", "orders").await;
    wait_condition(&client, "Route", "a", "ResolvedRefs", "True").await;
    assert_eq!(
        status_patches(&server, "routes", "b"),
        b_writes,
        "status written for a deleted route"
    );
    ctl.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slice_churn_takes_the_endpoints_only_path_and_watches_resume() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let one = EchoOrigin::start("one").await.unwrap();
    let two = EchoOrigin::start("two").await.unwrap();
    apply_yaml(&client, &service_yaml("svc", one.addr.port())).await;
    apply_yaml(&client, &prefix_route_yaml("r", "/", "svc")).await;
    let ctl = Controller::start(&server, "one").await;
    ctl.wait_ready().await;
    ctl.wait_backend("any.test", "one").await;

    let routes_before = Arc::clone(&ctl.shared.dataplane.current().routes);
    let version_before = ctl.shared.dataplane.current().version;
    let slice = |port: u16| doc_of(&service_yaml("svc", port), "EndpointSlice");
    let started = std::time::Instant::now();
    apply(&client, slice(two.addr.port())).await;
    ctl.wait_backend("any.test", "two").await;
    // Reported, not asserted (no wall-clock assertions): apply → traffic follows.
    eprintln!("EndpointSlice change to traffic: {:?}", started.elapsed());
    let live = ctl.shared.dataplane.current();
    assert!(live.version > version_before);
    assert!(
        Arc::ptr_eq(&routes_before, &live.routes),
        "an EndpointSlice change rebuilt the routes"
    );

    // Watches end: the watchers resume from their resourceVersion.
    server.break_watches();
    apply(&client, slice(one.addr.port())).await;
    ctl.wait_backend("any.test", "one").await;
    // History expired: resuming gets 410 Gone, the watchers re-list.
    server.expire_history();
    server.break_watches();
    apply(&client, slice(two.addr.port())).await;
    ctl.wait_backend("any.test", "two").await;

    // The API server goes away: traffic keeps flowing and /readyz stays ready.
    server.set_available(false);
    for _ in 0..5 {
        assert_eq!(ctl.status_of("any.test").await, 200);
        assert!(ctl.shared.status.load().ready);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.set_available(true);
    apply(&client, slice(one.addr.port())).await;
    // kube's default backoff may wait several seconds after repeated failures.
    poll_until(Duration::from_secs(40), "served by one after the outage", || async {
        let reply = http_get(ctl.http, "any.test", "/").await?;
        Ok((reply.json()?["backend"] == "one").then_some(()))
    })
    .await
    .unwrap();
    ctl.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_status_and_another_takes_over() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    apply(&client, route_json("first", "first.test", "o")).await;
    let a = Controller::start(&server, "replica-a").await;
    a.wait_ready().await;
    let leader_a = Arc::clone(&a.shared);
    poll_until(LIMIT, "a leads", || {
        let l = leader_a.leader();
        async move { Ok((l == Some(true)).then_some(())) }
    })
    .await
    .unwrap();
    let b = Controller::start(&server, "replica-b").await;
    b.wait_ready().await;
    b.wait_backend("first.test", "o").await;
    wait_condition(&client, "Route", "first", "Programmed", "True").await;
    assert_eq!(b.shared.leader(), Some(false), "two leaders");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "weir-system");
    let lease = leases.get("weir-status-writer").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));
    let first_writes = status_patches(&server, "routes", "first");
    assert_eq!(first_writes, 1);

    // The holder stops (releasing the lease): the other takes over and writes.
    a.stop().await;
    let leader_b = Arc::clone(&b.shared);
    poll_until(LIMIT, "b leads", || {
        let l = leader_b.leader();
        async move { Ok((l == Some(true)).then_some(())) }
    })
    .await
    .unwrap();
    apply(&client, route_json("second", "second.test", "o")).await;
    wait_condition(&client, "Route", "second", "Programmed", "True").await;
    b.wait_backend("second.test", "o").await;
    // The new leader found the first route's status current: nothing rewritten.
    assert_eq!(status_patches(&server, "routes", "first"), first_writes);
    let holder = leases.get("weir-status-writer").await.unwrap().spec.unwrap().holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-b"));
    b.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_reported_and_every_api_call_is_listed() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    apply(&client, route_json("ok", "ok.test", "o")).await;
    // A Plugin whose spec does not deserialize (the double, like a cluster without the
    // CRD schema, accepts it).
    apply(
        &client,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Plugin", "metadata": {"name": "bad"},
        "spec": {"rateLimit": {"limit": "lots", "window": "1m"}}}),
    )
    .await;
    // A Consumer referencing a Secret, and an unrelated Secret that must not be read.
    apply(
        &client,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "app"},
        "spec": {"credentials": [{"apiKey": {"secretRef": {"name": "app-key"}}}]}}),
    )
    .await;
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-key"},
        "stringData": {"key": "k-123"}}),
    )
    .await;
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"},
        "stringData": {"key": "nope"}}),
    )
    .await;

    let ctl = Controller::start(&server, "one").await;
    ctl.wait_ready().await;
    ctl.wait_backend("ok.test", "o").await;
    let bad = wait_condition(&client, "Plugin", "bad", "Accepted", "False").await;
    let accepted = condition(&bad, "Accepted").unwrap();
    assert_eq!(accepted["reason"], "Invalid");
    assert!(accepted["message"].as_str().unwrap().contains("spec.rateLimit.limit"), "{accepted}");
    wait_condition(&client, "Consumer", "app", "ResolvedRefs", "True").await;
    let errors = &ctl.shared.status.load().errors;
    assert!(errors.iter().any(|e| e.file == "Plugin default/bad"), "{errors:?}");

    // Fixing the Plugin makes it Accepted; an Event says so for both transitions.
    apply(
        &client,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Plugin", "metadata": {"name": "bad"},
        "spec": {"rateLimit": {"limit": 5, "window": "1m"}}}),
    )
    .await;
    wait_condition(&client, "Plugin", "bad", "Accepted", "True").await;
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event")),
    );
    let list = events.list(&Default::default()).await.unwrap();
    let reasons: BTreeSet<String> = list
        .items
        .iter()
        .filter(|e| e.data["regarding"]["name"] == "bad")
        .filter_map(|e| e.data["reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(reasons, BTreeSet::from(["Invalid".to_owned(), "Accepted".to_owned()]));

    ctl.stop().await;
    let requests: Vec<ApiRequest> = server.requests();
    let mut seen = BTreeSet::new();
    for r in &requests {
        if r.resource.is_empty() {
            continue; // /version, discovery
        }
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.clone(),
        };
        if r.field_manager.as_deref() == Some("test") || r.verb == "delete" {
            continue; // this test's own writes
        }
        seen.insert((r.group.clone(), resource.clone(), r.verb.clone()));
        if r.resource == "secrets" {
            assert!(
                r.label_selector.as_deref() == Some("weir.dev/secret=true")
                    || r.field_selector.as_deref() == Some("metadata.name=app-key"),
                "an unfiltered Secret request: {r:?}"
            );
            assert_ne!(r.name.as_deref(), Some("unrelated"));
        }
    }
    // Drop this test's own reads (gets of weir objects and events).
    seen.retain(|(g, res, v)| {
        !((v == "get" && g == "weir.dev") || (res == "events" && v == "list"))
    });
    for (group, resource, verb) in &seen {
        assert!(
            rbac::allowed(group, resource, verb),
            "not in API_CALLS: {group} {resource} {verb}"
        );
    }
    for expected in [
        ("weir.dev", "routes/status", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        ("events.k8s.io", "events", "create"),
        ("", "secrets", "watch"),
        ("discovery.k8s.io", "endpointslices", "watch"),
    ] {
        let e = (expected.0.to_owned(), expected.1.to_owned(), expected.2.to_owned());
        assert!(seen.contains(&e), "never made {expected:?}: {seen:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespaces_limit_the_watches_and_global_plugins_still_apply() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    for ns in ["team-a", "team-b"] {
        for mut doc in docs(&service_yaml("o", origin.addr.port())) {
            doc["metadata"]["namespace"] = json!(ns);
            apply(&client, doc).await;
        }
        let mut r = route_json("r", &format!("{ns}.test"), "o");
        r["metadata"]["namespace"] = json!(ns);
        apply(&client, r).await;
    }
    apply(&client, json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Plugin",
        "metadata": {"name": "everywhere", "namespace": "weir-system"},
        "spec": {"global": true, "responseHeaders": {"set": [{"name": "x-global", "value": "yes"}]}}}))
    .await;
    let ctl = Controller::start_in(&server, "one", vec!["team-a".to_owned()]).await;
    ctl.wait_ready().await;
    ctl.wait_backend("team-a.test", "o").await;
    // The global Plugin (controller namespace, not in --watch-namespaces) applies.
    let r = poll_until(LIMIT, "route r with the global plugin", || async {
        let api = api_for(
            &client,
            &json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route",
            "metadata": {"namespace": "team-a"}}),
        );
        let obj = serde_json::to_value(api.get("r").await?)?;
        Ok(obj["status"]["effectivePlugins"].is_array().then_some(obj))
    })
    .await
    .unwrap();
    let effective = &r["status"]["effectivePlugins"][0];
    assert_eq!(effective["source"], "weir-system/everywhere", "{r}");
    assert_eq!(effective["level"], "global", "{r}");
    assert_eq!(ctl.status_of("team-b.test").await, 404);
    ctl.stop().await;
    for r in server.requests() {
        if matches!(r.verb.as_str(), "list" | "watch") && r.field_manager.is_none() {
            // Cluster-scoped kinds are watched cluster-wide whatever --watch-namespaces says.
            let allowed: &[&str] = match r.resource.as_str() {
                "plugins" => &["team-a", "weir-system"],
                "ingressclasses" | "namespaces" | "gatewayclasses" => &["<all>"],
                _ => &["team-a"],
            };
            let ns = r.namespace.as_deref().unwrap_or("<all>");
            assert!(allowed.contains(&ns), "{} {} in {ns}", r.verb, r.resource);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_replaced_after_the_lease_duration() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    let a = Controller::start(&server, "replica-a").await;
    a.wait_ready().await;
    let leader_a = Arc::clone(&a.shared);
    poll_until(LIMIT, "a leads", || {
        let l = leader_a.leader();
        async move { Ok((l == Some(true)).then_some(())) }
    })
    .await
    .unwrap();
    let b = Controller::start(&server, "replica-b").await;
    b.wait_ready().await;
    // A dies without releasing the lease (its future is dropped).
    a.task.abort();
    let _ = a.task.await;
    let lease_api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "weir-system");
    let lease = lease_api.get("weir-status-writer").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));
    let leader_b = Arc::clone(&b.shared);
    poll_until(LIMIT, "b takes over after the lease duration", || {
        let l = leader_b.leader();
        async move { Ok((l == Some(true)).then_some(())) }
    })
    .await
    .unwrap();
    apply(&client, route_json("after", "after.test", "o")).await;
    wait_condition(&client, "Route", "after", "Programmed", "True").await;
    let lease = lease_api.get("weir-status-writer").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(lease.lease_transitions, Some(1));
    b.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_every_watch_has_listed() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    apply(&client, route_json("r", "r.test", "o")).await;
    server.set_available(false);
    let ctl = Controller::start(&server, "one").await;
    // Every list fails: the watchers back off, nothing is published, not ready.
    poll_until(LIMIT, "list attempts while the API is down", || async {
        let failed = server.requests().iter().filter(|r| r.status == 503).count();
        Ok((failed >= 6).then_some(()))
    })
    .await
    .unwrap();
    assert!(!ctl.shared.status.load().ready);
    assert_eq!(ctl.shared.dataplane.current().version, 0);
    server.set_available(true);
    // kube's default backoff may wait several seconds between attempts.
    poll_until(Duration::from_secs(40), "ready after the API is back", || {
        let ready = ctl.shared.status.load().ready;
        async move { Ok(ready.then_some(())) }
    })
    .await
    .unwrap();
    // The first snapshot already holds everything.
    assert_eq!(ctl.shared.dataplane.current().version, 1);
    ctl.wait_backend("r.test", "o").await;
    ctl.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_and_serving_goes_on() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    apply(&client, route_json("r", "r.test", "o")).await;
    let ctl = Controller::start(&server, "one").await;
    ctl.wait_ready().await;
    let wait_leader = |want: bool| {
        let shared = Arc::clone(&ctl.shared);
        async move {
            poll_until(LIMIT, &format!("leader == {want}"), || {
                let l = shared.leader();
                async move { Ok((l == Some(want)).then_some(())) }
            })
            .await
            .unwrap();
        }
    };
    wait_leader(true).await;
    server.set_available(false);
    wait_leader(false).await;
    assert!(ctl.shared.metrics.encode().contains("weir_leader 0"));
    ctl.wait_backend("r.test", "o").await;
    server.set_available(true);
    wait_leader(true).await;
    ctl.stop().await;
    server.stop().await;
}

/// A self-signed certificate for `host` with subject `CN=<cn>`: (cert PEM, key PEM).
fn certificate(cn: &str, host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn tls_secret_json(name: &str, namespace: &str, (crt, key): &(String, String)) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "stringData": {"tls.crt": crt, "tls.key": key}})
}

/// Polls until the live snapshot's certificate for `sni` has subject `want`.
async fn wait_subject(shared: &Arc<Shared>, sni: Option<&str>, want: &str) {
    poll_until(LIMIT, &format!("SNI {sni:?} served with {want}"), || {
        let got = shared.dataplane.current().tls.select(sni).map(|t| t.leaf.subject.clone());
        async move { Ok((got.as_deref() == Some(want)).then_some(())) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_are_watched_and_a_rotation_reaches_the_snapshot() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let origin = EchoOrigin::start("o").await.unwrap();
    apply_yaml(&client, &service_yaml("o", origin.addr.port())).await;
    let mut route = route_json("shop", "shop.test", "o");
    route["spec"]["tls"] = json!({"secretRef": {"name": "shop-tls"}});
    apply(&client, route).await;
    apply(&client, tls_secret_json("shop-tls", "default", &certificate("v1", "shop.test"))).await;
    apply(&client, tls_secret_json("fallback", "weir-system", &certificate("fb", "fb.test"))).await;

    let mut options = KubeOptions::new("weir-system", Vec::new());
    options.default_certificate =
        Some(weir_controller::index::ObjectRef::new("weir-system", "fallback"));
    let ctl = Controller::start_with(&server, "one", options).await;
    ctl.wait_ready().await;
    wait_subject(&ctl.shared, Some("shop.test"), "CN=v1").await;
    wait_subject(&ctl.shared, Some("x.test"), "CN=fb").await;
    wait_subject(&ctl.shared, None, "CN=fb").await;
    wait_condition(&client, "Route", "shop", "ResolvedRefs", "True").await;

    // Rotation: the Secret changes, the snapshot follows.
    apply(&client, tls_secret_json("shop-tls", "default", &certificate("v2", "shop.test"))).await;
    wait_subject(&ctl.shared, Some("shop.test"), "CN=v2").await;

    // Deleted: SecretNotFound, and the last good certificate keeps serving.
    delete(&client, "v1", "Secret", "shop-tls").await;
    let route = wait_condition(&client, "Route", "shop", "ResolvedRefs", "False").await;
    let resolved = condition(&route, "ResolvedRefs").unwrap();
    assert_eq!(resolved["reason"], "SecretNotFound", "{resolved}");
    assert!(
        resolved["message"].as_str().unwrap().contains("the last good certificate"),
        "{resolved}"
    );
    assert_eq!(
        ctl.shared.dataplane.current().tls.select(Some("shop.test")).unwrap().leaf.subject,
        "CN=v2"
    );

    // The referenced Secrets have their own watches (by name).
    for name in ["shop-tls", "fallback"] {
        let selector = format!("metadata.name={name}");
        assert!(
            server.requests().iter().any(|r| r.resource == "secrets"
                && r.field_selector.as_deref() == Some(selector.as_str())),
            "no watch of Secret {name}"
        );
    }
    ctl.stop().await;
}
