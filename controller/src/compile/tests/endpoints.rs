//! Service → EndpointSlice resolution and the endpoint-only recompile.

use std::net::SocketAddr;
use std::sync::Arc;

use weir_dataplane::BackendKey;

use super::*;
use crate::compile::compile_endpoints_only;
use crate::compile::conditions::RESOLVED_REFS;

fn endpoints_of(c: &Compiled, service: &str, port: i32) -> Vec<String> {
    let i = c
        .backend_keys
        .iter()
        .position(|k| &*k.service == service && k.port == port)
        .unwrap_or_else(|| panic!("no backend {service}:{port}"));
    let b = &c.backends.backends[i];
    assert!(b.problem.is_none(), "{b:?}");
    b.endpoints.iter().map(SocketAddr::to_string).collect()
}

#[test]
fn port_resolution_follows_kubernetes_semantics() {
    let c = compile_fixture("endpoints.yaml");
    let s = status(&c, Kind::Route, "default", "web");
    assert_cond(s, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
    // Named port `http`: the slices' `http` port (targetPort 8080), ready or unset-ready
    // endpoints only, slices merged and deduplicated, IPv6 included, FQDN and other
    // Services' or namespaces' slices ignored.
    assert_eq!(
        endpoints_of(&c, "web", 80),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.5:8080", "[fd00::1]:8080"]
    );
    // Named port `metrics` with a named targetPort: the number comes from the slices.
    assert_eq!(endpoints_of(&c, "web", 9090), ["10.0.0.1:9100", "10.0.0.2:9100", "10.0.0.5:9100"]);
    // A Service with a selector but no slices: no endpoints (503 at runtime), still resolved.
    assert!(endpoints_of(&c, "no-slices", 80).is_empty());
    // Unnamed single port, port omitted in the Route: matched with the unnamed slice port.
    assert_eq!(endpoints_of(&c, "unnamed", 0), ["10.1.0.1:80"]);
}

#[test]
fn endpoint_only_recompile_shares_the_route_table() {
    let mut index = load("endpoints.yaml");
    let full = compile(&index, &Memory::default());
    // A new ready endpoint and a removed slice.
    let key = ObjectRef::new("default", "web-b");
    let slice = std::sync::Arc::make_mut(index.endpoint_slices.get_mut(&key).unwrap());
    slice.endpoints[0].addresses = vec!["10.0.0.6".to_owned()];
    index.endpoint_slices.remove(&ObjectRef::new("default", "web-v6"));
    let fast = compile_endpoints_only(&index, &full);
    assert!(Arc::ptr_eq(&full.routes, &fast.routes));
    assert!(!Arc::ptr_eq(&full.backends, &fast.backends));
    assert_eq!(fast.statuses, full.statuses);
    assert_eq!(endpoints_of(&fast, "web", 80), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.6:8080"]);
    // Same result as a full compile.
    let again = compile(&index, &full.memory);
    assert_eq!(again.backend_keys, fast.backend_keys);
    for (a, b) in again.backends.backends.iter().zip(fast.backends.backends.iter()) {
        assert_eq!((&a.key, &a.endpoints, &a.problem), (&b.key, &b.endpoints, &b.problem));
    }
}

#[test]
fn compile_backends_reports_missing_services_as_data() {
    let index = load("endpoints.yaml");
    let keys = [
        BackendKey { namespace: "default".into(), service: "web".into(), port: 80 },
        BackendKey { namespace: "default".into(), service: "ghost".into(), port: 80 },
        BackendKey { namespace: "default".into(), service: "web".into(), port: 0 },
        BackendKey { namespace: "default".into(), service: "web".into(), port: 81 },
    ];
    let table = crate::compile::compile_backends(&index, &keys, &Default::default());
    assert_eq!(table.backends.len(), 4);
    assert!(table.backends[0].problem.is_none());
    let problem = |i: usize| table.backends[i].problem.as_deref().unwrap_or("").to_owned();
    assert!(problem(1).contains("service \"ghost\" not found"), "{}", problem(1));
    assert!(problem(2).contains("has 2 ports"), "{}", problem(2));
    assert!(problem(3).contains("no port 81"), "{}", problem(3));
}
