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
    let (_, problem) = protocol(443);
    assert!(problem.as_deref().is_some_and(|p| p.contains("not supported yet")), "{problem:?}");

    let ok = status(&c, Kind::Route, "default", "streams");
    assert!(ok.is_true(ACCEPTED) && ok.is_true(RESOLVED_REFS) && ok.is_true(PROGRAMMED));
    let tls = status(&c, Kind::Route, "default", "tls-upstream");
    assert_cond(
        tls,
        RESOLVED_REFS,
        "False",
        "UnsupportedProtocol",
        &["spec.rules[0].backends[0]", "appProtocol \"https\"", "not supported yet"],
    );
}

#[test]
fn idle_timeout_is_compiled_and_validated() {
    let c = compile(&load_str(YAML), &Memory::default());
    let routes = c.routes.routes();
    let model = routes.iter().find(|r| r.key.name.as_ref() == "streams").unwrap();
    let timeouts = model.rules[0].action.timeouts;
    assert_eq!(timeouts.idle, Some(Duration::from_secs(300)));
    assert_eq!(timeouts.request, Some(Duration::from_secs(10)));
    let bad = status(&c, Kind::Route, "default", "bad-idle");
    assert_cond(bad, ACCEPTED, "False", "Invalid", &["spec.rules[0].timeouts.idle:"]);
}
