//! Ingress (`networking.k8s.io/v1`): class selection, path types, ports, default backend,
//! TLS, `weir.dev/*` annotations, unsupported ingress-nginx annotations and statuses.

use std::time::SystemTime;

use http::{HeaderMap, Method};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use weir_dataplane::RequestView;

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};
use crate::compile::frontends;

/// Loads YAML with the real loader (every kind, Ingress and IngressClass included), with
/// the clock set (the TLS tests check certificate dates).
fn index(yaml: &str) -> Index {
    let mut index = super::load_yaml(yaml);
    index.now = Some(SystemTime::now());
    index
}

const CLASSES: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: weir}
spec: {controller: weir.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}
spec: {controller: k8s.io/ingress-nginx}
---
";

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{ports: [{{name: http, port: 80}}, {{name: admin, port: 9000}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: admin, port: 9090}}]\n\
         endpoints: [{{addresses: [10.0.0.1], conditions: {{ready: true}}}}]\n---\n"
    )
}

/// An Ingress: `extra` is spliced into `metadata` (annotations, creationTimestamp) and
/// `spec` is the spec body (indented by the caller with two spaces).
fn ingress(name: &str, metadata: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  generation: 2\n\
         {metadata}spec:\n{spec}---\n"
    )
}

fn simple_rule(host: &str, path: &str, path_type: &str, svc: &str) -> String {
    format!(
        "  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: {path}\n        \
         pathType: {path_type}\n        backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n"
    )
}

/// The derived Route serving a request, if any.
fn served(c: &Compiled, host: &str, path: &str) -> Option<String> {
    let headers = HeaderMap::new();
    let req = RequestView { method: &Method::GET, host, path, query: None, headers: &headers };
    c.routes.find(&req).map(|m| format!("{}/{}", m.rule.route().namespace, m.rule.route().name))
}

fn ingress_status<'c>(c: &'c Compiled, name: &str) -> &'c ObjectStatus {
    status(c, Kind::Ingress, "default", name)
}

fn derived_route(index: &Index, name: &str) -> Arc<crate::index::RouteObject> {
    let expanded = frontends::expand(index);
    let key = ObjectRef::new("default", name);
    Arc::clone(expanded.index.routes.get(&key).unwrap_or_else(|| panic!("no derived {name}")))
}

