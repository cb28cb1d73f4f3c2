//! BackendPolicies: every field compiled, defaults, invalid fields, conflicts, missing
//! Services and Secrets, protocol overrides, and the same compiled `Arc` across updates.

use std::time::Duration;

use http::StatusCode;
use weir_dataplane::upstream::policy::{CheckKind, HashOn, LoadBalancer};
use weir_dataplane::{Backend, UpstreamProtocol};

use super::*;
use crate::compile::conditions::{ACCEPTED, RESOLVED_REFS};
use crate::compile::update;

fn backend<'c>(c: &'c Compiled, service: &str) -> &'c Backend {
    c.backends
        .backends
        .iter()
        .find(|b| &*b.key.service == service)
        .unwrap_or_else(|| panic!("no backend for {service}"))
}

fn policy_of<'c>(c: &'c Compiled, service: &str) -> &'c weir_dataplane::upstream::BackendPolicy {
    backend(c, service).policy.as_deref().unwrap_or_else(|| panic!("{service}: no policy"))
}

fn with(extra: &str) -> Index {
    let base = std::fs::read_to_string(format!(
        "{}/tests/fixtures/compile/backend-policy.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    load_str(&format!("{base}---\n{extra}"))
}

#[test]
fn every_field_is_compiled() {
    let c = compile_fixture("backend-policy.yaml");
    let s = status(&c, Kind::BackendPolicy, "default", "orders");
    assert!(s.is_true(ACCEPTED) && s.is_true(RESOLVED_REFS), "{s:#?}");
    assert_eq!(s.generation, 4);
    let p = policy_of(&c, "orders");
    assert_eq!(p.source, Some(weir_dataplane::ObjectKey::new("default", "orders")));
    assert_eq!(p.generation, 4);
    let LoadBalancer::ConsistentHash(HashOn::Cookie(cookie)) = &p.load_balancer else {
        panic!("{:?}", p.load_balancer)
    };
    assert_eq!(&*cookie.name, "weir-affinity");
    assert_eq!(cookie.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(&*cookie.path, "/shop");
    assert_eq!(p.slow_start, Some(Duration::from_secs(30)));
    let active = p.active.as_deref().unwrap();
    let CheckKind::Http { path, host, expected_statuses } = &active.kind else { panic!() };
    assert_eq!(&**path, "/healthz?full=1");
    assert_eq!(host.as_ref().unwrap(), "orders.internal");
    assert_eq!(&**expected_statuses, &[StatusCode::OK, StatusCode::NO_CONTENT]);
    assert_eq!(active.interval, Duration::from_secs(2));
    assert_eq!(active.timeout, Duration::from_millis(500));
    assert_eq!((active.healthy_threshold, active.unhealthy_threshold), (4, 6));
    let passive = p.passive.unwrap();
    assert_eq!(passive.consecutive_5xx, Some(7));
    assert_eq!(passive.consecutive_gateway_errors, Some(3));
    assert_eq!(passive.base_ejection_time, Duration::from_secs(10));
    assert_eq!(passive.max_ejection_percent, 30);
    assert_eq!(p.panic_threshold, 25);
    let b = p.breaker.as_ref().unwrap();
    assert_eq!(b.failure_threshold, 9);
    assert_eq!(b.window, Duration::from_secs(120));
    assert_eq!(b.open_for, Duration::from_secs(45));
    assert_eq!(b.success_threshold, 2);
    assert_eq!(
        (b.max_connections, b.max_pending_requests, b.max_parallel_requests),
        (Some(100), Some(10), Some(50))
    );
    assert_eq!(b.fallback.status, StatusCode::BAD_GATEWAY);
    assert_eq!(b.fallback.body.as_deref(), Some(&br#"{"error":"orders unavailable"}"#[..]));
    assert_eq!(b.fallback.content_type, "application/problem+json");
    let r = p.retry.unwrap();
    assert_eq!(r.budget_percent, 30);
    assert_eq!(
        (r.backoff_base, r.backoff_max),
        (Duration::from_millis(10), Duration::from_secs(1))
    );
    assert!(p.tls.is_none());
    assert_eq!(p.protocol, Some(UpstreamProtocol::H2c));
    assert_eq!(backend(&c, "orders").protocol, UpstreamProtocol::H2c, "protocol overrides");
    assert_eq!(p.connection.max_idle_per_endpoint, 8);
    assert_eq!(p.connection.idle_timeout, Duration::from_secs(90));
    assert_eq!(backend(&c, "orders").endpoints.len(), 2);
    // A Service without a policy carries none: the request path is unchanged for it.
    assert!(backend(&c, "plain").policy.is_none());
}

#[test]
fn defaults_are_applied() {
    let c = compile_fixture("backend-policy.yaml");
    let s = status(&c, Kind::BackendPolicy, "default", "users");
    assert!(s.is_true(ACCEPTED) && s.is_true(RESOLVED_REFS), "{s:#?}");
    let p = policy_of(&c, "users");
    assert_eq!(p.load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(p.slow_start, None);
    let active = p.active.as_deref().unwrap();
    let CheckKind::Http { path, host, expected_statuses } = &active.kind else { panic!() };
    assert_eq!((&**path, host), ("/", &None));
    assert_eq!(&**expected_statuses, &[StatusCode::OK]);
    assert_eq!((active.interval, active.timeout), (Duration::from_secs(5), Duration::from_secs(1)));
    assert_eq!((active.healthy_threshold, active.unhealthy_threshold), (2, 3));
    let passive = p.passive.unwrap();
    assert_eq!(passive.consecutive_5xx, Some(5));
    assert_eq!(passive.consecutive_gateway_errors, None);
    assert_eq!(passive.base_ejection_time, Duration::from_secs(30));
    assert_eq!(passive.max_ejection_percent, 50);
    assert_eq!(p.panic_threshold, 50);
    let b = p.breaker.as_ref().unwrap();
    assert_eq!((b.failure_threshold, b.success_threshold), (5, 3));
    assert_eq!((b.window, b.open_for), (Duration::from_secs(60), Duration::from_secs(30)));
    assert_eq!(
        (b.max_connections, b.max_pending_requests, b.max_parallel_requests),
        (None, None, None)
    );
    assert_eq!(b.fallback.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b.fallback.body, None);
    assert_eq!(b.fallback.content_type, "application/json");
    let r = p.retry.unwrap();
    assert_eq!(r.budget_percent, 20);
    assert_eq!(
        (r.backoff_base, r.backoff_max),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
    assert_eq!(p.connection.max_idle_per_endpoint, 64);
    assert_eq!(p.connection.idle_timeout, Duration::from_secs(60));
    assert_eq!(p.protocol, None);
    assert_eq!(backend(&c, "users").protocol, UpstreamProtocol::Http1);
}

#[test]
fn invalid_fields_are_rejected_naming_the_field() {
    let bad = |name: &str, spec: &str, needles: &[&str]| {
        let yaml = format!(
            "apiVersion: weir.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}, generation: 2}}\nspec:\n{spec}"
        );
        let c = compile(&with(&yaml), &Memory::default());
        let s = status(&c, Kind::BackendPolicy, "default", name);
        assert_cond(s, ACCEPTED, "False", "Invalid", needles);
    };
    let target = "  targetRefs: [{kind: Service, name: plain}]\n";
    bad("kind", "  targetRefs: [{kind: Pod, name: x}]\n", &["spec.targetRefs[0]: kind \"Pod\""]);
    bad(
        "group",
        "  targetRefs: [{group: apps, kind: Service, name: x}]\n",
        &["spec.targetRefs[0]", "group \"apps\""],
    );
    bad("none", "  targetRefs: []\n", &["spec.targetRefs: at least one"]);
    bad(
        "hash",
        &format!("{target}  loadBalancer: {{type: ConsistentHash}}\n"),
        &["spec.loadBalancer.consistentHash: required"],
    );
    bad(
        "hash-header",
        &format!(
            "{target}  loadBalancer: {{type: ConsistentHash, consistentHash: {{type: Header}}}}\n"
        ),
        &["spec.loadBalancer.consistentHash.header: required when type is Header"],
    );
    bad(
        "hash-header-name",
        &format!(
            "{target}  loadBalancer: {{type: ConsistentHash, consistentHash: {{type: Header, header: 'x y'}}}}\n"
        ),
        &["spec.loadBalancer.consistentHash.header: \"x y\" is not a valid header name"],
    );
    bad(
        "hash-cookie",
        &format!(
            "{target}  loadBalancer: {{type: ConsistentHash, consistentHash: {{type: Cookie, cookie: {{name: 'a;b', ttl: soon}}}}}}\n"
        ),
        &[
            "spec.loadBalancer.consistentHash.cookie.name",
            "spec.loadBalancer.consistentHash.cookie.ttl",
        ],
    );
    bad(
        "hash-query",
        &format!(
            "{target}  loadBalancer: {{type: ConsistentHash, consistentHash: {{type: QueryParam}}}}\n"
        ),
        &["spec.loadBalancer.consistentHash.queryParam: required"],
    );
    bad(
        "durations",
        &format!(
            "{target}  healthCheck: {{active: {{interval: 0s, timeout: x, healthyThreshold: 0, path: nope, expectedStatuses: [700]}}, passive: {{baseEjectionTime: 1d, maxEjectionPercent: 101}}, panicThreshold: 200}}\n"
        ),
        &[
            "spec.healthCheck.active.interval: must be greater than 0",
            "spec.healthCheck.active.timeout: invalid duration",
            "spec.healthCheck.active.healthyThreshold: must be at least 1",
            "spec.healthCheck.active.path",
            "spec.healthCheck.active.expectedStatuses[0]: 700",
            "spec.healthCheck.passive.baseEjectionTime",
            "spec.healthCheck.passive.maxEjectionPercent: 101",
            "spec.healthCheck.panicThreshold: 200",
        ],
    );
    bad(
        "breaker",
        &format!(
            "{target}  circuitBreaker: {{failureThreshold: 0, openFor: never, maxParallelRequests: 0, fallback: {{status: 99, contentType: \"a\\nb\"}}}}\n"
        ),
        &[
            "spec.circuitBreaker.failureThreshold: must be at least 1",
            "spec.circuitBreaker.openFor",
            "spec.circuitBreaker.maxParallelRequests: must be at least 1",
            "spec.circuitBreaker.fallback.status: 99",
        ],
    );
    bad(
        "retry",
        &format!("{target}  retry: {{budgetPercent: 101, backoff: {{base: 1s, max: 10ms}}}}\n"),
        &["spec.retry.budgetPercent", "spec.retry.backoff.max"],
    );
    bad(
        "tls-both",
        &format!(
            "{target}  tls: {{caSecretRef: {{name: ca}}, wellKnownCACertificates: System, hostname: 'bad host'}}\n"
        ),
        &["spec.tls: exactly one of caSecretRef or wellKnownCACertificates", "spec.tls.hostname"],
    );
    bad(
        "h2",
        &format!("{target}  protocol: H2\n"),
        &["spec.protocol: H2 (HTTP/2 over TLS) requires spec.tls"],
    );
    bad(
        "h2c-tls",
        &format!("{target}  protocol: H2C\n  tls: {{wellKnownCACertificates: System}}\n"),
        &["spec.protocol: H2C is HTTP/2 without TLS"],
    );
    bad(
        "idle",
        &format!("{target}  connection: {{idleTimeout: 5x}}\n"),
        &["spec.connection.idleTimeout"],
    );
    // An invalid policy does not apply: the Service keeps plain round robin.
    let yaml = "apiVersion: weir.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {name: p, generation: 1}\nspec:\n  targetRefs: [{kind: Service, name: plain}]\n  retry: {budgetPercent: 101}\n";
    let c = compile(&with(yaml), &Memory::default());
    assert!(backend(&c, "plain").policy.is_none());
}

#[test]
fn an_invalid_update_keeps_the_last_good_version_in_force() {
    let good = "apiVersion: weir.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {name: p, generation: 1}\nspec:\n  targetRefs: [{kind: Service, name: plain}]\n  retry: {budgetPercent: 40}\n";
    let first = compile(&with(good), &Memory::default());
    assert_eq!(policy_of(&first, "plain").retry.unwrap().budget_percent, 40);
    let broken = good.replace("generation: 1", "generation: 2").replace("40", "400");
    let second = compile(&with(&broken), &first.memory);
    let s = status(&second, Kind::BackendPolicy, "default", "p");
    assert_cond(
        s,
        ACCEPTED,
        "False",
        "Invalid",
        &["spec.retry.budgetPercent", "the last good version (generation 1) keeps serving"],
    );
    let p = policy_of(&second, "plain");
    assert_eq!((p.retry.unwrap().budget_percent, p.generation), (40, 1));
    assert!(Arc::ptr_eq(
        backend(&first, "plain").policy.as_ref().unwrap(),
        backend(&second, "plain").policy.as_ref().unwrap()
    ));
}

#[test]
fn the_younger_of_two_policies_for_one_service_is_conflicted() {
    let yaml = "apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: a-younger, generation: 1, creationTimestamp: '2024-06-01T00:00:00Z'}
spec:
  targetRefs: [{kind: Service, name: orders}, {kind: Service, name: plain}]
  retry: {budgetPercent: 77}
---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: z-same-age, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  targetRefs: [{kind: Service, name: users}]
";
    let c = compile(&with(yaml), &Memory::default());
    let younger = status(&c, Kind::BackendPolicy, "default", "a-younger");
    assert_cond(
        younger,
        ACCEPTED,
        "False",
        "Conflicted",
        &["spec.targetRefs[0]: Service default/orders already has BackendPolicy default/orders"],
    );
    // Same creation time: the name decides (users < z-same-age).
    let same_age = status(&c, Kind::BackendPolicy, "default", "z-same-age");
    assert_cond(same_age, ACCEPTED, "False", "Conflicted", &["BackendPolicy default/users"]);
    let oldest = status(&c, Kind::BackendPolicy, "default", "orders");
    assert!(oldest.is_true(ACCEPTED));
    assert_eq!(policy_of(&c, "orders").source.as_ref().unwrap().name.as_ref(), "orders");
    assert_eq!(policy_of(&c, "users").source.as_ref().unwrap().name.as_ref(), "users");
    // Where it does not contend, the younger one applies.
    assert_eq!(policy_of(&c, "plain").retry.unwrap().budget_percent, 77);
}

#[test]
fn a_missing_service_is_backend_not_found_and_the_policy_applies_once_it_appears() {
    let yaml = "apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: later, generation: 1}
spec:
  targetRefs: [{kind: Service, name: later}]
  retry: {budgetPercent: 11}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: later, generation: 1}
spec:
  rules: [{matches: [{path: {value: /later}}], backends: [{service: later, port: 80}]}]
";
    let mut index = with(yaml);
    let c = compile(&index, &Memory::default());
    let s = status(&c, Kind::BackendPolicy, "default", "later");
    assert!(s.is_true(ACCEPTED));
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "BackendNotFound",
        &["spec.targetRefs[0]: service \"later\" not found in namespace \"default\""],
    );
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "later", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    index.services.insert(ObjectRef::new("default", "later"), Arc::new(service));
    let c = update(&index, &c).unwrap();
    assert!(status(&c, Kind::BackendPolicy, "default", "later").is_true(RESOLVED_REFS));
    assert_eq!(policy_of(&c, "later").retry.unwrap().budget_percent, 11);
}

#[test]
fn a_missing_secret_is_secret_not_found_and_the_backend_answers_503() {
    let yaml = "apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: tls, generation: 1}
spec:
  targetRefs: [{kind: Service, name: plain}]
  tls: {caSecretRef: {name: plain-ca}, clientCertificateRef: {name: gw-client}}
---
apiVersion: v1
kind: Secret
metadata: {name: gw-client}
stringData: {tls.crt: not-a-cert}
";
    let c = compile(&with(yaml), &Memory::default());
    let s = status(&c, Kind::BackendPolicy, "default", "tls");
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["spec.tls.caSecretRef: secret default/plain-ca not found"],
    );
    assert_cond(
        s,
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.tls.clientCertificateRef: secret default/gw-client has no (or an empty) entry tls.key",
        ],
    );
    let b = backend(&c, "plain");
    assert!(b.policy.is_none() && b.endpoints.is_empty());
    let problem = b.problem.as_deref().unwrap_or_default();
    assert!(problem.contains("BackendPolicy default/tls"), "{problem}");
    assert_eq!(b.next_endpoint(), None, "no plain-text fallback: the backend answers 503");
}

#[test]
fn protocol_and_tls_override_the_app_protocol() {
    use crate::compile::backends::{PortProtocol, port_protocol};
    let port = |app: Option<&str>| k8s_openapi::api::core::v1::ServicePort {
        port: 80,
        app_protocol: app.map(str::to_owned),
        ..Default::default()
    };
    let pp = |protocol, tls| PortProtocol { protocol, tls };
    assert_eq!(port_protocol(&port(None)), pp(UpstreamProtocol::Http1, false));
    assert_eq!(port_protocol(&port(Some("kubernetes.io/h2c"))), pp(UpstreamProtocol::H2c, false));
    assert_eq!(port_protocol(&port(Some("grpc"))), pp(UpstreamProtocol::H2c, false));
    assert_eq!(port_protocol(&port(Some("https"))), pp(UpstreamProtocol::Http1, true));
    assert_eq!(
        port_protocol(&port(Some("kubernetes.io/https"))),
        pp(UpstreamProtocol::Http1, true)
    );
    assert_eq!(port_protocol(&port(Some("kubernetes.io/wss"))), pp(UpstreamProtocol::Http1, true));
    assert_eq!(port_protocol(&port(Some("grpcs"))), pp(UpstreamProtocol::H2, true));
    assert_eq!(port_protocol(&port(Some("example.com/x"))), pp(UpstreamProtocol::Http1, false));

    // `protocol: HTTP1` on an h2c port: HTTP/1.1 without a TLS policy.
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: grpc}
spec: {ports: [{port: 80, appProtocol: grpc}]}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: grpc, generation: 1}
spec:
  rules: [{matches: [{path: {value: /grpc}}], backends: [{service: grpc, port: 80}]}]
---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: grpc, generation: 1}
spec:
  targetRefs: [{kind: Service, name: grpc}]
  protocol: HTTP1
";
    let c = compile(&with(yaml), &Memory::default());
    assert_eq!(backend(&c, "grpc").protocol, UpstreamProtocol::Http1);
    assert_eq!(policy_of(&c, "grpc").protocol, Some(UpstreamProtocol::Http1));
    // Without the policy, the appProtocol decides.
    let without =
        yaml.split("---\napiVersion: weir.dev/v1alpha1\nkind: BackendPolicy").next().unwrap();
    let c = compile(&with(without), &Memory::default());
    assert_eq!(backend(&c, "grpc").protocol, UpstreamProtocol::H2c);
    assert!(backend(&c, "grpc").policy.is_none());
}

