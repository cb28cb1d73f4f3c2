//! Router tests: host buckets and fallback, path precedence, conditions, scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use super::*;
use crate::snapshot::{
    HeaderMatcher, PathMatch, QueryMatcher, RequestMatch, RetryPolicy, RuleAction, Timeouts,
    ValueMatch, WeightedBackends,
};

fn m(path: PathMatch) -> RequestMatch {
    RequestMatch::path(path)
}
fn exact(p: &str) -> RequestMatch {
    m(PathMatch::Exact(p.into()))
}
fn prefix(p: &str) -> RequestMatch {
    m(PathMatch::Prefix(p.trim_end_matches('/').into()))
}
fn regex(p: &str) -> RequestMatch {
    m(PathMatch::Regex(Box::new(Regex::new(&format!("^(?:{p})$")).unwrap())))
}
fn header(r: RequestMatch, name: &str, v: ValueMatch) -> RequestMatch {
    let (path, methods, mut headers, query) = r.into_parts();
    headers
        .push(HeaderMatcher { name: HeaderName::from_bytes(name.as_bytes()).unwrap(), value: v });
    RequestMatch::new(path, methods, headers, query)
}
fn query(r: RequestMatch, name: &str, v: ValueMatch) -> RequestMatch {
    let (path, methods, headers, mut query) = r.into_parts();
    query.push(QueryMatcher { name: name.into(), value: v });
    RequestMatch::new(path, methods, headers, query)
}
fn method(r: RequestMatch, x: Method) -> RequestMatch {
    let (path, mut methods, headers, query) = r.into_parts();
    methods.push(x);
    RequestMatch::new(path, methods, headers, query)
}

/// A rule of `route` with no backends, rewrites or filters (the router reads only its
/// matches). Shared with `patch_tests`.
pub(super) fn rule(
    route: &ObjectKey,
    name: String,
    index: usize,
    matches: Vec<RequestMatch>,
) -> Arc<Rule> {
    Arc::new(Rule {
        stats: crate::observe::stats::RuleStats::detached(route, &name),
        name: name.into(),
        index,
        matches,
        action: RuleAction {
            backends: WeightedBackends::new(vec![]),
            rewrite: None,
            timeouts: Timeouts::default().shared(),
            retries: RetryPolicy::default().shared(),
            filters: Arc::new([]),
            https_redirect: false,
            aggregate: None,
        },
    })
}

/// A route `ns/name` with one rule per `matches` entry (rule name = `name#i`).
fn route(
    ns: &str,
    name: &str,
    created: i64,
    hosts: &[&str],
    rules: Vec<RequestMatch>,
) -> RouteModel {
    let key = ObjectKey::new(ns, name);
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, rm)| rule(&key, format!("{name}#{i}"), i, vec![rm]))
        .collect();
    let hosts = hosts
        .iter()
        .map(|h| match h.strip_prefix('*') {
            Some(s) => HostMatch::Wildcard(s.into()),
            None => HostMatch::Exact((*h).into()),
        })
        .collect();
    RouteModel { key, generation: 1, created, hosts, rules }
}

struct Req {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

fn req(host: &str, path_and_query: &str) -> Req {
    let (path, q) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path_and_query.to_owned(), None),
    };
    Req { method: Method::GET, host: host.into(), path, query: q, headers: HeaderMap::new() }
}

impl Req {
    fn h(mut self, name: &'static str, v: &str) -> Self {
        self.headers.append(name, HeaderValue::from_str(v).unwrap());
        self
    }
    fn method(mut self, x: Method) -> Self {
        self.method = x;
        self
    }
}

/// The matched rule's name, or "-" for no match.
fn find(t: &RouteTable, r: &Req) -> String {
    let view = RequestView {
        method: &r.method,
        host: &r.host,
        path: &r.path,
        query: r.query.as_deref(),
        headers: &r.headers,
    };
    t.find(&view).map_or_else(|| "-".to_owned(), |m| m.rule.name.to_string())
}

#[test]
fn path_types_exact_then_regex_then_longest_prefix() {
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &[],
        vec![
            prefix("/"),
            prefix("/api"),
            prefix("/api/v1"),
            exact("/api/v1/x"),
            regex("/api/v1/[a-z]+"),
        ],
    )]);
    assert_eq!(find(&t, &req("h", "/api/v1/x")), "r#3");
    assert_eq!(find(&t, &req("h", "/api/v1/y")), "r#4");
    assert_eq!(find(&t, &req("h", "/api/v1/9")), "r#2");
    assert_eq!(find(&t, &req("h", "/api/v1")), "r#2");
    assert_eq!(find(&t, &req("h", "/api/v2")), "r#1");
    assert_eq!(find(&t, &req("h", "/other")), "r#0");
    assert_eq!(find(&t, &req("h", "/")), "r#0");
}

