//! compile() for `rateLimit`: one shared `RateLimit` per Plugin (two Routes share its
//! counters), its place after authentication, Consumer-level limits, the list the publisher
//! binds, stable identities across runs, and field-named errors.

use std::sync::Arc;

use http::{HeaderMap, Method};
use weir_dataplane::ratelimit::{KeySource, RateLimit, StoreKind};
use weir_dataplane::{Filter, RequestView};

use super::*;
use crate::compile::conditions::ACCEPTED;

const FIXTURE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: shared}
spec:
  rateLimit: {limit: 5, window: 1m, key: Consumer, store: Redis,
              tiers: [{tier: pro, limit: 50, window: 1m}]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: vip}
spec:
  rateLimit: {limit: 500, window: 1m, key: Consumer}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: wrong}
spec:
  rateLimit: {limit: 5, window: 1m, burst: 2, tiers: [{tier: a, limit: 1, window: 1s}, {tier: a, limit: 2, window: 1s}]}
---
apiVersion: v1
kind: Secret
metadata: {name: k}
stringData: {key: the-key}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: big}
spec: {tier: pro, plugins: [vip], credentials: [{apiKey: {secretRef: {name: k}}}]}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: one}
spec:
  plugins: [shared, keys]
  rules: [{matches: [{path: {value: /one}}], backends: [{service: s, port: 80}]}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: two}
spec:
  rules:
    - matches: [{path: {value: /two}}]
      backends: [{service: s, port: 80}]
      plugins: [shared]
"#;

fn filters(c: &Compiled, path: &str) -> Arc<[Filter]> {
    let headers = HeaderMap::new();
    let view =
        RequestView { method: &Method::GET, host: "h", path, query: None, headers: &headers };
    Arc::clone(&c.routes.find(&view).expect("route").rule.action.filters)
}

fn rate_limit(f: &Filter) -> &Arc<RateLimit> {
    match f {
        Filter::RateLimit(rl) => rl,
        other => panic!("expected a RateLimit filter, got {other:?}"),
    }
}

#[test]
fn one_rate_limit_per_plugin_after_authentication_and_listed_for_publish() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    let one = filters(&c, "/one");
    assert!(matches!(one[0], Filter::Authenticate(_)), "{one:?}");
    let shared = rate_limit(&one[1]);
    assert_eq!(shared.spec().key(), &KeySource::Consumer);
    assert_eq!(shared.spec().store(), StoreKind::Redis);
    assert_eq!(shared.spec().limit_for(Some("pro")).quota(), 50);
    let two = filters(&c, "/two");
    assert!(Arc::ptr_eq(shared, rate_limit(&two[0])), "two Routes share one RateLimit");

    // The Consumer's own limit, merged in after authentication.
    let Filter::Authenticate(auth) = &one[0] else { unreachable!() };
    let store = &auth.key_auth.as_ref().unwrap().consumers;
    let big = store.by_username("big").expect("consumer");
    let vip = rate_limit(&big.plugins[0]);
    assert_eq!(vip.spec().limit_for(None).quota(), 500);

    // Every rate limit in use, once each, for RateLimiters::publish.
    let mut ids: Vec<String> =
        c.rate_limits.iter().map(|r| r.spec().id().plugin.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["default/shared", "default/vip"]);

    // The same config compiles to the same limiter identity (counters survive reloads).
    let again = compile(&load_str(FIXTURE), &c.memory);
    assert_eq!(rate_limit(&filters(&again, "/two")[0]).spec().id(), shared.spec().id());
}

#[test]
fn an_invalid_rate_limit_names_each_field() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    assert_cond(
        status(&c, Kind::Plugin, "default", "wrong"),
        ACCEPTED,
        "False",
        "Invalid",
        &["spec.rateLimit.burst: only used with algorithm TokenBucket"],
    );
    let fixed = FIXTURE.replace("burst: 2, ", "");
    let c = compile(&load_str(&fixed), &Memory::default());
    assert_cond(
        status(&c, Kind::Plugin, "default", "wrong"),
        ACCEPTED,
        "False",
        "Invalid",
        &["spec.rateLimit.tiers[1].tier: \"a\" is listed twice"],
    );
}
