//! `compile()`: the pure function from the [`Index`] to a data-plane snapshot and a status
//! for every object. The same code runs in `weir run` (both modes) and `weir validate`.
//!
//! Two update rates: Routes, Plugins, Consumers and Services change rarely; EndpointSlices
//! change often. [`compile`] builds everything; when only EndpointSlices changed, the caller
//! runs [`compile_endpoints_only`], which rebuilds just the [`BackendTable`] from
//! [`Compiled::backend_keys`] and shares the route table (same `Arc`) and statuses.
//! (Service changes can change `ResolvedRefs`, so they need a full [`compile`].)

pub mod backends;
pub mod conditions;
pub mod consumers;
pub mod filters;
pub mod plugins;
pub mod ratelimit;
pub(crate) mod routes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_crds::{Condition, EffectivePlugin, Route};
use weir_dataplane::filter::jwt::JwksRegistry;
use weir_dataplane::ratelimit::RateLimit;
use weir_dataplane::{BackendKey, BackendTable, ObjectKey, RouteTable};

use crate::index::{Index, Kind, ObjectRef};
pub use backends::compile_backends;
use conditions::{PROGRAMMED, RefProblem, RefReason, accepted, condition, resolved_refs};
pub use plugins::AppliedPlugin;
use plugins::PluginCatalog;
pub use routes::{MAX_RETRY_ATTEMPTS, MAX_WEIGHT};

/// What the compiler remembers between runs: the last good version of every Route and
/// Plugin, so an invalid update keeps the previous version serving (an authentication
/// Plugin broken by an edit keeps protecting its routes), and the remote JWKS in use (runtime
/// state that outlives snapshots). Owned by the caller and passed back in.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Last accepted spec and generation of each Route.
    pub last_good_routes: BTreeMap<ObjectRef, (i64, weir_crds::RouteSpec)>,
    /// Last accepted spec and generation of each Plugin.
    pub last_good_plugins: BTreeMap<ObjectRef, (i64, weir_crds::PluginSpec)>,
    /// Remote JWKS shared by successive snapshots (clones share the registry).
    pub jwks: JwksRegistry,
}

/// The status computed for one object (without `lastTransitionTime`, which the status
/// writer manages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectStatus {
    /// `metadata.generation` the conditions describe.
    pub generation: i64,
    /// `Accepted`, `ResolvedRefs`, `Programmed` as applicable.
    pub conditions: Vec<Condition>,
    /// Routes only: the plugins that apply.
    pub effective_plugins: Vec<EffectivePlugin>,
}

impl ObjectStatus {
    /// The condition of a type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// True when the condition of `type_` is present with status `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

/// Output of [`compile`].
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The route table.
    pub routes: Arc<RouteTable>,
    /// The backend table (endpoints).
    pub backends: Arc<BackendTable>,
    /// The key of every backend, indexed by `BackendId` (`backend_keys[id.0]`): the input of
    /// [`compile_backends`] when only endpoints changed.
    pub backend_keys: Arc<[BackendKey]>,
    /// The plugins of each rule of each served Route (outer index = rule index), most
    /// specific level first resolved, in phase order (the filters built from them are in
    /// the route table).
    pub rule_plugins: Arc<BTreeMap<ObjectRef, Vec<Vec<AppliedPlugin>>>>,
    /// Every rate limit of the snapshot (one per `rateLimit` Plugin in use): the publisher
    /// binds them to their runtime limiters (`RateLimiters::publish`) before going live.
    pub rate_limits: Vec<Arc<RateLimit>>,
    /// Every `claimsToHeaders` header of every jwt Plugin (current or last good): the data
    /// plane removes them from every incoming request.
    pub identity_headers: Arc<[http::HeaderName]>,
    /// Status of every weir object (Route, Plugin, Consumer).
    pub statuses: Arc<BTreeMap<(Kind, ObjectRef), ObjectStatus>>,
    /// The memory to pass to the next run.
    pub memory: Arc<Memory>,
}

/// Rebuilds only the backend table of `previous` from the index's current Services and
/// EndpointSlices. Use it when nothing but EndpointSlices changed: the route table `Arc`,
/// the statuses and the memory are shared with `previous`.
pub fn compile_endpoints_only(index: &Index, previous: &Compiled) -> Compiled {
    Compiled {
        routes: Arc::clone(&previous.routes),
        backends: Arc::new(compile_backends(index, &previous.backend_keys)),
        backend_keys: Arc::clone(&previous.backend_keys),
        rule_plugins: Arc::clone(&previous.rule_plugins),
        rate_limits: previous.rate_limits.clone(),
        identity_headers: Arc::clone(&previous.identity_headers),
        statuses: Arc::clone(&previous.statuses),
        memory: Arc::clone(&previous.memory),
    }
}

