//! Route validation: a `RouteSpec` becomes a [`RouteModel`] for the data plane, or a list
//! of errors that each name the field (`spec.rules[1].matches[0].path.value: ...`).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use weir_crds::{
    BackendRef, HeaderMatch, PathMatchType, QueryParamMatch, RetryOn, RouteRule, RouteSpec,
    StringMatchType,
};
use weir_dataplane::{
    BackendKey, Filter, HeaderMatcher, HostMatch, ObjectKey, PathMatch, QueryMatcher, RequestMatch,
    RetryPolicy, Rewrite, RouteModel, Rule, RuleAction, Timeouts, ValueMatch, WeightedBackend,
    WeightedBackends,
};

use weir_dataplane::observe::stats::RouteStatsRegistry;

use super::backends::BackendInterner;

pub(crate) mod aggregate;

/// Largest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Largest accepted `retries.attempts`.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A validated rule whose backends are not yet interned.
#[derive(Debug)]
struct ValidRule {
    name: Arc<str>,
    matches: Vec<RequestMatch>,
    backends: Vec<(BackendKey, u32)>,
    rewrite: Option<Box<Rewrite>>,
    timeouts: Timeouts,
    retries: RetryPolicy,
    aggregate: Option<aggregate::ValidAggregate>,
}

/// A Route that passed validation.
#[derive(Debug)]
pub(crate) struct ValidRoute {
    hosts: Vec<HostMatch>,
    rules: Vec<ValidRule>,
}

impl ValidRoute {
    /// Builds the data-plane model, interning backend keys.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn into_model(
        self,
        key: ObjectKey,
        generation: i64,
        created: i64,
        filters: Vec<Arc<[Filter]>>,
        https_redirect: bool,
        interner: &mut BackendInterner,
        stats: &RouteStatsRegistry,
    ) -> RouteModel {
        let mut filters = filters.into_iter();
        // Into a Vec of its own: collecting the `into_iter` would reuse the (larger)
        // `ValidRule` allocation, which the route table then shrinks with a `realloc`.
        let mut rules = Vec::with_capacity(self.rules.len());
        rules.extend(self.rules.into_iter().enumerate().map(|(index, r)| {
            let chain = filters.next().unwrap_or_else(|| Arc::from(Vec::new()));
            let backends = r
                .backends
                .into_iter()
                .map(|(k, weight)| WeightedBackend { id: interner.intern(k), weight })
                .collect();
            let aggregate = r.aggregate.and_then(|a| a.build(&r.matches, interner));
            Arc::new(Rule {
                stats: stats.rule(&key, &r.name),
                name: r.name,
                index,
                matches: r.matches,
                action: RuleAction {
                    backends: WeightedBackends::new(backends),
                    rewrite: r.rewrite,
                    timeouts: r.timeouts.shared(),
                    retries: r.retries.shared(),
                    filters: chain,
                    https_redirect,
                    aggregate,
                },
            })
        }));
        RouteModel { key, generation, created, hosts: self.hosts, rules }
    }
}