#[test]
fn prefix_is_segment_aware() {
    let t = RouteTable::new(vec![route("d", "r", 0, &[], vec![prefix("/api/")])]);
    for p in ["/api", "/api/", "/api/x", "/api//x", "/api/x/y"] {
        assert_eq!(find(&t, &req("h", p)), "r#0", "{p}");
    }
    for p in ["/apix", "/ap", "/", "/x/api"] {
        assert_eq!(find(&t, &req("h", p)), "-", "{p}");
    }
}

#[test]
fn tie_breaks_method_headers_query_age_name() {
    let eq = |v: &str| ValueMatch::Exact(v.into());
    let t = RouteTable::new(vec![
        route("d", "plain", 0, &[], vec![prefix("/p")]),
        route("d", "meth", 5, &[], vec![method(prefix("/p"), Method::POST)]),
        route("d", "hdr1", 5, &[], vec![header(prefix("/p"), "x-a", eq("1"))]),
        route(
            "d",
            "hdr2",
            5,
            &[],
            vec![header(header(prefix("/p"), "x-a", eq("1")), "x-b", eq("1"))],
        ),
        route("d", "qry", 5, &[], vec![query(header(prefix("/p"), "x-a", eq("1")), "q", eq("1"))]),
        route("d", "young", 9, &[], vec![exact("/age")]),
        route("d", "old", 1, &[], vec![exact("/age")]),
        route("b", "zz", 1, &[], vec![exact("/name")]),
        route("a", "zz", 1, &[], vec![exact("/name")]),
    ]);
    assert_eq!(find(&t, &req("h", "/p")), "plain#0");
    assert_eq!(
        find(&t, &req("h", "/p").method(Method::POST).h("x-a", "1").h("x-b", "1")),
        "meth#0"
    );
    assert_eq!(find(&t, &req("h", "/p").h("x-a", "1").h("x-b", "1")), "hdr2#0");
    assert_eq!(find(&t, &req("h", "/p?q=1").h("x-a", "1").h("x-b", "1")), "hdr2#0");
    assert_eq!(find(&t, &req("h", "/p?q=1").h("x-a", "1")), "qry#0");
    assert_eq!(find(&t, &req("h", "/p").h("x-a", "1")), "hdr1#0");
    assert_eq!(find(&t, &req("h", "/age")), "old#0");
    assert_eq!(find(&t, &req("h", "/name")), "zz#0");
    let via = |path: &str| {
        let r = req("h", path);
        let view = RequestView {
            method: &r.method,
            host: &r.host,
            path: &r.path,
            query: None,
            headers: &r.headers,
        };
        t.find(&view).map(|x| x.rule.route().namespace.to_string())
    };
    assert_eq!(via("/name").as_deref(), Some("a"));
}

#[test]
fn longer_prefix_with_failing_condition_falls_through() {
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &[],
        vec![
            header(prefix("/a/b"), "x-canary", ValueMatch::Present),
            prefix("/a"),
            header(exact("/a/b"), "x-e", ValueMatch::Present),
        ],
    )]);
    assert_eq!(find(&t, &req("h", "/a/b/c")), "r#1");
    assert_eq!(find(&t, &req("h", "/a/b")), "r#1");
    assert_eq!(find(&t, &req("h", "/a/b/c").h("x-canary", "")), "r#0");
    assert_eq!(find(&t, &req("h", "/a/b").h("x-e", "1").h("x-canary", "1")), "r#2");
}

