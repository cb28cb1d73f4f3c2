//! HTTPRoute and GRPCRoute → derived weir Routes and Plugins: parent attachment, rules,
//! filters and backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_crds::gateway_api::{
    GROUP, GrpcRoute, GrpcRouteRule, HeaderModifier, HttpBackendRef, HttpHeaderMatch,
    HttpPathMatch, HttpRoute, HttpRouteMatch, HttpRouteRule, ParentReference,
};
use weir_crds::{
    BackendRef, HeaderMatch, HeaderTransform, HeaderValue, LocalObjectReference, PathMatch,
    PathMatchType, Plugin, PluginSpec, QueryParamMatch, RedirectConfig, RedirectPath, Rewrite,
    RouteMatch, RouteRule, RouteSpec, RouteTls, StringMatchType, Timeouts,
};

use super::listeners::{self, Proto};
use super::{Cond, Expansion, ParentStatus, RouteRecord, cond, granted};
use crate::compile::backends;
use crate::index::{Index, Kind, ObjectRef, RouteObject};

/// An HTTPRoute or a GRPCRoute, with GRPCRoute rules already in HTTPRoute form.
pub(crate) struct Source<'a> {
    kind: Kind,
    kind_str: &'static str,
    prefix: &'static str,
    key: &'a ObjectRef,
    meta: &'a ObjectMeta,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    rules: Vec<HttpRouteRule>,
    /// Rules that could not even be put in HTTPRoute form: (index, message).
    rejected: Vec<(usize, String)>,
    grpc: bool,
}

impl<'a> Source<'a> {
    pub(crate) fn http(key: &'a ObjectRef, route: &'a HttpRoute) -> Self {
        let rules = if route.spec.rules.is_empty() {
            // The API's default: one rule matching every path, without backends.
            vec![HttpRouteRule::default()]
        } else {
            route.spec.rules.clone()
        };
        Source {
            kind: Kind::HttpRoute,
            kind_str: "HTTPRoute",
            prefix: "httproute",
            key,
            meta: &route.metadata,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules,
            rejected: Vec::new(),
            grpc: false,
        }
    }

    pub(crate) fn grpc(key: &'a ObjectRef, route: &'a GrpcRoute) -> Self {
        let mut rejected = Vec::new();
        let rules = if route.spec.rules.is_empty() {
            vec![HttpRouteRule::default()]
        } else {
            route
                .spec
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| match grpc_rule(r) {
                    Ok(rule) => rule,
                    Err(e) => {
                        rejected.push((i, format!("spec.rules[{i}].{e}")));
                        HttpRouteRule::default()
                    }
                })
                .collect()
        };
        Source {
            kind: Kind::GrpcRoute,
            kind_str: "GRPCRoute",
            prefix: "grpcroute",
            key,
            meta: &route.metadata,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules,
            rejected,
            grpc: true,
        }
    }
}

