//! Upstream protocols from the Service port's `appProtocol`, and `timeouts.idle`.

use std::time::Duration;

use weir_dataplane::UpstreamProtocol;

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports:
    - {name: plain, port: 80}
    - {name: h2c, port: 81, appProtocol: kubernetes.io/h2c}
    - {name: grpc, port: 82, appProtocol: grpc}
    - {name: ws, port: 83, appProtocol: kubernetes.io/ws}
    - {name: http, port: 84, appProtocol: http}
    - {name: custom, port: 85, appProtocol: example.com/custom}
    - {name: tls, port: 443, appProtocol: https}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
endpoints: [{addresses: ["10.0.0.1"]}]
ports:
  - {name: plain, port: 8080}
  - {name: h2c, port: 8081}
  - {name: grpc, port: 8082}
  - {name: ws, port: 8083}
  - {name: http, port: 8084}
  - {name: custom, port: 8085}
  - {name: tls, port: 8443}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: streams, generation: 1}
spec:
  rules:
    - matches: [{path: {value: /a}}]
      timeouts: {connect: 1s, request: 10s, idle: 5m}
      backends:
        - {service: svc, port: 80}
        - {service: svc, port: 81}
        - {service: svc, port: 82}
        - {service: svc, port: 83}
        - {service: svc, port: 84}
        - {service: svc, port: 85}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: tls-upstream, generation: 1}
spec:
  rules:
    - backends: [{service: svc, port: 443}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: bad-idle, generation: 1}
spec:
  rules:
    - timeouts: {idle: forever}
      backends: [{service: svc, port: 80}]
"#;

#[test]
fn app_protocol_selects_the_upstream_protocol() {
    let c = compile(&load_str(YAML), &Memory::default());
    let protocol = |port: i32| {
        let b = c.backends.backends.iter().find(|b| b.key.port == port).unwrap();
        (b.protocol, b.problem.as_deref().map(str::to_owned))
    };
    assert_eq!(protocol(80), (UpstreamProtocol::Http1, None));
    assert_eq!(protocol(81), (UpstreamProtocol::H2c, None));
    assert_eq!(protocol(82), (UpstreamProtocol::H2c, None));
    assert_eq!(protocol(83), (UpstreamProtocol::Http1, None));
    assert_eq!(protocol(84), (UpstreamProtocol::Http1, None));
    assert_eq!(protocol(85), (UpstreamProtocol::Http1, None));
    // appProtocol https without a BackendPolicy: TLS with the system roots for
    // svc.default.svc (needs the upstream TLS connector: pending until it is built).
    assert_eq!(protocol(443), (UpstreamProtocol::Http1, None));
    let tls_backend = c.backends.backends.iter().find(|b| b.key.port == 443).unwrap();
    let policy = tls_backend.policy.as_ref().expect("a TLS port carries a policy with tls");
    assert!(policy.source.is_none(), "no BackendPolicy object: the built-in TLS default");
    let tls = policy.tls.as_ref().expect("tls");
    assert_eq!(tls.server_name().to_str(), "svc.default.svc");
    let plain = c.backends.backends.iter().find(|b| b.key.port == 80).unwrap();
    assert!(plain.policy.is_none(), "a plain port without a BackendPolicy carries no policy");

    let ok = status(&c, Kind::Route, "default", "streams");
    assert!(ok.is_true(ACCEPTED) && ok.is_true(RESOLVED_REFS) && ok.is_true(PROGRAMMED));
    let tls = status(&c, Kind::Route, "default", "tls-upstream");
    assert!(tls.is_true(ACCEPTED) && tls.is_true(RESOLVED_REFS), "{tls:#?}");
}

#[test]
fn idle_timeout_is_compiled_and_validated() {
    let c = compile(&load_str(YAML), &Memory::default());
    let routes = c.routes.routes();
    let model = routes.iter().find(|r| r.key.name.as_ref() == "streams").unwrap();
    let timeouts = *model.rules[0].action.timeouts;
    assert_eq!(timeouts.idle, Some(Duration::from_secs(300)));
    assert_eq!(timeouts.request, Some(Duration::from_secs(10)));
    let bad = status(&c, Kind::Route, "default", "bad-idle");
    assert_cond(bad, ACCEPTED, "False", "Invalid", &["spec.rules[0].timeouts.idle:"]);
}
