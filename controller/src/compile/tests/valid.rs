//! A valid, quickstart-like configuration: everything accepted, resolved and programmed.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use weir_dataplane::{HostMatch, PathMatch, RequestView, RouteMatch};

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};

fn find<'t>(
    c: &'t Compiled,
    method: Method,
    host: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<RouteMatch<'t>> {
    let req = RequestView { method: &method, host, path, query, headers };
    c.routes.find(&req)
}

fn rule_name(m: Option<RouteMatch<'_>>) -> Option<String> {
    m.map(|m| m.rule.name.to_string())
}

#[test]
fn quickstart_is_accepted_resolved_and_programmed() {
    let c = compile_fixture("quickstart.yaml");
    for ((kind, key), s) in c.statuses.iter() {
        assert!(s.is_true(ACCEPTED), "{kind:?} {key}: {s:#?}");
        if *kind != Kind::Plugin {
            assert!(s.is_true(RESOLVED_REFS), "{kind:?} {key}: {s:#?}");
        }
    }
    assert_eq!(c.statuses.len(), 6);
    let route = status(&c, Kind::Route, "default", "orders");
    assert_eq!(route.generation, 3);
    assert_cond(route, PROGRAMMED, "True", "Programmed", &[]);
    assert_cond(route, ACCEPTED, "True", "Accepted", &[]);
    let consumer = status(&c, Kind::Consumer, "default", "mobile-app");
    assert_cond(consumer, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
    assert_eq!(
        c.memory.last_good_route(&ObjectRef::new("default", "orders")).map(|g| g.0),
        Some(3)
    );
}

#[test]
fn quickstart_model_is_fully_compiled() {
    let c = compile_fixture("quickstart.yaml");
    assert_eq!(c.routes.len(), 1);
    let model = &c.routes.routes()[0];
    assert_eq!(model.generation, 3);
    assert_eq!(
        model.hosts,
        vec![
            HostMatch::Exact("api.example.com".into()),
            HostMatch::Wildcard(".example.org".into())
        ]
    );
    let names: Vec<&str> = model.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["canary", "orders", "2"]);

    let canary = &model.rules[0];
    assert!(matches!(&canary.matches[0].path, PathMatch::Prefix(p) if &**p == "/api/v1/orders"));
    assert_eq!(canary.matches[0].headers()[0].name.as_str(), "x-canary");

    let orders = &model.rules[1];
    assert_eq!(orders.matches[0].methods(), vec![Method::GET, Method::POST]);
    let a = &orders.action;
    assert_eq!(a.timeouts.connect, Duration::from_secs(3));
    assert_eq!(a.timeouts.request, Some(Duration::from_secs(15)));
    assert_eq!(a.retries.attempts, 2);
    assert_eq!(a.retries.per_try_timeout, Some(Duration::from_secs(2)));
    assert!(a.retries.on_connect_failure && a.retries.on_5xx && !a.retries.on_timeout);
    let rw = a.rewrite.as_ref().unwrap();
    assert_eq!(rw.replace_prefix.as_deref(), Some("/"));
    assert_eq!(rw.host, Some(HeaderValue::from_static("orders.internal")));

    // Backends: dense ids in first-use order, each resolving to its endpoints.
    let keys: Vec<String> = c.backend_keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        keys,
        [
            "default/orders-canary:80",
            "default/orders:80",
            "default/orders-canary:0",
            "default/orders:0"
        ]
    );
    assert_eq!(c.backends.backends.len(), 4);
    let weights: Vec<(u32, u32)> =
        a.backends.backends().iter().map(|b| (b.id.0, b.weight)).collect();
    assert_eq!(weights, [(1, 90), (2, 10)]);
    let ep = |id: u32| c.backends.backends[id as usize].endpoints.to_vec();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(ep(0), [addr("127.0.0.1:9002")]);
    assert_eq!(ep(1), [addr("127.0.0.1:9001")]);
    assert_eq!(ep(2), [addr("127.0.0.1:9002")]);
    assert_eq!(ep(3), [addr("127.0.0.1:9001")]);
    assert!(c.backends.backends.iter().all(|b| b.problem.is_none()));
}

#[test]
fn quickstart_routes_requests() {
    let c = compile_fixture("quickstart.yaml");
    let none = HeaderMap::new();
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("true"));
    let host = "api.example.com";
    let p = "/api/v1/orders/7";
    assert_eq!(rule_name(find(&c, Method::GET, host, p, None, &canary)).as_deref(), Some("canary"));
    assert_eq!(rule_name(find(&c, Method::GET, host, p, None, &none)).as_deref(), Some("orders"));
    // Gateway API precedence: a method match outranks a header match.
    assert_eq!(
        rule_name(find(&c, Method::POST, host, p, None, &canary)).as_deref(),
        Some("orders")
    );
    assert_eq!(
        rule_name(find(&c, Method::POST, "API.Example.com", p, None, &none)).as_deref(),
        Some("orders")
    );
    assert!(find(&c, Method::DELETE, host, p, None, &none).is_none());
    assert!(find(&c, Method::GET, host, "/api/v1/ordersx", None, &none).is_none());
    let items = find(&c, Method::GET, "a.example.org", "/items/12", Some("v=1"), &none);
    assert_eq!(rule_name(items).as_deref(), Some("2"));
    assert!(find(&c, Method::GET, "a.example.org", "/items/12x", Some("v=1"), &none).is_none());
    assert!(find(&c, Method::GET, "a.example.org", "/items/12", None, &none).is_none());
    assert!(find(&c, Method::GET, "example.org", "/items/12", Some("v=1"), &none).is_none());
}

#[test]
fn effective_plugins_most_specific_wins() {
    let c = compile_fixture("quickstart.yaml");
    let route = status(&c, Kind::Route, "default", "orders");
    let got: Vec<(&str, &str, &str)> = route
        .effective_plugins
        .iter()
        .map(|p| (p.type_.as_str(), p.source.as_str(), p.level.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("correlationId", "weir-system/request-id", "global"),
            ("cors", "default/cors", "route"),
            ("rateLimit", "weir-system/global-limit", "global"),
            ("rateLimit", "default/orders-limit", "rule:orders"),
        ]
    );
    let per_rule = &c.rule_plugins[&ObjectRef::new("default", "orders")];
    let orders: Vec<(&str, String)> =
        per_rule[1].iter().map(|p| (p.kind.as_str(), p.source.to_string())).collect();
    assert_eq!(
        orders,
        [
            ("correlationId", "weir-system/request-id".to_owned()),
            ("cors", "default/cors".to_owned()),
            ("rateLimit", "default/orders-limit".to_owned()),
        ]
    );
    assert_eq!(per_rule[0].last().map(|p| &*p.source.name), Some("global-limit"));
}

#[test]
fn controller_namespace_decides_what_is_global() {
    let mut index = load("quickstart.yaml");
    index.controller_namespace = "default".to_owned();
    let c = compile(&index, &Memory::default());
    let s = status(&c, Kind::Plugin, "weir-system", "request-id");
    assert_cond(s, ACCEPTED, "False", "Invalid", &["spec.global", "\"default\""]);
    let route = status(&c, Kind::Route, "default", "orders");
    assert!(route.effective_plugins.iter().all(|p| p.level != "global"));
}

#[test]
fn compile_is_deterministic() {
    let index = load("quickstart.yaml");
    let a = compile(&index, &Memory::default());
    let b = compile(&index, &a.memory);
    assert_eq!(a.statuses, b.statuses);
    assert_eq!(a.backend_keys, b.backend_keys);
    assert_eq!(format!("{:?}", a.memory), format!("{:?}", b.memory));
}