/// A GRPCRoute rule as an HTTPRoute rule: a method match becomes a path match.
fn grpc_rule(rule: &GrpcRouteRule) -> Result<HttpRouteRule, String> {
    let mut matches = Vec::new();
    for (j, m) in rule.matches.iter().enumerate() {
        let path = match &m.method {
            None => None,
            Some(method) => {
                let service = method.service.as_deref().filter(|s| !s.is_empty());
                let name = method.method.as_deref().filter(|s| !s.is_empty());
                let (type_, value) =
                    match (method.type_.as_deref().unwrap_or("Exact"), service, name) {
                        ("Exact", Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
                        ("Exact", Some(s), None) => ("PathPrefix", format!("/{s}")),
                        ("Exact", None, Some(m)) => {
                            ("RegularExpression", format!("/[^/]+/{}", regex_escape(m)))
                        }
                        ("RegularExpression", s, m) => (
                            "RegularExpression",
                            format!("/{}/{}", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
                        ),
                        ("Exact", None, None) => {
                            return Err(format!(
                                "matches[{j}].method: service or method is required"
                            ));
                        }
                        (other, _, _) => {
                            return Err(format!(
                                "matches[{j}].method.type: {other:?} is not supported"
                            ));
                        }
                    };
                Some(HttpPathMatch { type_: Some(type_.to_owned()), value: Some(value) })
            }
        };
        matches.push(HttpRouteMatch {
            path,
            headers: m.headers.clone(),
            ..HttpRouteMatch::default()
        });
    }
    Ok(HttpRouteRule {
        name: rule.name.clone(),
        matches,
        filters: rule.filters.clone(),
        backend_refs: rule.backend_refs.clone(),
        timeouts: None,
        other: rule.other.clone(),
    })
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One accepted attachment of a Route to a listener.
struct Attachment {
    proto: Proto,
    /// Empty = every host.
    hosts: Vec<String>,
    certificate: Option<ObjectRef>,
}

/// A rule after conversion.
#[derive(Default)]
struct RulesOut {
    rules: Vec<RouteRule>,
    plugins: Vec<(String, PluginSpec)>,
    /// `Accepted=False UnsupportedValue` messages (the rule answers 500).
    rejected: Vec<String>,
    /// `ResolvedRefs=False` (reason, message).
    problems: Vec<(&'static str, String)>,
}

/// Attaches one source Route and adds its derived Routes and Plugins.
pub(crate) fn expand_route(
    index: &Index,
    out: &mut Expansion,
    derived: &mut Index,
    src: &Source<'_>,
) {
    let mut parents = Vec::new();
    let mut attachments: Vec<Attachment> = Vec::new();
    for p in src.parent_refs {
        if p.group.as_deref().unwrap_or(GROUP) != GROUP
            || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw_key = ObjectRef::new(
            p.namespace.clone().unwrap_or_else(|| src.key.namespace.to_string()),
            p.name.clone(),
        );
        let Some(gateway) = out.gateways.get(&gw_key) else { continue };
        let accepted = attach(index, &mut out.attached, &gw_key, gateway, p, src, &mut attachments);
        parents.push(ParentStatus {
            parent_ref: p.clone(),
            accepted,
            resolved: cond("ResolvedRefs", true, "ResolvedRefs", "references resolved"),
        });
    }
    if parents.is_empty() {
        return;
    }
    let generation = src.meta.generation.unwrap_or(0);
    let converted = convert_rules(index, src);
    for p in &mut parents {
        if p.accepted.status && !converted.rejected.is_empty() {
            p.accepted = cond(
                "Accepted",
                false,
                "UnsupportedValue",
                format!("{} (these rules answer 500)", converted.rejected.join("; ")),
            );
        }
        if let Some((reason, message)) = converted.problems.first() {
            p.resolved = cond("ResolvedRefs", false, *reason, message.clone());
        }
    }
    let mut record = RouteRecord { generation, parents, derived: Vec::new() };
    if converted.rules.is_empty() || attachments.is_empty() {
        out.routes.insert((src.kind, src.key.clone()), record);
        return;
    }
    // Plugins shared by the derived Routes.
    for (name, spec) in &converted.plugins {
        let key = ObjectRef::new(src.key.namespace.clone(), name.clone());
        let mut plugin = Plugin::new(name, spec.clone());
        plugin.metadata.namespace = Some(src.key.namespace.to_string());
        plugin.metadata.generation = Some(generation);
        plugin.metadata.creation_timestamp = src.meta.creation_timestamp.clone();
        derived.plugins.insert(key, Arc::new(plugin));
    }
    // One derived Route per effective host-name set.
    let mut groups: BTreeMap<Vec<String>, (bool, Option<ObjectRef>)> = BTreeMap::new();
    for a in attachments {
        let mut hosts = a.hosts;
        hosts.sort();
        hosts.dedup();
        let entry = groups.entry(hosts).or_insert((false, None));
        match a.proto {
            Proto::Http => entry.0 = true,
            Proto::Https => {
                if entry.1.is_none() {
                    entry.1 = a.certificate;
                }
            }
        }
    }
    for (n, (hosts, (plain, certificate))) in groups.into_iter().enumerate() {
        let name = format!("{}/{}/{n}", src.prefix, src.key.name);
        // TLS by SNI needs host names; a certificate listener attached without any is
        // served with weir's default certificate (see docs/gateway-api.md).
        let tls = certificate.filter(|_| !hosts.is_empty()).map(|secret| RouteTls {
            secret_ref: LocalObjectReference { name: secret.name.to_string() },
            // Attached only to HTTPS listeners: plain HTTP is redirected, never served.
            http_redirect: !plain,
            client_ca: None,
            secret_namespace: (secret.namespace != src.key.namespace)
                .then(|| secret.namespace.to_string()),
        });
        let spec = RouteSpec {
            hosts,
            plugins: Vec::new(),
            skip_global_plugins: Vec::new(),
            rules: converted.rules.clone(),
            tls: tls.map(Box::new),
        };
        let mut route = RouteObject::new(&src.key.namespace, &name, spec);
        route.metadata.generation = Some(generation);
        route.metadata.creation_timestamp = src.meta.creation_timestamp.clone();
        let key = route.metadata.key.clone();
        derived.routes.insert(key.clone(), Arc::new(route));
        record.derived.push(key);
    }
    out.routes.insert((src.kind, src.key.clone()), record);
}

/// Attaches a Route to the listeners of one Gateway that its parentRef selects; the
/// parent's `Accepted` condition.
fn attach(
    index: &Index,
    attached: &mut BTreeMap<(ObjectRef, usize), u32>,
    gw_key: &ObjectRef,
    gateway: &super::GatewayState,
    p: &ParentReference,
    src: &Source<'_>,
    attachments: &mut Vec<Attachment>,
) -> Cond {
    if !gateway.accepted {
        return cond(
            "Accepted",
            false,
            "NoMatchingParent",
            format!("gateway {gw_key} is not accepted"),
        );
    }
    let candidates: Vec<(usize, &listeners::ListenerState)> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| p.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|(_, l)| p.port.is_none_or(|port| port == l.port))
        .collect();
    if candidates.is_empty() {
        return cond("Accepted", false, "NoMatchingParent", "no listener matches sectionName/port");
    }
    let served: Vec<_> = candidates.iter().filter(|(_, l)| l.proto.is_some()).collect();
    if served.is_empty() {
        return cond(
            "Accepted",
            false,
            "NoMatchingParent",
            "the matching listeners are not programmed",
        );
    }
    let allowed: Vec<_> = served
        .iter()
        .filter(|(_, l)| l.kinds.contains(&src.kind_str))
        .filter(|(_, l)| {
            listeners::namespace_allowed(index, l, &gw_key.namespace, &src.key.namespace)
        })
        .collect();
    if allowed.is_empty() {
        return cond(
            "Accepted",
            false,
            "NotAllowedByListeners",
            format!(
                "no matching listener allows {}s from namespace {}",
                src.kind_str, src.key.namespace
            ),
        );
    }
    let mut any = false;
    for (i, l) in allowed {
        let Some(hosts) = listeners::intersect(l.hostname.as_deref(), src.hostnames) else {
            continue;
        };
        let Some(proto) = l.proto else { continue };
        any = true;
        *attached.entry((gw_key.clone(), *i)).or_insert(0) += 1;
        attachments.push(Attachment { proto, hosts, certificate: l.certificate.clone() });
    }
    if any {
        cond("Accepted", true, "Accepted", "accepted")
    } else {
        cond(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no matching listener's hostname intersects spec.hostnames",
        )
    }
}

fn convert_rules(index: &Index, src: &Source<'_>) -> RulesOut {
    let mut out = RulesOut::default();
    for (i, rule) in src.rules.iter().enumerate() {
        let converted = match src.rejected.iter().find(|(r, _)| *r == i) {
            Some((_, message)) => Err(message.clone()),
            None => convert_rule(index, src, i, rule, &mut out),
        };
        match converted {
            Ok(r) => out.rules.push(r),
            Err(message) => {
                // A rule weir cannot execute (an unsupported filter, say an auth filter) still
                // claims its matches and answers 500: skipping it would hand its requests to
                // a less specific rule that lacks what it asked for. Only a rule whose matches
                // do not convert claims nothing.
                if let Ok(matches) =
                    rule.matches.iter().map(convert_match).collect::<Result<Vec<_>, _>>()
                {
                    out.rules.push(RouteRule {
                        name: Some(rule.name.clone().unwrap_or_else(|| i.to_string())),
                        matches,
                        backends: vec![super::super::invalid_backend(&message)],
                        ..RouteRule::default()
                    });
                }
                out.rejected.push(message);
            }
        }
    }
    out
}

fn convert_rule(
    index: &Index,
    src: &Source<'_>,
    i: usize,
    rule: &HttpRouteRule,
    out: &mut RulesOut,
) -> Result<RouteRule, String> {
    let at = format!("spec.rules[{i}]");
    if let Some(field) = rule.other.keys().next() {
        return Err(format!("{at}.{field}: not supported by weir"));
    }
    let ns = &src.key.namespace;
    let mut matches = Vec::new();
    for (j, m) in rule.matches.iter().enumerate() {
        matches.push(convert_match(m).map_err(|e| format!("{at}.matches[{j}].{e}"))?);
    }
    let mut plugins_here: Vec<(String, PluginSpec)> = Vec::new();
    let mut plugin_names = Vec::new();
    let mut rewrite = None;
    let mut redirect = false;
    let mut missing_plugin: Option<String> = None;
    for (j, f) in rule.filters.iter().enumerate() {
        let fat = format!("{at}.filters[{j}]");
        let plugin_name = format!("{}/{}/r{i}f{j}", src.prefix, src.key.name);
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or(format!("{fat}.requestHeaderModifier: required"))?;
                let spec =
                    PluginSpec { request_headers: Some(transform(m)), ..PluginSpec::default() };
                plugins_here.push((plugin_name.clone(), spec));
                plugin_names.push(plugin_name);
            }
            "ResponseHeaderModifier" => {
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or(format!("{fat}.responseHeaderModifier: required"))?;
                let spec =
                    PluginSpec { response_headers: Some(transform(m)), ..PluginSpec::default() };
                plugins_here.push((plugin_name.clone(), spec));
                plugin_names.push(plugin_name);
            }
            "RequestRedirect" if !src.grpc => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or(format!("{fat}.requestRedirect: required"))?;
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(match p.type_.as_str() {
                        "ReplaceFullPath" => RedirectPath {
                            replace_prefix: None,
                            replace_full_path: p.replace_full_path.clone(),
                        },
                        "ReplacePrefixMatch" => RedirectPath {
                            replace_prefix: p.replace_prefix_match.clone(),
                            replace_full_path: None,
                        },
                        other => {
                            return Err(format!(
                                "{fat}.requestRedirect.path.type: {other:?} is not supported"
                            ));
                        }
                    }),
                };
                let config = RedirectConfig {
                    scheme: r.scheme.clone(),
                    host: r.hostname.clone(),
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    status_code: Some(
                        r.status_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(302),
                    ),
                    path,
                };
                let spec = PluginSpec { redirect: Some(config), ..PluginSpec::default() };
                plugins_here.push((plugin_name.clone(), spec));
                plugin_names.push(plugin_name);
                redirect = true;
            }
            "URLRewrite" if !src.grpc => {
                let r = f.url_rewrite.as_ref().ok_or(format!("{fat}.urlRewrite: required"))?;
                let mut rw = Rewrite { host: r.hostname.clone(), ..Rewrite::default() };
                if let Some(p) = &r.path {
                    match p.type_.as_str() {
                        "ReplaceFullPath" => rw.replace_full_path = p.replace_full_path.clone(),
                        "ReplacePrefixMatch" => rw.replace_prefix = p.replace_prefix_match.clone(),
                        other => {
                            return Err(format!(
                                "{fat}.urlRewrite.path.type: {other:?} is not supported"
                            ));
                        }
                    }
                }
                rewrite = Some(rw);
            }
            "ExtensionRef" => {
                let e = f.extension_ref.as_ref().ok_or(format!("{fat}.extensionRef: required"))?;
                if e.group != "weir.dev" || e.kind != "Plugin" {
                    return Err(format!(
                        "{fat}.extensionRef: {}/{} is not supported (weir.dev/Plugin is)",
                        e.group, e.kind
                    ));
                }
                if index.plugins.contains_key(&ObjectRef::new(ns.clone(), e.name.clone())) {
                    plugin_names.push(e.name.clone());
                } else {
                    missing_plugin =
                        Some(format!("{fat}.extensionRef: plugin {ns}/{} not found", e.name));
                }
            }
            other => {
                return Err(format!("{fat}.type: {other} is not supported by weir"));
            }
        }
    }
    // Backends.
    let mut backends = Vec::new();
    for (j, b) in rule.backend_refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{j}]");
        if let Some(f) = b.filters.first() {
            return Err(format!(
                "{bat}.filters: {} on a backend is not supported by weir",
                f.type_
            ));
        }
        let weight = b.weight.map(|w| u32::try_from(w).unwrap_or(0));
        match check_backend(index, src, b) {
            Ok(namespace) => backends.push(BackendRef {
                service: b.name.clone(),
                port: b.port,
                weight,
                namespace,
                invalid: None,
            }),
            Err((reason, message)) => {
                out.problems.push((reason, format!("{bat}: {message}")));
                backends.push(BackendRef {
                    service: if b.name.is_empty() { "invalid".to_owned() } else { b.name.clone() },
                    port: b.port,
                    weight,
                    namespace: None,
                    invalid: Some(format!("{bat}: {reason}")),
                });
            }
        }
    }
    if let Some(message) = missing_plugin {
        // The filter cannot run: the rule answers 500, never skips it.
        out.problems.push(("PluginNotFound", message.clone()));
        backends = vec![super::super::invalid_backend(&message)];
    } else if !redirect && backends.iter().all(|b| b.weight == Some(0)) {
        // No backendRefs (or none with weight): the Gateway API answers 500.
        backends =
            vec![super::super::invalid_backend(&format!("{at}: no backendRefs with weight"))];
    }
    if redirect {
        backends.clear();
    }
    let timeouts = match &rule.timeouts {
        None => None,
        Some(t) => {
            let mut best: Option<(std::time::Duration, String)> = None;
            for (field, value) in [("request", &t.request), ("backendRequest", &t.backend_request)]
            {
                let Some(value) = value else { continue };
                let d = weir_crds::parse_duration(value)
                    .map_err(|e| format!("{at}.timeouts.{field}: {e}"))?;
                if d.is_zero() {
                    continue; // 0s: no timeout
                }
                if best.as_ref().is_none_or(|(b, _)| d < *b) {
                    best = Some((d, value.clone()));
                }
            }
            best.map(|(_, v)| Timeouts { request: Some(v), ..Timeouts::default() })
        }
    };
    out.plugins.extend(plugins_here);
    Ok(RouteRule {
        name: Some(rule.name.clone().unwrap_or_else(|| i.to_string())),
        matches,
        backends,
        rewrite: rewrite.map(Box::new),
        timeouts: timeouts.map(Box::new),
        retries: None,
        plugins: plugin_names,
        aggregate: None,
    })
}

