//! Tests of the admin server, over a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http_body_util::{BodyExt, Empty};
use weir_dataplane::DataPlane;

use super::*;
use crate::load::{merge, parse_file};
use crate::publish::Publisher;

const CONFIG: &str = "apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: orders, generation: 3}
spec:
  hosts: [api.example.com]
  rules:
    - name: list
      matches: [{path: {type: Prefix, value: /orders}, methods: [GET]}]
      backends: [{service: orders, port: 80, weight: 2}]
    - name: canary
      matches: [{path: {value: /orders}, headers: [{name: x-canary, value: 'true'}]}]
      backends: [{service: orders, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: orders}
spec: {ports: [{port: 80, targetPort: 9001}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orders-1, labels: {kubernetes.io/service-name: orders}}
addressType: IPv4
ports: [{port: 9001}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Secret
metadata: {name: key}
stringData: {key: do-not-show-me}
---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: orders, generation: 2}
spec:
  targetRefs: [{kind: Service, name: orders}]
  circuitBreaker: {failureThreshold: 3}
";

async fn get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::get(path).header("host", "admin").body(Empty::<Bytes>::new()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    drop(sender);
    driver.abort();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn serves_health_readiness_status_snapshot_match_and_metrics() {
    let shared = Shared::new(DataPlane::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, Arc::clone(&shared), rx));

    assert_eq!(get(addr, "/healthz").await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(get(addr, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

    let objects = parse_file("c.yaml", CONFIG).unwrap();
    let (index, _) = merge([("c.yaml", objects.as_slice())], "");
    let errors = vec![crate::load::LoadError {
        file: "bad.yaml".into(),
        document: 1,
        reason: "oops".into(),
    }];
    Publisher::new(Arc::clone(&shared)).apply(&index, errors);
    assert_eq!(get(addr, "/readyz").await.0, StatusCode::OK);

    let (status, body) = get(addr, "/debug/status").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["version"], 1);
    assert_eq!(v["errors"][0], json!({"file": "bad.yaml", "document": 1, "reason": "oops"}));
    let route = &v["objects"][0];
    assert_eq!(
        (route["kind"].as_str(), route["name"].as_str(), route["generation"].as_i64()),
        (Some("Route"), Some("orders"), Some(3))
    );
    let accepted =
        route["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Accepted").unwrap();
    assert_eq!(accepted["status"], "True");
    assert!(accepted["lastTransitionTime"].as_str().unwrap().ends_with('Z'));

    let policy = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "BackendPolicy")
        .expect("/debug/status lists BackendPolicies");
    assert_eq!((policy["name"].as_str(), policy["generation"].as_i64()), (Some("orders"), Some(2)));

    let (status, body) = get(addr, "/debug/backends").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert!(v["backends"].is_array(), "{body}");
    assert_eq!(v, shared.dataplane.registry.describe());

    let (status, body) = get(addr, "/debug/snapshot").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("do-not-show-me"));
    assert_eq!(json(&body)["version"], 1);

    let (status, body) =
        get(addr, "/debug/match?method=GET&host=api.example.com&path=/orders/7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(v["route"], "default/orders");
    assert_eq!(v["rule"], json!({"name": "list", "index": 0}));
    assert_eq!(v["backends"][0]["endpoints"][0], "127.0.0.1:9001");
    assert_eq!(v["backends"][0]["weight"], 2);

    let (_, body) = get(
        addr,
        "/debug/match?method=POST&host=api.example.com&path=%2Forders&header=x-canary%3A%20true",
    )
    .await;
    assert_eq!(json(&body)["rule"]["name"], "canary", "{body}");

    let (status, body) =
        get(addr, "/debug/match?method=GET&host=other.example.com&path=/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["match"], Value::Null);

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("weir_snapshot_version 1"), "{body}");
    assert!(body.contains("weir_config_reloads_total{result=\"error\"} 1"), "{body}");
    assert!(body.contains("weir_connections{listener=\"https\"} 0"), "{body}");
    assert!(body.contains("weir_connections_refused_total{listener=\"http\"} 0"), "{body}");
    assert!(body.contains("weir_tls_handshake_errors_total 0"), "{body}");

    assert_eq!(get(addr, "/nope").await.0, StatusCode::NOT_FOUND);
    // Shutdown began: not ready any more, even with a live snapshot.
    shared.set_draining();
    assert_eq!(
        get(addr, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );
    assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn decodes_query_components() {
    assert_eq!(percent_decode("a%2Fb+c%3a%zz%"), "a/b c:%zz%");
    assert_eq!(
        query_pairs(Some("path=/x%3Fy&flag&header=a:b")),
        vec![
            ("path".into(), "/x?y".into()),
            ("flag".into(), String::new()),
            ("header".into(), "a:b".into())
        ]
    );
}

async fn delete(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::delete(path).header("host", "admin").body(Empty::<Bytes>::new()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    drop(sender);
    driver.abort();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn purges_the_response_cache_and_refuses_other_deletes() {
    let shared = Shared::new(DataPlane::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, Arc::clone(&shared), rx));

    let (status, body) = delete(addr, "/cache?host=a.test&path=/x").await;
    assert_eq!((status, json(&body)), (StatusCode::OK, json!({"purged": 0})));
    assert_eq!(json(&delete(addr, "/cache").await.1), json!({"purged": 0}));
    let (status, body) = delete(addr, "/cache?host=a.test").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("both host and path"));
    assert_eq!(delete(addr, "/healthz").await.0, StatusCode::METHOD_NOT_ALLOWED);
    // The cache metrics are on /metrics.
    let metrics = get(addr, "/metrics").await.1;
    assert!(metrics.contains("weir_cache_requests_total{result=\"hit\"} 0"), "{metrics}");
    assert!(metrics.contains("weir_cache_bytes 0"), "{metrics}");

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}
