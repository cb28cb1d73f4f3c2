//! Exact match conflicts between Routes: the loser of the tie-break gets `Conflicted`, in
//! full and incremental compiles alike.

use super::*;
use crate::compile::update;

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80}]}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: old, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [shop.example.com, other.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /cart}, methods: [GET, POST]}]
    backends: [{service: s, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: young, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  hosts: [SHOP.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /cart}, methods: [POST, GET]}]
    backends: [{service: s, port: 80}]
  - matches: [{path: {type: Exact, value: /cart}, headers: [{name: x-beta, value: "1"}]}]
    backends: [{service: s, port: 80}]
"#;

fn conflicted(c: &Compiled, name: &str) -> Option<String> {
    status(c, Kind::Route, "default", name).condition("Conflicted").map(|c| {
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "MatchConflict"));
        c.message.clone()
    })
}

#[test]
fn the_younger_route_of_an_identical_match_is_conflicted_and_overlaps_are_not() {
    let c = compile(&load_str(BASE), &Memory::default());
    assert_eq!(conflicted(&c, "old"), None);
    let message = conflicted(&c, "young").expect("young is shadowed");
    assert!(message.contains("spec.rules[0].matches[0] for host shop.example.com"), "{message}");
    assert!(message.contains("Route default/old"), "{message}");
    // The second rule has a header condition: more specific, not a conflict.
    assert!(!message.contains("spec.rules[1]"), "{message}");
    // The router agrees: the winner named in the message serves the match.
    let headers = http::HeaderMap::new();
    let req = weir_dataplane::RequestView {
        method: &http::Method::POST,
        host: "shop.example.com",
        path: "/cart",
        query: None,
        headers: &headers,
    };
    assert_eq!(c.routes.find(&req).unwrap().rule.route().to_string(), "default/old");
    // Accepted and Programmed are unchanged: the Route is served where it is not shadowed.
    assert!(status(&c, Kind::Route, "default", "young").is_true("Programmed"));
}

#[test]
fn same_creation_time_falls_back_to_the_name_and_incremental_matches_full() {
    let yaml = BASE.replace("2024-06-01", "2024-01-01");
    let index = load_str(&yaml);
    let full = compile(&index, &Memory::default());
    // Same second: `old` < `young` by name, `old` wins.
    assert!(conflicted(&full, "young").is_some());

    // Remove the winner: the loser is served alone, no conflict any more.
    let mut without = index.clone();
    without.routes.remove(&ObjectRef::new("default", "old"));
    let next = update(&without, &full).expect("changed");
    assert_eq!(conflicted(&next, "young"), None);
    assert_eq!(next.statuses, compile(&without, &Memory::default()).statuses);

    // Back again (a new object): conflicted again, exactly as a full compile says.
    let again = update(&index, &next).expect("changed");
    assert!(conflicted(&again, "young").is_some());
    assert_eq!(again.statuses, compile(&index, &Memory::default()).statuses);

    // An edit that removes the identical match clears it.
    let mut edited = index.clone();
    let young = ObjectRef::new("default", "young");
    let mut route = (*edited.routes[&young]).clone();
    route.spec.rules[0].matches[0].methods = vec!["GET".into()];
    route.metadata.generation = Some(2);
    edited.routes.insert(young, Arc::new(route));
    let after = update(&edited, &again).expect("changed");
    assert_eq!(conflicted(&after, "young"), None);
    assert_eq!(after.statuses, compile(&edited, &Memory::default()).statuses);
}

#[test]
fn an_httproute_that_loses_to_an_older_route_says_so_on_its_parents() {
    let yaml = format!(
        "{BASE}{}",
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: default, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /cart}, headers: [{name: X-Beta, value: "1"}]}]
    backendRefs: [{name: s, port: 80}]
"#
    );
    let c = compile(&load_yaml(&yaml), &Memory::default());
    let http = status(&c, Kind::HttpRoute, "default", "cart");
    // Accepted: the HTTPRoute is valid; it just loses the tie-break for /cart + x-beta.
    assert!(http.is_true("Accepted"), "{http:#?}");
    let lost = cond(http, "Conflicted");
    assert_eq!((lost.status.as_str(), lost.reason.as_str()), ("True", "MatchConflict"));
    assert!(lost.message.contains("Route default/young"), "{}", lost.message);
    let parents = &http.document.as_ref().unwrap()["parents"][0]["conditions"];
    assert!(parents.as_array().unwrap().iter().any(|c| c["type"] == "Conflicted"), "{parents}");
    // The older weir Route does not lose its header rule to the younger HTTPRoute.
    assert!(!conflicted(&c, "young").unwrap().contains("rules[1]"));
}
