//! Ingress (`networking.k8s.io/v1`) compiled into derived weir Routes and Plugins.
//!
//! Which Ingresses are weir's ([`is_weirs`]): `spec.ingressClassName` naming an
//! IngressClass whose `spec.controller` is [`CONTROLLER`]; without a class name, the legacy
//! `kubernetes.io/ingress.class: weir` annotation; without either, a weir IngressClass
//! marked default (`ingressclass.kubernetes.io/is-default-class: "true"`). Other Ingresses
//! get no Route and no status entry.
//!
//! One derived Route per `spec.rules[i]` (`ingress/<name>/<i>`, the rule's host, one weir
//! rule per `http.paths[j]`), one per `spec.tls` host without a rule
//! (`ingress/<name>/tls-<host>`, the certificate and the Ingress's default backend), and
//! one for the default backend (`ingress/<name>/default`, no host, `Prefix /`) of the
//! oldest weir Ingress that has one. Every derived Route carries the Ingress's generation
//! and `creationTimestamp` (so the oldest Ingress wins a host+path conflict, as the Route
//! precedence already says), except the default backend's, which carries the latest
//! representable time so that it loses every tie: it is a true fallback. An invalid
//! Ingress (bad or unknown `weir.dev/*` annotation, unsupported ingress-nginx annotation)
//! derives *poisoned* Routes that the Route compiler rejects, so their last good versions
//! keep serving and nothing is served without what the Ingress asked for.
//! `docs/ingress.md` documents every choice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::{
    BackendRef, Condition, PathMatch, PathMatchType, Plugin, Retries, Rewrite, RouteMatch,
    RouteRule, RouteSpec, RouteTls,
};

mod annotations;

use super::Address;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS, condition};
use crate::compile::{ObjectStatus, Statuses};
use crate::index::{Index, Kind, ObjectRef, RouteObject};
pub use annotations::ANNOTATIONS;
use annotations::{Options, options};

/// `spec.controller` of weir's IngressClasses.
pub const CONTROLLER: &str = "weir.dev/ingress-controller";
/// The legacy annotation naming an Ingress's class.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The value of [`LEGACY_CLASS_ANNOTATION`] that selects weir.
pub const LEGACY_CLASS: &str = "weir";
/// The IngressClass annotation marking the cluster's default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// What [`expand`] remembers for [`finish`].
#[derive(Debug, Default)]
pub struct Expansion {
    /// Per weir Ingress, in key order.
    ingresses: BTreeMap<ObjectRef, Expanded>,
}

/// One weir Ingress's expansion.
#[derive(Debug, Default)]
struct Expanded {
    generation: i64,
    /// Spec and annotation errors (`Accepted=False`).
    errors: Vec<String>,
    /// Unsupported annotations: `Accepted=False` reason `Unsupported`.
    unsupported: Vec<String>,
    /// References weir could not resolve itself (named ports, resource backends).
    problems: Vec<String>,
    /// Notes that do not change a condition's status (a shadowed default backend).
    notes: Vec<String>,
    /// The derived Routes, with where they come from in the Ingress (`spec.rules[0]`).
    routes: Vec<(ObjectRef, String)>,
}

/// True when an IngressClass is weir's.
fn is_weir_class(class: &IngressClass) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
}

/// True when an Ingress is weir's (see the module documentation).
pub fn is_weirs(index: &Index, ingress: &Ingress) -> bool {
    let class_name = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    if let Some(name) = class_name {
        return index
            .ingress_classes
            .get(&ObjectRef::new("", name))
            .is_some_and(|c| is_weir_class(c));
    }
    if let Some(legacy) =
        ingress.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
    {
        return legacy == LEGACY_CLASS;
    }
    index.ingress_classes.values().any(|c| {
        is_weir_class(c)
            && c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
    })
}

fn created(ingress: &Ingress) -> i64 {
    ingress.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second())
}

/// The backend of an Ingress path: a weir backend, or a problem (the path answers 500).
enum Backend {
    Service(BackendRef),
    Unsupported(String),
}

