//! Plugin validation (exactly one typed config, each field checked, the kind executable)
//! and the plugins that apply to each Route rule (most specific level wins per kind).
//!
//! Every kind of [`PluginKind`] is matched exhaustively here and in the filter builder: a
//! kind this weir cannot turn into a filter is `Accepted=False`, reason `Unsupported`,
//! never accepted and then ignored.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;
use weir_crds::{ExtAuthConfig, PluginConfig, PluginKind, PluginSpec, RouteSpec};
use weir_dataplane::ObjectKey;

use super::conditions::{RefProblem, RefReason};
use super::convert::{self, Errors, duration, header_name};
use super::routes::{At, rule_name};
use crate::index::{Index, ObjectRef};

/// JWT algorithms weir knows (`none` is never accepted).
pub const JWT_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Why a Plugin is not accepted: the `Accepted=False` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The spec has errors.
    Invalid,
    /// The kind is valid but this weir cannot execute it.
    Unsupported,
}

impl RejectReason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "Invalid",
            RejectReason::Unsupported => "Unsupported",
        }
    }
}

/// A Plugin that is not accepted: the reason and the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `Invalid` or `Unsupported`.
    pub reason: RejectReason,
    /// Messages, each naming a field.
    pub errors: Vec<String>,
}

/// Whether this weir can execute a kind: the one place that says so. `Err` is the
/// `Unsupported` message.
pub fn executable(kind: PluginKind) -> Result<(), String> {
    match kind {
        PluginKind::CorrelationId
        | PluginKind::IpRestriction
        | PluginKind::Cors
        | PluginKind::Redirect
        | PluginKind::DirectResponse
        | PluginKind::RequestSize
        | PluginKind::Jwt
        | PluginKind::KeyAuth
        | PluginKind::ExtAuth
        | PluginKind::RateLimit
        | PluginKind::RequestHeaders
        | PluginKind::ResponseHeaders
        | PluginKind::Compression
        | PluginKind::Cache => Ok(()),
    }
}

/// Whether a kind may be listed in a Consumer's `spec.plugins`: only kinds that run after
/// authentication can depend on who the consumer is.
pub fn consumer_level(kind: PluginKind) -> bool {
    match kind {
        PluginKind::RateLimit
        | PluginKind::RequestHeaders
        | PluginKind::ResponseHeaders
        | PluginKind::Compression => true,
        PluginKind::CorrelationId
        | PluginKind::IpRestriction
        | PluginKind::Cors
        | PluginKind::Redirect
        | PluginKind::DirectResponse
        | PluginKind::RequestSize
        | PluginKind::Jwt
        | PluginKind::KeyAuth
        | PluginKind::ExtAuth
        | PluginKind::Cache => false,
    }
}

fn validate_jwt(jwt: &weir_crds::JwtConfig, errs: &mut Errors) {
    if jwt.algorithms.is_empty() {
        errs.push("spec.jwt.algorithms: at least one algorithm is required".to_owned());
    }
    for (i, a) in jwt.algorithms.iter().enumerate() {
        if a.eq_ignore_ascii_case("none") {
            errs.push(format!("spec.jwt.algorithms[{i}]: \"none\" is never accepted"));
        } else if !JWT_ALGORITHMS.contains(&a.as_str()) {
            errs.push(format!(
                "spec.jwt.algorithms[{i}]: unknown algorithm {a:?} (one of {})",
                JWT_ALGORITHMS.join(", ")
            ));
        }
    }
    if jwt.jwks_uri.is_some() && jwt.jwks_secret_ref.is_some() {
        errs.push("spec.jwt: jwksUri and jwksSecretRef are mutually exclusive".to_owned());
    }
    if let Some(u) = &jwt.jwks_uri
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        errs.push(format!("spec.jwt.jwksUri: {u:?} must be an http(s) URL"));
    }
    for (i, c) in jwt.claims_to_headers.iter().enumerate() {
        header_name(errs, &format!("spec.jwt.claimsToHeaders[{i}].header"), &c.header);
    }
    duration(errs, "spec.jwt.clockSkew", jwt.clock_skew.as_deref(), false);
}

