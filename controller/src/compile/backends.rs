//! Backends: dense [`BackendId`]s for every referenced Service port, and Service →
//! EndpointSlice resolution with Kubernetes semantics.
//!
//! A backend is a `(namespace, service, port)` where `port` is the Service port as written
//! in the Route (0 when omitted). The Service port is found by its `port` number (or, when
//! omitted, the Service's only port); its endpoints are the ready addresses of every
//! EndpointSlice labelled `kubernetes.io/service-name: <service>` in the namespace, on the
//! slice port whose `name` equals the Service port's `name` (that port number is the
//! resolved `targetPort`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weir_dataplane::{Backend, BackendId, BackendKey, BackendTable};

use super::backend_policy::Policies;
pub use super::backend_policy::{PortProtocol, port_protocol};
use crate::index::{Index, ObjectRef};

/// The service-name prefix of the key of an invalid backend (a derived Route's
/// `BackendRef::invalid`): `/` cannot occur in a Service name. The rest is the reason.
pub(crate) const INVALID_PREFIX: &str = "/invalid/";

/// The label that links an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Assigns dense ids to backend keys in first-use order (deterministic, since the compiler
/// walks the index in order).
#[derive(Debug, Clone, Default)]
pub(crate) struct BackendInterner {
    keys: Vec<BackendKey>,
    ids: BTreeMap<BackendKey, BackendId>,
}

impl BackendInterner {
    /// The id of `key`, assigning the next one when new.
    pub(crate) fn intern(&mut self, key: BackendKey) -> BackendId {
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = BackendId(u32::try_from(self.keys.len()).unwrap_or(u32::MAX));
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    /// The keys, indexed by id.
    pub(crate) fn keys(&self) -> &[BackendKey] {
        &self.keys
    }
}

/// Finds the Service port a backend refers to. The error says what is missing, without the
/// field path (callers prefix it).
pub fn resolve_service_port<'i>(
    index: &'i Index,
    key: &BackendKey,
) -> Result<(&'i Service, &'i ServicePort), String> {
    // The key's own strings (no allocation: this runs for every backend of every Route).
    let svc_ref =
        ObjectRef { namespace: Arc::clone(&key.namespace), name: Arc::clone(&key.service) };
    let Some(service) = index.services.get(&svc_ref) else {
        return Err(format!(
            "service {:?} not found in namespace {:?}",
            &*key.service, &*key.namespace
        ));
    };
    let ports: &[ServicePort] =
        service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    if key.port == 0 {
        return match ports {
            [only] => Ok((service, only)),
            [] => Err(format!("service {svc_ref} has no ports")),
            _ => {
                Err(format!("service {svc_ref} has {} ports: set the backend's port", ports.len()))
            }
        };
    }
    match ports.iter().find(|p| p.port == key.port) {
        Some(port) => Ok((service, port)),
        None => {
            let have: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
            Err(format!(
                "service {svc_ref} has no port {} (ports: [{}])",
                key.port,
                have.join(", ")
            ))
        }
    }
}

/// True when an endpoint counts as ready: Kubernetes treats an unset `ready` as ready.
fn endpoint_ready(ep: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

/// The EndpointSlices of a Service: same namespace, `kubernetes.io/service-name` label.
fn slices_of<'i>(
    index: &'i Index,
    namespace: &'i str,
    service: &'i str,
) -> impl Iterator<Item = &'i EndpointSlice> + 'i {
    let start = ObjectRef::new(namespace, "");
    index
        .endpoint_slices
        .range(start..)
        .take_while(move |(k, _)| *k.namespace == *namespace)
        .map(|(_, s)| &**s)
        .filter(move |s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|v| v == service)
        })
}

/// The ready endpoints of a Service port, sorted and deduplicated.
pub fn endpoints_for(index: &Index, key: &BackendKey, port: &ServicePort) -> Vec<SocketAddr> {
    let port_name = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for slice in slices_of(index, &key.namespace, &key.service) {
        let Some(target) = slice
            .ports
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| endpoint_ready(e)) {
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How the gateway speaks to a Service port, from its `appProtocol` (see
/// [`port_protocol`]): HTTP/1.1, HTTP/2 with prior knowledge, or TLS (HTTP/1.1 or HTTP/2).
/// A port with TLS and no BackendPolicy `tls` verifies the endpoints against the system
/// roots for the name `<service>.<namespace>.svc`.
pub fn upstream_protocol(port: &ServicePort) -> PortProtocol {
    port_protocol(port)
}

/// Resolves one backend: its ready endpoints, protocol and BackendPolicy (`policies`), or
/// why it cannot be used. A backend without a policy and without TLS gets no policy.
pub fn resolve_backend(index: &Index, key: &BackendKey, policies: &Policies) -> Backend {
    if let Some(why) = key.service.strip_prefix(INVALID_PREFIX) {
        return Backend::invalid(key.clone(), why);
    }
    let (_, port) = match resolve_service_port(index, key) {
        Ok(found) => found,
        Err(problem) => return Backend::unresolved(key.clone(), problem),
    };
    let protocol = upstream_protocol(port);
    if policies.is_empty() {
        return Backend::new(key.clone(), endpoints_for(index, key, port))
            .with_protocol(protocol.protocol);
    }
    let service = ObjectRef::new(&*key.namespace, &*key.service);
    match policies.for_port(&service, protocol) {
        None => Backend::new(key.clone(), endpoints_for(index, key, port))
            .with_protocol(protocol.protocol),
        Some(Ok((effective, policy))) => Backend::new(key.clone(), endpoints_for(index, key, port))
            .with_protocol(*effective)
            .with_policy(Arc::clone(policy)),
        Some(Err(problem)) => Backend::unresolved(key.clone(), problem.as_str()),
    }
}

/// Builds the backend table for `keys` (`table.backends[i]` is `keys[i]`), each backend with
/// the BackendPolicy of its Service from `policies`. This is the fast half of the two
/// update rates: it reads only Services and EndpointSlices (and the compiled policies).
pub fn compile_backends(index: &Index, keys: &[BackendKey], policies: &Policies) -> BackendTable {
    BackendTable { backends: keys.iter().map(|k| resolve_backend(index, k, policies)).collect() }
}
