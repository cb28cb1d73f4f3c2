//! The standard Kubernetes front ends — Gateway API ([`gateway`]) and Ingress
//! ([`ingress`]) — compiled through weir's own pipeline.
//!
//! [`expand`] runs first in every compile: it turns the Gateway API objects and Ingresses
//! of the index into *derived* weir Routes and Plugins, added to a copy of the index, and
//! remembers where each came from. The Routes compiler then treats them like any Route
//! (same router, precedence, filters, backends, TLS). [`finish`] runs last: it reads the
//! statuses the compiler gave the derived Routes and writes the status of each source
//! object in the shape its API defines ([`ObjectStatus::document`]).
//!
//! Derived objects are named `<kind>/<name>/<n>` in the source object's namespace: `/`
//! cannot occur in a Kubernetes name, so they never collide with a user's Route or Plugin.
//! Their statuses stay in [`Statuses`] (an incremental compile reuses them); they are not
//! objects anyone can see: status writers, `weir validate` and `/debug/status` skip them
//! ([`is_derived`]).
//!
//! With no Gateway API object and no Ingress in the index, [`expand`] borrows the index as
//! it is and [`finish`] does nothing: Routes-only users pay nothing.

pub mod gateway;
pub mod ingress;

use std::borrow::Cow;

use crate::compile::Statuses;
use crate::index::{Index, Kind, ObjectRef};

/// The index with the derived Routes and Plugins added, and what [`finish`] needs.
#[derive(Debug)]
pub struct Expanded<'a> {
    /// The index to compile: the input itself when it holds no front-end object.
    pub index: Cow<'a, Index>,
    /// What the Gateway API expansion remembers.
    pub gateway: gateway::Expansion,
    /// What the Ingress expansion remembers.
    pub ingress: ingress::Expansion,
}

/// True when the index holds any Gateway API object or Ingress (or class).
pub fn any(index: &Index) -> bool {
    !(index.gateway_classes.is_empty()
        && index.gateways.is_empty()
        && index.http_routes.is_empty()
        && index.grpc_routes.is_empty()
        && index.ingresses.is_empty()
        && index.ingress_classes.is_empty())
}

/// Adds the Routes and Plugins derived from Gateway API objects and Ingresses to the
/// index. Pure.
pub fn expand(index: &Index) -> Expanded<'_> {
    if !any(index) {
        return Expanded {
            index: Cow::Borrowed(index),
            gateway: gateway::Expansion::default(),
            ingress: ingress::Expansion::default(),
        };
    }
    let mut derived = index.clone();
    let gateway = gateway::expand(index, &mut derived);
    let ingress = ingress::expand(index, &mut derived);
    Expanded { index: Cow::Owned(derived), gateway, ingress }
}

/// Writes the statuses of the front-end objects (GatewayClass, Gateway, HTTPRoute,
/// GRPCRoute, Ingress) from what the compiler said about their derived Routes, replacing
/// the previous ones. Pure.
pub fn finish(expanded: &Expanded<'_>, statuses: &mut Statuses) {
    // Statuses are ordered by kind, and every front-end kind comes after the weir kinds and
    // Secret: a range, not a scan of every Route's status.
    let first = (Kind::GatewayClass, ObjectRef::new("", ""));
    let stale: Vec<_> = statuses.range(first..).map(|(id, _)| id.clone()).collect();
    for id in stale {
        statuses.remove(&id);
    }
    if !any(&expanded.index) {
        return;
    }
    gateway::finish(&expanded.index, &expanded.gateway, statuses);
    ingress::finish(&expanded.index, &expanded.ingress, statuses);
}

