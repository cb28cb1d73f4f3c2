//! BackendPolicies: which policy applies to each Service, its status, and the compiled
//! [`BackendPolicy`] every backend (Service port) of that Service carries.
//!
//! - A policy's spec is checked by [`spec::compile_spec`]; an invalid update keeps the last
//!   good version in force (and says so), like Routes and Plugins.
//! - Several policies targeting one Service: the oldest (creationTimestamp, then name) wins;
//!   the others are `Accepted=False` reason `Conflicted` (and still apply to the Services
//!   they do not contend for).
//! - A Service port's `appProtocol` gives its protocol and whether it speaks TLS; the policy's
//!   `protocol` and `tls` override it (see [`effective`]). A port with TLS and no policy
//!   `tls` uses the system roots and the name `<service>.<namespace>.svc`.
//! - The compiled policy of each (Service, port protocol) is built once and reused, the same
//!   `Arc`, while the policy and its Secrets are unchanged ([`Memory::policies_built`]), so
//!   the data plane keeps the runtime state bound to it.
//! - A missing CA or client Secret is `ResolvedRefs=False` reason `SecretNotFound`; unusable
//!   content is `Accepted=False` naming the field. Either way the Service's backends answer
//!   503 with the problem rather than talking to the endpoints without the TLS asked for.

pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Secret, ServicePort};
use weir_crds::backend_policy::BackendTlsSpec;
use weir_dataplane::UpstreamProtocol;
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::tls::{ClientIdentity, TlsRoots, UpstreamTls};

use super::conditions::{self, RefProblem, RefReason, accepted, condition, resolved_refs};
use super::consumers::secret_value;
use super::{Memory, ObjectStatus};
use crate::index::{Index, ObjectRef};

/// How a Service port is spoken to according to its `appProtocol` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortProtocol {
    /// HTTP version (and prior knowledge for `H2c`).
    pub protocol: UpstreamProtocol,
    /// True when the port speaks TLS (`https`, `kubernetes.io/https`, `wss`, `h2`, `grpcs`).
    pub tls: bool,
}

/// The compiled policy of a backend, or why the backend cannot be used.
pub type Variant = Result<(UpstreamProtocol, Arc<BackendPolicy>), String>;

/// What applies to each Service: the compiled policy per port protocol. A Service without
/// a policy and without TLS ports is absent (its backends stay plain round robin).
#[derive(Debug, Default)]
pub struct Policies {
    services: BTreeMap<ObjectRef, Vec<(PortProtocol, Variant)>>,
}

impl Policies {
    /// The policy of a Service port with `port` protocol; `None`: plain, no policy.
    pub fn for_port(&self, service: &ObjectRef, port: PortProtocol) -> Option<&Variant> {
        self.services.get(service)?.iter().find(|(p, _)| *p == port).map(|(_, v)| v)
    }