#[test]
fn updates_keep_the_same_compiled_policy_until_it_changes() {
    let mut index = load("backend-policy.yaml");
    let first = compile(&index, &Memory::default());
    let arc = |c: &Compiled| Arc::clone(backend(c, "orders").policy.as_ref().unwrap());

    // EndpointSlices only.
    let slice = index.endpoint_slices.get_mut(&ObjectRef::new("default", "orders-1")).unwrap();
    Arc::make_mut(slice).endpoints[0].addresses.push("10.0.0.9".into());
    let second = update(&index, &first).unwrap();
    assert!(Arc::ptr_eq(&first.routes, &second.routes));
    assert_eq!(backend(&second, "orders").endpoints.len(), 3);
    assert!(Arc::ptr_eq(&arc(&first), &arc(&second)), "an endpoint update keeps the policy");

    // A full compile (a Plugin appears) keeps it too.
    let plugin: weir_crds::Plugin = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Plugin",
        "metadata": {"name": "cid", "namespace": "default", "generation": 1},
        "spec": {"correlationId": {}}
    }))
    .unwrap();
    index.plugins.insert(ObjectRef::new("default", "cid"), Arc::new(plugin));
    let third = update(&index, &second).unwrap();
    assert!(Arc::ptr_eq(&arc(&second), &arc(&third)), "a full compile keeps the policy");

    // A policy change recompiles the policies and the backends, not the Routes.
    let key = ObjectRef::new("default", "users");
    let users = index.backend_policies.get_mut(&key).unwrap();
    let users = Arc::make_mut(users);
    users.metadata.generation = Some(2);
    users.spec.retry.as_mut().unwrap().budget_percent = 5;
    let fourth = update(&index, &third).unwrap();
    assert!(Arc::ptr_eq(&third.routes, &fourth.routes), "Routes were recompiled");
    assert!(Arc::ptr_eq(&arc(&third), &arc(&fourth)), "the unchanged policy was rebuilt");
    assert_eq!(policy_of(&fourth, "users").retry.unwrap().budget_percent, 5);
    assert_eq!(status(&fourth, Kind::BackendPolicy, "default", "users").generation, 2);
    let route = (Kind::Route, ObjectRef::new("default", "shop"));
    assert!(Arc::ptr_eq(&third.statuses[&route], &fourth.statuses[&route]));
    // And it equals a full compile.
    let full = compile(&index, &third.memory);
    assert_eq!(full.statuses, fourth.statuses);
    assert!(Arc::ptr_eq(&arc(&full), &arc(&fourth)));

    // A Secret read only by a policy is a policy change, not a full one.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "users-ca", "namespace": "default"},
        "stringData": {"ca.crt": "x"}
    }))
    .unwrap();
    let users = Arc::make_mut(index.backend_policies.get_mut(&key).unwrap());
    users.spec.tls = Some(weir_crds::backend_policy::BackendTlsSpec {
        ca_secret_ref: Some(weir_crds::LocalObjectReference { name: "users-ca".into() }),
        ..Default::default()
    });
    let fifth = update(&index, &fourth).unwrap();
    assert_cond(
        status(&fifth, Kind::BackendPolicy, "default", "users"),
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["users-ca"],
    );
    index.secrets.insert(ObjectRef::new("default", "users-ca"), Arc::new(secret));
    assert_eq!(
        crate::compile::incremental::changes(&index, &fifth.state),
        crate::compile::incremental::Change::Unchanged
    );
    let sixth = update(&index, &fifth).unwrap();
    assert!(Arc::ptr_eq(&fifth.routes, &sixth.routes));
    assert!(status(&sixth, Kind::BackendPolicy, "default", "users").is_true(RESOLVED_REFS));
}

