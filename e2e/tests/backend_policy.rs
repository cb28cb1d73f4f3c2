//! e2e: BackendPolicy with the real `weir` binary in standalone mode, in front of demo
//! origins that can be told to fail (`?fail=NNN`, a switchable `/healthz`): a policy applied
//! live, a circuit that opens (the fallback answered without contacting the origin, the
//! state on `/debug/backends` and `/metrics`) and closes again, an endpoint failing its
//! active health check leaving rotation and coming back, and a second policy for the same
//! Service reported `Conflicted`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{
    ConfigDir, DemoOrigin, WeirProcess, condition, conditions_of, poll_until, prefix_route_yaml,
    service_yaml,
};

/// How long a reload or a health transition may take before a test gives up.
const LIMIT: Duration = Duration::from_secs(10);

/// A Service `name` with one EndpointSlice per origin (they share 127.0.0.1).
fn multi_endpoint_service(name: &str, origins: &[&DemoOrigin]) -> String {
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports:\n    - {{name: http, port: 80}}\n"
    );
    for (i, origin) in origins.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n  - {{name: http, port: {}}}\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n",
            origin.addr.port()
        ));
    }
    yaml
}

/// The `/debug/backends` entry of `backend` (`ns/svc:port`).
async fn backend_state(weir: &WeirProcess, backend: &str) -> anyhow::Result<Option<Value>> {
    let reply = weir.admin("/debug/backends").await?;
    anyhow::ensure!(reply.status == 200, "/debug/backends answered {}", reply.status);
    let json = reply.json()?;
    Ok(json["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["backend"] == backend))
        .cloned())
}

/// Waits until `kind/name` has condition `type_` with `status` (and `reason`, if given).
async fn wait_condition(
    weir: &WeirProcess,
    kind: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) {
    poll_until(LIMIT, &format!("{kind} {name} {type_}={status}"), || async {
        let doc = weir.status().await?;
        let conditions = conditions_of(&doc, kind, name).unwrap_or_default();
        Ok(condition(&conditions, type_)
            .filter(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
            .map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
}

const BREAKER_POLICY: &str = r#"---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: flaky}
spec:
  targetRefs: [{kind: Service, name: flaky}]
  circuitBreaker:
    failureThreshold: 2
    window: 30s
    openFor: 1s
    successThreshold: 1
    fallback: {status: 503, body: '{"error":"flaky is resting"}', contentType: application/json}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_policy_opens_and_closes_a_circuit_visible_on_debug_backends() {
    let flaky = DemoOrigin::start("flaky").await.unwrap();
    let dir = ConfigDir::new("backend-policy").unwrap();
    dir.write("services.yaml", &service_yaml("flaky", flaky.addr.port())).unwrap();
    dir.write("routes.yaml", &prefix_route_yaml("flaky", "/flaky", "flaky")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // Without a policy: failures pass through, nothing opens, /debug/backends shows the
    // endpoint healthy with no circuit.
    for _ in 0..4 {
        let reply = weir.get("localhost", "/flaky?fail=500").await.unwrap();
        assert_eq!(reply.status, 500, "{}", reply.text());
    }
    let state = backend_state(&weir, "default/flaky:80").await.unwrap().expect("listed");
    assert_eq!(state["policy"], Value::Null, "{state}");
    assert_eq!(state["circuit"], Value::Null, "{state}");
    assert_eq!(state["endpoints"][0]["health"], "healthy", "{state}");

    // Applied live.
    dir.write("policy.yaml", BREAKER_POLICY).unwrap();
    wait_condition(&weir, "BackendPolicy", "flaky", "Accepted", "True", None).await;
    poll_until(LIMIT, "policy bound", || async {
        let state = backend_state(&weir, "default/flaky:80").await?;
        Ok(state.filter(|s| s["policy"] == "default/flaky").map(|_| ()))
    })
    .await
    .unwrap();

    // Two failures open it; the third request is answered by weir, the origin not asked.
    for _ in 0..2 {
        let reply = weir.get("localhost", "/flaky?fail=500").await.unwrap();
        assert_eq!(reply.status, 500, "{}", reply.text());
    }
    let before = flaky.state.requests();
    let reply = weir.get("localhost", "/flaky").await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"error":"flaky is resting"}"#);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(flaky.state.requests(), before, "an open circuit must not reach the origin");
    let state = backend_state(&weir, "default/flaky:80").await.unwrap().expect("listed");
    assert_eq!(state["circuit"]["state"], "Open", "{state}");
    let metrics = weir.admin("/metrics").await.unwrap().text();
    assert!(metrics.contains(r#"weir_circuit_state{backend="default/flaky:80"} 1"#), "{metrics}");
    assert!(weir.log().contains("circuit"), "the opening is logged:\n{}", weir.log());

    // After openFor, one successful probe closes it (successThreshold 1).
    let reply = poll_until(LIMIT, "a probe after openFor", || async {
        let reply = weir.get("localhost", "/flaky").await?;
        Ok((reply.status == 200).then_some(reply))
    })
    .await
    .unwrap();
    assert_eq!(reply.json().unwrap()["backend"], "flaky");
    let state = backend_state(&weir, "default/flaky:80").await.unwrap().expect("listed");
    assert_eq!(state["circuit"]["state"], "Closed", "{state}");

    // A second policy for the same Service loses to the first.
    let second = BREAKER_POLICY.replace("name: flaky}\nspec", "name: flaky-2}\nspec");
    dir.write("policy-2.yaml", &second).unwrap();
    wait_condition(&weir, "BackendPolicy", "flaky-2", "Accepted", "False", Some("Conflicted"))
        .await;
    wait_condition(&weir, "BackendPolicy", "flaky", "Accepted", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_check_leaves_rotation_and_comes_back() {
    let a = DemoOrigin::start("inventory-a").await.unwrap();
    let b = DemoOrigin::start("inventory-b").await.unwrap();
    let c = DemoOrigin::start("inventory-c").await.unwrap();
    let dir = ConfigDir::new("backend-policy-health").unwrap();
    dir.write("services.yaml", &multi_endpoint_service("inventory", &[&a, &b, &c])).unwrap();
    dir.write("routes.yaml", &prefix_route_yaml("inventory", "/inventory", "inventory")).unwrap();
    dir.write(
        "policy.yaml",
        r#"---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: inventory}
spec:
  targetRefs: [{kind: Service, name: inventory}]
  loadBalancer: {type: RoundRobin}
  healthCheck:
    active: {type: HTTP, path: /healthz, interval: 100ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
"#,
    )
    .unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    wait_condition(&weir, "BackendPolicy", "inventory", "Accepted", "True", None).await;

    // All three serve.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let reply = weir.get("localhost", "/inventory").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        seen.insert(reply.json().unwrap()["backend"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // c fails its checks: it is reported unhealthy and gets no more traffic.
    c.state.set_health(503);
    let c_addr = c.addr.to_string();
    let endpoint_health = |state: &Value, addr: &str| {
        state["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["address"] == addr))
            .map(|e| e["health"].as_str().unwrap_or("").to_owned())
    };
    poll_until(LIMIT, "c unhealthy", || async {
        let state = backend_state(&weir, "default/inventory:80").await?;
        Ok(state.filter(|s| endpoint_health(s, &c_addr).as_deref() == Some("unhealthy")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
    let before = c.state.requests();
    for _ in 0..12 {
        let reply = weir.get("localhost", "/inventory").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_ne!(reply.json().unwrap()["backend"], "inventory-c");
    }
    assert_eq!(c.state.requests(), before, "an unhealthy endpoint gets no requests");

    // Healthy again after two good checks.
    c.state.set_health(200);
    poll_until(LIMIT, "c healthy again", || async {
        let state = backend_state(&weir, "default/inventory:80").await?;
        Ok(state.filter(|s| endpoint_health(s, &c_addr).as_deref() == Some("healthy")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
    let metrics = weir.admin("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(
            r#"weir_backend_endpoints{backend="default/inventory:80",state="healthy"} 3"#
        ),
        "{metrics}"
    );
}
