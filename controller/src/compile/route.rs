//! Compiling one Route: its data-plane model, its status, its rule plugins and what the
//! compiler remembers of it. Shared by the full [`compile`](super::compile) and the
//! incremental recompile of changed Routes ([`super::incremental`]).

use std::collections::HashMap;
use std::sync::Arc;

use weir_crds::EffectivePlugin;
use weir_dataplane::RouteModel;

use super::conditions::{PROGRAMMED, RefProblem, RefReason, accepted, condition, resolved_refs};
use super::plugins::{self, AppliedPlugin, PluginCatalog};
use super::{Memory, ObjectStatus, backends, filters, routes};
use crate::index::{Index, ObjectRef, RouteObject};

/// What compiling one Route yields.
pub(crate) struct RouteOutput {
    /// The model to serve (the current spec, or the last good one), if any.
    pub(crate) model: Option<RouteModel>,
    /// The version to remember as last good: generation and object.
    pub(crate) remember: Option<(i64, Arc<RouteObject>)>,
    /// The plugins of each rule, when the Route is served and some plugin applies.
    pub(crate) rule_plugins: Option<Arc<[Vec<AppliedPlugin>]>>,
    /// The status.
    pub(crate) status: Arc<ObjectStatus>,
    /// The rate-limit Plugins its filters use.
    pub(crate) rate_limits: Box<[ObjectRef]>,
}

/// Shares one status between the Routes whose status is the common all-good one (accepted,
/// references resolved, programmed, no plugins) for the same generation, so 100k simple
/// Routes hold a handful of statuses, not 100k.
#[derive(Debug, Default)]
pub(crate) struct StatusCache {
    all_good: HashMap<i64, Arc<ObjectStatus>>,
}

impl StatusCache {
    fn all_good(&mut self, generation: i64) -> Arc<ObjectStatus> {
        let status = self.all_good.entry(generation).or_insert_with(|| {
            Arc::new(ObjectStatus {
                generation,
                conditions: vec![
                    accepted(&[], generation, ""),
                    resolved_refs(&[], generation),
                    programmed(generation),
                ],
                effective_plugins: Vec::new(),
                document: None,
            })
        });
        Arc::clone(status)
    }
}

fn programmed(generation: i64) -> weir_crds::Condition {
    condition(PROGRAMMED, true, "Programmed", "programmed", generation)
}

/// Everything one Route's compile reads besides the Route itself.
pub(crate) struct RouteContext<'c, 'b> {
    pub(crate) index: &'c Index,
    /// The previous run's memory (last good versions).
    pub(crate) memory: &'c Memory,
    pub(crate) catalog: &'c PluginCatalog,
    pub(crate) builder: &'c mut filters::FilterBuilder<'b>,
    pub(crate) interner: &'c mut backends::BackendInterner,
    pub(crate) statuses: &'c mut StatusCache,
    /// The TLS outcome of every Route with `tls` ([`super::tls::compile_tls`]).
    pub(crate) tls: &'c std::collections::BTreeMap<ObjectRef, super::tls::RouteTls>,
}