    /// Number of Services with a policy or TLS.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no Service has a policy or TLS.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// The inputs one compiled policy was built from (compared to reuse it).
#[derive(Debug, Clone)]
struct Inputs {
    policy: Option<(i64, Arc<weir_crds::BackendPolicy>)>,
    ca: Option<Arc<Secret>>,
    client: Option<Arc<Secret>>,
}

fn same_secret(a: &Option<Arc<Secret>>, b: &Option<Arc<Secret>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

impl Inputs {
    fn same(&self, other: &Inputs) -> bool {
        let policy = match (&self.policy, &other.policy) {
            (None, None) => true,
            (Some((ga, a)), Some((gb, b))) => {
                ga == gb
                    && (Arc::ptr_eq(a, b)
                        || (a.metadata.name == b.metadata.name && a.spec == b.spec))
            }
            _ => false,
        };
        policy && same_secret(&self.ca, &other.ca) && same_secret(&self.client, &other.client)
    }
}

/// A compiled policy kept for the next compile.
#[derive(Debug, Clone)]
pub struct Built {
    port: PortProtocol,
    inputs: Inputs,
    protocol: UpstreamProtocol,
    policy: Arc<BackendPolicy>,
}

/// Output of [`compile_policies`].
#[derive(Debug, Default)]
pub(crate) struct PolicyOutput {
    /// What applies to each Service.
    pub(crate) policies: Arc<Policies>,
    /// The status of every BackendPolicy.
    pub(crate) statuses: Vec<(ObjectRef, Arc<ObjectStatus>)>,
}

/// How the gateway speaks to a Service port from its `appProtocol`: `kubernetes.io/h2c`,
/// `grpc` and `h2c` → HTTP/2 with prior knowledge; `https`, `kubernetes.io/https`, `wss`
/// and `kubernetes.io/wss` → HTTP/1.1 over TLS; `h2` and `grpcs` → HTTP/2 over TLS;
/// `kubernetes.io/ws`, `http`, `kubernetes.io/http`, none, and any other value
/// (implementation-specific per Kubernetes) → HTTP/1.1.
pub fn port_protocol(port: &ServicePort) -> PortProtocol {
    let plain = |protocol| PortProtocol { protocol, tls: false };
    let Some(app) = port.app_protocol.as_deref() else { return plain(UpstreamProtocol::Http1) };
    match app.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" | "grpc" | "h2c" => plain(UpstreamProtocol::H2c),
        "https" | "kubernetes.io/https" | "wss" | "kubernetes.io/wss" => {
            PortProtocol { protocol: UpstreamProtocol::Http1, tls: true }
        }
        "h2" | "grpcs" => PortProtocol { protocol: UpstreamProtocol::H2, tls: true },
        _ => plain(UpstreamProtocol::Http1),
    }
}

/// TLS of a backend.
enum TlsMode<'a> {
    None,
    /// `appProtocol` TLS without a policy `tls`: system roots, `<service>.<namespace>.svc`.
    System,
    Policy(&'a BackendTlsSpec),
}

/// The protocol and TLS of a port under a policy spec: `spec.protocol` chooses the HTTP
/// version (`H2C` also means no TLS); `spec.tls`, else the port's TLS, chooses TLS; with
/// TLS, an `appProtocol` of h2c/grpc means HTTP/2 over TLS.
fn effective(
    spec: Option<&weir_crds::BackendPolicySpec>,
    port: PortProtocol,
) -> (UpstreamProtocol, TlsMode<'_>) {
    let policy_tls = spec.and_then(|s| s.tls.as_ref());
    let tls = match policy_tls {
        Some(t) => TlsMode::Policy(t),
        None if port.tls => TlsMode::System,
        None => TlsMode::None,
    };
    let explicit = spec.and_then(|s| s.protocol).map(spec::protocol_of);
    match (explicit, tls) {
        (Some(UpstreamProtocol::H2c), _) => (UpstreamProtocol::H2c, TlsMode::None),
        (Some(p), tls) => (p, tls),
        (None, TlsMode::None) => (port.protocol, TlsMode::None),
        (None, tls) => {
            let p = match port.protocol {
                UpstreamProtocol::H2c | UpstreamProtocol::H2 => UpstreamProtocol::H2,
                UpstreamProtocol::Http1 => UpstreamProtocol::Http1,
            };
            (p, tls)
        }
    }
}

/// A policy in force (current or last good version) and what it compiled to.
struct Candidate<'a> {
    key: &'a ObjectRef,
    generation: i64,
    object: Arc<weir_crds::BackendPolicy>,
    base: BackendPolicy,
    created: i64,
    /// The CA and client Secrets, or `None` when one is missing or unusable (reported).
    secrets: Option<TlsSecrets>,
}

/// The CA and client certificate Secrets of a policy's `tls`, each when set.
type TlsSecrets = (Option<Arc<Secret>>, Option<Arc<Secret>>);

/// What the status of one policy is built from.
#[derive(Default)]
struct Report {
    generation: i64,
    errors: Vec<String>,
    suffix: String,
    conflicts: Vec<String>,
    content: Vec<String>,
    problems: Vec<RefProblem>,
}

impl Report {
    fn content(&mut self, message: String) {
        if !self.content.contains(&message) {
            self.content.push(message);
        }
    }

    fn status(self) -> Arc<ObjectStatus> {
        let g = self.generation;
        let accepted = if !self.errors.is_empty() {
            accepted(&self.errors, g, &self.suffix)
        } else if !self.conflicts.is_empty() {
            condition(conditions::ACCEPTED, false, "Conflicted", self.conflicts.join("; "), g)
        } else {
            accepted(&self.content, g, "")
        };
        let conditions = vec![accepted, resolved_refs(&self.problems, g)];
        Arc::new(ObjectStatus {
            generation: g,
            conditions,
            effective_plugins: Vec::new(),
            document: None,
        })
    }
}

