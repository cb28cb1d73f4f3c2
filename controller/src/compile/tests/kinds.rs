//! compile() for the request-processing Plugin kinds: each valid one becomes its filter in
//! phase order, each invalid one names its fields, `cache` is built with its defaults and
//! keyed by its Plugin, Consumers take only kinds that run after authentication, rules without backends
//! need a plugin that answers them, and extAuth Services resolve like backends.

use std::sync::Arc;

use http::{HeaderMap, Method};
use weir_crds::PluginKind;
use weir_dataplane::filter::extauth::ExtAuthTarget;
use weir_dataplane::{Filter, RequestView};

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};

const FIXTURE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: auth}
spec: {ports: [{port: 8080}]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: cors}
spec:
  cors: {allowOrigins: ["https://app.test", "https://*.shop.test"], allowMethods: [GET, POST],
         allowHeaders: [authorization], allowCredentials: true, maxAge: 10m}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: req}
spec:
  requestHeaders: {set: [{name: X-Caller, value: "gw ${route}"}], remove: [x-internal]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: resp}
spec:
  responseHeaders: {remove: [server]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: corr}
spec:
  correlationId: {header: X-Correlation-ID}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: ip}
spec:
  ipRestriction: {deny: ["0.0.0.0/0", "::/0"]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: size}
spec:
  requestSize: {maxBody: 10Mi}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: to-https}
spec:
  redirect: {scheme: https, statusCode: 301}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: maintenance}
spec:
  directResponse: {status: 503, body: '{"maintenance":true}', contentType: application/json}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: gzip}
