//! TLS: every Route's `spec.tls` and its Secrets become the data plane's [`TlsTable`]
//! (certificates by SNI), a TLS outcome per Route (its `ResolvedRefs` problems and whether
//! its rules redirect plain HTTP), and the `--default-certificate`.
//!
//! - Material is checked here, once per compile, with the index's clock
//!   ([`HostTls::from_pem`]); a certificate must also name every host it serves.
//! - A Route whose Secret is missing or invalid keeps its last good certificate
//!   ([`Memory::last_good_tls`]) and says so.
//! - A host claimed by several Routes with different certificates goes to the oldest
//!   (creationTimestamp, then namespace/name, as for routing); the others get
//!   `CertificateConflict` for it and no redirect. Only Routes with a certificate to serve
//!   (current or last good) that serve HTTP (valid now, or with a last good version) claim
//!   hosts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use weir_crds::RouteSpec;
use weir_dataplane::HostMatch;
use weir_dataplane::tls::{HostTls, TlsTable};

use super::Memory;
use super::conditions::{RefProblem, RefReason};
use super::consumers::secret_value;
use super::plugins::{self, PluginCatalog};
use super::routes::{self, parse_host};
use crate::index::{Index, ObjectRef, RouteObject};

/// The TLS result of one Route with `tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouteTls {
    /// `ResolvedRefs` problems (`SecretNotFound`, `InvalidCertificate`,
    /// `CertificateConflict`).
    pub(crate) problems: Vec<RefProblem>,
    /// True when plain-HTTP requests to the Route's rules get a redirect to HTTPS.
    pub(crate) redirect: bool,
}

/// Output of [`compile_tls`].
#[derive(Debug, Default)]
pub(crate) struct TlsOutput {
    /// Certificates by host, and the default one.
    pub(crate) table: Arc<TlsTable>,
    /// The TLS result of every Route with `tls`.
    pub(crate) routes: BTreeMap<ObjectRef, RouteTls>,
    /// Why the `--default-certificate` cannot be used (the last good one, if any, still
    /// serves).
    pub(crate) default_error: Option<String>,
    /// When the first served certificate expires: a compile after that reports it.
    pub(crate) recheck_at: Option<SystemTime>,
}

/// A Route that serves a certificate, and the hosts it claims.
struct Claim<'a> {
    key: &'a ObjectRef,
    created: i64,
    hosts: Vec<(usize, HostMatch)>,
    tls: Arc<HostTls>,
}

/// The TLS part of a Route spec that applies: `spec.tls` with its hosts, from the current
/// spec, or from the last good version when the current one has `tls` without usable
/// hosts (which is an `Accepted=False` error: the last good version keeps serving).
fn served_tls<'a>(
    key: &ObjectRef,
    route: &'a RouteObject,
    memory: &'a Memory,
) -> Option<(&'a RouteSpec, Vec<(usize, HostMatch)>)> {
    let usable = |spec: &'a RouteSpec| {
        spec.tls.as_ref()?;
        let hosts: Vec<(usize, HostMatch)> = spec
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| parse_host(h).ok().map(|m| (i, m)))
            .collect::<Option<_>>()?;
        (!hosts.is_empty()).then_some((spec, hosts))
    };
    route.spec.tls.as_ref()?;
    usable(&route.spec)
        .or_else(|| memory.last_good_route(key).and_then(|(_, good)| usable(&good.spec)))
}

/// True when a Route's TLS outcome may depend on `route` (current or remembered): an
/// incremental compile that touches such a Route recompiles everything.
pub(crate) fn touches_tls(key: &ObjectRef, route: Option<&RouteObject>, memory: &Memory) -> bool {
    route.is_some_and(|r| r.spec.tls.is_some())
        || memory.last_good_tls.contains_key(key)
        || memory.last_good_route(key).is_some_and(|(_, r)| r.spec.tls.is_some())
}

