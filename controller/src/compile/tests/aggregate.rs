//! Path captures and `aggregate` rules: what compiles, how captured paths match and rank,
//! and every invalid aggregate named by its field.

use http::{HeaderMap, Method};
use weir_dataplane::{PathMatch, RequestView};

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: users}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: orders}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: users-1, labels: {kubernetes.io/service-name: users}}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: ["10.0.0.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orders-1, labels: {kubernetes.io/service-name: orders}}
addressType: IPv4
ports: [{name: http, port: 9002}]
endpoints: [{addresses: ["10.0.0.2"]}]
"#;

const GOOD: &str = r#"
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: profile}
spec:
  hosts: [api.test]
  rules:
    - name: me
      matches: [{path: {type: Exact, value: /profile/me}}]
      backends: [{service: users, port: 80}]
    - name: profile
      matches:
        - path: {type: Exact, value: "/profile/{id}"}
        - path: {type: Prefix, value: "/u/{org}/{id}/"}
      aggregate:
        timeout: 2s
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: orders, port: 8080, path: "/orders?user=${path.id}&q=${query.q}", optional: true, timeout: 300ms, maxBodySize: 64Ki}
    - name: prefix
      matches: [{path: {type: Prefix, value: /profile}}]
      backends: [{service: users, port: 80}]
"#;

fn find<'c>(c: &'c Compiled, path: &str) -> weir_dataplane::RouteMatch<'c> {
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        host: "api.test",
        path,
        query: None,
        headers: &headers,
    };
    c.routes.find(&view).unwrap_or_else(|| panic!("no match for {path}"))
}