fn backend(index: &Index, ns: &str, b: &IngressBackend, at: &str) -> Backend {
    if let Some(r) = &b.resource {
        return Backend::Unsupported(format!(
            "{at}.resource: resource backends ({} {}) are not supported; the path answers 500",
            r.kind, r.name
        ));
    }
    let Some(service) = &b.service else {
        return Backend::Unsupported(format!("{at}: no service; the path answers 500"));
    };
    let port = service.port.as_ref();
    let number = match (port.and_then(|p| p.number), port.and_then(|p| p.name.as_deref())) {
        (Some(n), _) => Some(n),
        (None, Some(name)) => {
            let svc = index.services.get(&ObjectRef::new(ns, service.name.as_str()));
            let found = svc.and_then(|s| s.spec.as_ref()).and_then(|s| s.ports.as_ref()).and_then(
                |ports| ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port),
            );
            match (svc, found) {
                (_, Some(n)) => Some(n),
                // The Route compiler reports the missing Service (BackendNotFound, 503).
                (None, None) => None,
                (Some(_), None) => {
                    return Backend::Unsupported(format!(
                        "{at}.service.port.name: Service {ns}/{} has no port named {name:?}; \
                         the path answers 500",
                        service.name
                    ));
                }
            }
        }
        (None, None) => None,
    };
    Backend::Service(BackendRef {
        service: service.name.clone(),
        port: number,
        ..BackendRef::default()
    })
}

/// The name of the derived Plugin answering 404 (a TLS host with no rule and no default
/// backend). Unsupported backends answer 500 through [`super::invalid_backend`].
fn status_plugin_name(ingress: &str, status: u16) -> String {
    format!("ingress/{ingress}/{status}")
}

fn status_plugin(ns: &str, name: &str, status: u16, generation: i64) -> Option<Plugin> {
    let error = if status == 404 { "no route" } else { "unsupported" };
    let body = serde_json::json!({"error": error, "status": status}).to_string();
    let value = serde_json::json!({
        "apiVersion": weir_crds::API_VERSION,
        "kind": "Plugin",
        "metadata": {"name": name, "namespace": ns, "generation": generation},
        "spec": {"directResponse": {
            "status": status, "body": body, "contentType": "application/json"}},
    });
    serde_json::from_value(value).ok()
}

/// A poisoned rule: a path the Route compiler rejects, so an invalid Ingress's derived
/// Routes keep their last good versions (or are not served at all).
fn poison() -> RouteRule {
    RouteRule {
        name: Some("invalid-ingress".to_owned()),
        matches: vec![RouteMatch {
            path: Some(PathMatch {
                type_: PathMatchType::Exact,
                value: "the Ingress is invalid".to_owned(),
            }),
            ..RouteMatch::default()
        }],
        backends: vec![BackendRef {
            service: "invalid-ingress".to_owned(),
            ..BackendRef::default()
        }],
        ..RouteRule::default()
    }
}

struct Builder<'a> {
    index: &'a Index,
    ns: &'a str,
    name: &'a str,
    options: &'a Options,
    generation: i64,
    created: Option<Time>,
    /// Derived status Plugins needed (status codes).
    statuses: BTreeSet<u16>,
}

impl Builder<'_> {
    fn rule(
        &mut self,
        path: Option<PathMatch>,
        target: Backend,
        problems: &mut Vec<String>,
    ) -> RouteRule {
        let mut rule = RouteRule {
            matches: path
                .iter()
                .cloned()
                .map(|p| RouteMatch { path: Some(p), ..Default::default() })
                .collect(),
            timeouts: self.options.timeouts.clone().map(Box::new),
            retries: self
                .options
                .retries
                .map(|attempts| Box::new(Retries { attempts, ..Retries::default() })),
            ..RouteRule::default()
        };
        let exact = path.as_ref().is_some_and(|p| p.type_ == PathMatchType::Exact);
        let rewrite = Rewrite {
            replace_prefix: self.options.rewrite_target.clone().filter(|_| !exact),
            replace_full_path: self.options.rewrite_target.clone().filter(|_| exact),
            host: self.options.upstream_host.clone(),
        };
        if rewrite != Rewrite::default() {
            rule.rewrite = Some(Box::new(rewrite));
        }
        match target {
            Backend::Service(b) => rule.backends.push(b),
            Backend::Unsupported(problem) => {
                rule.backends.push(super::invalid_backend(&problem));
                problems.push(problem);
            }
        }
        rule
    }

    fn route(
        &self,
        n: &str,
        hosts: Vec<String>,
        rules: Vec<RouteRule>,
        tls: Option<RouteTls>,
    ) -> (ObjectRef, RouteObject) {
        let name = format!("ingress/{}/{n}", self.name);
        let spec = RouteSpec {
            hosts,
            plugins: self.options.plugins.clone(),
            skip_global_plugins: self.options.skip_global_plugins.clone(),
            rules,
            tls: tls.map(Box::new),
        };
        let mut route = RouteObject::new(self.ns, &name, spec);
        route.metadata.generation = Some(self.generation);
        route.metadata.creation_timestamp = self.created.clone();
        (route.metadata.key.clone(), route)
    }
}