/// A field path such as `spec.rules[1].matches[0]`, formatted only when an error names it
/// (building the strings for every valid field was a large part of a full compile).
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'a> {
    /// `name[index]` at the top.
    Root(&'static str, usize),
    /// `parent.name[index]`.
    Item(&'a At<'a>, &'static str, usize),
    /// `parent.name`.
    Field(&'a At<'a>, &'static str),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root(name, i) => write!(f, "{name}[{i}]"),
            At::Item(parent, name, i) => write!(f, "{parent}.{name}[{i}]"),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// A rule name as kept in the snapshot: the names of unnamed rules (their index) are shared
/// strings, not one allocation per rule (memory per Route).
fn shared_name(name: String) -> Arc<str> {
    static INDEXES: std::sync::LazyLock<Vec<Arc<str>>> =
        std::sync::LazyLock::new(|| (0..16).map(|i: u8| Arc::from(i.to_string())).collect());
    match INDEXES.iter().find(|n| ***n == *name) {
        Some(shared) => Arc::clone(shared),
        None => name.into(),
    }
}

/// The display name of a rule: its `name`, or its index.
pub(crate) fn rule_name(rule: &RouteRule, index: usize) -> String {
    rule.name.clone().unwrap_or_else(|| index.to_string())
}

/// Up to this many rules, duplicate rule names are found by comparing with the earlier
/// rules instead of through a set.
const FEW_RULES: usize = 16;

/// Whether the rule at `index` has the name `name` ([`rule_name`], without allocating).
fn same_rule_name(rule: &RouteRule, index: usize, name: &str) -> bool {
    match &rule.name {
        Some(own) => own == name,
        None => itoa::Buffer::new().format(index) == name,
    }
}

/// The backend key a `BackendRef` of a Route in `namespace` refers to.
pub(crate) fn backend_key(namespace: &str, b: &BackendRef) -> BackendKey {
    if let Some(why) = &b.invalid {
        // A name no Service can have (`/`), holding the reason: resolved to an invalid
        // backend (500) by `backends::resolve_backend`.
        return BackendKey {
            namespace: namespace.into(),
            service: format!("{}{why}", super::backends::INVALID_PREFIX).into(),
            port: 0,
        };
    }
    BackendKey {
        namespace: b.namespace.as_deref().unwrap_or(namespace).into(),
        service: b.service.as_str().into(),
        port: b.port.unwrap_or(0),
    }
}

/// Validates a Route spec. Every problem is reported, each naming its field.
pub(crate) fn validate_route(namespace: &str, spec: &RouteSpec) -> Result<ValidRoute, Vec<String>> {
    let mut errs = Vec::new();
    let mut hosts = Vec::with_capacity(spec.hosts.len());
    for (i, h) in spec.hosts.iter().enumerate() {
        match parse_host(h) {
            Ok(m) => hosts.push(m),
            Err(e) => errs.push(format!("spec.hosts[{i}]: {e}")),
        }
    }
    if spec.rules.is_empty() {
        errs.push("spec.rules: at least one rule is required".to_owned());
    }
    if let Some(tls) = &spec.tls {
        if spec.hosts.is_empty() {
            errs.push("spec.tls: requires at least one host in spec.hosts".to_owned());
        }
        if tls.secret_ref.name.is_empty() {
            errs.push("spec.tls.secretRef.name: must not be empty".to_owned());
        }
        if tls.client_ca.as_ref().is_some_and(|ca| ca.secret_ref.name.is_empty()) {
            errs.push("spec.tls.clientCA.secretRef.name: must not be empty".to_owned());
        }
    }
    for (i, t) in spec.skip_global_plugins.iter().enumerate() {
        if weir_crds::PluginKind::from_name(t).is_none() {
            errs.push(format!(
                "spec.skipGlobalPlugins[{i}]: unknown plugin type {t:?} (one of {})",
                weir_crds::PluginKind::ALL.map(weir_crds::PluginKind::as_str).join(", ")
            ));
        }
    }
    // Rule names seen so far: a set only for Routes with many rules (most have one or
    // two; a set allocates a node and a copy of each name on every compile).
    let mut names = std::collections::BTreeSet::new();
    let mut rules: Vec<ValidRule> = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let name = rule_name(rule, i);
        let duplicate = if spec.rules.len() <= FEW_RULES {
            spec.rules[..i].iter().enumerate().any(|(k, r)| same_rule_name(r, k, &name))
        } else {
            !names.insert(name.clone())
        };
        if duplicate {
            errs.push(format!("spec.rules[{i}].name: duplicate rule name {name:?}"));
        }
        if let Some(r) = validate_rule(namespace, rule, name, &At::Root("spec.rules", i), &mut errs)
        {
            rules.push(r);
        }
    }
    if errs.is_empty() { Ok(ValidRoute { hosts, rules }) } else { Err(errs) }
}

fn validate_rule(
    namespace: &str,
    rule: &RouteRule,
    name: String,
    at: &At<'_>,
    errs: &mut Vec<String>,
) -> Option<ValidRule> {
    let before = errs.len();
    // Exact capacity: the Vec is kept in the snapshot's Rule (growing it by pushes kept
    // room for four matches, ~370 B per one-match rule).
    let mut matches = Vec::with_capacity(rule.matches.len().max(1));
    if rule.matches.is_empty() {
        matches.push(RequestMatch::path(PathMatch::Prefix("".into())));
    }
    for (j, m) in rule.matches.iter().enumerate() {
        let item = At::Item(at, "matches", j);
        let at = &item;
        let path = match &m.path {
            None => Some(PathMatch::Prefix("".into())),
            Some(p) => parse_path(p.type_, &p.value)
                .map_err(|e| errs.push(format!("{at}.path.value: {e}")))
                .ok(),
        };
        let mut methods = Vec::new();
        for (k, raw) in m.methods.iter().enumerate() {
            match parse_method(raw) {
                Ok(method) => methods.push(method),
                Err(e) => errs.push(format!("{at}.methods[{k}]: {e}")),
            }
        }
        let headers: Vec<HeaderMatcher> = m
            .headers
            .iter()
            .enumerate()
            .filter_map(|(k, h)| parse_header_match(h, &At::Item(at, "headers", k), errs))
            .collect();
        let query: Vec<QueryMatcher> = m
            .query_params
            .iter()
            .enumerate()
            .filter_map(|(k, q)| parse_query_match(q, &At::Item(at, "queryParams", k), errs))
            .collect();
        if let Some(path) = path {
            matches.push(RequestMatch::new(path, methods, headers, query));
        }
    }
    // A rule without backends is checked once its plugins are known: a redirect or
    // directResponse plugin answers it ([`rule_plugin_errors`]).
    let mut backends = Vec::with_capacity(rule.backends.len());
    for (j, b) in rule.backends.iter().enumerate() {
        let item = At::Item(at, "backends", j);
        let at = &item;
        if b.service.is_empty() {
            errs.push(format!("{at}.service: must not be empty"));
        }
        if let Some(p) = b.port.filter(|p| !(1..=65535).contains(p)) {
            errs.push(format!("{at}.port: {p} is not in 1..65535"));
        }
        let weight = b.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            errs.push(format!("{at}.weight: {weight} is larger than {MAX_WEIGHT}"));
        }
        backends.push((backend_key(namespace, b), weight));
    }
    let aggregate = aggregate::validate(namespace, rule, &matches, at, errs);
    let rewrite = rule.rewrite.as_ref().map(|rw| {
        let field = At::Field(at, "rewrite");
        let at = &field;
        let mut out = Rewrite { replace_prefix: None, replace_full_path: None, host: None };
        if rw.replace_prefix.is_some() && rw.replace_full_path.is_some() {
            errs.push(format!("{at}: replacePrefix and replaceFullPath are mutually exclusive"));
        }
        if let Some(p) = &rw.replace_prefix {
            if !p.starts_with('/') {
                errs.push(format!("{at}.replacePrefix: {p:?} must start with '/'"));
            }
            if matches.iter().any(|m| !matches!(m.path, PathMatch::Prefix(_))) {
                errs.push(format!(
                    "{at}.replacePrefix: only allowed when every match is a Prefix path match (without {{name}} captures)"
                ));
            }
            out.replace_prefix = Some(p.as_str().into());
        }
        if let Some(p) = &rw.replace_full_path {
            if !p.starts_with('/') || p.contains(['?', '#']) || p.chars().any(char::is_whitespace) {
                errs.push(format!("{at}.replaceFullPath: {p:?} must be a path starting with '/'"));
            }
            out.replace_full_path = Some(p.as_str().into());
        }
        if let Some(h) = &rw.host {
            match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => out.host = Some(v),
                _ => errs.push(format!("{at}.host: {h:?} is not a valid Host header value")),
            }
        }
        out
    });
    let mut timeouts = Timeouts::default();
    if let Some(t) = &rule.timeouts {
        if let Some(c) = &t.connect {
            match weir_crds::parse_duration(c) {
                Ok(d) if d.is_zero() => {
                    errs.push(format!("{at}.timeouts.connect: must be positive"))
                }
                Ok(d) => timeouts.connect = d,
                Err(e) => errs.push(format!("{at}.timeouts.connect: {e}")),
            }
        }
        if let Some(r) = &t.request {
            match weir_crds::parse_duration(r) {
                Ok(d) => timeouts.request = (!d.is_zero()).then_some(d),
                Err(e) => errs.push(format!("{at}.timeouts.request: {e}")),
            }
        }
        if let Some(i) = &t.idle {
            match weir_crds::parse_duration(i) {
                Ok(d) => timeouts.idle = (!d.is_zero()).then_some(d),
                Err(e) => errs.push(format!("{at}.timeouts.idle: {e}")),
            }
        }
    }
    let mut retries = RetryPolicy::default();
    if let Some(r) = &rule.retries {
        if r.attempts > MAX_RETRY_ATTEMPTS {
            errs.push(format!(
                "{at}.retries.attempts: {} is larger than {MAX_RETRY_ATTEMPTS}",
                r.attempts
            ));
        }
        retries.attempts = r.attempts;
        if let Some(p) = &r.per_try_timeout {
            match weir_crds::parse_duration(p) {
                Ok(d) if d.is_zero() => {
                    errs.push(format!("{at}.retries.perTryTimeout: must be positive"))
                }
                Ok(d) => retries.per_try_timeout = Some(d),
                Err(e) => errs.push(format!("{at}.retries.perTryTimeout: {e}")),
            }
        }
        let on: &[RetryOn] = if r.on.is_empty() { &[RetryOn::ConnectFailure] } else { &r.on };
        for o in on {
            match o {
                RetryOn::ConnectFailure => retries.on_connect_failure = true,
                RetryOn::Timeout => retries.on_timeout = true,
                RetryOn::Status5xx => retries.on_5xx = true,
            }
        }
    }
    (errs.len() == before).then(|| ValidRule {
        name: shared_name(name),
        matches,
        backends,
        rewrite: rewrite.map(Box::new),
        timeouts,
        retries,
        aggregate,
    })
}

