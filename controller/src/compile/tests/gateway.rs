//! Gateway API front end: statuses and reasons, derived Routes.

use serde_json::Value;

use super::super::{Compiled, Memory, compile};
use crate::index::{Index, Kind, ObjectRef};

fn index(yaml: &str) -> Index {
    super::load_yaml(yaml)
}

fn run(yaml: &str) -> Compiled {
    compile(&index(yaml), &Memory::default())
}

fn doc(c: &Compiled, kind: Kind, ns: &str, name: &str) -> Value {
    let s = c
        .statuses
        .get(&(kind, ObjectRef::new(ns, name)))
        .unwrap_or_else(|| panic!("no status for {kind:?} {ns}/{name}"));
    s.document.clone().expect("document")
}

/// `(status, reason)` of the condition `type_` in a conditions array.
fn c(conditions: &Value, type_: &str) -> (String, String) {
    let c = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions}"));
    assert!(c["observedGeneration"].is_i64(), "{c}");
    (c["status"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned())
}

fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_owned(), r.to_owned())
}

/// The parent entry for Gateway `gw` (section `section`).
fn parent<'v>(d: &'v Value, gw: &str, section: Option<&str>) -> &'v Value {
    d["parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["parentRef"]["name"] == gw && p["parentRef"]["sectionName"].as_str() == section)
        .unwrap_or_else(|| panic!("no parent {gw} in {d}"))
}

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: infra}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: shop
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchExpressions: [{key: team, operator: In, values: [shop]}]}
  - name: all
    port: 8081
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

#[test]
fn classes_and_gateways() {
    let yaml = format!(
        "{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: params}}
spec: {{controllerName: weir.dev/gateway-controller, parametersRef: {{group: x, kind: Y, name: z}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: addr, namespace: infra}}
spec:
  gatewayClassName: weir
  addresses: [{{type: IPAddress, value: 10.0.0.1}}]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: conflicts, namespace: infra}}
spec:
  gatewayClassName: weir
  listeners:
  - {{name: a, port: 80, protocol: HTTP, hostname: a.example.com}}
  - {{name: b, port: 80, protocol: HTTP, hostname: a.example.com}}
  - {{name: c, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: missing}}]}}}}
  - {{name: d, port: 443, protocol: HTTP}}
  - {{name: e, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert, namespace: apps}}]}}}}
  - name: f
    port: 81
    protocol: HTTP
    allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}
"
    );
    let c_ = run(&yaml);
    let class = doc(&c_, Kind::GatewayClass, "", "weir");
    assert_eq!(c(&class["conditions"], "Accepted"), pair("True", "Accepted"));
    assert_eq!(c(&class["conditions"], "SupportedVersion").0, "True");
    let params = doc(&c_, Kind::GatewayClass, "", "params");
    assert_eq!(c(&params["conditions"], "Accepted"), pair("False", "InvalidParameters"));
    // Not weir's: no status at all.
    assert!(!c_.statuses.contains_key(&(Kind::GatewayClass, ObjectRef::new("", "other"))));
    assert!(!c_.statuses.contains_key(&(Kind::Gateway, ObjectRef::new("infra", "foreign"))));

    let gw = doc(&c_, Kind::Gateway, "infra", "gw");
    assert_eq!(c(&gw["conditions"], "Accepted"), pair("True", "ListenersNotValid"));
    assert_eq!(c(&gw["conditions"], "Programmed"), pair("True", "Programmed"));
    assert_eq!(gw["addresses"], serde_json::json!([]));
    let listeners = gw["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 4);
    assert_eq!(c(&listeners[0]["conditions"], "Accepted"), pair("True", "Accepted"));
    assert_eq!(c(&listeners[0]["conditions"], "Programmed"), pair("True", "Programmed"));
    assert_eq!(listeners[0]["supportedKinds"].as_array().unwrap().len(), 2);
    assert_eq!(c(&listeners[3]["conditions"], "Accepted"), pair("False", "UnsupportedProtocol"));
    assert_eq!(c(&listeners[3]["conditions"], "Programmed"), pair("False", "Invalid"));

    let addr = doc(&c_, Kind::Gateway, "infra", "addr");
    assert_eq!(c(&addr["conditions"], "Accepted"), pair("False", "UnsupportedAddress"));
    assert_eq!(c(&addr["conditions"], "Programmed"), pair("False", "AddressNotAssigned"));

    let conf = doc(&c_, Kind::Gateway, "infra", "conflicts");
    let l = conf["listeners"].as_array().unwrap();
    assert_eq!(c(&l[0]["conditions"], "Conflicted"), pair("True", "HostnameConflict"));
    assert_eq!(c(&l[1]["conditions"], "Conflicted"), pair("True", "HostnameConflict"));
    assert_eq!(c(&l[2]["conditions"], "Conflicted"), pair("True", "ProtocolConflict"));
    assert_eq!(c(&l[3]["conditions"], "Conflicted"), pair("True", "ProtocolConflict"));
    assert_eq!(c(&l[4]["conditions"], "ResolvedRefs"), pair("False", "RefNotPermitted"));
    assert_eq!(c(&l[4]["conditions"], "Programmed"), pair("False", "Invalid"));
    assert_eq!(c(&l[5]["conditions"], "ResolvedRefs"), pair("False", "InvalidRouteKinds"));
    assert_eq!(l[5]["supportedKinds"], serde_json::json!([]));
    assert_eq!(c(&conf["conditions"], "Accepted"), pair("False", "ListenersNotValid"));
}

