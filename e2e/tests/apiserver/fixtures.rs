//! Fixtures loaded from YAML, Secret `stringData`, name validation, YAML apply bodies,
//! metadata-only lists and watches, and stopping the server.

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use weir_crds::Route;
use weir_e2e::apiserver::ApiServer;

use crate::common::{api_code, next, route};

#[tokio::test]
async fn yaml_fixtures_are_created_and_seen_by_watches() {
    let server = ApiServer::start().await.unwrap();
    let slices: Api<EndpointSlice> = Api::default_namespaced(server.client());
    let mut stream = slices.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let mut yaml = weir_e2e::service_yaml("orders", 9001);
    yaml.push_str(&weir_e2e::prefix_route_yaml("orders", "/orders", "orders"));
    yaml.push_str("---\napiVersion: v1\nkind: Secret\nmetadata: {name: key, namespace: team-a}\nstringData: {key: s3cret}\n");
    server.clear_requests();
    let created = server.create_yaml(&yaml).unwrap();
    assert_eq!(
        created,
        vec!["default/orders", "default/orders-local", "default/orders", "team-a/key"]
    );
    assert!(server.requests().is_empty(), "fixtures bypass HTTP");

    match next(&mut stream).await.unwrap().unwrap() {
        WatchEvent::Added(slice) => {
            assert_eq!(slice.metadata.name.as_deref(), Some("orders-local"))
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    let svc: Api<Service> = Api::default_namespaced(server.client());
    assert_eq!(svc.get("orders").await.unwrap().metadata.generation, Some(1));
    let routes: Api<Route> = Api::default_namespaced(server.client());
    assert_eq!(routes.get("orders").await.unwrap().spec.rules.len(), 1);
    let secrets: Api<Secret> = Api::namespaced(server.client(), "team-a");
    let secret = secrets.get("key").await.unwrap();
    assert_eq!(secret.data.unwrap()["key"].0, b"s3cret", "stringData is folded into data");
    assert!(secret.string_data.is_none());

    assert!(
        server
            .create_yaml("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
            .is_err()
    );
    assert!(server.create_yaml(&weir_e2e::service_yaml("orders", 9001)).is_err(), "already exists");
    server.stop().await;
}

#[tokio::test]
async fn invalid_names_yaml_apply_bodies_and_missing_namespaces() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    server.require_namespaces(true);
    let elsewhere: Api<Route> = Api::namespaced(server.client(), "team-b");
    let r = route("r", "a.example.com");
    assert_eq!(
        api_code(elsewhere.create(&PostParams::default(), &r).await),
        (404, "NotFound".into())
    );
    server.create_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n").unwrap();
    elsewhere.create(&PostParams::default(), &r).await.unwrap();
    routes.create(&PostParams::default(), &r).await.unwrap();
    assert_eq!(
        api_code(routes.create(&PostParams::default(), &route("Not_Valid", "a.example.com")).await),
        (422, "Invalid".into())
    );
    // kubectl sends apply bodies as YAML
    let yaml = "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata:\n  name: from-yaml\nspec:\n  rules:\n    - backends: [{service: orders, port: 80}]\n";
    let request = http::Request::patch(
        "/apis/weir.dev/v1alpha1/namespaces/default/routes/from-yaml?fieldManager=kubectl",
    )
    .header("content-type", "application/apply-patch+yaml")
    .body(yaml.as_bytes().to_vec())
    .unwrap();
    let applied: Route = server.client().request(request).await.unwrap();
    assert_eq!(applied.spec.rules[0].backends[0].service, "orders");
    server.stop().await;
}

#[tokio::test]
async fn metadata_lists_and_watches() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut r = route("m", "a.example.com");
    r.metadata.labels = Some([("team".to_owned(), "web".to_owned())].into());
    routes.create(&PostParams::default(), &r).await.unwrap();
    let list = routes.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.labels.as_ref().unwrap()["team"], "web");
    let mut stream = routes.watch_metadata(&WatchParams::default(), "0").await.unwrap().boxed();
    match next(&mut stream).await.unwrap().unwrap() {
        WatchEvent::Added(meta) => {
            assert_eq!(meta.metadata.name.as_deref(), Some("m"));
            assert_eq!(meta.types.map(|t| t.kind).as_deref(), Some("PartialObjectMetadata"));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn stop_ends_watches_and_refuses_connections() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut stream = routes.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(server.open_watches(), 1);
    let addr = server.addr();
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while let Some(item) = stream.next().await {
            n += 1;
            if item.is_err() || n > 100 {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ended");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens any more");
}