/// Parses a host: a DNS name, optionally with one leading `*.` wildcard label; lower-cased.
pub(crate) fn parse_host(raw: &str) -> Result<HostMatch, String> {
    let lower = raw.to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if name.len() > 253 || name.is_empty() {
        return Err(format!("{raw:?} is not a valid host name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{raw:?} is not a valid host name (DNS labels of a-z, 0-9 and '-', \
                 with at most one leading '*.' wildcard label)"
            ));
        }
    }
    Ok(if wild {
        HostMatch::Wildcard(format!(".{name}").into())
    } else {
        HostMatch::Exact(name.into())
    })
}

/// Compiles a regex anchored at both ends.
/// The pattern is parsed on its own first, so an unbalanced group such as `/a)|(/b` is
/// rejected instead of escaping the anchors.
pub(crate) fn anchored_regex(pattern: &str) -> Result<Regex, String> {
    let invalid =
        |e: regex::Error| format!("regex {pattern:?} is invalid: {}", one_line(&e.to_string()));
    Regex::new(pattern).map_err(invalid)?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_path(type_: PathMatchType, value: &str) -> Result<PathMatch, String> {
    match type_ {
        PathMatchType::RegularExpression => {
            anchored_regex(value).map(|re| PathMatch::Regex(Box::new(re)))
        }
        PathMatchType::Exact | PathMatchType::Prefix => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} must start with '/'"));
            }
            if value.contains(['?', '#'])
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("path {value:?} must not contain '?', '#' or whitespace"));
            }
            let exact = type_ == PathMatchType::Exact;
            if let Some(captures) = aggregate::capture_regex(value, exact)? {
                return Ok(PathMatch::Regex(Box::new(captures)));
            }
            Ok(if exact {
                PathMatch::Exact(value.into())
            } else {
                PathMatch::Prefix(value.trim_end_matches('/').into())
            })
        }
    }
}