/// The `Conflicted` conditions of a source object's derived Routes, merged into one (for
/// its summary, with the source's generation), or `None` when none of them lost an
/// identical match ([`crate::compile::conflicts`]).
pub fn conflicted<'k>(
    statuses: &Statuses,
    derived: impl IntoIterator<Item = &'k ObjectRef>,
    generation: i64,
) -> Option<weir_crds::Condition> {
    let messages: Vec<String> = derived
        .into_iter()
        .filter_map(|key| {
            let status = statuses.get(&(Kind::Route, key.clone()))?;
            let c = status.condition(crate::compile::conflicts::CONFLICTED)?;
            Some(format!("derived Route {}: {}", key.name, c.message))
        })
        .collect();
    (!messages.is_empty()).then(|| weir_crds::Condition {
        type_: crate::compile::conflicts::CONFLICTED.to_owned(),
        status: "True".to_owned(),
        reason: crate::compile::conflicts::MATCH_CONFLICT.to_owned(),
        message: messages.join("; "),
        observed_generation: Some(generation),
        last_transition_time: None,
    })
}

/// A backend that answers 500 with `why` logged: a Gateway API backendRef weir must not use,
/// a rule it cannot execute, an Ingress backend it does not support. The data plane checks
/// the marker only once a backend is already known unusable (nothing on working paths).
pub(crate) fn invalid_backend(why: &str) -> weir_crds::BackendRef {
    weir_crds::BackendRef {
        service: "invalid".to_owned(),
        weight: Some(1),
        invalid: Some(why.to_owned()),
        ..weir_crds::BackendRef::default()
    }
}

/// True for the key of a derived Route or Plugin (its name holds a `/`).
pub fn is_derived(key: &ObjectRef) -> bool {
    key.name.contains('/')
}

/// Secrets the front ends read (listener certificates, Ingress TLS): watched in Kubernetes
/// mode like the Secrets weir objects refer to.
pub fn referenced_secrets(index: &Index) -> std::collections::BTreeSet<ObjectRef> {
    let mut out = gateway::referenced_secrets(index);
    out.extend(ingress::referenced_secrets(index));
    out
}

/// One entry of a Gateway's `status.addresses` / an Ingress's `status.loadBalancer.ingress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An IP address.
    Ip(String),
    /// A DNS name.
    Hostname(String),
}

/// The addresses of weir's own Service (`--publish-service`): its load-balancer ingress
/// (IPs and host names), else its `externalIPs`, else its cluster IP. Empty when the
/// Service is not set, not found, or has no address yet.
pub fn addresses(index: &Index) -> Vec<Address> {
    let Some(service) = index.publish_service.as_ref().and_then(|key| index.services.get(key))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let lb = service.status.as_ref().and_then(|s| s.load_balancer.as_ref());
    for ingress in lb.and_then(|lb| lb.ingress.as_ref()).into_iter().flatten() {
        if let Some(ip) = &ingress.ip {
            out.push(Address::Ip(ip.clone()));
        } else if let Some(host) = &ingress.hostname {
            out.push(Address::Hostname(host.clone()));
        }
    }
    if out.is_empty() {
        let spec = service.spec.as_ref();
        let external = spec.and_then(|s| s.external_ips.as_ref()).into_iter().flatten();
        out.extend(external.map(|ip| Address::Ip(ip.clone())));
    }
    if out.is_empty()
        && let Some(ip) = service.spec.as_ref().and_then(|s| s.cluster_ip.as_ref())
        && ip != "None"
        && !ip.is_empty()
    {
        out.push(Address::Ip(ip.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_end_kinds_sort_after_every_weir_kind() {
        // `finish` finds the front-end statuses as one range starting at GatewayClass.
        for kind in [
            Kind::Route,
            Kind::Plugin,
            Kind::Consumer,
            Kind::BackendPolicy,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Secret,
        ] {
            assert!(kind < Kind::GatewayClass, "{kind:?}");
        }
        for kind in [Kind::Gateway, Kind::HttpRoute, Kind::GrpcRoute, Kind::Ingress] {
            assert!(kind > Kind::GatewayClass, "{kind:?}");
        }
    }
}
