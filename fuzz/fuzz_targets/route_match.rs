//! Host and path matching: a small fixed RouteTable (exact, wildcard and any-host Routes;
//! exact, prefix and regex paths; method, header and query conditions), then a lookup of an
//! arbitrary request.
//!
//! Invariants: no panic; the same lookup twice gives the same rule; the host is matched
//! case-insensitively and without its `:port`; a matched rule's conditions hold for the
//! request (method, exact path, segment-aware prefix, regex, header values, a query).
#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use weir_dataplane::{
    BackendId, HeaderMatcher, HostMatch, ObjectKey, PathMatch, QueryMatcher, RequestMatch,
    RequestView, RetryPolicy, RouteMatch, RouteModel, RouteTable, Rule, RuleAction, Timeouts,
    ValueMatch, WeightedBackend, WeightedBackends,
};

#[derive(Debug, Arbitrary)]
struct Request<'a> {
    method: &'a [u8],
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: Vec<(&'a str, &'a [u8])>,
}

fn rule(key: &ObjectKey, index: usize, matches: Vec<RequestMatch>) -> Arc<Rule> {
    Arc::new(Rule {
        name: format!("r{index}").into(),
        index,
        stats: weir_dataplane::observe::stats::RuleStats::detached(key, &format!("r{index}")),
        matches,
        action: RuleAction {
            backends: WeightedBackends::new(vec![WeightedBackend {
                id: BackendId(index as u32),
                weight: 1,
            }]),
            rewrite: None,
            timeouts: Timeouts::default().shared(),
            retries: RetryPolicy::default().shared(),
            filters: Arc::new([]),
            https_redirect: false,
            aggregate: None,
        },
    })
}

fn path(path: PathMatch) -> RequestMatch {
    RequestMatch::path(path)
}

fn regex(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap_or_else(|e| panic!("{re}: {e}"))
}

fn route(
    name: &str,
    created: i64,
    hosts: Vec<HostMatch>,
    rules: Vec<Vec<RequestMatch>>,
) -> RouteModel {
    let key = ObjectKey::new("default", name);
    let rules = rules.into_iter().enumerate().map(|(i, m)| rule(&key, i, m)).collect();
    RouteModel { key, generation: 1, created, hosts, rules }
}

static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
    let exact = |h: &str| HostMatch::Exact(h.into());
    let wildcard = |s: &str| HostMatch::Wildcard(s.into());
    RouteTable::new(vec![
        route(
            "api",
            1,
            vec![exact("api.example.com"), exact("127.0.0.1")],
            vec![
                vec![RequestMatch::new(
                    PathMatch::Prefix("/orders".into()),
                    vec![Method::GET, Method::HEAD],
                    vec![],
                    vec![],
                )],
                vec![path(PathMatch::Exact("/health".into()))],
                vec![path(PathMatch::Regex(Box::new(regex("/v[0-9]+/items/[^/]+"))))],
                vec![RequestMatch::new(
                    PathMatch::Prefix("/orders".into()),
                    vec![],
                    vec![HeaderMatcher {
                        name: HeaderName::from_static("x-canary"),
                        value: ValueMatch::Exact("true".into()),
                    }],
                    vec![],
                )],
                vec![RequestMatch::new(
                    PathMatch::Prefix("/users".into()),
                    vec![],
                    vec![],
                    vec![QueryMatcher { name: "id".into(), value: ValueMatch::Exact("7".into()) }],
                )],
                vec![RequestMatch::new(
                    PathMatch::Prefix("/admin".into()),
                    vec![],
                    vec![HeaderMatcher {
                        name: HeaderName::from_static("x-ver"),
                        value: ValueMatch::Regex(regex("v[0-9]+")),
                    }],
                    vec![QueryMatcher { name: "debug".into(), value: ValueMatch::Present }],
                )],
            ],
        ),
        route(
            "wild",
            2,
            vec![wildcard(".example.com")],
            vec![
                vec![path(PathMatch::Prefix("".into()))],
                vec![path(PathMatch::Prefix("/a/b".into())), path(PathMatch::Exact("/c".into()))],
            ],
        ),
        route(
            "deep-wild",
            3,
            vec![wildcard(".eu.example.com")],
            vec![vec![path(PathMatch::Prefix("/eu".into()))]],
        ),
        route(
            "any",
            4,
            vec![],
            vec![
                vec![path(PathMatch::Prefix("/static".into()))],
                vec![path(PathMatch::Regex(Box::new(regex("/files/.*\\.(png|jpg)"))))],
            ],
        ),
    ])
});

fn same(a: Option<RouteMatch<'_>>, b: Option<RouteMatch<'_>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a.rule, b.rule) && std::ptr::eq(a.matched, b.matched),
        _ => false,
    }
}

fuzz_target!(|input: Request<'_>| {
    let method = Method::from_bytes(input.method).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(*name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let req = RequestView {
        method: &method,
        host: input.host,
        path: input.path,
        query: input.query,
        headers: &headers,
    };
    let found = TABLE.find(&req);
    assert!(same(found, TABLE.find(&req)), "two lookups of {input:?} differ");

    let upper = input.host.to_ascii_uppercase();
    let shouted = TABLE.find(&RequestView { host: &upper, ..req });
    assert!(same(found, shouted), "host case changes the answer for {input:?}");

    if !input.host.contains(':') && !input.host.starts_with('[') {
        let with_port = format!("{}:443", input.host);
        let ported = TABLE.find(&RequestView { host: &with_port, ..req });
        assert!(same(found, ported), "a :port changes the answer for {input:?}");
    }

    let Some(m) = found else { return };
    let cond = m.matched;
    assert!(cond.methods().is_empty() || cond.methods().contains(&method), "method: {input:?}");
    match &cond.path {
        PathMatch::Exact(p) => assert_eq!(&**p, input.path, "exact path: {input:?}"),
        PathMatch::Prefix(p) => assert!(
            p.is_empty()
                || input
                    .path
                    .strip_prefix(&**p)
                    .is_some_and(|r| r.is_empty() || r.starts_with('/')),
            "prefix {p:?}: {input:?}"
        ),
        PathMatch::Regex(re) => assert!(re.is_match(input.path), "regex: {input:?}"),
    }
    for h in cond.headers() {
        let values: Vec<&HeaderValue> = headers.get_all(&h.name).iter().collect();
        match &h.value {
            ValueMatch::Exact(v) => assert!(
                values.iter().any(|x| x.as_bytes() == v.as_bytes()),
                "header {}: {input:?}",
                h.name
            ),
            _ => assert!(!values.is_empty(), "header {}: {input:?}", h.name),
        }
    }
    // Query conditions (percent-decoded by the router): at least the query must be there.
    assert!(cond.query().is_empty() || input.query.is_some(), "query: {input:?}");
});