spec:
  compression: {types: [Gzip], minLength: 2Ki, contentTypes: [application/json, text/*]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: forward}
spec:
  extAuth: {service: {name: auth, port: 8080}, path: /check, timeout: 300ms,
            upstreamHeaders: [x-user-id], onError: Allow}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: forward-missing}
spec:
  extAuth: {service: {name: ghost, port: 80}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: cached}
spec:
  cache: {ttl: 5m}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: app}
spec:
  plugins: [corr, cors, resp]
  rules:
    - matches: [{path: {value: /all}}]
      plugins: [req, ip, size, gzip, forward]
      backends: [{service: web, port: 80}]
    - matches: [{path: {value: /moved}}]
      plugins: [to-https]
    - matches: [{path: {value: /down}}]
      plugins: [maintenance]
    - matches: [{path: {value: /cached}}]
      plugins: [cached]
      backends: [{service: web, port: 80}]
    - matches: [{path: {value: /auth-missing}}]
      plugins: [forward-missing]
      backends: [{service: web, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: nothing-answers}
spec:
  hosts: [nothing.test]
  rules:
    - plugins: [resp]
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: wrong-kind}
spec:
  plugins: [cors]
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: right-kind}
spec:
  plugins: [req, resp]
"#;

fn filters(c: &Compiled, host: &str, path: &str) -> Arc<[Filter]> {
    let headers = HeaderMap::new();
    let view = RequestView { method: &Method::GET, host, path, query: None, headers: &headers };
    let m = c.routes.find(&view).expect("route");
    Arc::clone(&m.rule.action.filters)
}

fn names(f: &[Filter]) -> Vec<&'static str> {
    f.iter().map(Filter::name).collect()
}

#[test]
fn every_executable_kind_becomes_its_filter_in_phase_order() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    for name in
        ["cors", "req", "resp", "corr", "ip", "size", "to-https", "maintenance", "gzip", "forward"]
    {
        assert_cond(status(&c, Kind::Plugin, "default", name), ACCEPTED, "True", "Accepted", &[]);
    }
    let all = filters(&c, "x.test", "/all");
    assert_eq!(
        names(&all),
        [
            "correlationId",
            "ipRestriction",
            "cors",
            "requestSize",
            "authentication",
            "requestHeaders",
            "responseHeaders",
            "compression"
        ]
    );
    let Some(Filter::Authenticate(auth)) =
        all.iter().find(|f| matches!(f, Filter::Authenticate(_)))
    else {
        panic!("no authentication");
    };
    let ext = auth.ext_auth.as_ref().expect("extAuth");
    assert!(auth.jwt.is_none() && auth.key_auth.is_none());
    let ExtAuthTarget::Service { backend, path_and_query, .. } = &ext.settings().target else {
        panic!("a Service target");
    };
    assert_eq!(path_and_query.as_str(), "/check");
    assert!(ext.settings().allow_on_error);
    assert_eq!(ext.settings().timeout, std::time::Duration::from_millis(300));
    let auth_backend = c.backends.get(*backend).expect("the auth Service is in the backend table");
    assert_eq!(auth_backend.key.to_string(), "default/auth:8080");
    // Rules answered by a plugin need no backends.
    assert_eq!(
        names(&filters(&c, "x.test", "/moved")),
        ["correlationId", "cors", "redirect", "responseHeaders"]
    );
    assert_eq!(
        names(&filters(&c, "x.test", "/down")),
        ["correlationId", "cors", "directResponse", "responseHeaders"]
    );
    // Route-level plugins are shared by every rule: one filter per Plugin object.
    let (Filter::Cors(a), Filter::Cors(b)) =
        (&filters(&c, "x.test", "/all")[2], &filters(&c, "x.test", "/moved")[1])
    else {
        panic!("cors");
    };
    assert!(Arc::ptr_eq(a, b));
    let route = status(&c, Kind::Route, "default", "app");
    let kinds: Vec<&str> = route.effective_plugins.iter().map(|p| p.type_.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "correlationId",
            "ipRestriction",
            "cors",
            "redirect",
            "directResponse",
            "requestSize",
            "extAuth",
            "requestHeaders",
            "cache",
            "responseHeaders",
            "compression"
        ],
        "what fails closed is not effective: forward-missing (its Service is missing, \
         ResolvedRefs=False)"
    );
}

#[test]
fn cache_is_accepted_and_built_with_its_defaults() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    assert!(status(&c, Kind::Plugin, "default", "cached").is_true(ACCEPTED));
    let f = filters(&c, "x.test", "/cached");
    assert_eq!(names(&f), ["correlationId", "cors", "cache", "responseHeaders"]);
    let Some(Filter::Cache(cache)) = f.iter().find(|f| matches!(f, Filter::Cache(_))) else {
        panic!("a cache filter: {f:?}");
    };
    assert_eq!(&*cache.id, "default/cached", "entries are keyed by the Plugin");
    assert_eq!(cache.ttl, std::time::Duration::from_secs(300));
    assert_eq!(&*cache.methods, [Method::GET, Method::HEAD]);
    assert_eq!(&*cache.statuses, [200, 301, 404]);
    assert!(cache.vary.is_empty() && cache.stale_while_revalidate.is_zero());
    assert_eq!(cache.max_body_size, 1 << 20);
    assert_eq!(cache.store, weir_dataplane::cache::StoreKind::Memory);
    let route = status(&c, Kind::Route, "default", "app");
    assert!(route.is_true(ACCEPTED) && route.is_true(PROGRAMMED));
    assert!(route.effective_plugins.iter().any(|p| p.type_ == "cache"), "{route:?}");
}

#[test]
fn cache_fields_are_compiled() {
    let yaml = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: shared, namespace: shop}
spec:
  cache: {ttl: 1h, methods: [GET], statuses: [200, 203], varyHeaders: [Accept-Language],
          staleWhileRevalidate: 30s, maxBodySize: 64Ki, store: Redis}
"#;
    let c = compile(&load_str(yaml), &Memory::default());
    assert!(status(&c, Kind::Plugin, "shop", "shared").is_true(ACCEPTED));
    let index = load_str(yaml);
    let spec = index.plugins.values().next().and_then(|p| p.spec.cache.clone()).expect("cache");
    let cache = crate::compile::plugins::cache_plugin("shop/shared", &spec).expect("valid");
    assert_eq!(&*cache.methods, [Method::GET]);
    assert_eq!(&*cache.statuses, [200, 203]);
    assert_eq!(cache.vary[0].as_str(), "accept-language");
    assert_eq!(cache.stale_while_revalidate, std::time::Duration::from_secs(30));
    assert_eq!(cache.max_body_size, 64 * 1024);
    assert_eq!(cache.store, weir_dataplane::cache::StoreKind::Redis);
}

#[test]
fn a_missing_ext_auth_service_fails_closed_and_says_so() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    let f = filters(&c, "x.test", "/auth-missing");
    assert!(matches!(&f[..], [Filter::Unavailable(_)]), "{f:?}");
    let route = status(&c, Kind::Route, "default", "app");
    let refs = cond(route, RESOLVED_REFS);
    assert!(
        refs.message.contains("plugin default/forward-missing: spec.extAuth.service"),
        "{refs:?}"
    );
}

#[test]
fn rules_without_backends_need_a_plugin_that_answers() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    assert_cond(
        status(&c, Kind::Route, "default", "nothing-answers"),
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.rules[0].backends: at least one backend is required (unless a redirect or directResponse plugin answers the rule)",
        ],
    );
    assert!(status(&c, Kind::Route, "default", "app").is_true(ACCEPTED));
}

#[test]
fn consumers_take_only_plugins_that_run_after_authentication() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    assert_cond(
        status(&c, Kind::Consumer, "default", "wrong-kind"),
        ACCEPTED,
        "False",
        "Invalid",
        &["spec.plugins[0]: plugin default/cors is a cors plugin, which cannot apply per consumer"],
    );
    assert!(status(&c, Kind::Consumer, "default", "right-kind").is_true(ACCEPTED));
}

const INVALID: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: cors-empty}
spec: {cors: {allowMethods: [FETCH], allowHeaders: ["bad header"]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: cors-origin}
spec: {cors: {allowOrigins: ["https://app.test/", "app.test", "https://*.ok.test"]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: hop}
spec: {requestHeaders: {set: [{name: Transfer-Encoding, value: chunked}, {name: X-Consumer-Username, value: "${request_id}"}], add: [{name: Host, value: x}]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: empty-headers}
spec: {responseHeaders: {}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: ip-empty}
spec: {ipRestriction: {}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: size}
spec: {requestSize: {maxBody: 10MB}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: size-zero}
spec: {requestSize: {maxBody: 0}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: redirect-self}
spec: {redirect: {statusCode: 302}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: redirect-bad}
spec: {redirect: {scheme: ftp, host: "a b", statusCode: 200, path: {replacePrefix: /a, replaceFullPath: /b}}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: direct-bad}
spec: {directResponse: {status: 101}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: gzip-bad}
spec: {compression: {minLength: lots, contentTypes: [text/event-stream, "json"]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: ext-both}
spec: {extAuth: {url: "http://auth:8080/check", service: {name: auth, port: 80}}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: ext-bad}
spec: {extAuth: {url: "ftp://auth", timeout: 0s, upstreamHeaders: [connection]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: corr-bad}
spec: {correlationId: {header: Connection}}
"#;

#[test]
fn each_invalid_new_kind_names_its_fields() {
    let c = compile(&load_str(INVALID), &Memory::default());
    let bad = |name: &str, needles: &[&str]| {
        assert_cond(
            status(&c, Kind::Plugin, "default", name),
            ACCEPTED,
            "False",
            "Invalid",
            needles,
        );
    };
    bad(
        "cors-empty",
        &[
            "spec.cors.allowOrigins: at least one origin",
            "spec.cors.allowMethods[0]: \"FETCH\" is not a known HTTP method",
            "spec.cors.allowHeaders[0]",
        ],
    );
    bad(
        "cors-origin",
        &["spec.cors.allowOrigins[0]: \"https://app.test/\"", "spec.cors.allowOrigins[1]"],
    );
    let origin = &cond(status(&c, Kind::Plugin, "default", "cors-origin"), ACCEPTED).message;
    assert!(!origin.contains("allowOrigins[2]"), "{origin}");
    bad(
        "hop",
        &[
            "spec.requestHeaders.set[0].name: \"transfer-encoding\" is a hop-by-hop or framing header",
            "spec.requestHeaders.set[1].name: \"x-consumer-username\" is an identity header",
            "spec.requestHeaders.add[0].name: \"host\"",
        ],
    );
    bad("empty-headers", &["spec.responseHeaders: at least one of set, add or remove"]);
    bad("ip-empty", &["spec.ipRestriction: at least one of allow or deny"]);
    bad("size", &["spec.requestSize.maxBody: \"10MB\" is not a size"]);
    bad("size-zero", &["spec.requestSize.maxBody: must be positive"]);
    bad("redirect-self", &["spec.redirect: at least one of scheme, host, port or path"]);
    bad(
        "redirect-bad",
        &[
            "spec.redirect.scheme: \"ftp\"",
            "spec.redirect.host: \"a b\"",
            "spec.redirect.statusCode: 200",
            "spec.redirect.path: replacePrefix and replaceFullPath are mutually exclusive",
        ],
    );
    bad("direct-bad", &["spec.directResponse.status: 101 must be between 200 and 599"]);
    bad(
        "gzip-bad",
        &[
            "spec.compression.minLength",
            "spec.compression.contentTypes[0]: \"text/event-stream\" is never compressed",
            "spec.compression.contentTypes[1]: \"json\" is not a media type",
        ],
    );
    bad("ext-both", &["spec.extAuth: url and service are mutually exclusive"]);
    bad(
        "ext-bad",
        &[
            "spec.extAuth.url: \"ftp://auth\" must be an http(s) URL",
            "spec.extAuth.timeout: must be positive",
            "spec.extAuth.upstreamHeaders[0]",
        ],
    );
    bad("corr-bad", &["spec.correlationId.header: \"connection\" is a hop-by-hop"]);
}

#[test]
fn every_kind_has_a_name_and_a_phase_order() {
    // The kinds are in phase order and round-trip through their spec names.
    let mut sorted = PluginKind::ALL;
    sorted.sort();
    assert_eq!(sorted, PluginKind::ALL);
    for k in PluginKind::ALL {
        assert_eq!(PluginKind::from_name(k.as_str()), Some(k));
    }
}

const COMBINED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: global-broken, namespace: weir-system}
spec: {global: true, jwt: {algorithms: [none]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: moved}
spec: {redirect: {host: new.test, path: {replacePrefix: /v2}}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: down}
spec: {directResponse: {status: 503}}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: answers}
spec:
  skipGlobalPlugins: [jwt]
  plugins: [moved]
  rules:
    - matches: [{path: {value: /rule-wins}}]
      plugins: [down]
    - matches: [{path: {value: /route-wins}}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: same-level}
spec:
  hosts: [same.test]
  plugins: [moved, down]
  rules:
    - matches: [{path: {value: /}}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: exact-prefix}
spec:
  hosts: [exact.test]
  skipGlobalPlugins: [jwt]
  rules:
    - matches: [{path: {type: Exact, value: /old}}]
      plugins: [moved]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: open}
spec:
  hosts: [open.test]
  rules:
    - backends: [{service: web, port: 80}]
"#;

#[test]
fn redirect_and_direct_response_most_specific_wins_and_same_level_conflicts() {
    let c = compile(&load_str(COMBINED), &Memory::default());
    assert_eq!(names(&filters(&c, "x.test", "/rule-wins")), ["directResponse"]);
    assert_eq!(names(&filters(&c, "x.test", "/route-wins")), ["redirect"]);
    assert_cond(
        status(&c, Kind::Route, "default", "same-level"),
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.rules[0]: both a redirect (default/moved) and a directResponse (default/down) plugin answer this rule at the same level",
        ],
    );
    assert_cond(
        status(&c, Kind::Route, "default", "exact-prefix"),
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.rules[0].matches[0].path: the redirect plugin default/moved replaces the matched prefix",
        ],
    );
}

#[test]
fn a_global_plugin_that_cannot_run_fails_every_route_closed_unless_skipped() {
    let c = compile(&load_str(COMBINED), &Memory::default());
    let f = filters(&c, "open.test", "/");
    assert!(
        matches!(&f[..], [Filter::Unavailable(m)] if m.contains("weir-system/global-broken")),
        "{f:?}"
    );
    assert_cond(
        status(&c, Kind::Route, "default", "open"),
        RESOLVED_REFS,
        "False",
        "PluginNotFound",
        &["global plugin weir-system/global-broken is not accepted"],
    );
    // Routes that opt out of global jwt are unaffected.
    assert_eq!(names(&filters(&c, "x.test", "/route-wins")), ["redirect"]);
}
