//! e2e: authentication with the real `weir` binary in standalone mode: the quickstart's
//! protected route (README curls: no credential → 401, token or API key → 200 with identity
//! headers at the backend), a global jwt Plugin with a Route that opts out, fail closed on a
//! deleted Plugin, a broken edit keeping the last good Plugin, and no secret on the admin port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use weir_e2e::{
    ConfigDir, EchoOrigin, WeirProcess, condition, conditions_of, http_request, poll_until,
    prefix_route_yaml, service_yaml, workspace_root,
};

/// The README's token: HS256, iss `quickstart-issuer`, sub `user-42`, exp 2100-01-01, signed
/// with the quickstart Consumer's secret (minted with openssl, see docs/plugins/jwt.md).
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJxdWlja3N0YXJ0LWlzc3VlciIsInN1YiI6InVzZXItNDIiLCJleHAiOjQxMDI0NDQ4MDB9.2FOPtbGr6ly46t2XFrv4oZaPM6x86KU3NNUpFlDY3Dk";

const RELOAD_LIMIT: Duration = Duration::from_secs(5);

fn quickstart_auth() -> String {
    std::fs::read_to_string(workspace_root().join("deploy/examples/quickstart/auth.yaml")).unwrap()
}

async fn call(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> weir_e2e::Reply {
    http_request(weir.http_addr, "GET", "localhost:8080", path, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_protected_route_behaves_as_the_readme_says() {
    let users = EchoOrigin::start("users-v1").await.unwrap();
    let dir = ConfigDir::new("auth-quickstart").unwrap();
    dir.write("services.yaml", &service_yaml("users", users.addr.port())).unwrap();
    dir.write("auth.yaml", &quickstart_auth()).unwrap();
    dir.write("public.yaml", &prefix_route_yaml("public", "/public", "users")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // A route without authentication: the claim header a jwt Plugin sets (X-User-Id) and
    // X-Consumer-* are still removed, so a backend can trust them wherever they appear.
    let reply =
        call(&weir, "/public/x", &[("x-user-id", "root"), ("x-consumer-username", "admin")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &reply.json().unwrap()["headers"];
    assert!(seen.get("x-user-id").is_none() && seen.get("x-consumer-username").is_none(), "{seen}");

    // No credential: 401, the gateway's JSON, one challenge per method.
    let reply = call(&weir, "/api/account", &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let body = reply.json().unwrap();
    assert_eq!(body["status"], 401);
    let challenges: Vec<_> = reply.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");

    // A bad token: 401 with error="invalid_token", no detail.
    let reply = call(&weir, "/api/account", &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    // The token: 200, identity headers at the backend, spoofed ones replaced, no token.
    let bearer = format!("Bearer {TOKEN}");
    let reply = call(
        &weir,
        "/api/account",
        &[("authorization", &bearer), ("x-consumer-username", "admin"), ("x-user-id", "root")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &reply.json().unwrap()["headers"];
    assert_eq!(seen["x-consumer-username"], "demo-user");
    assert_eq!(seen["x-user-id"], "user-42");
    assert!(seen.get("authorization").is_none(), "{seen}");

    // Either API key of the consumer (rotation), by header or query; never forwarded.
    for key in ["demo-api-key-1", "demo-api-key-2"] {
        let reply = call(&weir, "/api/account", &[("x-api-key", key)]).await;
        assert_eq!(reply.status, 200, "{key}");
        let seen = &reply.json().unwrap()["headers"];
        assert_eq!(seen["x-consumer-username"], "demo-user");
        assert!(seen.get("x-api-key").is_none());
    }
    let reply = call(&weir, "/api/account?apikey=demo-api-key-1", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json().unwrap()["path"], "/api/account");
    assert_eq!(call(&weir, "/api/account", &[("x-api-key", "nope")]).await.status, 401);

    // The admin port: reasons in the metrics, no secret anywhere in the snapshot.
    let metrics = weir.admin("/metrics").await.unwrap().text();
    assert!(metrics.contains("weir_auth_failures_total{reason=\"missing\"}"), "{metrics}");
    assert!(metrics.contains("weir_config_reloads_total"), "{metrics}");
    assert_eq!(metrics.matches("# EOF").count(), 1);
    let snapshot = weir.admin("/debug/snapshot").await.unwrap().text();
    for secret in ["demo-api-key-1", "demo-api-key-2", "quickstart-only-hmac", TOKEN] {
        assert!(!snapshot.contains(secret), "{secret} in /debug/snapshot");
    }
    let log = weir.log();
    assert!(!log.contains(TOKEN) && !log.contains("demo-api-key-1"), "secret in the log");
    let status = weir.status().await.unwrap();
    let consumer = conditions_of(&status, "Consumer", "demo").expect("consumer status");
    assert_eq!(condition(&consumer, "ResolvedRefs").unwrap().status, "True");
}

const GLOBAL: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: everyone-needs-a-token, namespace: weir-system}
spec:
  global: true
  jwt: {algorithms: [HS256], keyClaim: iss}
"#;

const GLOBAL_BROKEN: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: everyone-needs-a-token, namespace: weir-system, generation: 2}
spec:
  global: true
  jwt: {algorithms: [none], keyClaim: iss}
"#;

const ROUTES: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: private}
spec:
  rules:
    - matches: [{path: {value: /private}}]
      backends: [{service: users, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: health}
spec:
  skipGlobalPlugins: [jwt]
  rules:
    - matches: [{path: {value: /health}}]
      backends: [{service: users, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: needs-extra}
spec:
  plugins: [extra-keys]
  rules:
    - matches: [{path: {value: /extra}}]
      backends: [{service: users, port: 80}]
"#;

const EXTRA: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: extra-keys}
spec:
  keyAuth: {}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_jwt_opt_out_last_good_plugin_and_fail_closed() {
    let users = EchoOrigin::start("users-v1").await.unwrap();
    let dir = ConfigDir::new("auth-global").unwrap();
    dir.write("services.yaml", &service_yaml("users", users.addr.port())).unwrap();
    // The quickstart's Consumer and Secrets (its Route and Plugins are not needed here).
    dir.write("consumer.yaml", &quickstart_auth()).unwrap();
    dir.write("global.yaml", GLOBAL).unwrap();
    dir.write("extra.yaml", EXTRA).unwrap();
    dir.write("routes.yaml", ROUTES).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    let bearer = format!("Bearer {TOKEN}");

    assert_eq!(call(&weir, "/private", &[]).await.status, 401);
    assert_eq!(call(&weir, "/private", &[("authorization", &bearer)]).await.status, 200);
    assert_eq!(call(&weir, "/health", &[]).await.status, 200, "opted out");
    // Global jwt plus route keyAuth: either credential.
    assert_eq!(call(&weir, "/extra", &[("x-api-key", "demo-api-key-1")]).await.status, 200);
    assert_eq!(call(&weir, "/extra", &[("authorization", &bearer)]).await.status, 200);

    let status = weir.status().await.unwrap();
    let text = status.to_string();
    assert!(text.contains("\"skipped\""), "the opt-out is visible: {text}");

    // A broken edit of the global plugin keeps its last good version protecting.
    dir.write("global.yaml", GLOBAL_BROKEN).unwrap();
    poll_until(RELOAD_LIMIT, "the Plugin reported invalid", || async {
        let status = weir.status().await?;
        let c = conditions_of(&status, "Plugin", "everyone-needs-a-token");
        Ok(c.and_then(|c| condition(&c, "Accepted").map(|a| a.status == "False"))
            .unwrap_or(false)
            .then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(call(&weir, "/private", &[]).await.status, 401, "still protected");
    assert_eq!(call(&weir, "/private", &[("authorization", &bearer)]).await.status, 200);

    // A deleted Plugin that a Route names: the Route fails closed (503), never open.
    dir.remove("extra.yaml").unwrap();
    poll_until(RELOAD_LIMIT, "the route fails closed", || async {
        let reply = call(&weir, "/extra", &[("x-api-key", "demo-api-key-1")]).await;
        Ok((reply.status == 503).then_some(()))
    })
    .await
    .unwrap();
    let status = weir.status().await.unwrap();
    let route = conditions_of(&status, "Route", "needs-extra").expect("route status");
    let refs = condition(&route, "ResolvedRefs").unwrap();
    assert_eq!((refs.status.as_str(), refs.reason.as_str()), ("False", "PluginNotFound"));
    assert_eq!(call(&weir, "/health", &[]).await.status, 200, "others unaffected");
}