const CA_FIELD: &str = "spec.tls.caSecretRef";
const CLIENT_FIELD: &str = "spec.tls.clientCertificateRef";

/// Looks up the Secret of `field`; a missing one is a `SecretNotFound` problem, one without
/// the `entries` a content error.
fn secret(
    index: &Index,
    ns: &str,
    field: &str,
    name: Option<&str>,
    entries: &[&str],
    report: &mut Report,
) -> Result<Option<Arc<Secret>>, ()> {
    let Some(name) = name else { return Ok(None) };
    let key = ObjectRef::new(ns, name);
    let Some(secret) = index.secrets.get(&key) else {
        report.problems.push(RefProblem::new(
            RefReason::SecretNotFound,
            format!("{field}: secret {key} not found"),
        ));
        return Err(());
    };
    for entry in entries {
        if secret_value(secret, entry).is_none_or(<[u8]>::is_empty) {
            report.content(format!("{field}: secret {key} has no (or an empty) entry {entry}"));
            return Err(());
        }
    }
    Ok(Some(Arc::clone(secret)))
}

/// The Secrets BackendPolicies refer to (CA bundles and client certificates).
pub fn referenced_secrets(index: &Index) -> BTreeSet<ObjectRef> {
    let mut out = BTreeSet::new();
    for (key, policy) in &index.backend_policies {
        let Some(tls) = &policy.spec.tls else { continue };
        for r in [&tls.ca_secret_ref, &tls.client_certificate_ref].into_iter().flatten() {
            if !r.name.is_empty() {
                out.insert(ObjectRef::new(key.namespace.clone(), r.name.clone()));
            }
        }
    }
    out
}

/// Compiles every BackendPolicy: the policy of each Service and every policy's status.
/// Records the last good versions and the compiled policies into `next`.
pub(crate) fn compile_policies(index: &Index, memory: &Memory, next: &mut Memory) -> PolicyOutput {
    let mut reports: BTreeMap<&ObjectRef, Report> = BTreeMap::new();
    let mut candidates = Vec::new();
    let mut last_good = OrdMap::new();
    for (key, object) in &index.backend_policies {
        let generation = object.metadata.generation.unwrap_or(0);
        let mut report = Report { generation, ..Report::default() };
        let chosen = match spec::compile_spec(&object.spec) {
            Ok(base) => Some((generation, Arc::clone(object), base)),
            Err(errors) => {
                report.errors = errors;
                memory.last_good_policies.get(key).and_then(|(g, good)| {
                    report.suffix =
                        format!("; the last good version (generation {g}) keeps serving");
                    spec::compile_spec(&good.spec).ok().map(|base| (*g, Arc::clone(good), base))
                })
            }
        };
        if let Some((g, good, mut base)) = chosen {
            last_good.insert(key.clone(), (g, Arc::clone(&good)));
            base.source = Some(key.object_key());
            base.generation = g;
            let tls = good.spec.tls.as_ref();
            let ns = &key.namespace;
            let ca = tls.and_then(|t| t.ca_secret_ref.as_ref()).map(|r| r.name.as_str());
            let client =
                tls.and_then(|t| t.client_certificate_ref.as_ref()).map(|r| r.name.as_str());
            let ca = secret(index, ns, CA_FIELD, ca, &["ca.crt"], &mut report);
            let client =
                secret(index, ns, CLIENT_FIELD, client, &["tls.crt", "tls.key"], &mut report);
            let secrets = ca.ok().zip(client.ok());
            let created =
                object.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
            candidates.push(Candidate { key, generation: g, object: good, base, created, secrets });
        }
        reports.insert(key, report);
    }
    next.last_good_policies = last_good;

    // The oldest policy wins each Service.
    candidates.sort_by(|a, b| (a.created, a.key).cmp(&(b.created, b.key)));
    let mut winners: BTreeMap<ObjectRef, usize> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        for (j, target) in c.object.spec.target_refs.iter().enumerate() {
            let service = ObjectRef::new(&c.key.namespace, &target.name);
            let report = reports.entry(c.key).or_default();
            if !index.services.contains_key(&service) {
                report.problems.push(RefProblem::new(
                    RefReason::BackendNotFound,
                    format!(
                        "spec.targetRefs[{j}]: service {:?} not found in namespace {:?}",
                        target.name, c.key.namespace
                    ),
                ));
            }
            match winners.get(&service) {
                None => drop(winners.insert(service, i)),
                Some(&w) if w == i => {}
                Some(&w) => report.conflicts.push(format!(
                    "spec.targetRefs[{j}]: Service {service} already has BackendPolicy {}, \
                     which is older; this policy does not apply to it",
                    candidates[w].key
                )),
            }
        }
    }

    let mut services = BTreeMap::new();
    let mut built = OrdMap::new();
    for (key, service) in &index.services {
        let winner = winners.get(key).map(|&i| &candidates[i]);
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let mut variants: Vec<(PortProtocol, Variant)> = Vec::new();
        let mut kept: Vec<Built> = Vec::new();
        let previous = memory.policies_built.get(key);
        for port in ports {
            let pp = port_protocol(port);
            if (winner.is_none() && !pp.tls) || variants.iter().any(|(p, _)| *p == pp) {
                continue;
            }
            let report = winner.and_then(|c| reports.get_mut(c.key));
            let variant = build(key, winner, pp, previous.map(Vec::as_slice), report, &mut kept);
            variants.push((pp, variant));
        }
        if !variants.is_empty() {
            services.insert(key.clone(), variants);
        }
        if !kept.is_empty() {
            built.insert(key.clone(), kept);
        }
    }
    next.policies_built = built;
    let statuses =
        reports.into_iter().map(|(key, report)| (key.clone(), report.status())).collect();
    PolicyOutput { policies: Arc::new(Policies { services }), statuses }
}