/// A self-signed certificate for `name`: (cert PEM, key PEM).
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn secret_yaml(name: &str, entries: &[(&str, &str)]) -> String {
    let mut yaml =
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n");
    for (k, v) in entries {
        yaml.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    yaml
}

/// Pending until the upstream TLS connector (`UpstreamTls::new`) is built: the CA Secret and
/// the client certificate become the backend's TLS configuration, with the default hostname
/// `<service>.<namespace>.svc` and `protocol: H2` (ALPN h2).
#[test]
fn tls_from_a_ca_secret_and_a_client_certificate() {
    let (ca, _) = self_signed("plain.default.svc");
    let (client_crt, client_key) = self_signed("gateway");
    let yaml = format!(
        "{}---\n{}---\napiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {{name: tls, generation: 1}}
spec:
  targetRefs: [{{kind: Service, name: plain}}]
  tls: {{caSecretRef: {{name: plain-ca}}, clientCertificateRef: {{name: gw-client}}}}
  protocol: H2
",
        secret_yaml("plain-ca", &[("ca.crt", &ca)]),
        secret_yaml("gw-client", &[("tls.crt", &client_crt), ("tls.key", &client_key)]),
    );
    let c = compile(&with(&yaml), &Memory::default());
    let s = status(&c, Kind::BackendPolicy, "default", "tls");
    assert!(s.is_true(ACCEPTED) && s.is_true(RESOLVED_REFS), "{s:#?}");
    let b = backend(&c, "plain");
    assert_eq!(b.problem, None);
    assert_eq!(b.protocol, UpstreamProtocol::H2);
    let tls = b.policy.as_ref().unwrap().tls.as_ref().unwrap();
    assert_eq!(tls.server_name().to_str(), "plain.default.svc");
    assert_eq!(tls.config().alpn_protocols, vec![b"h2".to_vec()]);

    // A CA Secret whose ca.crt holds no certificate: Accepted=False naming the field, and
    // the backend answers 503 (never plain text).
    let broken = yaml.replace(&serde_json::to_string(&ca).unwrap(), "\"not a certificate\"");
    let c = compile(&with(&broken), &Memory::default());
    let s = status(&c, Kind::BackendPolicy, "default", "tls");
    assert_cond(s, ACCEPTED, "False", "Invalid", &["spec.tls"]);
    assert!(backend(&c, "plain").problem.is_some());
}

/// The backends of a compile as comparable text: key, protocol, problem, endpoints, policy.
fn backends_text(c: &Compiled) -> Vec<String> {
    c.backends
        .backends
        .iter()
        .map(|b| {
            format!("{} {:?} {:?} {:?} {:?}", b.key, b.protocol, b.problem, b.endpoints, b.policy)
        })
        .collect()
}

#[test]
fn policy_updates_equal_full_compiles_step_by_step() {
    let mut index = load("backend-policy.yaml");
    let mut current = compile(&index, &Memory::default());
    let key = ObjectRef::new("default", "users");
    for step in 0..12u32 {
        match step % 4 {
            // A policy edit (valid or not).
            0 | 1 => {
                let p = Arc::make_mut(index.backend_policies.get_mut(&key).unwrap());
                p.metadata.generation = Some(i64::from(step) + 2);
                p.spec.retry.as_mut().unwrap().budget_percent =
                    if step % 3 == 0 { 500 } else { step };
            }
            // Endpoints move.
            2 => {
                let slice = index.endpoint_slices.get_mut(&ObjectRef::new("default", "users-1"));
                let slice = Arc::make_mut(slice.unwrap());
                slice.ports.as_mut().unwrap()[0].port = Some(9100 + i32::try_from(step).unwrap());
            }
            // A second policy for users comes and goes.
            _ => {
                let other = ObjectRef::new("default", "users-two");
                if index.backend_policies.remove(&other).is_none() {
                    let mut p = (*index.backend_policies[&key]).clone();
                    p.metadata.name = Some("users-two".into());
                    p.metadata.creation_timestamp = None;
                    index.backend_policies.insert(other, Arc::new(p));
                }
            }
        }
        let next = update(&index, &current).unwrap();
        let full = compile(&index, &current.memory);
        assert_eq!(next.statuses, full.statuses, "step {step}: statuses");
        assert_eq!(backends_text(&next), backends_text(&full), "step {step}: backends");
        assert!(Arc::ptr_eq(&current.routes, &next.routes), "step {step}: Routes recompiled");
        current = next;
    }
}
