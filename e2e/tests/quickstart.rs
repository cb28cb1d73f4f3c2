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

/// Polls `GET /api/catalog/1` until `pred` holds on the reply (a live reload).
async fn wait_for_catalog(
    weir: &WeirProcess,
    what: &str,
    pred: impl Fn(&weir_e2e::Reply) -> bool,
) -> weir_e2e::Reply {
    weir_e2e::poll_until(std::time::Duration::from_secs(5), what, || async {
        let reply = weir.get("localhost:8080", "/api/catalog/1").await?;
        Ok(pred(&reply).then_some(reply))
    })
    .await
    .unwrap()
}

/// The README's CORS and header curls against deploy/examples/quickstart/edge.yaml, and a
/// Plugin edited while weir runs taking effect on the next requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_edge_plugins_behave_as_the_readme_says() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let edge_path = workspace_root().join("deploy/examples/quickstart/edge.yaml");
    let edge = std::fs::read_to_string(&edge_path).unwrap();
    let dir = ConfigDir::new("quickstart-edge").unwrap();
    dir.write("services.yaml", &service_yaml("orders", origin.addr.port())).unwrap();
    dir.write("edge.yaml", &edge).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // The preflight: answered by the gateway.
    let pre = http_request(
        weir.http_addr,
        "OPTIONS",
        "localhost:8080",
        "/api/catalog/1",
        &[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(pre.status, 204, "{}", pre.text());
    let h = |r: &weir_e2e::Reply, name: &str| {
        r.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };
    assert_eq!(h(&pre, "access-control-allow-origin"), "http://localhost:3000");
    assert_eq!(h(&pre, "access-control-allow-credentials"), "true");
    assert_eq!(h(&pre, "access-control-allow-methods"), "GET, POST");
    assert_eq!(h(&pre, "access-control-allow-headers"), "authorization, content-type");
    assert_eq!(h(&pre, "access-control-max-age"), "600");
    assert_eq!(h(&pre, "x-served-by"), "weir", "the response phase runs on the preflight");

    // The actual request: headers both ways.
    let reply = http_request(
        weir.http_addr,
        "GET",
        "localhost:8080",
        "/api/catalog/1",
        &[("origin", "https://shop.example.com"), ("x-debug", "1"), ("x-request-id", "readme-1")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(h(&reply, "access-control-allow-origin"), "https://shop.example.com");
    assert_eq!(h(&reply, "access-control-expose-headers"), "x-request-id");
    assert_eq!(h(&reply, "vary"), "Origin");
    assert_eq!(h(&reply, "x-served-by"), "weir");
    assert_eq!(h(&reply, "cache-control"), "no-store");
    assert_eq!(h(&reply, "x-request-id"), "readme-1");
    let seen = &reply.json().unwrap()["headers"];
    assert_eq!(seen["x-gateway"], "weir");
    assert_eq!(seen["x-route"], "default/catalog");
    assert!(seen.get("x-debug").is_none(), "{seen}");
    // A disallowed origin gets no CORS headers.
    let evil = http_request(
        weir.http_addr,
        "GET",
        "localhost:8080",
        "/api/catalog/1",
        &[("origin", "https://evil.test")],
    )
    .await
    .unwrap();
    assert!(!evil.headers.contains_key("access-control-allow-origin"));

    // Edit the response-headers Plugin live: the next requests carry the new value, and
    // nothing else changes.
    dir.write(
        "edge.yaml",
        &edge.replace("{name: X-Served-By, value: weir}", "{name: X-Served-By, value: weir-v2}"),
    )
    .unwrap();
    let after = wait_for_catalog(&weir, "X-Served-By: weir-v2", |r| {
        r.headers.get("x-served-by").is_some_and(|v| v == "weir-v2")
    })
    .await;
    assert_eq!(after.json().unwrap()["headers"]["x-gateway"], "weir");
    // And a new Plugin kind added to the Route takes effect too: a deny-all ipRestriction.
    let denied = edge
        .replace("{name: X-Served-By, value: weir}", "{name: X-Served-By, value: weir-v2}")
        + "---\napiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {name: lockdown}\nspec:\n  ipRestriction: {deny: [0.0.0.0/0, \"::/0\"]}\n";
    dir.write(
        "edge.yaml",
        &denied.replace(
            "plugins: [web-request-id, web-cors, web-request-headers, web-response-headers]",
            "plugins: [web-request-id, web-cors, web-request-headers, web-response-headers, lockdown]",
        ),
    )
    .unwrap();
    let blocked = wait_for_catalog(&weir, "403 from ipRestriction", |r| r.status == 403).await;
    assert_eq!(h(&blocked, "x-served-by"), "weir-v2", "the response phase runs on the 403");
}

/// The README's compression curls against deploy/examples/quickstart/compression.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_compression_behaves_as_the_readme_says() {
    let origin = EchoOrigin::start("users-v1").await.unwrap();
    let file = workspace_root().join("deploy/examples/quickstart/compression.yaml");
    let dir = ConfigDir::new("quickstart-compression").unwrap();
    dir.write("services.yaml", &service_yaml("users", origin.addr.port())).unwrap();
    dir.write("compression.yaml", &std::fs::read_to_string(file).unwrap()).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    let get = |encoding: &'static str| {
        let addr = weir.http_addr;
        async move {
            let headers: Vec<(&str, &str)> =
                if encoding.is_empty() { vec![] } else { vec![("accept-encoding", encoding)] };
            http_request(addr, "GET", "localhost:8080", "/api/compressed", &headers).await.unwrap()
        }
    };
    let plain = get("").await;
    assert_eq!(plain.status, 200);
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(plain.headers["vary"], "Accept-Encoding");
    for (asked, coding) in
        [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip;q=0.5, br", "br")]
    {
        let reply = get(asked).await;
        assert_eq!(reply.headers["content-encoding"], coding, "{asked}");
        assert!(reply.body.len() < plain.body.len(), "{asked}: {} bytes", reply.body.len());
    }
    assert!(get("identity;q=0").await.headers.get("content-encoding").is_none());
}

/// The README's BackendPolicy curls against deploy/examples/quickstart/resilience.yaml (its
/// demo backends on free ports, the breaker's openFor and the health check's interval
/// shortened so the test does not sleep for seconds): the breaker opens after three
/// failures and answers the fallback without asking the backend, then closes after two
/// good probes; an inventory endpoint failing /healthz leaves rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_resilience_behaves_as_the_readme_says() {
    let flaky = weir_e2e::DemoOrigin::start("flaky").await.unwrap();
    let inventory_a = weir_e2e::DemoOrigin::start("inventory-a").await.unwrap();
    let inventory_b = weir_e2e::DemoOrigin::start("inventory-b").await.unwrap();
    let file = workspace_root().join("deploy/examples/quickstart/resilience.yaml");
    let yaml = std::fs::read_to_string(file)
        .unwrap()
        .replace("9004", &flaky.addr.port().to_string())
        .replace("9005", &inventory_a.addr.port().to_string())
        .replace("9006", &inventory_b.addr.port().to_string())
        .replace("openFor: 10s", "openFor: 1s")
        .replace("interval: 2s", "interval: 200ms");
    let dir = ConfigDir::new("quickstart-resilience").unwrap();
    dir.write("resilience.yaml", &yaml).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    for _ in 0..3 {
        let reply = weir.get("localhost:8080", "/api/flaky?fail=500").await.unwrap();
        assert_eq!(reply.status, 500, "{}", reply.text());
    }
    let asked = flaky.state.requests();
    let reply = weir.get("localhost:8080", "/api/flaky").await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"error":"flaky is resting, try again in a few seconds"}"#);
    assert_eq!(flaky.state.requests(), asked, "the open circuit answers without the backend");
    let first = weir_e2e::poll_until(std::time::Duration::from_secs(5), "half-open", || async {
        let reply = weir.get("localhost:8080", "/api/flaky").await?;
        Ok((reply.status == 200).then_some(reply))
    })
    .await
    .unwrap();
    assert_eq!(first.json().unwrap()["backend"], "flaky");
    let reply = weir.get("localhost:8080", "/api/flaky").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());

    inventory_b.state.set_health(500);
    let b = inventory_b.addr.to_string();
    weir_e2e::poll_until(std::time::Duration::from_secs(10), "inventory-b unhealthy", || async {
        let backends = weir.admin("/debug/backends").await?.json()?;
        let unhealthy =
            backends["backends"].as_array().into_iter().flatten().any(|backend| {
                backend["endpoints"].as_array().into_iter().flatten().any(|e| {
                    e["address"].as_str() == Some(b.as_str()) && e["health"] == "unhealthy"
                })
            });
        Ok(unhealthy.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
    for _ in 0..6 {
        let body = backend_of(&weir, "/api/inventory", &[]).await;
        assert_eq!(body["backend"], "inventory-a");
    }
}

/// The composed profile page of deploy/examples/quickstart/profile.yaml (docs/aggregate.md
/// and the README) over the demo backends: one request, two parts merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_profile_page_is_composed_as_the_docs_say() {
    let users = weir_e2e::DemoOrigin::start("users-v1").await.unwrap();
    let orders = weir_e2e::DemoOrigin::start("orders-v1").await.unwrap();
    let file = workspace_root().join("deploy/examples/quickstart/profile.yaml");
    let dir = ConfigDir::new("quickstart-profile").unwrap();
    let mut services = service_yaml("users", users.addr.port());
    services.push_str(&service_yaml("orders", orders.addr.port()));
    dir.write("services.yaml", &services).unwrap();
    dir.write("profile.yaml", &std::fs::read_to_string(file).unwrap()).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    let reply = weir.get("localhost:8080", "/api/profile/42").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["x-weir-completed"], "true");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.text(),
        concat!(
            r#"{"user":{"backend":"users-v1","id":"42","name":"User 42"},"#,
            r#""orders":[{"id":"42-1","total":42.5,"user":"42"},{"id":"42-2","total":7.25,"user":"42"}]}"#
        )
    );
    assert_eq!((users.state.requests(), orders.state.requests()), (1, 1));
}

/// The cached prices Route of deploy/examples/quickstart/cache.yaml (docs/plugins/cache.md
/// and the README): Miss, then Hit with the same body, one request to the demo backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_prices_are_cached_as_the_docs_say() {
    let orders = weir_e2e::DemoOrigin::start("orders-v1").await.unwrap();
    let file = workspace_root().join("deploy/examples/quickstart/cache.yaml");
    let dir = ConfigDir::new("quickstart-cache").unwrap();
    dir.write("services.yaml", &service_yaml("orders", orders.addr.port())).unwrap();
    dir.write("cache.yaml", &std::fs::read_to_string(file).unwrap()).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    let first = weir.get("localhost:8080", "/api/prices").await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.headers["x-cache-status"], "Miss");
    let second = weir.get("localhost:8080", "/api/prices").await.unwrap();
    assert_eq!(second.headers["x-cache-status"], "Hit");
    assert_eq!(second.text(), first.text());
    assert!(second.headers.contains_key("age"));
    assert_eq!(orders.state.requests(), 1);
}