fn http_route(name: &str, ns: &str, parent: &str, rest: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  parentRefs: [{parent}]
{rest}
"
    )
}

#[test]
fn attachment_reasons_and_attached_routes() {
    let mut yaml = BASE.to_owned();
    let backend = "  rules: [{backendRefs: [{name: web, port: 80}]}]";
    // Same namespace, default listener set: attaches to http (all hosts), shop is
    // Selector (infra has no team label) and all admits it.
    yaml += &http_route("same", "infra", "{name: gw, namespace: infra}", backend);
    // From apps: only shop (selector) and all admit it; hostname outside *.example.com
    // attaches only to all.
    yaml += &http_route(
        "apps",
        "apps",
        "{name: gw, namespace: infra}",
        &format!("  hostnames: [a.example.com]\n{backend}"),
    );
    yaml += &http_route(
        "nohost",
        "apps",
        "{name: gw, namespace: infra, sectionName: shop}",
        &format!("  hostnames: [a.example.org]\n{backend}"),
    );
    yaml +=
        &http_route("denied", "other", "{name: gw, namespace: infra, sectionName: shop}", backend);
    yaml += &http_route("nosection", "infra", "{name: gw, sectionName: nope}", backend);
    yaml += &http_route("port", "infra", "{name: gw, port: 8081}", backend);
    yaml += &http_route("badport", "infra", "{name: gw, port: 9999}", backend);
    yaml += &http_route("foreign", "infra", "{name: foreign}", backend);
    let c_ = run(&yaml);
    let same = doc(&c_, Kind::HttpRoute, "infra", "same");
    let p = parent(&same, "gw", None);
    assert_eq!(p["controllerName"], "weir.dev/gateway-controller");
    assert_eq!(c(&p["conditions"], "Accepted"), pair("True", "Accepted"));
    assert_eq!(c(&p["conditions"], "ResolvedRefs"), pair("True", "ResolvedRefs"));
    let apps = doc(&c_, Kind::HttpRoute, "apps", "apps");
    assert_eq!(c(&parent(&apps, "gw", None)["conditions"], "Accepted"), pair("True", "Accepted"));
    let nohost = doc(&c_, Kind::HttpRoute, "apps", "nohost");
    assert_eq!(
        c(&parent(&nohost, "gw", Some("shop"))["conditions"], "Accepted"),
        pair("False", "NoMatchingListenerHostname")
    );
    let denied = doc(&c_, Kind::HttpRoute, "other", "denied");
    assert_eq!(
        c(&parent(&denied, "gw", Some("shop"))["conditions"], "Accepted"),
        pair("False", "NotAllowedByListeners")
    );
    let nosection = doc(&c_, Kind::HttpRoute, "infra", "nosection");
    assert_eq!(
        c(&parent(&nosection, "gw", Some("nope"))["conditions"], "Accepted"),
        pair("False", "NoMatchingParent")
    );
    let badport = doc(&c_, Kind::HttpRoute, "infra", "badport");
    assert_eq!(
        c(&parent(&badport, "gw", None)["conditions"], "Accepted"),
        pair("False", "NoMatchingParent")
    );
    // Summary: the first non-True parent, prefixed.
    let s = &c_.statuses[&(Kind::HttpRoute, ObjectRef::new("other", "denied"))];
    let a = s.condition("Accepted").unwrap();
    assert_eq!(a.reason, "NotAllowedByListeners");
    assert!(a.message.starts_with("parent infra/gw/shop: "), "{}", a.message);
    // Not weir's parent: no status.
    assert!(!c_.statuses.contains_key(&(Kind::HttpRoute, ObjectRef::new("infra", "foreign"))));

    let gw = doc(&c_, Kind::Gateway, "infra", "gw");
    let attached: Vec<i64> = gw["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["attachedRoutes"].as_i64().unwrap())
        .collect();
    // http: same; shop: apps; all: same, apps, port.
    assert_eq!(attached, vec![1, 1, 3, 0]);

    // Derived Routes: host intersection and the source's creationTimestamp.
    let idx = index(&yaml);
    let expanded = super::super::frontends::expand(&idx);
    let derived = &expanded.index.routes;
    let apps0 = &derived[&ObjectRef::new("apps", "httproute/apps/0")];
    assert_eq!(apps0.spec.hosts, vec!["a.example.com"]);
    assert_eq!(apps0.metadata.creation_timestamp.as_ref().unwrap().0.as_second(), 1_704_067_200);
    let same0 = &derived[&ObjectRef::new("infra", "httproute/same/0")];
    assert!(same0.spec.hosts.is_empty());
    assert!(!derived.contains_key(&ObjectRef::new("other", "httproute/denied/0")));
    // Derived Routes are served and get statuses of their own (hidden from users).
    assert!(
        c_.statuses[&(Kind::Route, ObjectRef::new("apps", "httproute/apps/0"))].is_true("Accepted")
    );
}

#[test]
fn backend_refs_and_reference_grants() {
    let mut yaml = BASE.to_owned();
    let parent_ref = "{name: gw, namespace: infra, sectionName: all}";
    yaml += &http_route(
        "cross",
        "apps",
        parent_ref,
        "  rules: [{backendRefs: [{name: web, namespace: other, port: 80}]}]",
    );
    yaml += &http_route(
        "granted",
        "apps",
        parent_ref,
        "  rules: [{backendRefs: [{name: web, namespace: infra, port: 80}]}]",
    );
    yaml += &http_route(
        "missing",
        "apps",
        parent_ref,
        "  rules: [{backendRefs: [{name: nope, port: 80}, {name: web, port: 80}]}]",
    );
    yaml += &http_route(
        "kind",
        "apps",
        parent_ref,
        "  rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]",
    );
    yaml += &http_route(
        "mirror",
        "apps",
        parent_ref,
        "  rules:\n  - backendRefs: [{name: web, port: 80}]\n    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}}}]\n  - backendRefs: [{name: web, port: 80}]\n    retry: {attempts: 2}",
    );
    yaml += &http_route(
        "ext",
        "apps",
        parent_ref,
        "  rules: [{backendRefs: [{name: web, port: 80}], filters: [{type: ExtensionRef, extensionRef: {group: weir.dev, kind: Plugin, name: absent}}]}]",
    );
    yaml += "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps-to-web, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: '', kind: Service}]
";
    let c_ = run(&yaml);
    let reason = |name: &str, type_: &str| {
        let d = doc(&c_, Kind::HttpRoute, "apps", name);
        c(&parent(&d, "gw", Some("all"))["conditions"], type_)
    };
    assert_eq!(reason("cross", "ResolvedRefs"), pair("False", "RefNotPermitted"));
    assert_eq!(reason("cross", "Accepted"), pair("True", "Accepted"));
    assert_eq!(reason("granted", "ResolvedRefs"), pair("True", "ResolvedRefs"));
    assert_eq!(reason("missing", "ResolvedRefs"), pair("False", "BackendNotFound"));
    assert_eq!(reason("kind", "ResolvedRefs"), pair("False", "InvalidKind"));
    assert_eq!(reason("mirror", "Accepted"), pair("False", "UnsupportedValue"));
    assert_eq!(reason("ext", "ResolvedRefs"), pair("False", "PluginNotFound"));
    let mirror = &c_.statuses[&(Kind::HttpRoute, ObjectRef::new("apps", "mirror"))];
    let message = &mirror.condition("Accepted").unwrap().message;
    assert!(message.contains("spec.rules[0].filters[0].type: RequestMirror"), "{message}");
    assert!(message.contains("spec.rules[1].retry"), "{message}");

    let idx = index(&yaml);
    let expanded = super::super::frontends::expand(&idx);
    let routes = &expanded.index.routes;
    // The granted cross-namespace backend keeps its namespace (hidden field).
    let granted_route = &routes[&ObjectRef::new("apps", "httproute/granted/0")];
    assert_eq!(granted_route.spec.rules[0].backends[0].namespace.as_deref(), Some("infra"));
    // The missing backend is kept, marked invalid (its share answers 500); the valid one
    // stays.
    let missing = &routes[&ObjectRef::new("apps", "httproute/missing/0")];
    assert!(missing.spec.rules[0].backends[0].invalid.is_some());
    assert!(missing.spec.rules[0].backends[1].invalid.is_none());
    // A rejected rule keeps claiming its matches and answers 500 (never falls through to a
    // less specific rule without the filter it asked for).
    let mirror = &routes[&ObjectRef::new("apps", "httproute/mirror/0")];
    assert!(!mirror.spec.rules.is_empty());
    for rule in &mirror.spec.rules {
        assert_eq!(rule.backends.len(), 1, "{rule:?}");
        assert!(rule.backends[0].invalid.is_some(), "{rule:?}");
        assert!(rule.plugins.is_empty(), "{rule:?}");
    }
}

#[test]
fn filters_become_plugins_and_rewrites() {
    let mut yaml = BASE.to_owned();
    yaml += &http_route(
        "f",
        "infra",
        "{name: gw}",
        "  hostnames: [a.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}, method: GET, headers: [{name: x, value: y}], queryParams: [{name: q, value: v, type: RegularExpression}]}]
    filters:
    - {type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}
  - matches: [{path: {type: Exact, value: /rw}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}], remove: [c]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: d, value: e}]}}
    - {type: URLRewrite, urlRewrite: {hostname: up.example.com, path: {type: ReplaceFullPath, replaceFullPath: /x}}}
    backendRefs: [{name: web, port: 80, weight: 3}]
    timeouts: {request: 10s, backendRequest: 2s}",
    );
    let idx = index(&yaml);
    let expanded = super::super::frontends::expand(&idx);
    let route = &expanded.index.routes[&ObjectRef::new("infra", "httproute/f/0")];
    let r0 = &route.spec.rules[0];
    assert!(r0.backends.is_empty());
    let m = &r0.matches[0];
    assert_eq!(m.methods, vec!["GET"]);
    assert_eq!(m.path.as_ref().unwrap().type_, weir_crds::PathMatchType::Prefix);
    assert_eq!(m.query_params[0].type_, weir_crds::StringMatchType::RegularExpression);
    let redirect = &expanded.index.plugins[&ObjectRef::new("infra", &r0.plugins[0])];
    let config = redirect.spec.redirect.as_ref().unwrap();
    assert_eq!((config.scheme.as_deref(), config.status_code), (Some("https"), Some(301)));
    assert_eq!(config.path.as_ref().unwrap().replace_prefix.as_deref(), Some("/new"));
    let r1 = &route.spec.rules[1];
    assert_eq!(r1.plugins.len(), 2);
    assert_eq!(r1.rewrite.as_ref().unwrap().replace_full_path.as_deref(), Some("/x"));
    assert_eq!(r1.rewrite.as_ref().unwrap().host.as_deref(), Some("up.example.com"));
    assert_eq!(r1.timeouts.as_ref().unwrap().request.as_deref(), Some("2s"));
    assert_eq!(r1.backends[0].weight, Some(3));
    // The whole thing compiles: accepted everywhere.
    let c_ = compile(&index(&yaml), &Memory::default());
    let d = doc(&c_, Kind::HttpRoute, "infra", "f");
    assert_eq!(c(&parent(&d, "gw", None)["conditions"], "Accepted"), pair("True", "Accepted"));
    assert!(
        c_.statuses[&(Kind::Route, ObjectRef::new("infra", "httproute/f/0"))].is_true("Accepted")
    );
}