/// Checks an `extAuth` config; the target is resolved by the filter builder.
pub(crate) fn validate_ext_auth(c: &ExtAuthConfig, errs: &mut Errors) {
    match (&c.url, &c.service) {
        (Some(_), Some(_)) => {
            errs.push("spec.extAuth: url and service are mutually exclusive".to_owned())
        }
        (None, None) => errs.push("spec.extAuth: one of url or service is required".to_owned()),
        (Some(url), None) => {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                errs.push(format!("spec.extAuth.url: {url:?} must be an http(s) URL with a host"));
            }
            if c.path.is_some() {
                errs.push(
                    "spec.extAuth.path: only used with service (put the path in url)".to_owned(),
                );
            }
        }
        (None, Some(svc)) => {
            if svc.name.is_empty() {
                errs.push("spec.extAuth.service.name: must not be empty".to_owned());
            }
            if !(1..=65535).contains(&svc.port) {
                errs.push(format!("spec.extAuth.service.port: {} is not a port", svc.port));
            }
        }
    }
    if let Some(p) = &c.path
        && (!p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err())
    {
        errs.push(format!("spec.extAuth.path: {p:?} must be an absolute path"));
    }
    duration(errs, "spec.extAuth.timeout", c.timeout.as_deref(), true);
    for (i, h) in c.forward_headers.iter().enumerate() {
        header_name(errs, &format!("spec.extAuth.forwardHeaders[{i}]"), h);
    }
    for (i, h) in c.upstream_headers.iter().enumerate() {
        if let Some(n) = header_name(errs, &format!("spec.extAuth.upstreamHeaders[{i}]"), h)
            && weir_dataplane::filter::headers::NEVER_WRITTEN.contains(&n.as_str())
        {
            errs.push(format!(
                "spec.extAuth.upstreamHeaders[{i}]: {h:?} is a hop-by-hop or framing header"
            ));
        }
    }
}

/// Default `cache.maxBodySize`: 1 MiB.
pub const DEFAULT_CACHE_MAX_BODY: u64 = 1 << 20;

/// The compiled `cache` Plugin `id` (`namespace/name`, part of every key), or the errors,
/// each naming its field.
pub(crate) fn cache_plugin(
    id: &str,
    c: &weir_crds::CacheConfig,
) -> Result<weir_dataplane::cache::CachePlugin, Errors> {
    use weir_dataplane::cache::{CachePlugin, StoreKind};
    let mut errs = Errors::new();
    let ttl = duration(&mut errs, "spec.cache.ttl", Some(&c.ttl), true);
    let swr = duration(
        &mut errs,
        "spec.cache.staleWhileRevalidate",
        c.stale_while_revalidate.as_deref(),
        false,
    );
    let mut vary = Vec::new();
    for (i, h) in c.vary_headers.iter().enumerate() {
        vary.extend(header_name(&mut errs, &format!("spec.cache.varyHeaders[{i}]"), h));
    }
    for (i, s) in c.statuses.iter().enumerate() {
        if !(200..=599).contains(s) {
            errs.push(format!("spec.cache.statuses[{i}]: {s} is not a response status"));
        }
    }
    let mut methods = Vec::new();
    for (i, m) in c.methods.iter().enumerate() {
        match http::Method::from_bytes(m.as_bytes()) {
            Ok(m) if m == http::Method::GET || m == http::Method::HEAD => methods.push(m),
            Ok(_) => errs.push(format!(
                "spec.cache.methods[{i}]: {m:?} cannot be cached (GET and HEAD can)"
            )),
            Err(_) => errs.push(format!("spec.cache.methods[{i}]: {m:?} is not a method")),
        }
    }
    let max_body_size = match &c.max_body_size {
        None => DEFAULT_CACHE_MAX_BODY,
        Some(size) => match size.bytes() {
            Ok(0) => {
                errs.push("spec.cache.maxBodySize: must be positive".to_owned());
                0
            }
            Ok(n) => n,
            Err(e) => {
                errs.push(format!("spec.cache.maxBodySize: {e}"));
                0
            }
        },
    };
    let (Some(ttl), true) = (ttl, errs.is_empty()) else { return Err(errs) };
    if methods.is_empty() {
        methods = vec![http::Method::GET, http::Method::HEAD];
    }
    let statuses = if c.statuses.is_empty() { vec![200, 301, 404] } else { c.statuses.clone() };
    Ok(CachePlugin {
        id: id.into(),
        ttl,
        methods: methods.into(),
        statuses: statuses.into(),
        vary: vary.into(),
        stale_while_revalidate: swr.unwrap_or_default(),
        max_body_size,
        store: match c.store {
            weir_crds::CacheStore::Memory => StoreKind::Memory,
            weir_crds::CacheStore::Redis => StoreKind::Redis,
        },
    })
}