fn generation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.generation.unwrap_or(0)
}

/// Compiles the index. Pure: same input, same output; no I/O, no clock.
pub fn compile(index: &Index, memory: &Memory) -> Compiled {
    let mut statuses = BTreeMap::new();
    let mut new_memory = Memory { jwks: memory.jwks.clone(), ..Memory::default() };
    let (catalog, plugin_results) =
        plugins::catalog(index, &memory.last_good_plugins, &mut new_memory.last_good_plugins);
    for (key, plugin) in &index.plugins {
        let generation = generation(&plugin.metadata);
        let (errors, suffix) = match plugin_results.get(key) {
            Some((Err(e), Some(g))) => {
                (e.clone(), format!("; the last good version (generation {g}) keeps serving"))
            }
            Some((Err(e), None)) => (e.clone(), String::new()),
            _ => (Vec::new(), String::new()),
        };
        let conditions = vec![accepted(&errors, generation, &suffix)];
        statuses.insert(
            (Kind::Plugin, key.clone()),
            ObjectStatus { generation, conditions, effective_plugins: Vec::new() },
        );
    }

    // Consumers first: the authentication filters of Routes hold their namespace's store.
    let mut builder = filters::FilterBuilder::new(index, &catalog, &memory.jwks);
    for (key, consumer) in &index.consumers {
        let generation = generation(&consumer.metadata);
        let check = consumers::check_consumer(index, &key.namespace, &consumer.spec, &catalog);
        if check.errors.is_empty() {
            builder.add_consumer(key, &consumer.spec, &check);
        }
        let conditions = vec![
            accepted(&check.errors, generation, ""),
            resolved_refs(&check.problems, generation),
        ];
        statuses.insert(
            (Kind::Consumer, key.clone()),
            ObjectStatus { generation, conditions, effective_plugins: Vec::new() },
        );
    }

    let mut interner = backends::BackendInterner::default();
    let mut models = Vec::new();
    let mut rule_plugins = BTreeMap::new();
    for (key, route) in &index.routes {
        let out = compile_route(index, key, route, memory, &catalog, &mut builder, &mut interner);
        if let Some(model) = out.model {
            models.push(model);
        }
        if let Some(good) = out.remember {
            new_memory.last_good_routes.insert(key.clone(), good);
        }
        if let Some(p) = out.rule_plugins {
            rule_plugins.insert(key.clone(), p);
        }
        statuses.insert((Kind::Route, key.clone()), out.status);
    }

    let backend_keys: Arc<[BackendKey]> = interner.into_keys().into();
    Compiled {
        routes: Arc::new(RouteTable::new(models)),
        backends: Arc::new(compile_backends(index, &backend_keys)),
        backend_keys,
        rule_plugins: Arc::new(rule_plugins),
        rate_limits: builder.rate_limits(),
        identity_headers: identity_headers(index, &new_memory),
        statuses: Arc::new(statuses),
        memory: Arc::new(new_memory),
    }
}

/// The `claimsToHeaders` header names of every jwt Plugin in the index and of every last
/// good Plugin version still in force, sorted and without duplicates.
fn identity_headers(index: &Index, memory: &Memory) -> Arc<[http::HeaderName]> {
    let specs = index
        .plugins
        .values()
        .map(|p| &p.spec)
        .chain(memory.last_good_plugins.values().map(|(_, spec)| spec));
    let names: std::collections::BTreeSet<String> = specs
        .filter_map(|spec| spec.jwt.as_ref())
        .flat_map(|jwt| jwt.claims_to_headers.iter())
        .map(|c| c.header.to_ascii_lowercase())
        .collect();
    names.iter().filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()).collect()
}

/// What compiling one Route yields.
struct RouteOutput {
    model: Option<weir_dataplane::RouteModel>,
    remember: Option<(i64, weir_crds::RouteSpec)>,
    rule_plugins: Option<Vec<Vec<AppliedPlugin>>>,
    status: ObjectStatus,
}