#[test]
fn grpc_routes_need_h2c_backends() {
    let mut yaml = BASE.to_owned();
    yaml += "---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: infra}
spec: {ports: [{name: grpc, port: 50051, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: grpc, port: 50051}]
  - matches: [{method: {service: helloworld.Greeter}}]
    backendRefs: [{name: web, port: 80}]
";
    let c_ = run(&yaml);
    let d = doc(&c_, Kind::GrpcRoute, "infra", "g");
    assert_eq!(
        c(&parent(&d, "gw", None)["conditions"], "ResolvedRefs"),
        pair("False", "UnsupportedProtocol")
    );
    let idx = index(&yaml);
    let expanded = super::super::frontends::expand(&idx);
    let route = &expanded.index.routes[&ObjectRef::new("infra", "grpcroute/g/0")];
    let p0 = route.spec.rules[0].matches[0].path.as_ref().unwrap();
    assert_eq!(
        (p0.type_, p0.value.as_str()),
        (weir_crds::PathMatchType::Exact, "/helloworld.Greeter/SayHello")
    );
    let p1 = route.spec.rules[1].matches[0].path.as_ref().unwrap();
    assert_eq!(
        (p1.type_, p1.value.as_str()),
        (weir_crds::PathMatchType::Prefix, "/helloworld.Greeter")
    );
    assert!(route.spec.rules[1].backends[0].invalid.is_some());
}

#[test]
fn hostname_intersection() {
    use super::super::frontends::gateway::intersect_for_tests as i;
    let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(i(None, &[]), Some(vec![]));
    assert_eq!(i(Some("a.example.com"), &[]), Some(v(&["a.example.com"])));
    assert_eq!(
        i(Some("*.example.com"), &v(&["a.example.com", "x.org"])),
        Some(v(&["a.example.com"]))
    );
    assert_eq!(i(Some("a.example.com"), &v(&["*.example.com"])), Some(v(&["a.example.com"])));
    assert_eq!(i(Some("*.example.com"), &v(&["*.a.example.com"])), Some(v(&["*.a.example.com"])));
    assert_eq!(i(Some("*.a.example.com"), &v(&["*.example.com"])), Some(v(&["*.a.example.com"])));
    assert_eq!(i(Some("*.example.com"), &v(&["example.com"])), None);
    assert_eq!(i(Some("a.example.com"), &v(&["b.example.com"])), None);
}

#[test]
fn https_listener_certificate_goes_to_derived_routes() {
    let mut yaml = BASE.replace(
        "  - {name: tcp, port: 9000, protocol: TCP}",
        "  - {name: https, port: 443, protocol: HTTPS, hostname: '*.example.com', tls: {certificateRefs: [{name: cert}]}}",
    );
    yaml += "---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: infra}
type: kubernetes.io/tls
stringData: {tls.crt: x, tls.key: y}
";
    yaml += &http_route(
        "tlsonly",
        "infra",
        "{name: gw, sectionName: https}",
        "  hostnames: [a.example.com]\n  rules: [{backendRefs: [{name: web, port: 80}]}]",
    );
    yaml += &http_route(
        "both",
        "infra",
        "{name: gw, sectionName: https}",
        "  hostnames: [b.example.com]\n  rules: [{backendRefs: [{name: web, port: 80}]}]",
    );
    yaml = yaml.replace("parentRefs: [{name: gw, sectionName: https}]\n  hostnames: [b.example.com]", "parentRefs: [{name: gw, sectionName: https}, {name: gw, sectionName: http}]\n  hostnames: [b.example.com]");
    let idx = index(&yaml);
    let expanded = super::super::frontends::expand(&idx);
    let tls_only = &expanded.index.routes[&ObjectRef::new("infra", "httproute/tlsonly/0")];
    let tls = tls_only.spec.tls.as_ref().unwrap();
    assert_eq!(tls.secret_ref.name, "cert");
    assert!(tls.http_redirect, "attached only to HTTPS: plain HTTP is redirected");
    let both = &expanded.index.routes[&ObjectRef::new("infra", "httproute/both/0")];
    assert!(!both.spec.tls.as_ref().unwrap().http_redirect);
    assert!(
        super::super::frontends::referenced_secrets(&idx)
            .contains(&ObjectRef::new("infra", "cert"))
    );
}

#[test]
fn certificate_in_another_namespace_needs_a_reference_grant() {
    let gateway = |grant: bool| {
        let mut yaml = BASE.replace(
            "  - {name: tcp, port: 9000, protocol: TCP}",
            "  - {name: https, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert, namespace: apps}]}}",
        );
        yaml += "---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: apps}
type: kubernetes.io/tls
stringData: {tls.crt: x, tls.key: y}
";
        if grant {
            yaml += "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gw-certs, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Secret, name: cert}]
";
        }
        yaml += &http_route(
            "r",
            "infra",
            "{name: gw, sectionName: https}",
            "  rules: [{backendRefs: [{name: web, port: 80}]}]",
        );
        yaml
    };
    // Without a grant: RefNotPermitted, the listener is not programmed, nothing attaches.
    let c_ = run(&gateway(false));
    let gw = doc(&c_, Kind::Gateway, "infra", "gw");
    let https = &gw["listeners"][3];
    assert_eq!(c(&https["conditions"], "ResolvedRefs"), pair("False", "RefNotPermitted"));
    assert_eq!(c(&https["conditions"], "Programmed"), pair("False", "Invalid"));
    let r = doc(&c_, Kind::HttpRoute, "infra", "r");
    assert_eq!(
        c(&parent(&r, "gw", Some("https"))["conditions"], "Accepted"),
        pair("False", "NoMatchingParent")
    );
    // With it: the derived Route gets the Secret with its namespace (hidden field).
    let idx = index(&gateway(true));
    let c_ = compile(&idx, &Memory::default());
    let gw = doc(&c_, Kind::Gateway, "infra", "gw");
    assert_eq!(c(&gw["listeners"][3]["conditions"], "ResolvedRefs"), pair("True", "ResolvedRefs"));
    assert_eq!(gw["listeners"][3]["attachedRoutes"], 1);
    let expanded = super::super::frontends::expand(&idx);
    let tls =
        expanded.index.routes[&ObjectRef::new("infra", "httproute/r/0")].spec.tls.clone().unwrap();
    assert_eq!(
        (tls.secret_ref.name.as_str(), tls.secret_namespace.as_deref()),
        ("cert", Some("apps"))
    );
    assert!(
        super::super::secret_refs_outside_policies(&expanded.index)
            .contains(&ObjectRef::new("apps", "cert"))
    );
}

#[test]
fn incremental_updates_follow_services_namespaces_and_secrets() {
    let route = http_route(
        "late",
        "apps",
        "{name: gw, namespace: infra, sectionName: shop}",
        "  hostnames: [a.example.com]\n  rules: [{backendRefs: [{name: late, port: 80}]}]",
    );
    let mut idx = index(&(BASE.to_owned() + &route));
    let first = compile(&idx, &Memory::default());
    let reasons = |compiled: &Compiled| {
        let d = doc(compiled, Kind::HttpRoute, "apps", "late");
        let p = parent(&d, "gw", Some("shop"));
        (c(&p["conditions"], "Accepted"), c(&p["conditions"], "ResolvedRefs"))
    };
    assert_eq!(reasons(&first).1, pair("False", "BackendNotFound"));
    // The Service appears: the derived Route changes (its backend is no longer invalid).
    let with_service = index(
        &(BASE.to_owned()
            + &route
            + "---
apiVersion: v1
kind: Service
metadata: {name: late, namespace: apps}
spec: {ports: [{name: http, port: 80}]}
"),
    );
    let second = super::super::update(&with_service, &first).expect("changed");
    assert_eq!(reasons(&second).1, pair("True", "ResolvedRefs"));
    assert_eq!(second.statuses, compile(&with_service, &Memory::default()).statuses);
    // The namespace loses the label the listener selects: no longer allowed.
    idx = with_service.clone();
    let apps = ObjectRef::new("", "apps");
    let mut ns = (*idx.namespaces[&apps]).clone();
    ns.metadata.labels = None;
    idx.namespaces.insert(apps, std::sync::Arc::new(ns));
    let third = super::super::update(&idx, &second).expect("changed");
    assert_eq!(reasons(&third).0, pair("False", "NotAllowedByListeners"));
    assert!(
        !third.statuses.contains_key(&(Kind::Route, ObjectRef::new("apps", "httproute/late/0")))
    );
    assert_eq!(third.statuses, compile(&idx, &Memory::default()).statuses);
}
