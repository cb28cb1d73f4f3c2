//! e2e: the real `weir` binary in Kubernetes mode against the API server double, on a
//! cluster without the Gateway API CRDs: weir starts, is ready and serves Routes without
//! ever asking for Gateway API resources; Ingress, IngressClass and Namespace (built-in APIs)
//! are watched from the start, cluster-scoped ones cluster-wide even with
//! `--watch-namespaces`. Once the CRDs are created (found by API discovery, repeated every
//! `WEIR_API_DISCOVERY_INTERVAL`), the Gateway API kinds are listed and watched too, and an
//! HTTPRoute created then is served. With the CRDs there, a Gateway, an HTTPRoute and an
//! Ingress get the statuses their APIs define (written once) and route traffic.
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
    // An HTTPRoute created now (with its GatewayClass and Gateway) is served, and Routes
    // keep being served.
    let shop = weir.get("shop.gw.test", "/").await.unwrap();
    assert_eq!(shop.status, 404, "served before the HTTPRoute exists");
    server
        .create_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: weir}\n\
             spec: {controllerName: weir.dev/gateway-controller}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: public, namespace: default}\n\
             spec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: shop, namespace: default}\n\
             spec:\n  parentRefs: [{name: public}]\n  hostnames: [shop.gw.test]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n",
        )
        .unwrap();
    poll_until(LIMIT, "shop.gw.test served through the HTTPRoute", || async {
        let reply = weir.get("shop.gw.test", "/").await?;
        Ok((reply.status == 200 && reply.json()?["backend"] == "one").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
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

fn api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> kube::Api<kube::api::DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = kube::discovery::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    match ns {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
        None => kube::Api::all_with(client.clone(), &resource),
    }
}

/// Polls until `check` finds what it wants in the object's status.
async fn wait_status(
    api: &kube::Api<kube::api::DynamicObject>,
    name: &str,
    what: &str,
    weir: &WeirProcess,
    check: impl Fn(&Value) -> bool,
) -> Value {
    poll_until(LIMIT, what, || async {
        let obj = serde_json::to_value(api.get(name).await?)?;
        Ok(check(&obj["status"]).then_some(obj["status"].clone()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e}\nweir log:\n{}", weir.log());
    })
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(conditions: &Value, type_: &str) -> bool {
    condition(conditions, type_)
        .is_some_and(|c| c["status"] == "True" && c["lastTransitionTime"].is_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_httproute_and_ingress_statuses_are_written_and_traffic_flows() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let dir = ConfigDir::new("kubeconfig").unwrap();
    let kubeconfig = dir.write("kubeconfig.yaml", &server.kubeconfig_yaml()).unwrap();
    let origin = EchoOrigin::start("one").await.unwrap();
    server.create_objects(gateway_api_crds()).unwrap();
    server.create_yaml(&service_yaml("svc", origin.addr.port())).unwrap();
    // weir's own Service (--publish-service) with a load-balancer address.
    server
        .create_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: weir, namespace: default}\n\
             spec: {type: LoadBalancer, ports: [{name: http, port: 80}]}\n",
        )
        .unwrap();
    let services = api(&client, "v1", "Service", "services", Some("default"));
    let lb = json!({"apiVersion": "v1", "kind": "Service",
                    "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    services
        .patch_status(
            "weir",
            &kube::api::PatchParams::apply("e2e").force(),
            &kube::api::Patch::Apply(&lb),
        )
        .await
        .unwrap();
    server
        .create_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: weir}\n\
             spec: {controllerName: weir.dev/gateway-controller}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: public, namespace: default}\n\
             spec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http, port: 80, protocol: HTTP, hostname: '*.gw.test'}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: shop, namespace: default}\n\
             spec:\n  parentRefs: [{name: public}]\n  hostnames: [shop.gw.test]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: weir}\n\
             spec: {controller: weir.dev/ingress-controller}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: default}\n\
             spec:\n  ingressClassName: weir\n  rules:\n  - host: web.test\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {service: {name: svc, port: {number: 80}}}\n",
        )
        .unwrap();

    let args = [
        OsString::from("--kubeconfig"),
        kubeconfig.into_os_string(),
        OsString::from("--namespace"),
        OsString::from("default"),
        OsString::from("--publish-service"),
        OsString::from("default/weir"),
    ];
    let weir = WeirProcess::start_with(&args).await.unwrap();
    for host in ["shop.gw.test", "web.test"] {
        poll_until(LIMIT, &format!("{host} served"), || async {
            let reply = weir.get(host, "/").await?;
            Ok((reply.status == 200 && reply.json()?["backend"] == "one").then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    }

    let classes =
        api(&client, "gateway.networking.k8s.io/v1", "GatewayClass", "gatewayclasses", None);
    wait_status(&classes, "weir", "GatewayClass Accepted", &weir, |s| {
        is_true(&s["conditions"], "Accepted")
    })
    .await;
    let gateways =
        api(&client, "gateway.networking.k8s.io/v1", "Gateway", "gateways", Some("default"));
    let gw = wait_status(&gateways, "public", "Gateway Programmed with its listener", &weir, |s| {
        is_true(&s["conditions"], "Programmed")
            && s["listeners"][0]["name"] == "http"
            && is_true(&s["listeners"][0]["conditions"], "Programmed")
    })
    .await;
    assert_eq!(gw["addresses"][0]["value"], "192.0.2.10", "{gw}");
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 1, "{gw}");
    let routes =
        api(&client, "gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", Some("default"));
    let route = wait_status(&routes, "shop", "HTTPRoute parent Accepted", &weir, |s| {
        is_true(&s["parents"][0]["conditions"], "Accepted")
    })
    .await;
    assert_eq!(route["parents"][0]["controllerName"], "weir.dev/gateway-controller", "{route}");
    assert_eq!(route["parents"][0]["parentRef"]["name"], "public", "{route}");
    let ingresses = api(&client, "networking.k8s.io/v1", "Ingress", "ingresses", Some("default"));
    wait_status(&ingresses, "web", "Ingress loadBalancer from the published Service", &weir, |s| {
        s["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.10"
    })
    .await;
    // Written once: a second look after the statuses settled finds no further writes.
    let before = server
        .requests()
        .iter()
        .filter(|r| {
            r.subresource.as_deref() == Some("status") && r.field_manager.as_deref() == Some("weir")
        })
        .count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server
        .requests()
        .iter()
        .filter(|r| {
            r.subresource.as_deref() == Some("status") && r.field_manager.as_deref() == Some("weir")
        })
        .count();
    assert_eq!(before, after, "status written again although nothing changed");
    drop(weir);
    server.stop().await;
}