fn validate_cache(c: &weir_crds::CacheConfig, errs: &mut Errors) {
    if let Err(e) = cache_plugin("", c) {
        errs.extend(e);
    }
}

/// Checks the fields of one typed configuration (every kind named).
fn validate_config(
    config: PluginConfig<'_>,
    namespace: &str,
    claim_headers: &[HeaderName],
    errs: &mut Errors,
) {
    if let Some(Err(e)) = convert::standalone_filter(config, claim_headers) {
        errs.extend(e);
        return;
    }
    match config {
        PluginConfig::RateLimit(rl) => {
            if let Err(e) = super::ratelimit::rate_limit_spec(ObjectKey::new(namespace, ""), rl) {
                errs.extend(e);
            }
        }
        PluginConfig::Jwt(jwt) => validate_jwt(jwt, errs),
        PluginConfig::KeyAuth(k) => {
            if let Some(h) = &k.header {
                header_name(errs, "spec.keyAuth.header", h);
            }
        }
        PluginConfig::ExtAuth(c) => validate_ext_auth(c, errs),
        PluginConfig::Cache(c) => validate_cache(c, errs),
        // Checked by `standalone_filter` above.
        PluginConfig::CorrelationId(_)
        | PluginConfig::IpRestriction(_)
        | PluginConfig::Cors(_)
        | PluginConfig::Redirect(_)
        | PluginConfig::DirectResponse(_)
        | PluginConfig::RequestSize(_)
        | PluginConfig::RequestHeaders(_)
        | PluginConfig::ResponseHeaders(_)
        | PluginConfig::Compression(_) => {}
    }
}

/// Validates a Plugin spec; `global` is honoured only in `controller_namespace`.
/// `claim_headers` are every jwt Plugin's claim headers (identity headers that a header
/// transform must not forge). Returns the kind on success, or why it is not accepted.
pub fn validate_plugin(
    namespace: &str,
    controller_namespace: &str,
    spec: &PluginSpec,
    claim_headers: &[HeaderName],
) -> Result<PluginKind, Rejection> {
    let mut errs = Vec::new();
    let configs = spec.configs();
    let names = || PluginKind::ALL.map(PluginKind::as_str).join(", ");
    if spec.has_circuit_breaker() {
        errs.push(
            "spec.circuitBreaker: circuit breaking is no longer a Plugin; set it in the spec.circuitBreaker of a BackendPolicy (weir.dev/v1alpha1) targeting the Service"
                .to_owned(),
        );
    }
    let kind = match configs.as_slice() {
        [one] => Some(one.kind()),
        [] => {
            if !spec.has_circuit_breaker() {
                errs.push(format!(
                    "spec: exactly one plugin configuration must be set, none is (one of {})",
                    names()
                ));
            }
            None
        }
        many => {
            let fields: Vec<String> = many.iter().map(|c| format!("spec.{}", c.kind())).collect();
            errs.push(format!(
                "spec: exactly one plugin configuration must be set, found {}",
                fields.join(" and ")
            ));
            None
        }
    };
    if spec.global && namespace != controller_namespace {
        errs.push(format!(
            "spec.global: honoured only in namespace {controller_namespace:?}, not {namespace:?}"
        ));
    }
    for config in configs {
        validate_config(config, namespace, claim_headers, &mut errs);
    }
    match kind {
        Some(k) if errs.is_empty() => match executable(k) {
            Ok(()) => Ok(k),
            Err(message) => {
                Err(Rejection { reason: RejectReason::Unsupported, errors: vec![message] })
            }
        },
        _ => Err(Rejection { reason: RejectReason::Invalid, errors: errs }),
    }
}

/// The Plugins that can be referenced: accepted ones, and invalid ones whose last good
/// version keeps serving.
#[derive(Debug, Default)]
pub(crate) struct PluginCatalog {
    /// Every Plugin object: `Some((kind, served spec))` when usable, `None` when not
    /// accepted and without a last good version.
    pub(crate) plugins: BTreeMap<ObjectRef, Option<(PluginKind, PluginSpec)>>,
    /// Usable global plugins: (kind, source), in name order.
    pub(crate) globals: Vec<(PluginKind, ObjectRef)>,
    /// Global plugins of the controller's namespace that are not accepted and have no last
    /// good version: (kind when known, source). Every Route fails closed on them (unless it
    /// opts out of that kind): a global jwt that cannot run must not leave Routes open.
    pub(crate) broken_globals: Vec<(Option<PluginKind>, ObjectRef)>,
    /// Every jwt Plugin's claim headers (identity headers a header transform must not
    /// forge): the compiler's identity headers, shared with the filter builder.
    pub(crate) claim_headers: Arc<[HeaderName]>,
}

