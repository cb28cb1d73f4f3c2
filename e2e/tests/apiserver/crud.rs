//! The verbs and metadata rules: create/get/list/update/patch/delete, generation,
//! resourceVersion conflicts, status subresource, server-side apply, discovery, outages.

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use weir_crds::{Route, RouteStatus};
use weir_e2e::apiserver::ApiServer;

use crate::common::{api_code, lease, next, route, rv_of};

#[tokio::test]
async fn route_create_get_list_update_patch_delete() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let pp = PostParams::default();

    let created = routes.create(&pp, &route("orders", "a.example.com")).await.unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv1 = rv_of(meta);
    assert_eq!(
        api_code(routes.create(&pp, &route("orders", "b.example.com")).await),
        (409, "AlreadyExists".into())
    );

    // like the real storage layer: no resourceVersion on create
    let mut again = created.clone();
    again.metadata.name = Some("copy".into());
    assert_eq!(api_code(routes.create(&pp, &again).await), (500, "InternalError".into()));

    let got = routes.get("orders").await.unwrap();
    assert_eq!(got.spec, created.spec);
    let list = routes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.metadata.resource_version, Some(rv1.to_string()));
    assert_eq!(api_code(routes.get("missing").await), (404, "NotFound".into()));

    // update: a spec change bumps the generation and the resourceVersion
    let mut changed = got.clone();
    changed.spec.hosts = vec!["b.example.com".into()];
    let updated = routes.replace("orders", &pp, &changed).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(rv_of(&updated.metadata) > rv1);
    // the same object again is a stale write
    assert_eq!(api_code(routes.replace("orders", &pp, &changed).await), (409, "Conflict".into()));

    // merge patch of labels only: new resourceVersion, same generation
    let labelled = routes
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(rv_of(&labelled.metadata) > rv_of(&updated.metadata));
    assert_eq!(labelled.metadata.labels.unwrap()["team"], "a");

    // a no-op merge patch changes nothing at all
    let same = routes
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hosts": ["b.example.com"]}})),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, labelled.metadata.resource_version);

    // JSON patch (sent raw: kube's Patch::Json needs its `jsonpatch` feature)
    let body = serde_json::to_vec(&json!([
        {"op": "test", "path": "/spec/hosts/0", "value": "b.example.com"},
        {"op": "add", "path": "/spec/hosts/-", "value": "c.example.com"},
    ]))
    .unwrap();
    let request = http::Request::patch("/apis/weir.dev/v1alpha1/namespaces/default/routes/orders")
        .header("content-type", "application/json-patch+json")
        .body(body)
        .unwrap();
    let patched: Route = server.client().request(request).await.unwrap();
    assert_eq!(patched.spec.hosts, vec!["b.example.com", "c.example.com"]);
    assert_eq!(patched.metadata.generation, Some(3));
    let failing = http::Request::patch("/apis/weir.dev/v1alpha1/namespaces/default/routes/orders")
        .header("content-type", "application/json-patch+json")
        .body(br#"[{"op":"test","path":"/spec/hosts/0","value":"nope"}]"#.to_vec())
        .unwrap();
    assert_eq!(api_code(server.client().request::<Route>(failing).await).0, 422);

    // server-side apply: creates when missing (201 is accepted by kube), needs a manager
    let ssa = PatchParams::apply("weir-test");
    let applied = routes
        .patch("applied", &ssa, &Patch::Apply(route("applied", "d.example.com")))
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let managed = applied.metadata.managed_fields.unwrap();
    assert_eq!(
        (managed[0].manager.as_deref(), managed[0].operation.as_deref()),
        (Some("weir-test"), Some("Apply"))
    );
    let no_manager = PatchParams { field_manager: None, ..PatchParams::default() };
    assert_eq!(
        api_code(routes.patch("applied", &no_manager, &Patch::Apply(route("applied", "x"))).await),
        (400, "BadRequest".into())
    );
    let created_rv =
        server.requests().iter().rev().find(|r| r.verb == "patch" && r.status == 201).cloned();
    assert!(
        created_rv.is_some_and(|r| r.patch_type.as_deref() == Some("application/apply-patch+yaml")
            && r.field_manager.as_deref() == Some("weir-test"))
    );

    // delete answers with the object and it is gone
    let deleted = routes.delete("orders", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    assert_eq!(api_code(routes.get("orders").await).0, 404);
    assert_eq!(routes.list(&ListParams::default()).await.unwrap().items.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn lease_optimistic_concurrency_and_apply() {
    let server = ApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "weir-system");
    let pp = PostParams::default();
    let held = leases.create(&pp, &lease("weir-leader", "pod-a")).await.unwrap();

    // two candidates read the same version; only the first write wins
    let mut b = held.clone();
    b.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let mut c = held.clone();
    c.spec.as_mut().unwrap().holder_identity = Some("pod-c".into());
    let won = leases.replace("weir-leader", &pp, &b).await.unwrap();
    assert_eq!(api_code(leases.replace("weir-leader", &pp, &c).await), (409, "Conflict".into()));
    assert_eq!(
        leases.get("weir-leader").await.unwrap().spec.unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );

    // an update without resourceVersion is unconditional
    let mut unconditional = won.clone();
    unconditional.metadata.resource_version = None;
    unconditional.spec.as_mut().unwrap().lease_transitions = Some(3);
    let mut other_uid = unconditional.clone();
    other_uid.metadata.uid = Some("another-object".into());
    assert_eq!(api_code(leases.replace("weir-leader", &pp, &other_uid).await).0, 409);
    let after = leases.replace("weir-leader", &pp, &unconditional).await.unwrap();
    assert_eq!(after.spec.unwrap().lease_transitions, Some(3));

    // apply by another manager that changes an owned field conflicts unless forced
    let ssa = PatchParams::apply("pod-d");
    let takeover = Patch::Apply(lease("weir-leader", "pod-d"));
    assert_eq!(
        api_code(leases.patch("weir-leader", &ssa, &takeover).await),
        (409, "Conflict".into())
    );
    let forced = leases.patch("weir-leader", &ssa.clone().force(), &takeover).await.unwrap();
    assert_eq!(forced.spec.unwrap().holder_identity.as_deref(), Some("pod-d"));

    // delete with a stale precondition fails, then succeeds
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_code(leases.delete("weir-leader", &stale).await).0, 409);
    leases.delete("weir-leader", &DeleteParams::default()).await.unwrap();
    assert!(leases.get_opt("weir-leader").await.unwrap().is_none());
    assert_eq!(api_code(leases.delete("weir-leader", &DeleteParams::default()).await).0, 404);
    // Leases have no status subresource
    let status = Patch::Merge(json!({"status": {}}));
    assert_eq!(
        api_code(leases.patch_status("weir-leader", &PatchParams::default(), &status).await).0,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn status_subresource_keeps_spec_and_status_apart() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut with_status = route("r", "a.example.com");
    with_status.status =
        Some(RouteStatus { observed_generation: Some(99), ..RouteStatus::default() });
    let created = routes.create(&PostParams::default(), &with_status).await.unwrap();
    assert_eq!(created.status, None, "create ignores status");

    // a status write that also tries to change spec changes only status
    let status_patch =
        json!({"spec": {"hosts": ["evil.example.com"]}, "status": {"observedGeneration": 1}});
    let after = routes
        .patch_status("r", &PatchParams::default(), &Patch::Merge(status_patch))
        .await
        .unwrap();
    assert_eq!(after.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(after.spec.hosts, vec!["a.example.com"]);
    assert_eq!(after.metadata.generation, Some(1), "status writes never bump generation");
    assert!(rv_of(&after.metadata) > rv_of(&created.metadata));

    // a main-resource write cannot change status
    let mut main = after.clone();
    main.status = Some(RouteStatus { observed_generation: Some(42), ..RouteStatus::default() });
    main.spec.hosts = vec!["b.example.com".into()];
    let replaced = routes.replace("r", &PostParams::default(), &main).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(replaced.metadata.generation, Some(2));

    // status by server-side apply, as the status writer does it
    let status = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route", "status": {"observedGeneration": 2}});
    let applied = routes
        .patch_status("r", &PatchParams::apply("weir-status").force(), &Patch::Apply(status))
        .await
        .unwrap();
    assert_eq!(applied.status.unwrap().observed_generation, Some(2));
    assert_eq!(applied.metadata.generation, Some(2));
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("weir-status"));
    assert_eq!(entry.and_then(|e| e.subresource).as_deref(), Some("status"));
    let log = server.requests();
    let last = log.last().unwrap();
    assert_eq!((last.verb.as_str(), last.subresource.as_deref()), ("patch", Some("status")));
    server.stop().await;
}

#[tokio::test]
async fn apply_removes_fields_the_manager_no_longer_applies() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let ssa = PatchParams::apply("weir-test");
    let mut first = route("r", "a.example.com");
    first.metadata.labels =
        Some([("team".to_owned(), "a".to_owned()), ("tier".to_owned(), "1".to_owned())].into());
    routes.patch("r", &ssa, &Patch::Apply(&first)).await.unwrap();
    // another manager adds its own label
    let other = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route", "metadata": {"name": "r", "labels": {"owner": "ops"}}});
    routes.patch("r", &PatchParams::apply("ops"), &Patch::Apply(other)).await.unwrap();

    let mut second = route("r", "a.example.com");
    second.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
    let after = routes.patch("r", &ssa, &Patch::Apply(&second)).await.unwrap();
    let labels = after.metadata.labels.unwrap();
    assert_eq!(labels.get("tier"), None, "dropped by its manager");
    assert_eq!(
        labels.get("owner").map(String::as_str),
        Some("ops"),
        "kept: owned by another manager"
    );
    assert_eq!(after.metadata.generation, Some(1), "labels are metadata");
    let managers: Vec<_> =
        after.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, vec!["weir-test", "ops"]);
    server.stop().await;
}