pub(crate) fn parse_method(raw: &str) -> Result<Method, String> {
    const KNOWN: [&str; 9] =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    let upper = raw.to_ascii_uppercase();
    if !KNOWN.contains(&upper.as_str()) {
        return Err(format!("{raw:?} is not a known HTTP method ({})", KNOWN.join(", ")));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
}

fn parse_value(
    type_: StringMatchType,
    value: Option<&str>,
    at: &At<'_>,
    errs: &mut Vec<String>,
) -> Option<ValueMatch> {
    match (type_, value) {
        (StringMatchType::Present, _) => Some(ValueMatch::Present),
        (_, None) => {
            errs.push(format!("{at}.value: required unless type is Present"));
            None
        }
        (StringMatchType::Exact, Some(v)) => Some(ValueMatch::Exact(v.into())),
        (StringMatchType::RegularExpression, Some(v)) => anchored_regex(v)
            .map(ValueMatch::Regex)
            .map_err(|e| errs.push(format!("{at}.value: {e}")))
            .ok(),
    }
}

fn parse_header_match(
    h: &HeaderMatch,
    at: &At<'_>,
    errs: &mut Vec<String>,
) -> Option<HeaderMatcher> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| errs.push(format!("{at}.name: {:?} is not a valid header name", h.name)))
        .ok();
    let value = parse_value(h.type_, h.value.as_deref(), at, errs);
    Some(HeaderMatcher { name: name?, value: value? })
}

