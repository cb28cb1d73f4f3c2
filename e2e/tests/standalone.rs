//! e2e: the real `weir` binary in standalone mode (`weir run --config-dir DIR`) in front of
//! real echo origins: routing, live reload, a broken file keeping the last good
//! configuration, and invalid Routes reported in `/debug/status` without affecting others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{
    ConfigDir, EchoOrigin, WeirProcess, condition, conditions_of, poll_until, prefix_route_yaml,
    service_yaml,
};

/// How long a reload may take before a test gives up (the target is 100 ms).
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// Polls until `GET path` is answered by the origin named `backend`.
async fn wait_for_backend(weir: &WeirProcess, path: &str, backend: &str) -> anyhow::Result<Value> {
    poll_until(RELOAD_LIMIT, &format!("{path} served by {backend}"), || async {
        let reply = weir.get("localhost", path).await?;
        if reply.status != 200 {
            return Ok(None);
        }
        let body = reply.json()?;
        Ok((body["backend"] == backend).then_some(body))
    })
    .await
}

/// The files named in `/debug/status`'s `errors` (`[{file, document, reason}]`).
fn error_files(status: &Value) -> Vec<String> {
    status["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["file"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Polls `/debug/status` until `pred` holds on its load errors' file names.
async fn wait_for_errors(
    weir: &WeirProcess,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> anyhow::Result<Value> {
    poll_until(RELOAD_LIMIT, what, || async {
        let status = weir.status().await?;
        Ok(pred(&error_files(&status)).then_some(status))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_to_origin_and_reloads_a_new_route() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let users = EchoOrigin::start("users").await.unwrap();
    let dir = ConfigDir::new("reload").unwrap();
    dir.write(
        "services.yaml",
        &(service_yaml("orders", orders.addr.port()) + &service_yaml("users", users.addr.port())),
    )
    .unwrap();
    dir.write("orders.yaml", &prefix_route_yaml("orders", "/api/orders", "orders")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    let reply = weir.get("localhost", "/api/orders/7?x=1").await.unwrap();
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    let body = reply.json().unwrap();
    assert_eq!(body["backend"], "orders");
    assert_eq!(body["path"], "/api/orders/7?x=1");
    assert!(body["headers"]["x-forwarded-for"].is_string(), "no X-Forwarded-For: {body}");

    // Not routed yet: the gateway's own JSON 404.
    let reply = weir.get("localhost", "/api/users/1").await.unwrap();
    assert_eq!(reply.status, 404, "body: {}", reply.text());
    assert_eq!(
        reply.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(reply.json().unwrap()["status"], 404);

    // Add a file with a new Route: it goes live without a restart.
    dir.write("users.yaml", &prefix_route_yaml("users", "/api/users", "users")).unwrap();
    let body = wait_for_backend(&weir, "/api/users/1", "users").await.unwrap();
    assert_eq!(body["path"], "/api/users/1");
    // The old route still works.
    let reply = weir.get("localhost", "/api/orders").await.unwrap();
    assert_eq!(reply.json().unwrap()["backend"], "orders");

    // Edit a file in place: the route now points at another Service.
    dir.write("users.yaml", &prefix_route_yaml("users", "/api/users", "orders")).unwrap();
    wait_for_backend(&weir, "/api/users/1", "orders").await.unwrap();

    // Delete the file: its Route is gone.
    dir.remove("users.yaml").unwrap();
    poll_until(RELOAD_LIMIT, "/api/users gone", || async {
        Ok((weir.get("localhost", "/api/users/1").await?.status == 404).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_last_good_config_and_reports_the_file() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let dir = ConfigDir::new("broken").unwrap();
    dir.write("services.yaml", &service_yaml("orders", orders.addr.port())).unwrap();
    dir.write("routes.yaml", &prefix_route_yaml("orders", "/api/orders", "orders")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    assert_eq!(weir.get("localhost", "/api/orders").await.unwrap().status, 200);

    // A file that does not parse.
    dir.write("routes.yaml", "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: [oops\n")
        .unwrap();
    let status = wait_for_errors(&weir, "routes.yaml error in /debug/status", |files| {
        files.iter().any(|f| f.ends_with("routes.yaml"))
    })
    .await
    .unwrap();
    let error = status["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"].as_str().is_some_and(|f| f.ends_with("routes.yaml")));
    let error = error.unwrap();
    assert!(error["document"].is_u64(), "document index: {error}");
    assert!(!error["reason"].as_str().unwrap_or_default().is_empty(), "reason: {error}");
    // The last good configuration keeps serving, including the broken file's Route.
    for _ in 0..20 {
        let reply = weir.get("localhost", "/api/orders/1").await.unwrap();
        assert_eq!(
            reply.status,
            200,
            "after breaking routes.yaml: {}\nstatus: {status}",
            reply.text()
        );
        assert_eq!(reply.json().unwrap()["backend"], "orders");
    }

    // A document of an unknown kind in another file is reported too, and changes nothing.
    dir.write("gizmo.yaml", "apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n")
        .unwrap();
    wait_for_errors(&weir, "gizmo.yaml error in /debug/status", |files| {
        files.iter().any(|f| f.ends_with("gizmo.yaml"))
    })
    .await
    .unwrap();
    assert_eq!(weir.get("localhost", "/api/orders").await.unwrap().status, 200);

    // Fixing the files clears the errors and applies the new content.
    dir.remove("gizmo.yaml").unwrap();
    dir.write("routes.yaml", &prefix_route_yaml("orders", "/v2/orders", "orders")).unwrap();
    wait_for_backend(&weir, "/v2/orders", "orders").await.unwrap();
    wait_for_errors(&weir, "errors cleared", <[String]>::is_empty).await.unwrap();
}

const BAD_REGEX_ROUTE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: bad-regex
spec:
  rules:
    - matches:
        - path: {type: RegularExpression, value: "/items/(["}
      backends:
        - {service: orders, port: 80}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_route_is_reported_and_others_keep_working() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let dir = ConfigDir::new("invalid").unwrap();
    dir.write("services.yaml", &service_yaml("orders", orders.addr.port())).unwrap();
    dir.write("good.yaml", &prefix_route_yaml("good", "/good", "orders")).unwrap();
    dir.write("bad.yaml", BAD_REGEX_ROUTE).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    let reply = weir.get("localhost", "/good/1").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weir.get("localhost", "/items/1").await.unwrap().status, 404);

    let status = weir.status().await.unwrap();
    let conds = conditions_of(&status, "Route", "bad-regex")
        .unwrap_or_else(|| panic!("no conditions for bad-regex in {status:#}"));
    let accepted = condition(&conds, "Accepted").expect("Accepted condition");
    assert_eq!(accepted.status, "False", "{accepted:?}");
    assert_eq!(accepted.reason, "Invalid", "{accepted:?}");
    assert!(accepted.message.contains("spec.rules[0]"), "message names the field: {accepted:?}");
    let conds = conditions_of(&status, "Route", "good").expect("conditions for good");
    assert_eq!(condition(&conds, "Accepted").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(condition(&conds, "Programmed").map(|c| c.status.as_str()), Some("True"));

    // An invalid update of a good Route keeps its last good version serving.
    dir.write("good.yaml", &BAD_REGEX_ROUTE.replace("bad-regex", "good")).unwrap();
    let status = poll_until(RELOAD_LIMIT, "good Accepted=False", || async {
        let status = weir.status().await?;
        let rejected = conditions_of(&status, "Route", "good")
            .and_then(|c| condition(&c, "Accepted").map(|a| a.status == "False"))
            .unwrap_or(false);
        Ok(rejected.then_some(status))
    })
    .await
    .unwrap();
    let conds = conditions_of(&status, "Route", "good").unwrap();
    let accepted = condition(&conds, "Accepted").unwrap();
    assert!(accepted.message.contains("last good"), "{accepted:?}");
    let reply = weir.get("localhost", "/good/2").await.unwrap();
    assert_eq!(reply.status, 200, "last good version of `good` serves: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_keep_client_connections() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let users = EchoOrigin::start("users").await.unwrap();
    let dir = ConfigDir::new("load").unwrap();
    let services =
        service_yaml("orders", orders.addr.port()) + &service_yaml("users", users.addr.port());
    dir.write("services.yaml", &services).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("api", "/api", "orders")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // Four clients, each on ONE keep-alive connection, send requests back to back while the
    // Route flips between two Services ten times. After each flip we wait until every
    // client has been answered by the new Service on its same connection.
    let served = weir_e2e::reload::flip_route_under_load(weir.http_addr, &dir, 4, RELOAD_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", weir.log()));
    assert!(served.iter().all(|&n| n >= 10), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_backend_answers_503_and_reports_backend_not_found() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let dir = ConfigDir::new("missing").unwrap();
    dir.write("services.yaml", &service_yaml("orders", orders.addr.port())).unwrap();
    dir.write("good.yaml", &prefix_route_yaml("good", "/good", "orders")).unwrap();
    dir.write("lonely.yaml", &prefix_route_yaml("lonely", "/lonely", "nowhere")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    let reply = weir.get("localhost", "/lonely/1").await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    let body = reply.json().unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(weir.get("localhost", "/good").await.unwrap().status, 200);

    let status = weir.status().await.unwrap();
    let conds = conditions_of(&status, "Route", "lonely").expect("conditions for lonely");
    let refs = condition(&conds, "ResolvedRefs").expect("ResolvedRefs");
    assert_eq!((refs.status.as_str(), refs.reason.as_str()), ("False", "BackendNotFound"));
    assert!(refs.message.contains("spec.rules[0].backends[0]"), "{refs:?}");

    // Adding the Service resolves it, live.
    dir.write("nowhere.yaml", &service_yaml("nowhere", orders.addr.port())).unwrap();
    wait_for_backend(&weir, "/lonely/1", "orders").await.unwrap();
}