fn compile_route(
    index: &Index,
    key: &ObjectRef,
    route: &Route,
    memory: &Memory,
    catalog: &PluginCatalog,
    builder: &mut filters::FilterBuilder<'_>,
    interner: &mut backends::BackendInterner,
) -> RouteOutput {
    let ns = key.namespace.as_str();
    let generation = generation(&route.metadata);
    let created = route.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
    let object_key = ObjectKey::new(ns, &key.name);

    let (errors, served) = match routes::validate_route(ns, &route.spec) {
        Ok(valid) => (Vec::new(), Some((valid, generation, &route.spec))),
        Err(errors) => {
            let fallback = memory
                .last_good_routes
                .get(key)
                .and_then(|(g, spec)| routes::validate_route(ns, spec).ok().map(|v| (v, *g, spec)));
            (errors, fallback)
        }
    };

    let mut conditions = Vec::new();
    let suffix = match &served {
        Some((_, g, _)) if !errors.is_empty() => {
            format!("; the last good version (generation {g}) keeps serving")
        }
        _ => String::new(),
    };
    conditions.push(accepted(&errors, generation, &suffix));

    // References are checked on the current spec: that is what the user is editing.
    let mut problems = backend_problems(index, ns, &route.spec);
    problems.extend(plugins::rule_plugins(ns, &route.spec, catalog).problems);

    let mut out = RouteOutput {
        model: None,
        remember: None,
        rule_plugins: None,
        status: ObjectStatus::default(),
    };
    let mut effective = Vec::new();
    let mut filter_problems = Vec::new();
    match served {
        Some((valid, served_gen, spec)) => {
            // Programmed is about *this* generation: an invalid update is not programmed,
            // even though the last good generation keeps serving.
            if errors.is_empty() {
                conditions.push(condition(
                    PROGRAMMED,
                    true,
                    "Programmed",
                    "programmed".to_owned(),
                    generation,
                ));
            } else {
                let message = format!(
                    "generation {generation} is not programmed; the last good version (generation {served_gen}) keeps serving"
                );
                conditions.push(condition(PROGRAMMED, false, "Invalid", message, generation));
            }
            let resolved = plugins::rule_plugins(ns, spec, catalog);
            let mut rule_filters = Vec::with_capacity(resolved.per_rule.len());
            for (applied, unresolved) in resolved.per_rule.iter().zip(&resolved.unresolved) {
                let (chain, found) = builder.rule_filters(ns, applied, unresolved);
                rule_filters.push(chain);
                for p in found {
                    if !filter_problems.contains(&p) {
                        filter_problems.push(p);
                    }
                }
            }
            effective = effective_plugins(&resolved.per_rule);
            effective.extend(resolved.skipped.iter().map(|p| EffectivePlugin {
                type_: p.type_.to_owned(),
                source: p.source.to_string(),
                level: p.level.clone(),
            }));
            out.rule_plugins = Some(resolved.per_rule);
            out.model =
                Some(valid.into_model(object_key, served_gen, created, rule_filters, interner));
            out.remember = Some((served_gen, spec.clone()));
        }
        None => conditions.push(condition(
            PROGRAMMED,
            false,
            "Invalid",
            "not programmed: the route is invalid and has no last good version",
            generation,
        )),
    }
    problems.extend(filter_problems);
    // ResolvedRefs sits between Accepted and Programmed.
    conditions.insert(1, resolved_refs(&problems, generation));
    out.status = ObjectStatus { generation, conditions, effective_plugins: effective };
    out
}

/// `ResolvedRefs` problems of a Route's backends.
fn backend_problems(index: &Index, ns: &str, spec: &weir_crds::RouteSpec) -> Vec<RefProblem> {
    let mut problems = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, b) in rule.backends.iter().enumerate() {
            if b.service.is_empty() {
                continue;
            }
            let key = routes::backend_key(ns, b);
            if let Err(e) = backends::resolve_service_port(index, &key) {
                problems.push(RefProblem::new(
                    RefReason::BackendNotFound,
                    format!("spec.rules[{i}].backends[{j}]: {e}"),
                ));
            }
        }
    }
    problems
}

/// The Route-level summary of every rule's plugins: deduplicated, in phase order, then
/// from the least to the most specific level.
fn effective_plugins(per_rule: &[Vec<AppliedPlugin>]) -> Vec<EffectivePlugin> {
    let mut all: Vec<&AppliedPlugin> = per_rule.iter().flatten().collect();
    let level_rank = |l: &str| match l {
        "global" => 0,
        "route" => 1,
        _ => 2,
    };
    all.sort_by(|a, b| {
        let pa = plugins::PLUGIN_TYPES.iter().position(|t| *t == a.type_);
        let pb = plugins::PLUGIN_TYPES.iter().position(|t| *t == b.type_);
        (pa, level_rank(&a.level), &a.level, &a.source).cmp(&(
            pb,
            level_rank(&b.level),
            &b.level,
            &b.source,
        ))
    });
    all.dedup();
    all.into_iter()
        .map(|p| EffectivePlugin {
            type_: p.type_.to_owned(),
            source: p.source.to_string(),
            level: p.level.clone(),
        })
        .collect()
}