/// `ImplementationSpecific` and `Prefix` are weir's segment-aware `Prefix`; `Exact` is
/// `Exact`.
fn path_match(path: Option<&str>, path_type: &str, at: &str) -> Result<PathMatch, String> {
    let type_ = match path_type {
        "Exact" => PathMatchType::Exact,
        "Prefix" | "ImplementationSpecific" => PathMatchType::Prefix,
        other => {
            return Err(format!(
                "{at}.pathType: {other:?} must be Exact, Prefix or ImplementationSpecific"
            ));
        }
    };
    let value = path.unwrap_or(if type_ == PathMatchType::Exact { "" } else { "/" });
    if !value.starts_with('/') {
        return Err(format!("{at}.path: {value:?} must start with '/'"));
    }
    Ok(PathMatch { type_, value: value.to_owned() })
}

/// Adds the derived Routes and Plugins to `derived` (a copy of `index`).
pub fn expand(index: &Index, derived: &mut Index) -> Expansion {
    let mut out = Expansion::default();
    let weirs: Vec<(&ObjectRef, &Arc<Ingress>)> =
        index.ingresses.iter().filter(|(_, i)| is_weirs(index, i)).collect();
    // The oldest weir Ingress with a default backend provides the fallback.
    let fallback = weirs
        .iter()
        .filter(|(_, i)| i.spec.as_ref().is_some_and(|s| s.default_backend.is_some()))
        .min_by_key(|(k, i)| (created(i), (*k).clone()))
        .map(|(k, _)| (*k).clone());
    for (key, ingress) in weirs {
        let expanded = expand_one(index, derived, key, ingress, fallback.as_ref());
        out.ingresses.insert(key.clone(), expanded);
    }
    out
}