#[test]
fn hosts_exact_then_wildcard_then_any_with_fallback() {
    let t = RouteTable::new(vec![
        route("d", "any", 0, &[], vec![prefix("/")]),
        route("d", "wild", 0, &["*.example.com"], vec![prefix("/w")]),
        route("d", "deep", 0, &["*.b.example.com"], vec![prefix("/w")]),
        route("d", "exact", 0, &["api.example.com"], vec![prefix("/e")]),
    ]);
    assert_eq!(find(&t, &req("api.example.com", "/e")), "exact#0");
    // Nothing in the exact bucket matches: fall back to the wildcard, then any-host.
    assert_eq!(find(&t, &req("api.example.com", "/w")), "wild#0");
    assert_eq!(find(&t, &req("api.example.com", "/z")), "any#0");
    assert_eq!(find(&t, &req("x.example.com", "/w")), "wild#0");
    assert_eq!(find(&t, &req("x.y.example.com", "/w")), "wild#0");
    assert_eq!(find(&t, &req("x.b.example.com", "/w")), "deep#0");
    assert_eq!(find(&t, &req("example.com", "/w")), "any#0");
    assert_eq!(find(&t, &req("other.org", "/e")), "any#0");
    // Port and case are ignored.
    assert_eq!(find(&t, &req("API.Example.COM:8443", "/e")), "exact#0");
    assert_eq!(find(&t, &req("X.EXAMPLE.com:80", "/w")), "wild#0");

    let only_host =
        RouteTable::new(vec![route("d", "exact", 0, &["api.example.com"], vec![prefix("/")])]);
    assert_eq!(find(&only_host, &req("other.example.com", "/")), "-");
    assert_eq!(find(&RouteTable::new(vec![]), &req("h", "/")), "-");
}

#[test]
fn header_conditions_present_regex_exact_any_value() {
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &[],
        vec![
            header(exact("/p"), "x-present", ValueMatch::Present),
            header(exact("/r"), "x-ver", ValueMatch::Regex(Regex::new("^v[0-9]+$").unwrap())),
            header(exact("/e"), "x-canary", ValueMatch::Exact("true".into())),
        ],
    )]);
    assert_eq!(find(&t, &req("h", "/p").h("x-present", "")), "r#0");
    assert_eq!(find(&t, &req("h", "/p")), "-");
    assert_eq!(find(&t, &req("h", "/r").h("x-ver", "v12")), "r#1");
    assert_eq!(find(&t, &req("h", "/r").h("x-ver", "v1x")), "-");
    assert_eq!(find(&t, &req("h", "/e").h("X-Canary", "true")), "r#2");
    assert_eq!(find(&t, &req("h", "/e").h("x-canary", "TRUE")), "-");
    assert_eq!(find(&t, &req("h", "/e").h("x-canary", "no").h("x-canary", "true")), "r#2");
}

#[test]
fn query_conditions_with_percent_encoding() {
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &[],
        vec![
            query(exact("/q"), "v", ValueMatch::Exact("a b/c".into())),
            query(exact("/p"), "debug", ValueMatch::Present),
            query(exact("/x"), "id", ValueMatch::Regex(Regex::new("^[0-9]+$").unwrap())),
        ],
    )]);
    assert_eq!(find(&t, &req("h", "/q?x=1&v=a%20b%2Fc")), "r#0");
    assert_eq!(find(&t, &req("h", "/q?%76=a%20b/c")), "r#0");
    assert_eq!(find(&t, &req("h", "/q?v=a+b/c")), "-");
    assert_eq!(find(&t, &req("h", "/q?V=a%20b%2Fc")), "-");
    assert_eq!(find(&t, &req("h", "/q")), "-");
    assert_eq!(find(&t, &req("h", "/p?a&debug")), "r#1");
    assert_eq!(find(&t, &req("h", "/p?debugx=1")), "-");
    assert_eq!(find(&t, &req("h", "/x?id=42")), "r#2");
    // The first occurrence decides.
    assert_eq!(find(&t, &req("h", "/x?id=a&id=42")), "-");
}

#[test]
fn many_regexes_use_the_set_and_keep_precedence() {
    let rules: Vec<RequestMatch> =
        (0..40).map(|i| regex(&format!("/r{i}/[0-9]+"))).chain([regex("/r7/.*")]).collect();
    let t = RouteTable::new(vec![route("d", "r", 0, &[], rules)]);
    assert_eq!(find(&t, &req("h", "/r7/123")), "r#7");
    assert_eq!(find(&t, &req("h", "/r7/abc")), "r#40");
    assert_eq!(find(&t, &req("h", "/r39/1")), "r#39");
    assert_eq!(find(&t, &req("h", "/r40/1")), "-");
}