/// Checks a backendRef: kind, ReferenceGrant, Service and port (and HTTP/2 for gRPC).
/// `Ok(namespace)` when it is another namespace's Service.
fn check_backend(
    index: &Index,
    src: &Source<'_>,
    b: &HttpBackendRef,
) -> Result<Option<String>, (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(("InvalidKind", format!("{group}/{kind} is not supported (core Service is)")));
    }
    let ns = b.namespace.clone().unwrap_or_else(|| src.key.namespace.to_string());
    if *ns != *src.key.namespace
        && !granted(index, &src.key.namespace, src.kind_str, &ns, "", "Service", &b.name)
    {
        return Err((
            "RefNotPermitted",
            format!(
                "service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
                b.name
            ),
        ));
    }
    let key = weir_dataplane::BackendKey {
        namespace: ns.as_str().into(),
        service: b.name.as_str().into(),
        port: b.port.unwrap_or(0),
    };
    let (_, port) =
        backends::resolve_service_port(index, &key).map_err(|e| ("BackendNotFound", e))?;
    if src.grpc {
        let protocol = backends::upstream_protocol(port);
        if protocol.protocol == weir_dataplane::UpstreamProtocol::Http1 {
            return Err((
                "UnsupportedProtocol",
                format!(
                    "service {ns}/{} port {}: gRPC needs HTTP/2; set its appProtocol to kubernetes.io/h2c (or grpc)",
                    b.name, port.port
                ),
            ));
        }
    }
    Ok((*ns != *src.key.namespace).then_some(ns))
}

