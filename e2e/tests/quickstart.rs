//! e2e: the quickstart Routes (deploy/examples/quickstart/routes.yaml, as used by `make run`
//! and the README) served by the real `weir` binary in front of echo origins: prefix
//! routing, a header-matched canary, a weighted split and a prefix rewrite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, http_request, service_yaml, workspace_root};

/// Starts weir on the quickstart's routes.yaml, with its three Services pointed at
/// in-process echo origins on free ports instead of 127.0.0.1:9001-9003.
async fn quickstart() -> (Vec<EchoOrigin>, ConfigDir, WeirProcess) {
    let mut origins = Vec::new();
    let mut services = String::new();
    for (service, backend) in
        [("orders", "orders-v1"), ("orders-canary", "orders-v2"), ("users", "users-v1")]
    {
        let origin = EchoOrigin::start(backend).await.unwrap();
        services.push_str(&service_yaml(service, origin.addr.port()));
        origins.push(origin);
    }
    let routes =
        std::fs::read_to_string(workspace_root().join("deploy/examples/quickstart/routes.yaml"))
            .unwrap();
    let dir = ConfigDir::new("quickstart").unwrap();
    dir.write("services.yaml", &services).unwrap();
    dir.write("routes.yaml", &routes).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    (origins, dir, weir)
}

async fn backend_of(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let reply = http_request(weir.http_addr, "GET", "localhost:8080", path, headers).await.unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_routes_behave_as_the_readme_says() {
    let (_origins, _dir, weir) = quickstart().await;

    // Prefix routing.
    let body = backend_of(&weir, "/api/orders/42", &[]).await;
    assert_eq!(body["backend"], "orders-v1");
    assert_eq!(body["path"], "/api/orders/42");
    let body = backend_of(&weir, "/api/users/7", &[]).await;
    assert_eq!(body["backend"], "users-v1");
    // Segment-aware prefix: /api/ordersx is not /api/orders.
    let reply = weir.get("localhost:8080", "/api/ordersx").await.unwrap();
    assert_eq!(reply.status, 404, "{}", reply.text());

    // Header-matched canary.
    let body = backend_of(&weir, "/api/orders/42", &[("x-canary", "true")]).await;
    assert_eq!(body["backend"], "orders-v2");
    let body = backend_of(&weir, "/api/orders/42", &[("x-canary", "false")]).await;
    assert_eq!(body["backend"], "orders-v1");

    // Prefix rewrite.
    let body = backend_of(&weir, "/legacy/users/42?full=1", &[]).await;
    assert_eq!(body["backend"], "users-v1");
    assert_eq!(body["path"], "/api/users/42?full=1");

    // Weighted split 80/20, over 200 requests. Expected 40 to orders-v2; the bounds are
    // beyond 3.5 standard deviations of a weighted random choice.
    let mut counts = BTreeMap::new();
    for _ in 0..200 {
        let body = backend_of(&weir, "/api/split", &[]).await;
        *counts.entry(body["backend"].as_str().unwrap().to_owned()).or_insert(0u32) += 1;
    }
    let v1 = counts.get("orders-v1").copied().unwrap_or(0);
    let v2 = counts.get("orders-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 200, "{counts:?}");
    assert!((20..=60).contains(&v2), "80/20 split: {counts:?}");

    // No route: the gateway's own JSON 404.
    let reply = weir.get("localhost:8080", "/nope").await.unwrap();
    assert_eq!(reply.status, 404);
    let body = reply.json().unwrap();
    assert_eq!(body["status"], 404);
    assert!(body["error"].is_string(), "{body}");
}
