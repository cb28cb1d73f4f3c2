//! Plugin validation (exactly one typed config, each field checked) and the plugins that
//! apply to each Route rule (most specific level wins per plugin type).

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderName;
use weir_crds::{PluginSpec, RouteSpec};
use weir_dataplane::ObjectKey;

use super::conditions::{RefProblem, RefReason};
use super::routes::{At, rule_name};
use crate::index::{Index, ObjectRef};

/// Plugin types in the fixed phase order of the filter chain, with their spec field name.
pub const PLUGIN_TYPES: [&str; 10] = [
    "correlationId",
    "ipRestriction",
    "cors",
    "jwt",
    "keyAuth",
    "rateLimit",
    "requestHeaders",
    "cache",
    "circuitBreaker",
    "responseHeaders",
];

/// JWT algorithms weir knows (`none` is never accepted).
pub const JWT_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The typed configs that are set, by their spec field name.
pub fn set_configs(spec: &PluginSpec) -> Vec<&'static str> {
    let set = [
        ("correlationId", spec.correlation_id.is_some()),
        ("ipRestriction", spec.ip_restriction.is_some()),
        ("cors", spec.cors.is_some()),
        ("jwt", spec.jwt.is_some()),
        ("keyAuth", spec.key_auth.is_some()),
        ("rateLimit", spec.rate_limit.is_some()),
        ("requestHeaders", spec.request_headers.is_some()),
        ("cache", spec.cache.is_some()),
        ("circuitBreaker", spec.circuit_breaker.is_some()),
        ("responseHeaders", spec.response_headers.is_some()),
    ];
    set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
}

fn duration(errs: &mut Vec<String>, at: &str, value: Option<&str>, positive: bool) {
    if let Some(v) = value {
        match weir_crds::parse_duration(v) {
            Ok(d) if positive && d.is_zero() => errs.push(format!("{at}: must be positive")),
            Ok(_) => {}
            Err(e) => errs.push(format!("{at}: {e}")),
        }
    }
}

fn header_name(errs: &mut Vec<String>, at: &str, name: &str) {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        errs.push(format!("{at}: {name:?} is not a valid header name"));
    }
}

fn cidr_ok(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}

/// Variables a header value may use, as `${name}`.
pub const TEMPLATE_VARIABLES: [&str; 5] = ["request_id", "consumer", "client_ip", "route", "uuid"];

