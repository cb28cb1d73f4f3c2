//! The Gateway API front end: GatewayClass, Gateway, HTTPRoute, GRPCRoute and
//! ReferenceGrant, compiled into derived weir Routes and Plugins (see [`super`]).
//!
//! [`expand`] evaluates weir's GatewayClasses (`controllerName: weir.dev/gateway-controller`),
//! their Gateways and listeners, attaches each HTTPRoute/GRPCRoute to the listeners its
//! `parentRefs` name (allowedRoutes, host-name intersection), and derives one weir Route per
//! (source Route, effective host-name set) with the rules it can serve. [`finish`] writes
//! the statuses in the Gateway API's shape. See `docs/gateway-api.md`.

mod listeners;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use weir_crds::Condition;
use weir_crds::gateway_api::{CONTROLLER_NAME, GROUP, ParentReference};

use crate::compile::{ObjectStatus, Statuses};
use crate::index::{Index, Kind, ObjectRef};
pub(crate) use listeners::{ClassState, GatewayState};

/// A condition before it gets its `observedGeneration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    pub(crate) type_: &'static str,
    pub(crate) status: bool,
    pub(crate) reason: String,
    pub(crate) message: String,
}

pub(crate) fn cond(
    type_: &'static str,
    status: bool,
    reason: impl Into<String>,
    message: impl Into<String>,
) -> Cond {
    Cond { type_, status, reason: reason.into(), message: message.into() }
}

