//! GatewayClasses, Gateways and their listeners: which are weir's, their conditions, and
//! which Routes each listener admits.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use weir_crds::gateway_api::{
    CONTROLLER_NAME, GROUP, Gateway, GatewayClass, Listener, RouteGroupKind,
};

use super::{Cond, cond, granted};
use crate::index::{Index, ObjectRef};

/// The Gateway API version whose CRDs weir reads (`SupportedVersion`).
pub(crate) const SUPPORTED_BUNDLE: &str = "v1.2";

/// A GatewayClass of weir's, and its conditions.
#[derive(Debug, Clone)]
pub(crate) struct ClassState {
    pub(crate) generation: i64,
    pub(crate) accepted: bool,
    pub(crate) conditions: Vec<Cond>,
}

/// Evaluates the GatewayClasses whose `controllerName` is weir's.
pub(crate) fn classes(index: &Index) -> BTreeMap<String, ClassState> {
    let mut out = BTreeMap::new();
    for (key, class) in &index.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        out.insert(key.name.to_string(), class_state(class));
    }
    out
}

fn class_state(class: &GatewayClass) -> ClassState {
    let generation = class.metadata.generation.unwrap_or(0);
    let accepted = class.spec.parameters_ref.is_none();
    let accepted_cond = if accepted {
        cond("Accepted", true, "Accepted", "weir serves Gateways of this class")
    } else {
        cond(
            "Accepted",
            false,
            "InvalidParameters",
            "spec.parametersRef: weir takes no parameters; remove it",
        )
    };
    let version = cond(
        "SupportedVersion",
        true,
        "SupportedVersion",
        format!("weir reads the Gateway API {SUPPORTED_BUNDLE} resources"),
    );
    ClassState { generation, accepted, conditions: vec![accepted_cond, version] }
}

/// The protocol of a listener weir can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    Https,
}

/// One listener after evaluation.
#[derive(Debug, Clone)]
pub(crate) struct ListenerState {
    pub(crate) name: String,
    pub(crate) port: i32,
    pub(crate) hostname: Option<String>,
    /// `None`: not served (unsupported protocol, invalid, conflicted).
    pub(crate) proto: Option<Proto>,
    /// The certificate Secret (HTTPS listeners whose reference resolved).
    pub(crate) certificate: Option<ObjectRef>,
    /// Route kinds it admits (`HTTPRoute`, `GRPCRoute`).
    pub(crate) kinds: Vec<&'static str>,
    /// Which namespaces Routes may attach from.
    pub(crate) from: From,
    pub(crate) accepted: Cond,
    pub(crate) resolved: Cond,
    pub(crate) conflicted: Cond,
    pub(crate) programmed: Cond,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone)]
pub(crate) enum From {
    Same,
    All,
    Selector(LabelSelector),
    /// An invalid selector: no namespace.
    None,
}

/// A weir Gateway after evaluation.
#[derive(Debug, Clone)]
pub(crate) struct GatewayState {
    pub(crate) generation: i64,
    /// Accepted (top level): false when nothing can be served.
    pub(crate) accepted: bool,
    pub(crate) conditions: Vec<Cond>,
    pub(crate) listeners: Vec<ListenerState>,
}

/// Evaluates the Gateways of weir's accepted classes.
pub(crate) fn gateways(
    index: &Index,
    classes: &BTreeMap<String, ClassState>,
) -> BTreeMap<ObjectRef, GatewayState> {
    let mut out = BTreeMap::new();
    for (key, gateway) in &index.gateways {
        let Some(class) = classes.get(&gateway.spec.gateway_class_name) else { continue };
        if !class.accepted {
            continue;
        }
        out.insert(key.clone(), gateway_state(index, key, gateway));
    }
    out
}