fn expand_one(
    index: &Index,
    derived: &mut Index,
    key: &ObjectRef,
    ingress: &Ingress,
    fallback: Option<&ObjectRef>,
) -> Expanded {
    let ns: &str = &key.namespace;
    let generation = ingress.metadata.generation.unwrap_or(0);
    let (options, mut errors, unsupported) = options(ingress);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut routes: Vec<(ObjectRef, RouteObject, String)> = Vec::new();
    let mut b = Builder {
        index,
        ns,
        name: &key.name,
        options: &options,
        generation,
        created: ingress.metadata.creation_timestamp.clone(),
        statuses: BTreeSet::new(),
    };
    let spec = ingress.spec.clone().unwrap_or_default();

    // TLS: the first `spec.tls` entry listing a host gives its certificate.
    let tls_for = |host: &str| -> Option<RouteTls> {
        let entry = spec
            .tls
            .iter()
            .flatten()
            .find(|t| t.hosts.iter().flatten().any(|h| h.eq_ignore_ascii_case(host)))?;
        let secret = entry.secret_name.clone().filter(|s| !s.is_empty())?;
        Some(RouteTls {
            secret_ref: weir_crds::LocalObjectReference { name: secret },
            http_redirect: options.ssl_redirect,
            ..RouteTls::default()
        })
    };
    let default_rule = |b: &mut Builder<'_>, problems: &mut Vec<String>| -> Option<RouteRule> {
        let d = spec.default_backend.as_ref()?;
        let target = backend(b.index, ns, d, "spec.defaultBackend");
        let path = PathMatch { type_: PathMatchType::Prefix, value: "/".to_owned() };
        Some(b.rule(Some(path), target, problems))
    };

    let mut hosts_with_rules = BTreeSet::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        let host = rule.host.clone().filter(|h| !h.is_empty());
        if let Some(h) = &host {
            hosts_with_rules.insert(h.to_ascii_lowercase());
        }
        let mut rules = Vec::new();
        match &rule.http {
            Some(http) => {
                for (j, p) in http.paths.iter().enumerate() {
                    let pat = format!("{at}.http.paths[{j}]");
                    match path_match(p.path.as_deref(), &p.path_type, &pat) {
                        Ok(m) => {
                            let target = backend(index, ns, &p.backend, &format!("{pat}.backend"));
                            rules.push(b.rule(Some(m), target, &mut problems));
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            // A rule without `http`: the host's requests go to the default backend.
            None => {
                let mut scratch = Vec::new();
                if let Some(r) = default_rule(&mut b, &mut scratch) {
                    rules.push(r);
                }
            }
        }
        if rules.is_empty() {
            // No own default backend: the host falls through to the cluster-wide one,
            // unless it needs a certificate.
            if host.as_deref().and_then(tls_for).is_none() {
                continue;
            }
            b.statuses.insert(404);
            let mut r = RouteRule::default();
            r.plugins.push(status_plugin_name(&key.name, 404));
            rules.push(r);
        }
        let tls = host.as_deref().and_then(tls_for);
        let where_ = match &host {
            Some(h) => format!("{at} (host {h})"),
            None => at.clone(),
        };
        let (k, r) = b.route(&i.to_string(), host.into_iter().collect(), rules, tls);
        routes.push((k, r, where_));
    }

    // TLS hosts without a rule still get their certificate.
    for (t, entry) in spec.tls.iter().flatten().enumerate() {
        for host in entry.hosts.iter().flatten() {
            let lower = host.to_ascii_lowercase();
            if !hosts_with_rules.insert(lower.clone()) {
                continue;
            }
            let Some(tls) = tls_for(host) else { continue };
            let mut scratch = Vec::new();
            let rule = match default_rule(&mut b, &mut scratch) {
                Some(r) => r,
                None => {
                    b.statuses.insert(404);
                    RouteRule {
                        plugins: vec![status_plugin_name(&key.name, 404)],
                        ..RouteRule::default()
                    }
                }
            };
            let where_ = format!("spec.tls[{t}] (host {host})");
            let (k, r) =
                b.route(&format!("tls-{lower}"), vec![host.clone()], vec![rule], Some(tls));
            routes.push((k, r, where_));
        }
    }

    // The default backend: only the oldest weir Ingress's is the fallback.
    if spec.default_backend.is_some() {
        if fallback == Some(key) {
            if let Some(rule) = default_rule(&mut b, &mut problems) {
                let (k, mut r) = b.route("default", Vec::new(), vec![rule], None);
                // Loses every precedence tie: any other matching rule wins.
                r.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::MAX));
                routes.push((k, r, "spec.defaultBackend".to_owned()));
            }
        } else if let Some(f) = fallback {
            notes.push(format!(
                "spec.defaultBackend is not used for unmatched requests: the older Ingress {f} \
                 provides the default backend"
            ));
            // Its problems still count (it serves the rules without http and TLS hosts).
            if let Some(d) = &spec.default_backend
                && let Backend::Unsupported(p) = backend(index, ns, d, "spec.defaultBackend")
            {
                problems.push(p);
            }
        }
    }
    problems.dedup();

    let invalid = !errors.is_empty() || !unsupported.is_empty();
    for status in std::mem::take(&mut b.statuses) {
        let name = status_plugin_name(&key.name, status);
        if let Some(p) = status_plugin(ns, &name, status, generation) {
            derived.plugins.insert(ObjectRef::new(ns, name), Arc::new(p));
        }
    }
    let mut keys = Vec::with_capacity(routes.len());
    for (k, mut r, where_) in routes {
        if invalid {
            r.spec.rules.push(poison());
        }
        derived.routes.insert(k.clone(), Arc::new(r));
        keys.push((k, where_));
    }
    Expanded { generation, errors, unsupported, problems, notes, routes: keys }
}

