//! e2e: the real `weir` binary in Kubernetes mode against the API server double, on a
//! cluster without the Gateway API CRDs: weir starts, is ready and serves Routes without
//! ever asking for Gateway API resources; Ingress, IngressClass and Namespace (built-in APIs)
//! are watched from the start, cluster-scoped ones cluster-wide even with
//! `--watch-namespaces`. Once the CRDs are created (found by API discovery, repeated every
//! `WEIR_API_DISCOVERY_INTERVAL`), the Gateway API kinds are listed and watched too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use serde_json::{Value, json};
use weir_e2e::apiserver::{ApiServer, gateway_api_crds};
use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, poll_until, service_yaml};

const LIMIT: Duration = Duration::from_secs(15);

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

fn route(name: &str, host: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"hosts": [host], "rules": [{"backends": [{"service": "svc", "port": 80}]}]}})
}

/// (resource, namespace) of every list or watch weir made in `group`.
fn watched(server: &ApiServer, group: &str) -> BTreeSet<(String, Option<String>)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.group == group && !r.resource.is_empty())
        .filter(|r| r.verb == "list" || r.verb == "watch")
        .map(|r| (r.resource, r.namespace))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_watches_start_when_the_crds_appear() {
    let server = ApiServer::start().await.unwrap();
    let dir = ConfigDir::new("kubeconfig").unwrap();
    let kubeconfig = dir.write("kubeconfig.yaml", &server.kubeconfig_yaml()).unwrap();
    let origin = EchoOrigin::start("one").await.unwrap();
    server.create_yaml(&service_yaml("svc", origin.addr.port())).unwrap();
    server.create_objects(vec![route("main", "main.test")]).unwrap();

    let args = [
        OsString::from("--kubeconfig"),
        kubeconfig.into_os_string(),
        OsString::from("--namespace"),
        OsString::from("default"),
        OsString::from("--watch-namespaces"),
        OsString::from("default"),
    ];
    let env = [("WEIR_API_DISCOVERY_INTERVAL", "200ms")];
    // Ready (the first snapshot published) although the Gateway API is not served.
    let weir = WeirProcess::start_with_env(&args, &env).await.unwrap();
    poll_until(LIMIT, "main.test served", || async {
        let reply = weir.get("main.test", "/").await?;
        Ok((reply.status == 200 && reply.json()?["backend"] == "one").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));

    // The built-in front-end kinds are watched from the start; the cluster-scoped ones
    // cluster-wide despite --watch-namespaces.
    let networking = watched(&server, "networking.k8s.io");
    assert!(networking.contains(&("ingresses".into(), Some("default".into()))), "{networking:?}");
    assert!(networking.contains(&("ingressclasses".into(), None)), "{networking:?}");
    let core = watched(&server, "");
    assert!(core.contains(&("namespaces".into(), None)), "{core:?}");
    // Discovery asked for the Gateway API, and nothing else of it was requested.
    let discovery: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/gateway.networking.k8s.io"))
        .collect();
    assert!(!discovery.is_empty(), "no API discovery of the Gateway API");
    assert!(discovery.iter().all(|r| r.resource.is_empty() && r.status == 404), "{discovery:?}");

    // The CRDs are installed: the next discovery finds them, and every Gateway API kind
    // is listed and watched (GatewayClass cluster-wide, the others in the namespace).
    server.create_objects(gateway_api_crds()).unwrap();
    let wanted: BTreeSet<(String, Option<String>)> = [
        ("gatewayclasses", None),
        ("gateways", Some("default")),
        ("httproutes", Some("default")),
        ("grpcroutes", Some("default")),
        ("referencegrants", Some("default")),
    ]
    .into_iter()
    .map(|(r, ns)| (r.to_owned(), ns.map(str::to_owned)))
    .collect();
    poll_until(LIMIT, "Gateway API watches", || async {
        let seen = watched(&server, GATEWAY_GROUP);
        Ok(wanted.is_subset(&seen).then_some(()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e}: {:?}\nweir log:\n{}", watched(&server, GATEWAY_GROUP), weir.log())
    });
    // ReferenceGrant through v1beta1, the others through v1.
    for r in server.requests().into_iter().filter(|r| r.group == GATEWAY_GROUP && r.verb == "watch")
    {
        let expected = if r.resource == "referencegrants" { "v1beta1" } else { "v1" };
        assert_eq!(r.version, expected, "{r:?}");
    }
    // Routes keep being served.
    let reply = weir.get("main.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(weir.log().contains("API served: watch started"), "{}", weir.log());
    drop(weir);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_serves_a_crds_kinds_once_it_is_created() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let path = "/apis/gateway.networking.k8s.io/v1";
    assert!(client.list_api_group_resources("gateway.networking.k8s.io/v1").await.is_err());
    server.create_objects(gateway_api_crds()).unwrap();
    let list = client.list_api_group_resources("gateway.networking.k8s.io/v1").await.unwrap();
    let names: BTreeSet<String> = list.resources.into_iter().map(|r| r.name).collect();
    for plural in ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "gateways/status"] {
        assert!(names.contains(plural), "{path}: {names:?}");
    }
    assert!(!names.contains("referencegrants"), "ReferenceGrant is v1beta1 only");
    let beta = client.list_api_group_resources("gateway.networking.k8s.io/v1beta1").await.unwrap();
    assert!(beta.resources.iter().any(|r| r.name == "referencegrants"));
    // A cluster-scoped GatewayClass and a namespaced HTTPRoute, with status subresources.
    server
        .create_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: weir}\n\
             spec: {controllerName: weir.dev/gateway-controller}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec: {}\n",
        )
        .unwrap();
    let resource = kube::discovery::ApiResource {
        group: GATEWAY_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    };
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client.clone(), &resource);
    let patch = json!({"apiVersion": format!("{GATEWAY_GROUP}/v1"), "kind": "GatewayClass",
                       "status": {"conditions": [{"type": "Accepted", "status": "True"}]}});
    let params = kube::api::PatchParams::apply("weir").force();
    api.patch_status("weir", &params, &kube::api::Patch::Apply(&patch)).await.unwrap();
    let got = serde_json::to_value(api.get("weir").await.unwrap()).unwrap();
    assert_eq!(got["status"]["conditions"][0]["type"], "Accepted");
    server.stop().await;
}