/// A certificate built by a compile and the Secrets it came from.
#[derive(Debug, Clone)]
pub struct Built {
    cert: Arc<Secret>,
    ca: Option<Arc<Secret>>,
    tls: Arc<HostTls>,
}

fn same_secret(a: &Arc<Secret>, b: &Arc<Secret>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Builds certificates once per Secret combination within one compile, so Routes sharing
/// a Secret share one [`HostTls`] (one identity for misdirected-request checks), and reuses
/// those of the previous compile whose Secrets did not change.
struct Builder<'a> {
    index: &'a Index,
    previous: &'a imbl::OrdMap<Arc<str>, Built>,
    built: HashMap<String, Result<Arc<HostTls>, RefProblem>>,
    keep: imbl::OrdMap<Arc<str>, Built>,
}

impl Builder<'_> {
    /// The certificate of `tls` for a Route in `ns`.
    fn build(&mut self, ns: &str, tls: &weir_crds::RouteTls) -> Result<Arc<HostTls>, RefProblem> {
        let cert_ref =
            ObjectRef::new(tls.secret_namespace.as_deref().unwrap_or(ns), &tls.secret_ref.name);
        let ca_ref =
            tls.client_ca.as_ref().map(|ca| (ObjectRef::new(ns, &ca.secret_ref.name), ca.optional));
        let name = match &ca_ref {
            None => cert_ref.to_string(),
            Some((ca, false)) => format!("{cert_ref}+{ca}"),
            Some((ca, true)) => format!("{cert_ref}+{ca}(optional)"),
        };
        if let Some(done) = self.built.get(&name) {
            return done.clone();
        }
        let result = self.make(&name, &cert_ref, ca_ref.as_ref());
        self.built.insert(name, result.clone());
        result
    }

    fn make(
        &mut self,
        name: &str,
        cert_ref: &ObjectRef,
        ca_ref: Option<&(ObjectRef, bool)>,
    ) -> Result<Arc<HostTls>, RefProblem> {
        const CERT: &str = "spec.tls.secretRef";
        const CA: &str = "spec.tls.clientCA.secretRef";
        let secret = find_secret(self.index, CERT, cert_ref)?;
        let ca_secret = match ca_ref {
            None => None,
            Some((ca_ref, _)) => Some(find_secret(self.index, CA, ca_ref)?),
        };
        let name: Arc<str> = name.into();
        if let Some(done) = self.previous.get(&name)
            && same_secret(&done.cert, secret)
            && match (&done.ca, ca_secret) {
                (None, None) => true,
                (Some(a), Some(b)) => same_secret(a, b),
                _ => false,
            }
            && done.tls.valid_at(self.index.now())
        {
            self.keep.insert(name, done.clone());
            return Ok(Arc::clone(&done.tls));
        }
        let crt = entry(secret, CERT, cert_ref, "tls.crt")?;
        let key = entry(secret, CERT, cert_ref, "tls.key")?;
        let ca = match (ca_ref, ca_secret) {
            (Some((ca_ref, optional)), Some(ca_secret)) => {
                // from_pem takes (CA bundle, required).
                Some((entry(ca_secret, CA, ca_ref, "ca.crt")?, !*optional))
            }
            _ => None,
        };
        match HostTls::from_pem(Arc::clone(&name), crt, key, ca, self.index.now()) {
            Ok(tls) => {
                let tls = Arc::new(tls);
                let built = Built {
                    cert: Arc::clone(secret),
                    ca: ca_secret.map(Arc::clone),
                    tls: Arc::clone(&tls),
                };
                self.keep.insert(name, built);
                Ok(tls)
            }
            Err(e) => {
                let (field, secret) = match ca_ref {
                    Some((ca_ref, _)) if e.0.starts_with("ca.crt") => (CA, ca_ref),
                    _ => (CERT, cert_ref),
                };
                Err(RefProblem::new(
                    RefReason::InvalidCertificate,
                    format!("{field}: secret {secret}: {e}"),
                ))
            }
        }
    }
}