fn gateway_state(index: &Index, key: &ObjectRef, gateway: &Gateway) -> GatewayState {
    let generation = gateway.metadata.generation.unwrap_or(0);
    let mut listeners: Vec<ListenerState> =
        gateway.spec.listeners.iter().map(|l| listener_state(index, key, l)).collect();
    conflicts(&gateway.spec.listeners, &mut listeners);
    let valid = listeners.iter().filter(|l| l.proto.is_some()).count();
    let unsupported: Vec<&String> = gateway.spec.other.keys().collect();
    let (accepted, accepted_cond, programmed_cond) = if !gateway.spec.addresses.is_empty() {
        (
            false,
            cond(
                "Accepted",
                false,
                "UnsupportedAddress",
                "spec.addresses: weir cannot assign addresses; it serves on the addresses of its own Service",
            ),
            cond(
                "Programmed",
                false,
                "AddressNotAssigned",
                "spec.addresses: the requested addresses cannot be assigned",
            ),
        )
    } else if !unsupported.is_empty() {
        let fields: Vec<String> = unsupported.iter().map(|f| format!("spec.{f}")).collect();
        let message = format!("{}: not supported by weir", fields.join(", "));
        (
            false,
            cond("Accepted", false, "Invalid", message.clone()),
            cond("Programmed", false, "Invalid", message),
        )
    } else if valid == 0 {
        let message = if listeners.is_empty() {
            "spec.listeners: no listener".to_owned()
        } else {
            "no listener is valid (see status.listeners)".to_owned()
        };
        (
            false,
            cond("Accepted", false, "ListenersNotValid", message.clone()),
            cond("Programmed", false, "Invalid", message),
        )
    } else if valid < listeners.len() {
        (
            true,
            cond(
                "Accepted",
                true,
                "ListenersNotValid",
                "some listeners are not valid (see status.listeners); the others are served",
            ),
            cond("Programmed", true, "Programmed", "the valid listeners are served"),
        )
    } else {
        (
            true,
            cond("Accepted", true, "Accepted", "accepted"),
            cond("Programmed", true, "Programmed", "served on weir's HTTP and HTTPS listeners"),
        )
    };
    if !accepted {
        for l in &mut listeners {
            l.proto = None;
            l.programmed = cond("Programmed", false, "Invalid", "the Gateway is not accepted");
        }
    }
    GatewayState {
        generation,
        accepted,
        conditions: vec![accepted_cond, programmed_cond],
        listeners,
    }
}