#[tokio::test]
async fn generate_name_finalizers_and_delete_collection() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut generated = route("ignored", "a.example.com");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("orders-".into());
    let made = routes.create(&PostParams::default(), &generated).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("orders-") && name.len() == "orders-".len() + 5, "{name}");

    let mut held = route("held", "b.example.com");
    held.metadata.finalizers = Some(vec!["weir.dev/cleanup".into()]);
    routes.create(&PostParams::default(), &held).await.unwrap();
    let deleting = routes.delete("held", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(routes.get_opt("held").await.unwrap().is_some(), "kept while a finalizer remains");
    routes
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(
        routes.get_opt("held").await.unwrap().is_none(),
        "gone once the finalizers are removed"
    );

    routes.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    assert!(routes.list(&ListParams::default()).await.unwrap().items.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn selectors_filter_lists() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    for (name, team) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut r = route(name, "x.example.com");
        r.metadata.labels = Some([("team".to_owned(), team.to_owned())].into());
        routes.create(&PostParams::default(), &r).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<Route>| -> Vec<String> {
        list.items.into_iter().filter_map(|r| r.metadata.name).collect()
    };
    let web = routes.list(&ListParams::default().labels("team=web")).await.unwrap();
    assert_eq!(names(web), vec!["a", "c"]);
    let not_web = routes.list(&ListParams::default().labels("team notin (web)")).await.unwrap();
    assert_eq!(names(not_web), vec!["b"]);
    let by_name = routes.list(&ListParams::default().fields("metadata.name=c")).await.unwrap();
    assert_eq!(names(by_name), vec!["c"]);
    let both = routes
        .list(&ListParams::default().labels("team=web").fields("metadata.name!=a"))
        .await
        .unwrap();
    assert_eq!(names(both), vec!["c"]);
    assert_eq!(api_code(routes.list(&ListParams::default().fields("spec.hosts=x")).await).0, 400);
    let all: Api<Route> = Api::all(server.client());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 3);
    let other_ns: Api<Route> = Api::namespaced(server.client(), "other");
    assert!(other_ns.list(&ListParams::default()).await.unwrap().items.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn discovery_version_kubeconfig_and_unknown_resources() {
    let server = ApiServer::start().await.unwrap();
    let version = server.client().apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));

    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let (resource, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("weir.dev", "v1alpha1", "Route"))
        .expect("Route discovered");
    assert_eq!(resource.plural, "routes");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(discovery.has_group("coordination.k8s.io"));

    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client);
    leases.create(&PostParams::default(), &lease("via-kubeconfig", "me")).await.unwrap();

    let unknown = kube::api::ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<kube::api::DynamicObject> =
        Api::default_namespaced_with(server.client(), &unknown);
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), (404, "NotFound".into()));
    server.stop().await;
}

#[tokio::test]
async fn unavailable_server_fails_requests_until_it_is_back() {
    let server = ApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    leases.create(&PostParams::default(), &lease("l", "a")).await.unwrap();
    let mut watch = leases.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert!(matches!(next(&mut watch).await, Some(Ok(WatchEvent::Added(_)))));
    server.set_available(false);
    let mut ended = false;
    for _ in 0..100 {
        if next(&mut watch).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "open watches end when the server goes down");
    assert_eq!(api_code(leases.get("l").await), (503, "ServiceUnavailable".into()));
    assert_eq!(api_code(leases.watch(&WatchParams::default(), "0").await.map(|_| ())).0, 503);
    assert_eq!(server.requests().last().map(|r| r.status), Some(503));
    server.set_available(true);
    assert_eq!(leases.get("l").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("a"));
    server.clear_requests();
    leases.get("l").await.unwrap();
    let log = server.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].verb.as_str(),
            log[0].group.as_str(),
            log[0].resource.as_str(),
            log[0].namespace.as_deref()
        ),
        ("get", "coordination.k8s.io", "leases", Some("default"))
    );
    server.stop().await;
}