fn find_secret<'i>(
    index: &'i Index,
    field: &str,
    key: &ObjectRef,
) -> Result<&'i Arc<Secret>, RefProblem> {
    index.secrets.get(key).ok_or_else(|| {
        RefProblem::new(RefReason::SecretNotFound, format!("{field}: secret {key} not found"))
    })
}

fn entry<'s>(
    secret: &'s Secret,
    field: &str,
    key: &ObjectRef,
    name: &str,
) -> Result<&'s [u8], RefProblem> {
    secret_value(secret, name).filter(|v| !v.is_empty()).ok_or_else(|| {
        RefProblem::new(
            RefReason::InvalidCertificate,
            format!("{field}: secret {key} has no (or an empty) entry {name}"),
        )
    })
}

/// The hosts `tls` does not name, as a problem.
fn uncovered(
    tls: &HostTls,
    spec: &RouteSpec,
    hosts: &[(usize, HostMatch)],
    cert_ref: &str,
) -> Option<RefProblem> {
    let missing: Vec<String> = hosts
        .iter()
        .filter(|(_, h)| !tls.leaf.covers(h))
        .map(|(i, _)| format!("{:?}", spec.hosts[*i]))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let names = if tls.leaf.dns_names.is_empty() {
        "none: clients ignore the subject CN".to_owned()
    } else {
        tls.leaf.dns_names.join(", ")
    };
    Some(RefProblem::new(
        RefReason::InvalidCertificate,
        format!(
            "spec.tls.secretRef: secret {cert_ref}: tls.crt does not cover host {} (its DNS \
             names: {names})",
            missing.join(", ")
        ),
    ))
}