fn listener_state(index: &Index, gateway: &ObjectRef, l: &Listener) -> ListenerState {
    let mut state = ListenerState {
        name: l.name.clone(),
        port: l.port,
        hostname: l.hostname.clone().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase()),
        proto: None,
        certificate: None,
        kinds: Vec::new(),
        from: From::Same,
        accepted: cond("Accepted", true, "Accepted", "accepted"),
        resolved: cond("ResolvedRefs", true, "ResolvedRefs", "references resolved"),
        conflicted: cond("Conflicted", false, "NoConflicts", "no conflict"),
        programmed: cond("Programmed", true, "Programmed", "programmed"),
    };
    let proto = match l.protocol.as_str() {
        "HTTP" => Some(Proto::Http),
        "HTTPS" => Some(Proto::Https),
        _ => None,
    };
    let Some(proto) = proto else {
        state.accepted = cond(
            "Accepted",
            false,
            "UnsupportedProtocol",
            format!("protocol {:?} is not supported by weir (HTTP and HTTPS are)", l.protocol),
        );
        state.programmed = cond("Programmed", false, "Invalid", "the listener is not accepted");
        return state;
    };
    // Route kinds.
    let mut invalid_kinds = Vec::new();
    if let Some(allowed) = &l.allowed_routes {
        if allowed.kinds.is_empty() {
            state.kinds = vec!["HTTPRoute", "GRPCRoute"];
        }
        for RouteGroupKind { group, kind } in &allowed.kinds {
            let group_ok = group.as_deref().is_none_or(|g| g == GROUP);
            match kind.as_str() {
                "HTTPRoute" if group_ok => state.kinds.push("HTTPRoute"),
                "GRPCRoute" if group_ok => state.kinds.push("GRPCRoute"),
                _ => invalid_kinds.push(format!("{}/{kind}", group.as_deref().unwrap_or(GROUP))),
            }
        }
        state.kinds.dedup();
        state.from = match allowed.namespaces.as_ref() {
            None => From::Same,
            Some(ns) => match ns.from.as_deref() {
                None | Some("Same") => From::Same,
                Some("All") => From::All,
                Some("Selector") => match &ns.selector {
                    Some(s) => From::Selector(s.clone()),
                    None => From::None,
                },
                Some(_) => From::None,
            },
        };
    } else {
        state.kinds = vec!["HTTPRoute", "GRPCRoute"];
    }
    if !invalid_kinds.is_empty() {
        state.resolved = cond(
            "ResolvedRefs",
            false,
            "InvalidRouteKinds",
            format!("allowedRoutes.kinds: {} not supported", invalid_kinds.join(", ")),
        );
    }
    // TLS.
    if proto == Proto::Https {
        let problem = match &l.tls {
            None => Some((
                "InvalidCertificateRef",
                "tls: an HTTPS listener needs tls.certificateRefs".to_owned(),
            )),
            Some(tls) if tls.mode.as_deref().is_some_and(|m| m != "Terminate") => {
                state.accepted = cond(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    "tls.mode: Passthrough is not supported by weir (it terminates TLS)",
                );
                state.programmed =
                    cond("Programmed", false, "Invalid", "the listener is not accepted");
                return state;
            }
            Some(tls) if !tls.other.is_empty() || !tls.options.is_empty() => {
                let mut fields: Vec<String> =
                    tls.other.keys().map(|k| format!("tls.{k}")).collect();
                fields.extend(tls.options.keys().map(|k| format!("tls.options[{k}]")));
                state.accepted = cond(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    format!("{}: not supported by weir", fields.join(", ")),
                );
                state.programmed =
                    cond("Programmed", false, "Invalid", "the listener is not accepted");
                return state;
            }
            Some(tls) => match tls.certificate_refs.first() {
                None => Some((
                    "InvalidCertificateRef",
                    "tls.certificateRefs: an HTTPS listener needs a certificate".to_owned(),
                )),
                Some(cert) => {
                    let ns =
                        cert.namespace.clone().unwrap_or_else(|| gateway.namespace.to_string());
                    let secret = ObjectRef::new(ns.clone(), cert.name.clone());
                    let kind_ok = cert.group.as_deref().is_none_or(str::is_empty)
                        && cert.kind.as_deref().is_none_or(|k| k == "Secret");
                    if !kind_ok {
                        Some((
                            "InvalidCertificateRef",
                            format!(
                                "tls.certificateRefs[0]: {}/{} is not a Secret",
                                cert.group.as_deref().unwrap_or(""),
                                cert.kind.as_deref().unwrap_or("")
                            ),
                        ))
                    } else if *ns != *gateway.namespace
                        && !granted(
                            index,
                            &gateway.namespace,
                            "Gateway",
                            &ns,
                            "",
                            "Secret",
                            &cert.name,
                        )
                    {
                        Some((
                            "RefNotPermitted",
                            format!(
                                "tls.certificateRefs[0]: secret {secret} is in another namespace and no ReferenceGrant there allows it"
                            ),
                        ))
                    } else {
                        match index.secrets.get(&secret) {
                            None => Some((
                                "InvalidCertificateRef",
                                format!("tls.certificateRefs[0]: secret {secret} not found"),
                            )),
                            Some(s) if !has_entries(s) => Some((
                                "InvalidCertificateRef",
                                format!(
                                    "tls.certificateRefs[0]: secret {secret} has no tls.crt and tls.key"
                                ),
                            )),
                            Some(_) => {
                                state.certificate = Some(secret);
                                None
                            }
                        }
                    }
                }
            },
        };
        if let Some((reason, message)) = problem {
            state.resolved = cond("ResolvedRefs", false, reason, message);
        }
    }
    if state.resolved.status {
        state.proto = Some(proto);
    } else {
        state.programmed = cond("Programmed", false, "Invalid", "references are not resolved");
    }
    state
}