/// Writes the statuses of the source objects.
pub fn finish(index: &Index, expansion: &Expansion, statuses: &mut Statuses) {
    let addresses = super::addresses(index);
    let lb: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| match a {
            Address::Ip(ip) => serde_json::json!({"ip": ip}),
            Address::Hostname(h) => serde_json::json!({"hostname": h}),
        })
        .collect();
    let document = if lb.is_empty() {
        serde_json::json!({"loadBalancer": {}})
    } else {
        serde_json::json!({"loadBalancer": {"ingress": lb}})
    };
    for (key, e) in &expansion.ingresses {
        let mut conditions = summary(e, statuses);
        conditions.extend(super::conflicted(
            statuses,
            e.routes.iter().map(|(k, _)| k),
            e.generation,
        ));
        statuses.insert(
            (Kind::Ingress, key.clone()),
            Arc::new(ObjectStatus {
                generation: e.generation,
                conditions,
                effective_plugins: Vec::new(),
                document: Some(document.clone()),
            }),
        );
    }
}

/// The first non-True condition of `type_` among the derived Routes, prefixed with where
/// it comes from.
fn first_failure(e: &Expanded, statuses: &Statuses, type_: &str) -> Option<Condition> {
    e.routes.iter().find_map(|(k, where_)| {
        let status = statuses.get(&(Kind::Route, k.clone()))?;
        let c = status.condition(type_)?;
        (c.status != "True").then(|| {
            let mut c = c.clone();
            c.message = format!("{where_}: {}", c.message);
            c.observed_generation = Some(e.generation);
            c
        })
    })
}

fn summary(e: &Expanded, statuses: &Statuses) -> Vec<Condition> {
    let g = e.generation;
    // Does a last good version keep serving (for the Accepted message)?
    let last_good = e.routes.iter().find_map(|(k, _)| {
        let c = statuses.get(&(Kind::Route, k.clone()))?.condition(PROGRAMMED)?.clone();
        c.message.contains("keeps serving").then_some(())
    });
    let accepted = if !e.unsupported.is_empty() || !e.errors.is_empty() {
        let reason = if e.errors.is_empty() { "Unsupported" } else { "Invalid" };
        let mut all = e.errors.clone();
        all.extend(e.unsupported.iter().cloned());
        let suffix = if last_good.is_some() {
            "; the last good version keeps serving"
        } else {
            "; nothing of this Ingress is served"
        };
        condition(ACCEPTED, false, reason, format!("{}{suffix}", all.join("; ")), g)
    } else if let Some(c) = first_failure(e, statuses, ACCEPTED) {
        c
    } else {
        let mut message = "accepted".to_owned();
        for n in &e.notes {
            message.push_str("; ");
            message.push_str(n);
        }
        condition(ACCEPTED, true, "Accepted", message, g)
    };
    let resolved = if !e.problems.is_empty() {
        condition(RESOLVED_REFS, false, "BackendNotFound", e.problems.join("; "), g)
    } else if let Some(c) = first_failure(e, statuses, RESOLVED_REFS) {
        c
    } else {
        condition(RESOLVED_REFS, true, "ResolvedRefs", "all references resolved", g)
    };
    let programmed = if let Some(c) = first_failure(e, statuses, PROGRAMMED) {
        c
    } else {
        condition(PROGRAMMED, true, "Programmed", "programmed", g)
    };
    vec![accepted, resolved, programmed]
}

/// Secrets read: the `spec.tls[].secretName` of weir's Ingresses.
pub fn referenced_secrets(index: &Index) -> BTreeSet<ObjectRef> {
    let mut out = BTreeSet::new();
    for (key, ingress) in &index.ingresses {
        if !is_weirs(index, ingress) {
            continue;
        }
        let tls = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
        for entry in tls.into_iter().flatten() {
            if let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) {
                out.insert(ObjectRef::new(&key.namespace, secret));
            }
        }
    }
    out
}