/// Compiles the TLS of every Route and the default certificate; records the last good
/// certificates into `next`.
pub(crate) fn compile_tls(
    index: &Index,
    memory: &Memory,
    catalog: &PluginCatalog,
    next: &mut Memory,
) -> TlsOutput {
    let mut out = TlsOutput::default();
    let mut builder = Builder {
        index,
        previous: &memory.tls_built,
        built: HashMap::new(),
        keep: imbl::OrdMap::new(),
    };
    let mut claims = Vec::new();
    for (key, route) in &index.routes {
        let Some((spec, hosts)) = served_tls(key, route, memory) else { continue };
        let Some(tls) = &spec.tls else { continue };
        let secret_ns = tls.secret_namespace.as_deref().unwrap_or(&key.namespace);
        let cert_ref = ObjectRef::new(secret_ns, &tls.secret_ref.name).to_string();
        let current = builder.build(&key.namespace, tls).and_then(|cert| {
            match uncovered(&cert, spec, &hosts, &cert_ref) {
                Some(problem) => Err(problem),
                None => Ok(cert),
            }
        });
        let mut result = RouteTls::default();
        // A Route that requires client certificates is never served over plain HTTP, where
        // no certificate can be asked for: its plain requests are redirected to HTTPS
        // whatever `httpRedirect` says (and whether or not its certificate serves: without
        // it, the HTTPS side answers 421 — closed, never open).
        let requires_client_cert = |spec: &RouteSpec| {
            spec.tls.as_ref().and_then(|t| t.client_ca.as_ref()).is_some_and(|ca| !ca.optional)
        };
        result.redirect = requires_client_cert(&route.spec)
            || memory.last_good_route(key).is_some_and(|(_, r)| requires_client_cert(&r.spec));
        let serving = match current {
            Ok(cert) => {
                next.last_good_tls.insert(key.clone(), Arc::clone(&cert));
                Some(cert)
            }
            Err(mut problem) => {
                let last = memory.last_good_tls.get(key).cloned();
                if let Some(last) = &last {
                    problem.message.push_str(&format!(
                        "; the last good certificate ({}) keeps serving",
                        last.name
                    ));
                    next.last_good_tls.insert(key.clone(), Arc::clone(last));
                }
                result.problems.push(problem);
                last
            }
        };
        // A Route that never was valid serves no HTTP (no model): it claims no host either.
        let serves_http = memory.last_good_route(key).is_some()
            || routes::validate_route(&key.namespace, &route.spec).is_ok_and(|_| {
                let plugins = plugins::rule_plugins(&key.namespace, &route.spec, catalog);
                routes::rule_plugin_errors(&route.spec, &plugins, catalog).is_empty()
            });
        if let Some(tls) = serving.filter(|_| serves_http) {
            let created = route.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
            claims.push(Claim { key, created, hosts, tls });
        }
        out.routes.insert(key.clone(), result);
    }

    // The oldest Route wins each host; Routes serving the same certificate share it.
    claims.sort_by(|a, b| (a.created, a.key).cmp(&(b.created, b.key)));
    let mut owners: HashMap<HostMatch, (&ObjectRef, Arc<HostTls>)> = HashMap::new();
    let mut served = Vec::new();
    for claim in &claims {
        let mut conflicts = Vec::new();
        for (i, host) in &claim.hosts {
            match owners.get(host) {
                None => {
                    owners.insert(host.clone(), (claim.key, Arc::clone(&claim.tls)));
                    served.push((host.clone(), Arc::clone(&claim.tls)));
                }
                Some((_, tls)) if tls.name == claim.tls.name => {}
                Some((owner, tls)) => conflicts.push(format!(
                    "spec.hosts[{i}]: host {:?} is served with certificate {} of Route {owner}, \
                     which is older; this Route's certificate ({}) is not used for it and the \
                     host stays plain HTTP for this Route",
                    host_text(host),
                    tls.name,
                    claim.tls.name
                )),
            }
        }
        if let Some(result) = out.routes.get_mut(claim.key) {
            let conflicted = !conflicts.is_empty();
            result.problems.extend(
                conflicts.into_iter().map(|m| RefProblem::new(RefReason::CertificateConflict, m)),
            );
            let wants = index.routes.get(claim.key).and_then(|r| served_tls(claim.key, r, memory));
            result.redirect |= !conflicted
                && wants
                    .is_some_and(|(spec, _)| spec.tls.as_ref().is_some_and(|t| t.http_redirect));
        }
    }

    let default = index.default_certificate.as_ref().and_then(|key| {
        let current = match index.secrets.get(key) {
            None => Err(format!("secret {key} not found")),
            Some(secret) => {
                match (secret_value(secret, "tls.crt"), secret_value(secret, "tls.key")) {
                    (Some(crt), Some(k)) => {
                        HostTls::from_pem(key.to_string().into(), crt, k, None, index.now())
                            .map(Arc::new)
                            .map_err(|e| format!("secret {key}: {e}"))
                    }
                    _ => Err(format!("secret {key} has no (or an empty) entry tls.crt or tls.key")),
                }
            }
        };
        match current {
            Ok(cert) => {
                next.last_good_default_tls = Some(Arc::clone(&cert));
                Some(cert)
            }
            Err(e) => {
                let last = memory.last_good_default_tls.clone();
                let suffix = match &last {
                    Some(_) => "; the last good default certificate keeps serving",
                    None => "; TLS clients with an unknown or no SNI fail the handshake",
                };
                out.default_error = Some(format!("{e}{suffix}"));
                next.last_good_default_tls = last.clone();
                last
            }
        }
    });
    let now = index.now();
    out.recheck_at = served
        .iter()
        .map(|(_, tls)| tls)
        .chain(&default)
        .filter(|tls| tls.valid_at(now))
        .filter_map(|tls| u64::try_from(tls.leaf.not_after).ok())
        .min()
        .and_then(|t| UNIX_EPOCH.checked_add(Duration::from_secs(t.saturating_add(1))));
    out.table = Arc::new(TlsTable::new(served, default));
    next.tls_built = builder.keep;
    out
}

fn host_text(host: &HostMatch) -> String {
    match host {
        HostMatch::Exact(h) => h.to_string(),
        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
    }
}