/// Checks the `${variable}` references of a header value template.
pub fn check_template(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated \"${{\" in {value:?}"));
        };
        let var = &after[..end];
        if !TEMPLATE_VARIABLES.contains(&var) {
            return Err(format!(
                "unknown variable \"${{{var}}}\" (one of {})",
                TEMPLATE_VARIABLES.map(|v| format!("${{{v}}}")).join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Validates a Plugin spec; `global` is honoured only in `controller_namespace`.
/// Returns the plugin type on success, or errors naming the fields.
pub fn validate_plugin(
    namespace: &str,
    controller_namespace: &str,
    spec: &PluginSpec,
) -> Result<&'static str, Vec<String>> {
    let mut errs = Vec::new();
    let set = set_configs(spec);
    let type_ = match set.as_slice() {
        [one] => Some(*one),
        [] => {
            errs.push(format!(
                "spec: exactly one plugin configuration must be set, none is (one of {})",
                PLUGIN_TYPES.join(", ")
            ));
            None
        }
        many => {
            let fields: Vec<String> = many.iter().map(|f| format!("spec.{f}")).collect();
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
    if let Some(rl) = &spec.rate_limit
        && let Err(e) = super::ratelimit::rate_limit_spec(ObjectKey::new(namespace, ""), rl)
    {
        errs.extend(e);
    }
    if let Some(jwt) = &spec.jwt {
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
            header_name(&mut errs, &format!("spec.jwt.claimsToHeaders[{i}].header"), &c.header);
        }
        duration(&mut errs, "spec.jwt.clockSkew", jwt.clock_skew.as_deref(), false);
    }
    if let Some(k) = &spec.key_auth
        && let Some(h) = &k.header
    {
        header_name(&mut errs, "spec.keyAuth.header", h);
    }
    if let Some(c) = &spec.cors {
        duration(&mut errs, "spec.cors.maxAge", c.max_age.as_deref(), false);
        if c.allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
            errs.push(
                "spec.cors.allowOrigins: \"*\" cannot be used with allowCredentials".to_owned(),
            );
        }
    }
    for (field, t) in
        [("requestHeaders", &spec.request_headers), ("responseHeaders", &spec.response_headers)]
    {
        let Some(t) = t else { continue };
        for (list, items) in [("set", &t.set), ("add", &t.add)] {
            for (i, h) in items.iter().enumerate() {
                header_name(&mut errs, &format!("spec.{field}.{list}[{i}].name"), &h.name);
                if h.value.chars().any(|c| c.is_control()) {
                    errs.push(format!(
                        "spec.{field}.{list}[{i}].value: contains control characters"
                    ));
                }
                if let Err(e) = check_template(&h.value) {
                    errs.push(format!("spec.{field}.{list}[{i}].value: {e}"));
                }
            }
        }
        for (i, h) in t.remove.iter().enumerate() {
            header_name(&mut errs, &format!("spec.{field}.remove[{i}]"), h);
        }
    }
    if let Some(c) = &spec.correlation_id
        && let Some(h) = &c.header
    {
        header_name(&mut errs, "spec.correlationId.header", h);
    }
    if let Some(cb) = &spec.circuit_breaker {
        if cb.failure_threshold == 0 {
            errs.push("spec.circuitBreaker.failureThreshold: must be greater than 0".to_owned());
        }
        if cb.success_threshold == Some(0) {
            errs.push("spec.circuitBreaker.successThreshold: must be greater than 0".to_owned());
        }
        duration(&mut errs, "spec.circuitBreaker.openFor", cb.open_for.as_deref(), true);
        duration(&mut errs, "spec.circuitBreaker.window", cb.window.as_deref(), true);
        if let Some(f) = &cb.fallback
            && !(100..=599).contains(&f.status)
        {
            errs.push(format!(
                "spec.circuitBreaker.fallback.status: {} is not an HTTP status",
                f.status
            ));
        }
    }
    if let Some(c) = &spec.cache {
        duration(&mut errs, "spec.cache.ttl", Some(&c.ttl), true);
        duration(
            &mut errs,
            "spec.cache.staleWhileRevalidate",
            c.stale_while_revalidate.as_deref(),
            false,
        );
        for (i, h) in c.vary_headers.iter().enumerate() {
            header_name(&mut errs, &format!("spec.cache.varyHeaders[{i}]"), h);
        }
    }
    if let Some(ip) = &spec.ip_restriction {
        for (list, items) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            for (i, c) in items.iter().enumerate() {
                if !cidr_ok(c) {
                    errs.push(format!(
                        "spec.ipRestriction.{list}[{i}]: {c:?} is not an IP address or CIDR"
                    ));
                }
            }
        }
    }
    match (type_, errs.is_empty()) {
        (Some(t), true) => Ok(t),
        _ => Err(errs),
    }
}

/// The Plugins that can be referenced: accepted ones, and invalid ones whose last good
/// version keeps serving.
#[derive(Debug, Default)]
pub(crate) struct PluginCatalog {
    /// Every Plugin object: `Some((type, served spec))` when usable, `None` when invalid
    /// without a last good version.
    pub(crate) plugins: BTreeMap<ObjectRef, Option<(&'static str, PluginSpec)>>,
    /// Usable global plugins: (type, source), in name order.
    pub(crate) globals: Vec<(&'static str, ObjectRef)>,
}

impl PluginCatalog {
    /// Resolves a plugin name in `namespace`: its type, or a problem naming `at`.
    pub(crate) fn resolve(
        &self,
        namespace: &str,
        name: &str,
        at: &dyn std::fmt::Display,
    ) -> Result<&'static str, RefProblem> {
        match self.plugins.get(&ObjectRef::new(namespace, name)) {
            Some(Some((t, _))) => Ok(t),
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
    /// Plugin type (`rateLimit`, `jwt`, ...).
    pub type_: &'static str,
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
}

/// The plugins of each rule of a Route (index = rule index), most specific level winning
/// per type, in phase order; plus the problems of unresolvable references.
pub(crate) fn rule_plugins(
    namespace: &str,
    spec: &RouteSpec,
    catalog: &PluginCatalog,
) -> RulePlugins {
    let mut out = RulePlugins::default();
    let mut route_unresolved = Vec::new();
    let mut base: BTreeMap<&'static str, AppliedPlugin> = BTreeMap::new();
    for (t, src) in &catalog.globals {
        let skip = spec.skip_global_plugins.iter().any(|s| s == t);
        let level = if skip { "skipped" } else { "global" }.to_owned();
        let applied = AppliedPlugin { type_: t, source: src.clone(), level };
        if skip {
            out.skipped.push(applied);
        } else {
            base.insert(t, applied);
        }
    }
    for (i, name) in spec.plugins.iter().enumerate() {
        match catalog.resolve(namespace, name, &At::Root("spec.plugins", i)) {
            Ok(t) => {
                let source = ObjectRef::new(namespace, name);
                base.insert(t, AppliedPlugin { type_: t, source, level: "route".to_owned() });
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
                    set.insert(t, AppliedPlugin { type_: t, source, level: level.clone() });
                }
                Err(p) => {
                    unresolved.push(p.message.clone());
                    out.problems.push(p);
                }
            }
        }
        out.per_rule.push(in_phase_order(set.into_values().collect()));
        out.unresolved.push(unresolved);
    }
    out
}

/// Sorts plugins in the fixed phase order of the filter chain.
pub(crate) fn in_phase_order(mut v: Vec<AppliedPlugin>) -> Vec<AppliedPlugin> {
    v.sort_by_key(|p| PLUGIN_TYPES.iter().position(|t| *t == p.type_).unwrap_or(usize::MAX));
    v
}

/// The validation result of every Plugin, and the generation of the last good version
/// that keeps serving for the invalid ones that have one.
pub(crate) type PluginResults =
    BTreeMap<ObjectRef, (Result<&'static str, Vec<String>>, Option<i64>)>;

/// Builds the catalog from the index (validating each Plugin once). An invalid Plugin with
/// a last good version in `last_good` keeps serving that version; `remember` receives the
/// version to remember for the next run.
pub(crate) fn catalog(
    index: &Index,
    last_good: &BTreeMap<ObjectRef, (i64, PluginSpec)>,
    remember: &mut BTreeMap<ObjectRef, (i64, PluginSpec)>,
) -> (PluginCatalog, PluginResults) {
    let ctrl = index.controller_namespace();
    let mut cat = PluginCatalog::default();
    let mut results = BTreeMap::new();
    for (key, plugin) in &index.plugins {
        let res = validate_plugin(&key.namespace, ctrl, &plugin.spec);
        let generation = plugin.metadata.generation.unwrap_or(0);
        let served = match &res {
            Ok(t) => Some((*t, generation, plugin.spec.clone())),
            Err(_) => last_good.get(key).and_then(|(g, spec)| {
                validate_plugin(&key.namespace, ctrl, spec).ok().map(|t| (t, *g, spec.clone()))
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
            cat.plugins.insert(key.clone(), None);
        }
        results.insert(key.clone(), (res, fallback));
    }
    (cat, results)
}