fn transform(m: &HeaderModifier) -> HeaderTransform {
    let values = |v: &[weir_crds::gateway_api::HttpHeader]| {
        v.iter().map(|h| HeaderValue { name: h.name.clone(), value: h.value.clone() }).collect()
    };
    HeaderTransform { set: values(&m.set), add: values(&m.add), remove: m.remove.clone() }
}

fn convert_match(m: &HttpRouteMatch) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => None,
        Some(p) => {
            let type_ = match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatchType::Exact,
                "PathPrefix" => PathMatchType::Prefix,
                "RegularExpression" => PathMatchType::RegularExpression,
                other => return Err(format!("path.type: {other:?} is not supported")),
            };
            Some(PathMatch { type_, value: p.value.clone().unwrap_or_else(|| "/".to_owned()) })
        }
    };
    let string_type = |t: Option<&str>, field: &str| match t.unwrap_or("Exact") {
        "Exact" => Ok(StringMatchType::Exact),
        "RegularExpression" => Ok(StringMatchType::RegularExpression),
        other => Err(format!("{field}.type: {other:?} is not supported")),
    };
    let mut headers = Vec::new();
    for (k, h) in m.headers.iter().enumerate() {
        headers.push(header_match(h, string_type(h.type_.as_deref(), &format!("headers[{k}]"))?));
    }
    let mut query_params = Vec::new();
    for (k, q) in m.query_params.iter().enumerate() {
        let type_ = string_type(q.type_.as_deref(), &format!("queryParams[{k}]"))?;
        query_params.push(QueryParamMatch {
            name: q.name.clone(),
            type_,
            value: Some(q.value.clone()),
        });
    }
    Ok(RouteMatch { path, methods: m.method.iter().cloned().collect(), headers, query_params })
}

fn header_match(h: &HttpHeaderMatch, type_: StringMatchType) -> HeaderMatch {
    HeaderMatch { name: h.name.clone(), type_, value: Some(h.value.clone()) }
}