impl Cond {
    fn condition(&self, generation: i64) -> Condition {
        Condition {
            type_: self.type_.to_owned(),
            status: if self.status { "True" } else { "False" }.to_owned(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation: Some(generation),
            last_transition_time: None,
        }
    }

    fn json(&self, generation: i64) -> Value {
        json!({
            "type": self.type_,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": generation,
        })
    }
}

/// True when a ReferenceGrant in `to_ns` lets `from_kind` objects (group
/// `gateway.networking.k8s.io`) of `from_ns` refer to the `to_group`/`to_kind` object `name`.
pub(crate) fn granted(
    index: &Index,
    from_ns: &str,
    from_kind: &str,
    to_ns: &str,
    to_group: &str,
    to_kind: &str,
    name: &str,
) -> bool {
    index.reference_grants.iter().filter(|(key, _)| *key.namespace == *to_ns).any(|(_, grant)| {
        grant
            .spec
            .from
            .iter()
            .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && grant.spec.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}

/// The status of one parent of a source Route.
#[derive(Debug, Clone)]
pub(crate) struct ParentStatus {
    pub(crate) parent_ref: ParentReference,
    pub(crate) accepted: Cond,
    pub(crate) resolved: Cond,
}

/// What expand remembers of one HTTPRoute or GRPCRoute with a weir parent.
#[derive(Debug, Clone)]
pub(crate) struct RouteRecord {
    pub(crate) generation: i64,
    pub(crate) parents: Vec<ParentStatus>,
    /// The derived Routes (keys in `index.routes` of the expanded index).
    pub(crate) derived: Vec<ObjectRef>,
}

/// What [`expand`] remembers for [`finish`].
#[derive(Debug, Default)]
pub struct Expansion {
    pub(crate) classes: BTreeMap<String, ClassState>,
    pub(crate) gateways: BTreeMap<ObjectRef, GatewayState>,
    /// Attached Routes per (Gateway, listener index).
    pub(crate) attached: BTreeMap<(ObjectRef, usize), u32>,
    pub(crate) routes: BTreeMap<(Kind, ObjectRef), RouteRecord>,
}

/// Adds the derived Routes and Plugins to `derived` (a copy of `index`).
pub fn expand(index: &Index, derived: &mut Index) -> Expansion {
    let mut out = Expansion { classes: listeners::classes(index), ..Expansion::default() };
    if out.classes.is_empty() {
        return out;
    }
    out.gateways = listeners::gateways(index, &out.classes);
    for (key, route) in &index.http_routes {
        let source = rules::Source::http(key, route);
        rules::expand_route(index, &mut out, derived, &source);
    }
    for (key, route) in &index.grpc_routes {
        let source = rules::Source::grpc(key, route);
        rules::expand_route(index, &mut out, derived, &source);
    }
    out
}

/// Writes the statuses of the source objects.
pub fn finish(index: &Index, expansion: &Expansion, statuses: &mut Statuses) {
    for (name, class) in &expansion.classes {
        let conditions: Vec<Condition> =
            class.conditions.iter().map(|c| c.condition(class.generation)).collect();
        let document = json!({
            "conditions": class.conditions.iter().map(|c| c.json(class.generation)).collect::<Vec<_>>(),
        });
        statuses.insert(
            (Kind::GatewayClass, ObjectRef::new("", name.clone())),
            Arc::new(ObjectStatus {
                generation: class.generation,
                conditions,
                effective_plugins: Vec::new(),
                document: Some(document),
            }),
        );
    }
    let addresses: Vec<Value> = super::addresses(index)
        .into_iter()
        .map(|a| match a {
            super::Address::Ip(ip) => json!({"type": "IPAddress", "value": ip}),
            super::Address::Hostname(h) => json!({"type": "Hostname", "value": h}),
        })
        .collect();
    for (key, gateway) in &expansion.gateways {
        let g = gateway.generation;
        let listeners: Vec<Value> = gateway
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let attached = expansion.attached.get(&(key.clone(), i)).copied().unwrap_or(0);
                let kinds: Vec<Value> =
                    l.kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect();
                json!({
                    "name": l.name,
                    "supportedKinds": kinds,
                    "attachedRoutes": attached,
                    "conditions": [
                        l.accepted.json(g), l.programmed.json(g), l.resolved.json(g), l.conflicted.json(g)
                    ],
                })
            })
            .collect();
        let document = json!({
            "addresses": addresses,
            "conditions": gateway.conditions.iter().map(|c| c.json(g)).collect::<Vec<_>>(),
            "listeners": listeners,
        });
        statuses.insert(
            (Kind::Gateway, key.clone()),
            Arc::new(ObjectStatus {
                generation: g,
                conditions: gateway.conditions.iter().map(|c| c.condition(g)).collect(),
                effective_plugins: Vec::new(),
                document: Some(document),
            }),
        );
    }
    for ((kind, key), record) in &expansion.routes {
        let g = record.generation;
        // What the compiler said about the derived Routes: an invalid one (e.g. a bad
        // regular expression) makes every parent not accepted.
        let mut compile_problem: Option<Cond> = None;
        let mut compile_refs: Option<Cond> = None;
        for derived in &record.derived {
            let Some(status) = statuses.get(&(Kind::Route, derived.clone())) else { continue };
            if compile_problem.is_none()
                && let Some(c) = status.condition("Accepted").filter(|c| c.status != "True")
            {
                compile_problem =
                    Some(cond("Accepted", false, "UnsupportedValue", c.message.clone()));
            }
            if compile_refs.is_none()
                && let Some(c) = status.condition("ResolvedRefs").filter(|c| c.status != "True")
            {
                compile_refs =
                    Some(cond("ResolvedRefs", false, c.reason.clone(), c.message.clone()));
            }
        }
        // A derived Route that lost an identical match to an older Route: reported on
        // every parent (an implementation-specific condition type, next to the spec's).
        let conflicted = super::conflicted(statuses, &record.derived, g);
        let mut parents = Vec::new();
        let mut summary_accepted: Option<Cond> = None;
        let mut summary_resolved: Option<Cond> = None;
        for p in &record.parents {
            let mut accepted = p.accepted.clone();
            let mut resolved = p.resolved.clone();
            if accepted.status
                && let Some(c) = &compile_problem
            {
                accepted = c.clone();
            }
            if resolved.status
                && let Some(c) = &compile_refs
            {
                resolved = c.clone();
            }
            let label = parent_label(key, &p.parent_ref);
            for (summary, c) in
                [(&mut summary_accepted, &accepted), (&mut summary_resolved, &resolved)]
            {
                if !c.status && summary.as_ref().is_none_or(|s| s.status) {
                    let mut c = c.clone();
                    c.message = format!("parent {label}: {}", c.message);
                    *summary = Some(c);
                } else if summary.is_none() {
                    *summary = Some(c.clone());
                }
            }
            let mut conditions = vec![accepted.json(g), resolved.json(g)];
            conditions.extend(conflicted.iter().map(|c| json!(c)));
            parents.push(json!({
                "parentRef": p.parent_ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": conditions,
            }));
        }
        let mut conditions: Vec<Condition> = summary_accepted
            .iter()
            .chain(summary_resolved.iter())
            .map(|c| c.condition(g))
            .collect();
        conditions.extend(conflicted);
        statuses.insert(
            (*kind, key.clone()),
            Arc::new(ObjectStatus {
                generation: g,
                conditions,
                effective_plugins: Vec::new(),
                document: Some(json!({"parents": parents})),
            }),
        );
    }
}

fn parent_label(route: &ObjectRef, p: &ParentReference) -> String {
    let ns = p.namespace.as_deref().unwrap_or(&route.namespace);
    match &p.section_name {
        Some(s) => format!("{ns}/{}/{s}", p.name),
        None => format!("{ns}/{}", p.name),
    }
}

/// Secrets read: the certificates of the listeners of weir's Gateways (whether or not a
/// ReferenceGrant allows them: the grant may come later).
pub fn referenced_secrets(index: &Index) -> BTreeSet<ObjectRef> {
    let classes = listeners::classes(index);
    let mut out = BTreeSet::new();
    for (key, gateway) in &index.gateways {
        if !classes.contains_key(&gateway.spec.gateway_class_name) {
            continue;
        }
        for l in &gateway.spec.listeners {
            for cert in l.tls.iter().flat_map(|t| &t.certificate_refs) {
                let ns = cert.namespace.clone().unwrap_or_else(|| key.namespace.to_string());
                out.insert(ObjectRef::new(ns, cert.name.clone()));
            }
        }
    }
    out
}

/// The host-name intersection of a listener and a Route (tests).
#[cfg(test)]
pub(crate) fn intersect_for_tests(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    listeners::intersect(listener, route)
}