/// The compiled policy of a port of `service` with `port` protocol under `winner` (or none),
/// reusing a previous one built from the same inputs.
fn build(
    service: &ObjectRef,
    winner: Option<&Candidate<'_>>,
    port: PortProtocol,
    previous: Option<&[Built]>,
    report: Option<&mut Report>,
    kept: &mut Vec<Built>,
) -> Variant {
    let (protocol, tls) = effective(winner.map(|c| &c.object.spec), port);
    let whose = winner.map_or_else(String::new, |c| format!("BackendPolicy {}: ", c.key));
    let (ca, client) = match (winner, &tls) {
        (Some(c), TlsMode::Policy(_)) => match &c.secrets {
            Some(pair) => pair.clone(),
            None => {
                return Err(format!(
                    "{whose}the TLS Secrets of spec.tls are missing or unusable (see its status)"
                ));
            }
        },
        _ => (None, None),
    };
    let inputs = Inputs {
        policy: winner.map(|c| (c.generation, Arc::clone(&c.object))),
        ca: ca.clone(),
        client: client.clone(),
    };
    if let Some(done) =
        previous.into_iter().flatten().find(|b| b.port == port && b.inputs.same(&inputs))
    {
        kept.push(done.clone());
        return Ok((done.protocol, Arc::clone(&done.policy)));
    }
    let mut policy = match winner {
        Some(c) => c.base.clone(),
        None => BackendPolicy {
            panic_threshold: BackendPolicy::DEFAULT_PANIC_THRESHOLD,
            ..BackendPolicy::default()
        },
    };
    let default_host = format!("{}.{}.svc", service.name, service.namespace);
    let built = match tls {
        TlsMode::None => Ok(None),
        TlsMode::System => UpstreamTls::new(TlsRoots::System, &default_host, None, protocol)
            .map(Some)
            .map_err(|e| format!("TLS to service {service} (appProtocol): {e}")),
        TlsMode::Policy(t) => {
            let hostname = t.hostname.as_deref().unwrap_or(&default_host);
            let roots = match ca.as_deref().and_then(|s| secret_value(s, "ca.crt")) {
                Some(pem) => TlsRoots::Pem(pem),
                None => TlsRoots::System,
            };
            let identity = client.as_deref().and_then(|s| {
                Some(ClientIdentity {
                    chain: secret_value(s, "tls.crt")?,
                    key: secret_value(s, "tls.key")?,
                })
            });
            UpstreamTls::new(roots, hostname, identity, protocol).map(Some).map_err(|e| {
                let message = format!("spec.tls: {e}");
                let backend = format!("{whose}{message}");
                if let Some(report) = report {
                    report.content(message);
                }
                backend
            })
        }
    };
    policy.tls = built?.map(Arc::new);
    let policy = Arc::new(policy);
    kept.push(Built { port, inputs, protocol, policy: Arc::clone(&policy) });
    Ok((protocol, policy))
}