/// Compiles one Route.
pub(crate) fn compile_route(
    cx: &mut RouteContext<'_, '_>,
    key: &ObjectRef,
    route: &Arc<RouteObject>,
) -> RouteOutput {
    let ns: &str = &key.namespace;
    let generation = route.metadata.generation.unwrap_or(0);
    let created = route.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
    let object_key = key.object_key();

    // References are checked on the current spec: that is what the user is editing.
    let current = plugins::rule_plugins(ns, &route.spec, cx.catalog);
    let validated = routes::validate_route(ns, &route.spec).and_then(|valid| {
        let errors = routes::rule_plugin_errors(&route.spec, &current, cx.catalog);
        if errors.is_empty() { Ok(valid) } else { Err(errors) }
    });
    let (errors, served) = match validated {
        Ok(valid) => (Vec::new(), Some((valid, generation, route))),
        Err(errors) => {
            let fallback = cx.memory.last_good_route(key).and_then(|(g, good)| {
                let valid = routes::validate_route(ns, &good.spec).ok()?;
                let plugins = plugins::rule_plugins(ns, &good.spec, cx.catalog);
                routes::rule_plugin_errors(&good.spec, &plugins, cx.catalog)
                    .is_empty()
                    .then_some((valid, *g, good))
            });
            (errors, fallback)
        }
    };

    let mut problems = backend_problems(cx.index, ns, &route.spec);
    let mut current = current;
    problems.append(&mut current.problems);
    let tls = cx.tls.get(key);
    problems.extend(tls.iter().flat_map(|t| t.problems.iter().cloned()));
    let https_redirect = tls.is_some_and(|t| t.redirect);

    let mut out = RouteOutput {
        model: None,
        remember: None,
        rule_plugins: None,
        status: Arc::default(),
        rate_limits: Box::default(),
    };
    let mut effective = Vec::new();
    let mut filter_problems = Vec::new();
    let programmed_condition = match served {
        Some((valid, served_gen, served_route)) => {
            // The current spec's plugins when it is the one served (the same function of
            // the same spec: computed once).
            let resolved = if Arc::ptr_eq(served_route, route) {
                current
            } else {
                plugins::rule_plugins(ns, &served_route.spec, cx.catalog)
            };
            let mut rule_filters = Vec::with_capacity(resolved.per_rule.len());
            // What really runs: a rule that fails closed (503) runs none of its plugins,
            // so they are not effective there.
            let mut running: Vec<Vec<AppliedPlugin>> = Vec::with_capacity(resolved.per_rule.len());
            for (applied, unresolved) in resolved.per_rule.iter().zip(&resolved.unresolved) {
                let (chain, found) = cx.builder.rule_filters(key, applied, unresolved, cx.interner);
                let closed = matches!(chain.first(), Some(weir_dataplane::Filter::Unavailable(_)));
                running.push(if closed { Vec::new() } else { applied.clone() });
                rule_filters.push(chain);
                for p in found {
                    if !filter_problems.contains(&p) {
                        filter_problems.push(p);
                    }
                }
            }
            out.rate_limits = cx.builder.take_touched();
            effective = effective_plugins(&running);
            effective.extend(resolved.skipped.iter().map(|p| EffectivePlugin {
                type_: p.kind.as_str().to_owned(),
                source: p.source.to_string(),
                level: p.level.clone(),
            }));
            if resolved.per_rule.iter().any(|r| !r.is_empty()) {
                out.rule_plugins = Some(resolved.per_rule.into());
            }
            out.model = Some(valid.into_model(
                object_key,
                served_gen,
                created,
                rule_filters,
                https_redirect,
                cx.interner,
                &cx.memory.stats,
            ));
            out.remember = Some((served_gen, Arc::clone(served_route)));
            // Programmed is about *this* generation: an invalid update is not programmed,
            // even though the last good generation keeps serving. (`None`: programmed,
            // built only when the status is not the shared all-good one.)
            if errors.is_empty() {
                None
            } else {
                let message = format!(
                    "generation {generation} is not programmed; the last good version (generation {served_gen}) keeps serving"
                );
                Some(condition(PROGRAMMED, false, "Invalid", message, generation))
            }
        }
        None => Some(condition(
            PROGRAMMED,
            false,
            "Invalid",
            "not programmed: the route is invalid and has no last good version",
            generation,
        )),
    };
    problems.extend(filter_problems);
    let all_good = errors.is_empty() && problems.is_empty() && out.model.is_some();
    out.status = if all_good && effective.is_empty() {
        cx.statuses.all_good(generation)
    } else {
        let suffix = match &out.remember {
            Some((g, _)) if !errors.is_empty() => {
                format!("; the last good version (generation {g}) keeps serving")
            }
            _ => String::new(),
        };
        let conditions = vec![
            accepted(&errors, generation, &suffix),
            resolved_refs(&problems, generation),
            programmed_condition.unwrap_or_else(|| programmed(generation)),
        ];
        Arc::new(ObjectStatus {
            generation,
            conditions,
            effective_plugins: effective,
            document: None,
        })
    };
    out
}

/// `ResolvedRefs` problems of a Route's backends.
fn backend_problems(index: &Index, ns: &str, spec: &weir_crds::RouteSpec) -> Vec<RefProblem> {
    let mut problems = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, b) in rule.backends.iter().enumerate() {
            // Invalid backends of derived Routes are reported by their front end.
            if b.service.is_empty() || b.invalid.is_some() {
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
        for (j, key) in routes::aggregate::part_backends(ns, rule) {
            if let Err(e) = backends::resolve_service_port(index, &key) {
                problems.push(RefProblem::new(
                    RefReason::BackendNotFound,
                    format!("spec.rules[{i}].aggregate.parts[{j}]: {e}"),
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
    let level_rank = plugins::level_rank;
    all.sort_by(|a, b| {
        (a.kind, level_rank(&a.level), &a.level, &a.source).cmp(&(
            b.kind,
            level_rank(&b.level),
            &b.level,
            &b.source,
        ))
    });
    all.dedup();
    all.into_iter()
        .map(|p| EffectivePlugin {
            type_: p.kind.as_str().to_owned(),
            source: p.source.to_string(),
            level: p.level.clone(),
        })
        .collect()
}