#[test]
fn captures_compile_match_and_rank_between_exact_and_prefix() {
    let c = compile(&load_str(&format!("{SERVICES}{GOOD}")), &Memory::default());
    let s = status(&c, Kind::Route, "default", "profile");
    assert!(s.is_true(ACCEPTED) && s.is_true(RESOLVED_REFS) && s.is_true(PROGRAMMED), "{s:#?}");

    // Exact beats a captured path, which beats a prefix.
    assert_eq!(&*find(&c, "/profile/me").rule.name, "me");
    let m = find(&c, "/profile/42");
    assert_eq!(&*m.rule.name, "profile");
    let PathMatch::Regex(re) = &m.matched.path else { panic!("{:?}", m.matched.path) };
    assert_eq!(re.as_str(), r"^/profile/(?P<id>[^/]+)$");
    assert_eq!(&*find(&c, "/profile/42/more").rule.name, "prefix", "a capture is one segment");
    assert_eq!(&*find(&c, "/profile").rule.name, "prefix");
    // A captured Prefix is segment-aware.
    assert_eq!(&*find(&c, "/u/acme/7").rule.name, "profile");
    assert_eq!(&*find(&c, "/u/acme/7/x/y").rule.name, "profile");
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        host: "api.test",
        path: "/u/acme/7x/",
        query: None,
        headers: &headers,
    };
    assert!(c.routes.find(&view).is_some_and(|m| &*m.rule.name == "profile"));
    let view = RequestView { path: "/u/acme", ..view };
    assert!(c.routes.find(&view).is_none());

    // The aggregate: parts in order, backends in the backend table with their endpoints,
    // defaults and caps applied.
    let a = m.rule.action.aggregate.as_deref().expect("aggregate");
    assert!(m.rule.action.backends.backends().is_empty());
    assert_eq!(a.timeout, std::time::Duration::from_secs(2));
    let keys: Vec<&str> = a.parts.iter().map(|p| &*p.key).collect();
    assert_eq!(keys, ["user", "orders"]);
    let (user, orders) = (&a.parts[0], &a.parts[1]);
    assert_eq!(user.timeout, std::time::Duration::from_secs(2), "defaults to the aggregate's");
    assert_eq!(user.max_body_size, 1 << 20);
    assert!(!user.optional && orders.optional);
    assert_eq!(orders.timeout, std::time::Duration::from_millis(300));
    assert_eq!(orders.max_body_size, 64 << 10);
    assert_eq!(user.host, "users.default.svc");
    assert_eq!(orders.host, "orders.default.svc:8080");
    let endpoints = |id| c.backends.get(id).map(|b| b.endpoints.to_vec()).unwrap_or_default();
    assert_eq!(endpoints(user.backend), ["10.0.0.1:9001".parse().unwrap()]);
    assert_eq!(endpoints(orders.backend), ["10.0.0.2:9002".parse().unwrap()]);
    assert_eq!(a.variables(), [Box::from("id")]);
    assert_eq!(orders.path.render(&["42"], Some("q=a b")), "/orders?user=42&q=a%20b");

    // The snapshot's JSON view (behind /debug/snapshot and /debug/match) shows it.
    let described = c.routes.describe().to_string();
    assert!(described.contains(r#""path":"/orders?user=${path.id}&q=${query.q}""#), "{described}");
    assert!(described.contains(r#"(?P<id>[^/]+)"#), "{described}");
}

fn route(rule: &str) -> String {
    format!(
        "{SERVICES}\n---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  rules:\n{rule}"
    )
}

fn invalid(rule: &str, needles: &[&str]) {
    let c = compile(&load_str(&route(rule)), &Memory::default());
    let s = status(&c, Kind::Route, "default", "r");
    assert_cond(s, ACCEPTED, "False", "Invalid", needles);
    assert_cond(s, PROGRAMMED, "False", "Invalid", &[]);
}

#[test]
fn a_part_path_using_a_capture_missing_from_a_match_is_invalid() {
    invalid(
        r#"    - matches:
        - path: {type: Exact, value: "/profile/{id}"}
        - path: {type: Exact, value: "/me"}
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: users, port: 80, path: "/orders?u=${path.uid}"}
"#,
        &[
            "spec.rules[0].aggregate.parts[0].path: ${path.id} is not captured by spec.rules[0].matches[1]",
            "spec.rules[0].aggregate.parts[1].path: ${path.uid} is not captured by spec.rules[0].matches[0]",
        ],
    );
    // No matches at all: the implicit `Prefix /` captures nothing.
    invalid(
        r#"    - aggregate:
        parts: [{key: user, service: users, port: 80, path: "/users/${path.id}"}]
"#,
        &["spec.rules[0].aggregate.parts[0].path: ${path.id} is not captured"],
    );
}

#[test]
fn duplicate_keys_unknown_variables_and_bad_fields_are_invalid() {
    invalid(
        r#"    - matches: [{path: {type: Exact, value: "/p/{id}"}}]
      aggregate:
        timeout: 1s
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: user, service: users, port: 80, path: "/users/${header.x}"}
          - {key: late, service: users, port: 70000, path: "users", timeout: 2s}
          - {key: big, service: users, port: 80, path: "/x", maxBodySize: "0"}
"#,
        &[
            "spec.rules[0].aggregate.parts[1].key: duplicate key \"user\"",
            "spec.rules[0].aggregate.parts[1].path: unknown variable ${header.x}",
            "spec.rules[0].aggregate.parts[2].port: 70000 is not in 1..65535",
            "spec.rules[0].aggregate.parts[2].path: \"users\" must start with '/'",
            "spec.rules[0].aggregate.parts[2].timeout: 2s is longer than the aggregate's timeout (1s)",
            "spec.rules[0].aggregate.parts[3].maxBodySize: must be positive",
        ],
    );
}

#[test]
fn malformed_captures_are_invalid() {
    for (value, needle) in [
        ("/p/{id", "a capture is a whole segment"),
        ("/p/x{id}", "a capture is a whole segment"),
        ("/p/{id}/{id}", "capture {id} appears twice"),
        ("/p/{1x}", "a capture name is a letter"),
        ("/p/{}", "a capture name is a letter"),
    ] {
        invalid(
            &format!(
                "    - matches: [{{path: {{type: Exact, value: \"{value}\"}}}}]\n      backends: [{{service: users, port: 80}}]\n"
            ),
            &["spec.rules[0].matches[0].path.value:", needle],
        );
    }
    // replacePrefix needs plain Prefix matches.
    invalid(
        r#"    - matches: [{path: {type: Prefix, value: "/p/{id}"}}]
      backends: [{service: users, port: 80}]
      rewrite: {replacePrefix: /}
"#,
        &[
            "spec.rules[0].rewrite.replacePrefix: only allowed when every match is a Prefix path match (without {name} captures)",
        ],
    );
}

#[test]
fn aggregate_with_rewrite_or_backends_is_invalid() {
    invalid(
        r#"    - matches: [{path: {type: Exact, value: "/p/{id}"}}]
      rewrite: {replaceFullPath: /x}
      aggregate:
        parts: [{key: user, service: users, port: 80, path: "/users/${path.id}"}]
"#,
        &["spec.rules[0].aggregate: a rule with aggregate cannot have rewrite"],
    );
    invalid(
        r#"    - matches: [{path: {type: Exact, value: "/p/{id}"}}]
      backends: [{service: users, port: 80}]
      aggregate:
        parts: [{key: user, service: users, port: 80, path: "/users/${path.id}"}]
"#,
        &["spec.rules[0].aggregate: a rule has either backends or aggregate, not both"],
    );
}

#[test]
fn an_unknown_part_service_is_backend_not_found() {
    let c = compile(
        &load_str(&route(
            r#"    - matches: [{path: {type: Exact, value: "/p/{id}"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: nope, service: missing, port: 80, path: "/x", optional: true}
          - {key: port, service: orders, port: 81, path: "/x", optional: true}
"#,
        )),
        &Memory::default(),
    );
    let s = status(&c, Kind::Route, "default", "r");
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "BackendNotFound",
        &[
            "spec.rules[0].aggregate.parts[1]: service \"missing\" not found",
            "spec.rules[0].aggregate.parts[2]: service default/orders has no port 81",
        ],
    );
    // Accepted and served: the missing part answers as a failed part (here optional).
    assert!(s.is_true(ACCEPTED), "{s:#?}");
    let a = find_any(&c, "/p/1");
    let missing = c.backends.get(a.parts[1].backend).expect("in the backend table");
    assert!(missing.problem.is_some());
}

fn find_any<'c>(c: &'c Compiled, path: &str) -> &'c weir_dataplane::aggregate::Aggregate {
    let headers = HeaderMap::new();
    let view =
        RequestView { method: &Method::GET, host: "x", path, query: None, headers: &headers };
    let m = c.routes.find(&view).expect("route");
    m.rule.action.aggregate.as_deref().expect("aggregate")
}