#[test]
fn ten_thousand_routes_find_the_right_rule() {
    let routes: Vec<RouteModel> = (0..10_000)
        .map(|i| {
            let hosts: &[&str] = if i % 3 == 0 { &["svc.example.com"] } else { &[] };
            route(
                "d",
                &format!("r{i}"),
                i,
                hosts,
                vec![prefix(&format!("/svc-{i}")), exact(&format!("/svc-{i}/exact"))],
            )
        })
        .collect();
    let t = RouteTable::new(routes);
    assert_eq!(t.len(), 10_000);
    assert_eq!(find(&t, &req("h", "/svc-1234/a/b")), "r1234#0");
    assert_eq!(find(&t, &req("h", "/svc-1234/exact")), "r1234#1");
    assert_eq!(find(&t, &req("svc.example.com", "/svc-3/x")), "r3#0");
    // Host-specific route not visible from another host; any-host ones still are.
    assert_eq!(find(&t, &req("h", "/svc-3/x")), "-");
    assert_eq!(find(&t, &req("svc.example.com", "/svc-4/x")), "r4#0");
    assert_eq!(find(&t, &req("h", "/svc-99999")), "-");
    assert_eq!(t.route_keys().filter(|(_, g)| *g == 1).count(), 10_000);
}

#[test]
fn describe_lists_hosts_routes_and_matches() {
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &["*.example.com", "a.io"],
        vec![regex("/x"), prefix("/")],
    )]);
    let v = t.describe();
    assert_eq!(v["hosts"]["wildcard"][0], "*.example.com");
    assert_eq!(v["hosts"]["exact"][0], "a.io");
    assert_eq!(v["routes"][0]["key"], "d/r");
    assert_eq!(v["routes"][0]["rules"][0]["matches"][0]["path"]["value"], "^(?:/x)$");
    assert_eq!(v["routes"][0]["rules"][1]["matches"][0]["path"]["value"], "/");
    assert_eq!(v["routes"][0]["rules"][1]["timeouts"]["connect"], "5s");
}

/// Keys of 256 bytes and more are past the length filter's bitmap: they must still be
/// found, and lengths no key has must not hide a shorter matching prefix.
#[test]
fn long_and_unusual_key_lengths_still_match() {
    let long = format!("/{}", "a".repeat(300));
    let t = RouteTable::new(vec![route(
        "d",
        "r",
        0,
        &[],
        vec![prefix(&long), exact(&format!("{long}/x")), prefix("/b"), exact("/c")],
    )]);
    assert_eq!(find(&t, &req("h", &format!("{long}/x"))), "r#1");
    assert_eq!(find(&t, &req("h", &format!("{long}/y/z"))), "r#0");
    assert_eq!(find(&t, &req("h", &long)), "r#0");
    assert_eq!(find(&t, &req("h", "/b/with/a/much/longer/path/than/any/key")), "r#2");
    assert_eq!(find(&t, &req("h", "/c")), "r#3");
    assert_eq!(find(&t, &req("h", "/c/d")), "-");
    assert_eq!(find(&t, &req("h", &format!("/{}", "a".repeat(299)))), "-");
}

/// A lone conditional entry is checked even though it is stored inline, and several
/// entries on one prefix keep their precedence order.
#[test]
fn single_and_shared_prefixes_keep_conditions() {
    let t = RouteTable::new(vec![
        route("d", "get", 0, &[], vec![method(prefix("/only"), Method::GET)]),
        route("d", "post", 1, &[], vec![method(prefix("/both"), Method::POST)]),
        route("d", "any", 2, &[], vec![prefix("/both")]),
    ]);
    assert_eq!(find(&t, &req("h", "/only/x")), "get#0");
    assert_eq!(find(&t, &req("h", "/only/x").method(Method::PUT)), "-");
    assert_eq!(find(&t, &req("h", "/both").method(Method::POST)), "post#0");
    assert_eq!(find(&t, &req("h", "/both").method(Method::PUT)), "any#0");
}

/// `rules()` yields every rule of every Route once, each Route's rules in spec order, and
/// follows a patch.
#[test]
fn rules_iterates_every_rule() {
    let t = RouteTable::new(vec![
        route("d", "a", 0, &[], vec![prefix("/a"), prefix("/b")]),
        route("d", "b", 1, &["h"], vec![prefix("/c")]),
    ]);
    let mut names: Vec<String> = t.rules().map(|r| r.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["a#0", "a#1", "b#0"]);
    let a: Vec<usize> = t.rules().filter(|r| &*r.route().name == "a").map(|r| r.index).collect();
    assert_eq!(a, [0, 1]);
    let p = t.patched(&[ObjectKey::new("d", "a")], vec![]);
    let names: Vec<String> = p.rules().map(|r| r.name.to_string()).collect();
    assert_eq!(names, ["b#0"]);
    assert_eq!(RouteTable::default().rules().count(), 0);
}