#[test]
fn class_selection_by_name_legacy_annotation_and_default_class() {
    let rule = |host: &str| simple_rule(host, "/", "Prefix", "app");
    let yaml = format!(
        "{CLASSES}{}{}{}{}{}{}",
        service("app"),
        ingress("by-class", "", &format!("  ingressClassName: weir\n{}", rule("a.test"))),
        ingress("other-class", "", &format!("  ingressClassName: nginx\n{}", rule("b.test"))),
        ingress("legacy", "  annotations: {kubernetes.io/ingress.class: weir}\n", &rule("c.test")),
        ingress(
            "legacy-other",
            "  annotations: {kubernetes.io/ingress.class: nginx}\n",
            &rule("d.test")
        ),
        ingress("no-class", "", &rule("e.test")),
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(served(&c, "a.test", "/").as_deref(), Some("default/ingress/by-class/0"));
    assert_eq!(served(&c, "c.test", "/").as_deref(), Some("default/ingress/legacy/0"));
    for (host, name) in
        [("b.test", "other-class"), ("d.test", "legacy-other"), ("e.test", "no-class")]
    {
        assert_eq!(served(&c, host, "/"), None, "{name} is not weir's");
        assert!(!c.statuses.contains_key(&(Kind::Ingress, ObjectRef::new("default", name))));
    }
    for name in ["by-class", "legacy"] {
        let s = ingress_status(&c, name);
        assert_cond(s, ACCEPTED, "True", "Accepted", &[]);
        assert_cond(s, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
        assert_cond(s, PROGRAMMED, "True", "Programmed", &[]);
    }

    // weir's class becomes the default one: the Ingress without a class is weir's.
    let yaml = yaml.replacen(
        "metadata: {name: weir}",
        "metadata: {name: weir, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}",
        1,
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(served(&c, "e.test", "/").as_deref(), Some("default/ingress/no-class/0"));
    assert_cond(ingress_status(&c, "no-class"), ACCEPTED, "True", "Accepted", &[]);
    assert_eq!(served(&c, "b.test", "/"), None, "an explicit other class stays other");
    assert_eq!(served(&c, "d.test", "/"), None, "the legacy annotation names another class");
}

#[test]
fn path_types_follow_the_ingress_spec() {
    let paths = "  ingressClassName: weir\n  rules:\n  - host: p.test\n    http:\n      paths:\n\
        \x20     - {path: /foo, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}\n\
        \x20     - {path: /exact, pathType: Exact, backend: {service: {name: app, port: {number: 80}}}}\n\
        \x20     - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: app, port: {number: 80}}}}\n\
        \x20     - {path: /aaa/bbb/, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}\n";
    let yaml = format!("{CLASSES}{}{}", service("app"), ingress("paths", "", paths));
    let c = compile(&index(&yaml), &Memory::default());
    let yes = Some("default/ingress/paths/0".to_owned());
    for path in
        ["/foo", "/foo/", "/foo/bar", "/exact", "/impl", "/impl/x", "/aaa/bbb", "/aaa/bbb/ccc"]
    {
        assert_eq!(served(&c, "p.test", path), yes, "{path} matches");
    }
    for path in ["/foobar", "/exact/", "/exactly", "/implx", "/aaa/bbbxyz", "/"] {
        assert_eq!(served(&c, "p.test", path), None, "{path} does not match");
    }
    assert_cond(ingress_status(&c, "paths"), ACCEPTED, "True", "Accepted", &[]);

    // A path type weir does not know is rejected by name.
    let bad = paths.replacen("pathType: Exact", "pathType: Regex", 1);
    let c = compile(
        &index(&format!("{CLASSES}{}{}", service("app"), ingress("paths", "", &bad))),
        &Memory::default(),
    );
    assert_cond(
        ingress_status(&c, "paths"),
        ACCEPTED,
        "False",
        "Invalid",
        &["spec.rules[0].http.paths[1].pathType", "Regex"],
    );
    assert_eq!(served(&c, "p.test", "/foo"), None, "nothing served without a last good version");
}

#[test]
fn named_ports_resolve_through_the_service_and_unknown_ones_answer_500() {
    let spec = "  ingressClassName: weir\n  rules:\n  - host: n.test\n    http:\n      paths:\n\
        \x20     - {path: /admin, pathType: Prefix, backend: {service: {name: app, port: {name: admin}}}}\n\
        \x20     - {path: /nope, pathType: Prefix, backend: {service: {name: app, port: {name: nope}}}}\n\
        \x20     - {path: /res, pathType: Prefix, backend: {resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}}}\n";
    let yaml = format!("{CLASSES}{}{}", service("app"), ingress("ports", "", spec));
    let idx = index(&yaml);
    let route = derived_route(&idx, "ingress/ports/0");
    assert_eq!(
        route.spec.rules[0].backends[0].port,
        Some(9000),
        "the Service port, not the target"
    );
    for rule in &route.spec.rules[1..] {
        assert_eq!(rule.backends.len(), 1, "{rule:?}");
        assert!(rule.backends[0].invalid.as_deref().is_some_and(|m| m.contains("500")));
    }
    let c = compile(&idx, &Memory::default());
    let s = ingress_status(&c, "ports");
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "BackendNotFound",
        &[
            "paths[1].backend.service.port.name",
            "no port named \"nope\"",
            "paths[2].backend.resource",
            "500",
        ],
    );
    assert_cond(s, ACCEPTED, "True", "Accepted", &[]);
    assert_cond(s, PROGRAMMED, "True", "Programmed", &[]);
    let m = {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            host: "n.test",
            path: "/nope",
            query: None,
            headers: &headers,
        };
        let rule = c.routes.find(&req).unwrap().rule;
        let id = rule.action.backends.pick().unwrap();
        c.backends.get(id).unwrap().invalid
    };
    // The data plane answers 500 for that path's backend only (see the e2e test).
    assert!(m, "the /nope rule's backend is marked invalid");

    // A missing Service: the Route compiler's BackendNotFound, named by path.
    let yaml = format!(
        "{CLASSES}{}",
        ingress(
            "ports",
            "",
            &format!("  ingressClassName: weir\n{}", simple_rule("n.test", "/", "Prefix", "ghost"))
        )
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_cond(
        ingress_status(&c, "ports"),
        RESOLVED_REFS,
        "False",
        "BackendNotFound",
        &["spec.rules[0] (host n.test)", "ghost"],
    );
}

#[test]
fn the_default_backend_is_a_true_fallback_and_the_oldest_ingress_wins() {
    let older = "  creationTimestamp: \"2024-01-01T00:00:00Z\"\n";
    let newer = "  creationTimestamp: \"2025-01-01T00:00:00Z\"\n";
    let a = format!(
        "  ingressClassName: weir\n  defaultBackend: {{service: {{name: fallback, port: {{number: 80}}}}}}\n{}",
        simple_rule("a.test", "/api", "Prefix", "app")
    );
    let b = "  ingressClassName: weir\n  defaultBackend: {service: {name: other, port: {number: 80}}}\n\
             \x20 rules:\n  - host: c.test\n  - host: a.test\n    http:\n      paths:\n\
             \x20     - {path: /api, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}\n";
    let route = "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: user, creationTimestamp: \"2026-01-01T00:00:00Z\"}\n\
                 spec: {rules: [{matches: [{path: {type: Prefix, value: /x}}], backends: [{service: app, port: 80}]}]}\n---\n\
                 apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: root, creationTimestamp: \"2026-01-01T00:00:00Z\"}\n\
                 spec: {hosts: [r.test], rules: [{backends: [{service: app, port: 80}]}]}\n---\n";
    let yaml = format!(
        "{CLASSES}{}{}{}{}{}{}",
        service("app"),
        service("fallback"),
        service("other"),
        route,
        ingress("a", older, &a),
        ingress("b", newer, b),
    );
    let c = compile(&index(&yaml), &Memory::default());
    let at = |host, path| served(&c, host, path);
    assert_eq!(
        at("a.test", "/api/x").as_deref(),
        Some("default/ingress/a/0"),
        "the older Ingress wins the conflict"
    );
    assert_eq!(
        at("a.test", "/other").as_deref(),
        Some("default/ingress/a/default"),
        "unmatched path"
    );
    assert_eq!(at("z.test", "/").as_deref(), Some("default/ingress/a/default"), "unknown host");
    assert_eq!(at("z.test", "/x/1").as_deref(), Some("default/user"), "a more specific Route wins");
    assert_eq!(
        at("r.test", "/").as_deref(),
        Some("default/root"),
        "a host-less Prefix / never beats a host"
    );
    assert_eq!(
        at("c.test", "/").as_deref(),
        Some("default/ingress/b/0"),
        "a rule without http uses its Ingress's default backend"
    );
    let derived = derived_route(&index(&yaml), "ingress/b/0");
    assert_eq!(derived.spec.rules[0].backends[0].service, "other");
    assert!(
        c.routes.route(&weir_dataplane::ObjectKey::new("default", "ingress/b/default")).is_none()
    );
    assert_cond(
        ingress_status(&c, "b"),
        ACCEPTED,
        "True",
        "Accepted",
        &["older Ingress default/a provides the default backend"],
    );
    assert_cond(ingress_status(&c, "a"), PROGRAMMED, "True", "Programmed", &[]);

    // Same age, same host and path: namespace/name decides (a before b).
    let same = newer.replace("2025", "2024");
    let yaml = format!(
        "{CLASSES}{}{}{}{}",
        service("app"),
        service("other"),
        ingress(
            "a",
            &same,
            &format!("  ingressClassName: weir\n{}", simple_rule("q.test", "/", "Prefix", "app"))
        ),
        ingress(
            "b",
            &same,
            &format!("  ingressClassName: weir\n{}", simple_rule("q.test", "/", "Prefix", "other"))
        )
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(served(&c, "q.test", "/").as_deref(), Some("default/ingress/a/0"));
}

fn cert(sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, sans[0]);
    p.distinguished_name = dn;
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn tls_secret(name: &str, (crt, key): &(String, String)) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(crt),
        indent(key)
    )
}

#[test]
fn tls_hosts_get_their_certificate_and_plain_http_is_redirected_by_default() {
    let spec = format!(
        "  ingressClassName: weir\n  tls:\n  - hosts: [shop.test, only-tls.test]\n    secretName: shop-tls\n{}",
        simple_rule("shop.test", "/", "Prefix", "app")
    );
    let yaml = format!(
        "{CLASSES}{}{}{}",
        service("app"),
        tls_secret("shop-tls", &cert(&["shop.test", "only-tls.test"])),
        ingress("shop", "", &spec)
    );
    let idx = index(&yaml);
    assert_eq!(
        frontends::referenced_secrets(&idx).into_iter().collect::<Vec<_>>(),
        vec![ObjectRef::new("default", "shop-tls")]
    );
    let c = compile(&idx, &Memory::default());
    for sni in ["shop.test", "only-tls.test"] {
        assert_eq!(
            c.tls.select(Some(sni)).map(|t| t.name.to_string()).as_deref(),
            Some("default/shop-tls"),
            "{sni}"
        );
    }
    let model =
        c.routes.route(&weir_dataplane::ObjectKey::new("default", "ingress/shop/0")).unwrap();
    assert!(model.rules.iter().all(|r| r.action.https_redirect), "ssl-redirect defaults to true");
    // The TLS-only host has no rule and no default backend: a 404 of its own.
    assert_eq!(
        served(&c, "only-tls.test", "/").as_deref(),
        Some("default/ingress/shop/tls-only-tls.test")
    );
    let s = ingress_status(&c, "shop");
    assert_cond(s, RESOLVED_REFS, "True", "ResolvedRefs", &[]);

    // weir.dev/ssl-redirect: "false" turns the redirect off.
    let off = yaml.replacen(
        "  generation: 2\n",
        "  generation: 2\n  annotations: {weir.dev/ssl-redirect: \"false\"}\n",
        1,
    );
    let c = compile(&index(&off), &Memory::default());
    let model =
        c.routes.route(&weir_dataplane::ObjectKey::new("default", "ingress/shop/0")).unwrap();
    assert!(model.rules.iter().all(|r| !r.action.https_redirect));

    // A missing Secret: ResolvedRefs=False, named by host.
    let yaml = format!("{CLASSES}{}{}", service("app"), ingress("shop", "", &spec));
    let c = compile(&index(&yaml), &Memory::default());
    assert_cond(
        ingress_status(&c, "shop"),
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["spec.rules[0] (host shop.test)", "shop-tls"],
    );
}

#[test]
fn weir_annotations_become_route_fields() {
    let meta = "  annotations:\n    weir.dev/plugins: \"cors, limit\"\n    weir.dev/request-timeout: 15s\n\
                \x20   weir.dev/connect-timeout: 2s\n    weir.dev/retries: \"2\"\n    weir.dev/rewrite-target: /v2\n\
                \x20   weir.dev/upstream-host: internal.test\n    weir.dev/skip-global-plugins: jwt\n\
                \x20   kubectl.kubernetes.io/last-applied-configuration: \"{}\"\n\
                \x20   nginx.ingress.kubernetes.io/proxy-buffering: \"on\"\n";
    let plugins = "apiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {name: cors}\n\
                   spec: {cors: {allowOrigins: ['https://a.test']}}\n---\n\
                   apiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {name: limit}\n\
                   spec: {rateLimit: {limit: 10, window: 1s}}\n---\n";
    let spec = "  ingressClassName: weir\n  rules:\n  - host: w.test\n    http:\n      paths:\n\
        \x20     - {path: /api, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}\n\
        \x20     - {path: /one, pathType: Exact, backend: {service: {name: app, port: {number: 80}}}}\n";
    let yaml = format!("{CLASSES}{}{plugins}{}", service("app"), ingress("w", meta, spec));
    let idx = index(&yaml);
    let route = derived_route(&idx, "ingress/w/0");
    assert_eq!(route.spec.plugins, vec!["cors".to_owned(), "limit".to_owned()]);
    assert_eq!(route.spec.skip_global_plugins, vec!["jwt".to_owned()]);
    let prefix = &route.spec.rules[0];
    assert_eq!(prefix.timeouts.as_ref().unwrap().request.as_deref(), Some("15s"));
    assert_eq!(prefix.timeouts.as_ref().unwrap().connect.as_deref(), Some("2s"));
    assert_eq!(prefix.retries.as_ref().unwrap().attempts, 2);
    let rewrite = prefix.rewrite.as_ref().unwrap();
    assert_eq!(
        (rewrite.replace_prefix.as_deref(), rewrite.replace_full_path.as_deref()),
        (Some("/v2"), None)
    );
    assert_eq!(rewrite.host.as_deref(), Some("internal.test"));
    let exact = route.spec.rules[1].rewrite.as_ref().unwrap();
    assert_eq!(
        (exact.replace_prefix.as_deref(), exact.replace_full_path.as_deref()),
        (None, Some("/v2"))
    );
    let c = compile(&idx, &Memory::default());
    let s = ingress_status(&c, "w");
    assert_cond(s, ACCEPTED, "True", "Accepted", &[]);
    assert_cond(s, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
    let effective = &status(&c, Kind::Route, "default", "ingress/w/0").effective_plugins;
    assert!(effective.iter().any(|p| p.type_ == "cors"), "{effective:?}");

    // A Plugin that does not exist: PluginNotFound, and the rules fail closed.
    let yaml = format!("{CLASSES}{}{}", service("app"), ingress("w", meta, spec));
    let c = compile(&index(&yaml), &Memory::default());
    assert_cond(
        ingress_status(&c, "w"),
        RESOLVED_REFS,
        "False",
        "PluginNotFound",
        &["spec.rules[0] (host w.test)", "cors"],
    );
}

#[test]
fn invalid_and_unknown_annotations_keep_the_last_good_version() {
    let spec = simple_rule("v.test", "/", "Prefix", "app");
    let spec = format!("  ingressClassName: weir\n{spec}");
    let good = format!("{CLASSES}{}{}", service("app"), ingress("v", "", &spec));
    let first = compile(&index(&good), &Memory::default());
    assert_eq!(served(&first, "v.test", "/").as_deref(), Some("default/ingress/v/0"));

    for (annotation, needles) in [
        (
            "weir.dev/request-timeout: soon",
            &["annotation weir.dev/request-timeout", "\"soon\""][..],
        ),
        ("weir.dev/ssl-redirect: \"yes\"", &["annotation weir.dev/ssl-redirect"][..]),
        (
            "weir.dev/rewrite-target: v2",
            &["annotation weir.dev/rewrite-target", "must start with '/'"][..],
        ),
        ("weir.dev/retries: many", &["annotation weir.dev/retries"][..]),
        ("weir.dev/plugins: \"a,,b\"", &["annotation weir.dev/plugins"][..]),
        (
            "weir.dev/frobnicate: \"1\"",
            &["annotation weir.dev/frobnicate", "unknown annotation"][..],
        ),
    ] {
        let meta = format!("  annotations:\n    {annotation}\n");
        let bad = format!(
            "{CLASSES}{}{}",
            service("app"),
            ingress("v", &meta, &spec).replace("generation: 2", "generation: 3")
        );
        let c = compile(&index(&bad), &first.memory);
        let s = ingress_status(&c, "v");
        assert_eq!(s.generation, 3);
        let mut all = needles.to_vec();
        all.push("the last good version keeps serving");
        assert_cond(s, ACCEPTED, "False", "Invalid", &all);
        assert_cond(
            s,
            PROGRAMMED,
            "False",
            "Invalid",
            &["generation 3 is not programmed", "generation 2"],
        );
        assert_eq!(
            served(&c, "v.test", "/").as_deref(),
            Some("default/ingress/v/0"),
            "{annotation}"
        );
        // The incremental compile (what the runtime runs) keeps it too.
        let next = crate::compile::update(&index(&bad), &first).expect("changed");
        assert_eq!(served(&next, "v.test", "/").as_deref(), Some("default/ingress/v/0"));
        assert_cond(ingress_status(&next, "v"), ACCEPTED, "False", "Invalid", needles);
        // Without a last good version nothing is served.
        let fresh = compile(&index(&bad), &Memory::default());
        assert_eq!(served(&fresh, "v.test", "/"), None, "{annotation}");
        assert_cond(
            ingress_status(&fresh, "v"),
            ACCEPTED,
            "False",
            "Invalid",
            &["nothing of this Ingress is served"],
        );
    }
}

#[test]
fn security_relevant_nginx_annotations_are_rejected_with_the_weir_equivalent() {
    let spec = format!("  ingressClassName: weir\n{}", simple_rule("n.test", "/", "Prefix", "app"));
    for (annotation, hint) in [
        ("nginx.ingress.kubernetes.io/auth-url: http://auth/check", "extAuth"),
        ("nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8", "ipRestriction"),
        ("nginx.ingress.kubernetes.io/auth-type: basic", "keyAuth"),
        ("nginx.ingress.kubernetes.io/limit-rps: \"5\"", "rateLimit"),
        ("nginx.ingress.kubernetes.io/rewrite-target: /", "weir.dev/rewrite-target"),
        ("nginx.ingress.kubernetes.io/server-snippet: x", "migration from ingress-nginx"),
    ] {
        let meta = format!("  annotations:\n    {annotation}\n");
        let yaml = format!("{CLASSES}{}{}", service("app"), ingress("nx", &meta, &spec));
        let c = compile(&index(&yaml), &Memory::default());
        let name = annotation.split(':').next().unwrap();
        assert_cond(ingress_status(&c, "nx"), ACCEPTED, "False", "Unsupported", &[name, hint]);
        assert_eq!(served(&c, "n.test", "/"), None, "{name}: never served without it");
    }
    // Tuning-only ones are ignored.
    let meta = "  annotations:\n    nginx.ingress.kubernetes.io/proxy-buffer-size: 8k\n";
    let yaml = format!("{CLASSES}{}{}", service("app"), ingress("nx", meta, &spec));
    let c = compile(&index(&yaml), &Memory::default());
    assert_cond(ingress_status(&c, "nx"), ACCEPTED, "True", "Accepted", &[]);
}

#[test]
fn status_reports_the_load_balancer_addresses_of_weirs_service() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: weir, namespace: weir-system}\n\
               spec: {type: LoadBalancer, ports: [{port: 80}]}\n\
               status: {loadBalancer: {ingress: [{ip: 203.0.113.7}, {hostname: lb.example.com}]}}\n---\n";
    let spec = format!("  ingressClassName: weir\n{}", simple_rule("s.test", "/", "Prefix", "app"));
    let yaml = format!("{CLASSES}{}{svc}{}", service("app"), ingress("s", "", &spec));
    let mut idx = index(&yaml);
    let c = compile(&idx, &Memory::default());
    assert_eq!(ingress_status(&c, "s").document, Some(serde_json::json!({"loadBalancer": {}})));
    idx.publish_service = Some(ObjectRef::new("weir-system", "weir"));
    let c = compile(&idx, &Memory::default());
    let s = ingress_status(&c, "s");
    assert_eq!(
        s.document,
        Some(
            serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}})
        )
    );
    assert_eq!(s.generation, 2);
    assert_eq!(s.conditions.len(), 3);
    // The incremental path writes the same statuses.
    let again = crate::compile::update(&idx, &c);
    let statuses = again.as_ref().map_or(&c.statuses, |n| &n.statuses);
    assert_eq!(
        statuses.get(&(Kind::Ingress, ObjectRef::new("default", "s"))),
        c.statuses.get(&(Kind::Ingress, ObjectRef::new("default", "s")))
    );
}