fn parse_query_match(
    q: &QueryParamMatch,
    at: &At<'_>,
    errs: &mut Vec<String>,
) -> Option<QueryMatcher> {
    if q.name.is_empty() {
        errs.push(format!("{at}.name: must not be empty"));
    }
    let value = parse_value(q.type_, q.value.as_deref(), at, errs)?;
    (!q.name.is_empty()).then(|| QueryMatcher { name: q.name.as_str().into(), value })
}

/// Errors that come from combining a Route's rules with their plugins: a rule without
/// backends and without a plugin that answers it (`redirect`, `directResponse`) could only
/// ever answer 503; a redirect that replaces the matched prefix needs Prefix matches; two
/// answering plugins at the same level conflict.
pub(crate) fn rule_plugin_errors(
    spec: &RouteSpec,
    resolved: &super::plugins::RulePlugins,
    catalog: &super::plugins::PluginCatalog,
) -> Vec<String> {
    use weir_crds::PluginKind;
    let mut errors = resolved.conflicts.clone();
    for (i, rule) in spec.rules.iter().enumerate() {
        let applied = resolved.per_rule.get(i).map_or(&[][..], Vec::as_slice);
        let answering = |kind| applied.iter().find(|p| p.kind == kind);
        if rule.backends.is_empty()
            && rule.aggregate.is_none()
            && answering(PluginKind::Redirect).is_none()
            && answering(PluginKind::DirectResponse).is_none()
        {
            errors.push(format!(
                "spec.rules[{i}].backends: at least one backend is required (unless a redirect or directResponse plugin answers the rule)"
            ));
        }
        let replaces_prefix = answering(PluginKind::Redirect).filter(|p| {
            catalog
                .spec(&p.source)
                .and_then(|s| s.redirect.as_ref())
                .and_then(|r| r.path.as_ref())
                .is_some_and(|path| path.replace_prefix.is_some())
        });
        if let Some(redirect) = replaces_prefix {
            let not_prefix = rule.matches.iter().position(|m| {
                m.path
                    .as_ref()
                    .is_some_and(|p| p.type_ != PathMatchType::Prefix || p.value.contains('{'))
            });
            if let Some(j) = not_prefix {
                errors.push(format!(
                    "spec.rules[{i}].matches[{j}].path: the redirect plugin {} replaces the matched prefix (path.replacePrefix), which needs a Prefix match without {{name}} captures",
                    redirect.source
                ));
            }
        }
    }
    errors
}