impl PluginCatalog {
    /// Resolves a plugin name in `namespace`: its kind, or a problem naming `at`.
    pub(crate) fn resolve(
        &self,
        namespace: &str,
        name: &str,
        at: &dyn std::fmt::Display,
    ) -> Result<PluginKind, RefProblem> {
        match self.plugins.get(&ObjectRef::new(namespace, name)) {
            Some(Some((t, _))) => Ok(*t),
            Some(None) => Err(RefProblem::new(
                RefReason::PluginNotFound,
                format!("{at}: plugin {namespace}/{name} is not accepted"),
            )),
            None => Err(RefProblem::new(
                RefReason::PluginNotFound,
                format!("{at}: plugin {namespace}/{name} not found"),
            )),
        }
    }

    /// The served spec of a usable plugin.
    pub(crate) fn spec(&self, key: &ObjectRef) -> Option<&PluginSpec> {
        self.plugins.get(key).and_then(|p| p.as_ref()).map(|(_, spec)| spec)
    }
}

/// One plugin that applies to a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPlugin {
    /// Plugin kind.
    pub kind: PluginKind,
    /// The Plugin object.
    pub source: ObjectRef,
    /// `global`, `route` or `rule:<name or index>` (`skipped` for an opted-out global).
    pub level: String,
}

/// The plugins of a Route's rules, and what could not be resolved.
#[derive(Debug, Default)]
pub(crate) struct RulePlugins {
    /// Per rule (index = rule index): most specific level winning per type, phase order.
    pub(crate) per_rule: Vec<Vec<AppliedPlugin>>,
    /// Per rule: messages of plugin references that do not resolve. Such a rule is served
    /// as unavailable (fail closed: the missing plugin may have been authentication).
    pub(crate) unresolved: Vec<Vec<String>>,
    /// Every unresolved reference, for `ResolvedRefs`.
    pub(crate) problems: Vec<RefProblem>,
    /// Global plugins this Route opts out of (`spec.skipGlobalPlugins`), level `skipped`.
    pub(crate) skipped: Vec<AppliedPlugin>,
    /// Spec errors found while combining the plugins of a rule (e.g. a redirect and a
    /// directResponse at the same level).
    pub(crate) conflicts: Vec<String>,
}

/// The rank of a level: global < route < rule.
pub(crate) fn level_rank(level: &str) -> u8 {
    match level {
        "global" => 0,
        "route" => 1,
        _ => 2,
    }
}