fn has_entries(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    let has = |k: &str| {
        secret.data.as_ref().is_some_and(|d| d.get(k).is_some_and(|v| !v.0.is_empty()))
            || secret.string_data.as_ref().is_some_and(|d| d.get(k).is_some_and(|v| !v.is_empty()))
    };
    has("tls.crt") && has("tls.key")
}

/// Listeners on one port with different protocols (`ProtocolConflict`), or the same
/// protocol and host name (`HostnameConflict`), are conflicted and not served.
fn conflicts(spec: &[Listener], states: &mut [ListenerState]) {
    let mut conflicted: Vec<Option<&'static str>> = vec![None; spec.len()];
    for i in 0..spec.len() {
        for j in 0..spec.len() {
            if i == j || spec[i].port != spec[j].port {
                continue;
            }
            if spec[i].protocol != spec[j].protocol {
                conflicted[i] = Some("ProtocolConflict");
            } else if conflicted[i].is_none() && states[i].hostname == states[j].hostname {
                conflicted[i] = Some("HostnameConflict");
            }
        }
    }
    for (state, reason) in states.iter_mut().zip(conflicted) {
        if let Some(reason) = reason {
            let message = match reason {
                "ProtocolConflict" => "another listener on this port has another protocol",
                _ => "another listener on this port has the same protocol and hostname",
            };
            state.conflicted = cond("Conflicted", true, reason, message);
            state.proto = None;
            state.programmed = cond("Programmed", false, "Invalid", "the listener is conflicted");
        }
    }
}

/// True when a Route in `namespace` may attach to the listener.
pub(crate) fn namespace_allowed(
    index: &Index,
    listener: &ListenerState,
    gateway_ns: &str,
    namespace: &str,
) -> bool {
    match &listener.from {
        From::Same => namespace == gateway_ns,
        From::All => true,
        From::None => false,
        From::Selector(selector) => {
            let empty = BTreeMap::new();
            let labels = index
                .namespaces
                .get(&ObjectRef::new("", namespace))
                .and_then(|n| n.metadata.labels.as_ref())
                .unwrap_or(&empty);
            selector_matches(selector, labels)
        }
    }
}

/// Kubernetes label-selector semantics (`matchLabels` and `matchExpressions`, AND-ed).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The host names a Route serves through a listener: the intersection of the listener's
/// host name and the Route's (Gateway API rules). `Some(vec![])` = every host; `None` = no
/// intersection.
pub(crate) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(l) = listener else { return Some(route) };
    if route.is_empty() {
        return Some(vec![l.to_owned()]);
    }
    let mut out = Vec::new();
    for h in &route {
        let hit = if h == l {
            Some(h.clone())
        } else {
            match (l.strip_prefix("*."), h.strip_prefix("*.")) {
                (Some(ls), None) => h.ends_with(&format!(".{ls}")).then(|| h.clone()),
                (None, Some(hs)) => l.ends_with(&format!(".{hs}")).then(|| l.to_owned()),
                (Some(ls), Some(hs)) => {
                    if hs.ends_with(&format!(".{ls}")) {
                        Some(h.clone())
                    } else if ls.ends_with(&format!(".{hs}")) {
                        Some(l.to_owned())
                    } else {
                        None
                    }
                }
                (None, None) => None,
            }
        };
        if let Some(hit) = hit
            && !out.contains(&hit)
        {
            out.push(hit);
        }
    }
    (!out.is_empty()).then_some(out)
}