/// The plugins of each rule of a Route (index = rule index), most specific level winning
/// per type, in phase order; plus the problems of unresolvable references.
pub(crate) fn rule_plugins(
    namespace: &str,
    spec: &RouteSpec,
    catalog: &PluginCatalog,
) -> RulePlugins {
    let mut out = RulePlugins {
        per_rule: Vec::with_capacity(spec.rules.len()),
        unresolved: Vec::with_capacity(spec.rules.len()),
        ..RulePlugins::default()
    };
    let mut route_unresolved = Vec::new();
    for (kind, src) in &catalog.broken_globals {
        let skipped =
            kind.is_some_and(|k| spec.skip_global_plugins.iter().any(|s| s == k.as_str()));
        if !skipped {
            let p = RefProblem::new(
                RefReason::PluginNotFound,
                format!(
                    "global plugin {src} is not accepted; every rule answers 503 until it is (or skipGlobalPlugins lists its kind)"
                ),
            );
            route_unresolved.push(p.message.clone());
            out.problems.push(p);
        }
    }
    let mut base: BTreeMap<PluginKind, AppliedPlugin> = BTreeMap::new();
    for (t, src) in &catalog.globals {
        let skip = spec.skip_global_plugins.iter().any(|s| s == t.as_str());
        let level = if skip { "skipped" } else { "global" }.to_owned();
        let applied = AppliedPlugin { kind: *t, source: src.clone(), level };
        if skip {
            out.skipped.push(applied);
        } else {
            base.insert(*t, applied);
        }
    }
    for (i, name) in spec.plugins.iter().enumerate() {
        match catalog.resolve(namespace, name, &At::Root("spec.plugins", i)) {
            Ok(t) => {
                let source = ObjectRef::new(namespace, name);
                base.insert(t, AppliedPlugin { kind: t, source, level: "route".to_owned() });
            }
            Err(p) => {
                route_unresolved.push(p.message.clone());
                out.problems.push(p);
            }
        }
    }
    for (r, rule) in spec.rules.iter().enumerate() {
        let mut set = base.clone();
        let mut unresolved = route_unresolved.clone();
        // Only rules that list plugins need their level name.
        let level = if rule.plugins.is_empty() {
            String::new()
        } else {
            format!("rule:{}", rule_name(rule, r))
        };
        for (j, name) in rule.plugins.iter().enumerate() {
            match catalog.resolve(
                namespace,
                name,
                &At::Item(&At::Root("spec.rules", r), "plugins", j),
            ) {
                Ok(t) => {
                    let source = ObjectRef::new(namespace, name);
                    set.insert(t, AppliedPlugin { kind: t, source, level: level.clone() });
                }
                Err(p) => {
                    unresolved.push(p.message.clone());
                    out.problems.push(p);
                }
            }
        }
        if let (Some(redirect), Some(direct)) =
            (set.get(&PluginKind::Redirect), set.get(&PluginKind::DirectResponse))
        {
            // Both answer the request: the most specific level wins, as for one kind.
            match level_rank(&redirect.level).cmp(&level_rank(&direct.level)) {
                std::cmp::Ordering::Less => drop(set.remove(&PluginKind::Redirect)),
                std::cmp::Ordering::Greater => drop(set.remove(&PluginKind::DirectResponse)),
                std::cmp::Ordering::Equal => out.conflicts.push(format!(
                    "spec.rules[{r}]: both a redirect ({}) and a directResponse ({}) plugin answer this rule at the same level; keep one",
                    redirect.source, direct.source
                )),
            }
        }
        out.per_rule.push(in_phase_order(set.into_values().collect()));
        out.unresolved.push(unresolved);
    }
    out
}

/// Sorts plugins in the fixed phase order of the filter chain (the order of [`PluginKind`]).
pub(crate) fn in_phase_order(mut v: Vec<AppliedPlugin>) -> Vec<AppliedPlugin> {
    v.sort_by_key(|p| p.kind);
    v
}

/// The validation result of every Plugin, and the generation of the last good version
/// that keeps serving for the rejected ones that have one.
pub(crate) type PluginResults = BTreeMap<ObjectRef, (Result<PluginKind, Rejection>, Option<i64>)>;

/// Builds the catalog from the index (validating each Plugin once). An invalid Plugin with
/// a last good version in `last_good` keeps serving that version; `remember` receives the
/// version to remember for the next run.
pub(crate) fn catalog(
    index: &Index,
    claim_headers: Arc<[HeaderName]>,
    last_good: &BTreeMap<ObjectRef, (i64, PluginSpec)>,
    remember: &mut BTreeMap<ObjectRef, (i64, PluginSpec)>,
) -> (PluginCatalog, PluginResults) {
    let ctrl = index.controller_namespace();
    let claims = Arc::clone(&claim_headers);
    let mut cat = PluginCatalog { claim_headers, ..PluginCatalog::default() };
    let mut results = BTreeMap::new();
    for (key, plugin) in &index.plugins {
        let res = validate_plugin(&key.namespace, ctrl, &plugin.spec, &claims);
        let generation = plugin.metadata.generation.unwrap_or(0);
        let served = match &res {
            Ok(t) => Some((*t, generation, plugin.spec.clone())),
            Err(_) => last_good.get(key).and_then(|(g, spec)| {
                validate_plugin(&key.namespace, ctrl, spec, &claims)
                    .ok()
                    .map(|t| (t, *g, spec.clone()))
            }),
        };
        let fallback = match (&res, &served) {
            (Err(_), Some((_, g, _))) => Some(*g),
            _ => None,
        };
        if let Some((t, g, spec)) = served {
            if spec.global {
                cat.globals.push((t, key.clone()));
            }
            remember.insert(key.clone(), (g, spec.clone()));
            cat.plugins.insert(key.clone(), Some((t, spec)));
        } else {
            if plugin.spec.global && *key.namespace == *ctrl {
                cat.broken_globals.push((plugin.spec.config().map(|c| c.kind()), key.clone()));
            }
            cat.plugins.insert(key.clone(), None);
        }
        results.insert(key.clone(), (res, fallback));
    }
    (cat, results)
}
