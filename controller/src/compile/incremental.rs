//! Incremental compiles: what changed since the previous run, found by pointer comparison
//! of the index's `Arc`s (sources keep the same `Arc` for an unchanged object; a different
//! `Arc` with equal content also counts as unchanged), and a recompile of only the changed
//! Routes when nothing else changed.
//!
//! Only Routes are compiled one by one: Plugins, Consumers, Services, Secrets and the
//! controller namespace affect many Routes, so a change to any of them recompiles all.
//! BackendPolicies (and Secrets only they read) affect no Route: a change to them recompiles
//! the policies and the backend table only ([`compile_policies_only`]).
//! What crosses Routes is kept correct: backend ids stay stable (new keys get new ids, keys
//! no Route uses any more stay until the next full compile, bounded), filters come from the
//! previous run's [`FilterCache`] (so rules keep sharing one filter per Plugin), the rate
//! limits in use are counted per Plugin, identity headers depend only on Plugins.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weir_crds::{BackendPolicy, Consumer, Plugin};
use weir_dataplane::BackendKey;
use weir_dataplane::ratelimit::RateLimit;

use super::backends::{BackendInterner, compile_backends};
use super::filters::{FilterBuilder, FilterCache};
use super::plugins::PluginCatalog;
use super::route::{RouteContext, StatusCache, compile_route};
use super::tls;
use super::{
    Compiled, Memory, RouteMemory, backend_policy, compile_all, compile_endpoints_only,
    compile_policies_only, secret_refs_outside_policies,
};
use crate::index::{Index, Kind, ObjectRef, RouteObject};

/// The inputs that make every Route recompile when they change.
#[derive(Debug, Default, Clone)]
struct Shared {
    plugins: BTreeMap<ObjectRef, Arc<Plugin>>,
    consumers: BTreeMap<ObjectRef, Arc<Consumer>>,
    services: BTreeMap<ObjectRef, Arc<Service>>,
    secrets: BTreeMap<ObjectRef, Arc<Secret>>,
    controller_namespace: String,
    default_certificate: Option<ObjectRef>,
}

/// What a compile keeps for the next [`update`].
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    shared: Arc<Shared>,
    endpoint_slices: Arc<BTreeMap<ObjectRef, Arc<EndpointSlice>>>,
    backend_policies: Arc<BTreeMap<ObjectRef, Arc<BackendPolicy>>>,
    /// The same map as the compile's [`Memory::routes`] (a clone sharing every node: no
    /// second copy): the object it saw of each Route and its rate limits.
    routes: OrdMap<ObjectRef, RouteMemory>,
    catalog: Arc<PluginCatalog>,
    filters: FilterCache,
    consumer_rate_limits: Arc<[ObjectRef]>,
    /// Number of Routes whose filters use each rate-limit Plugin.
    rate_limit_users: BTreeMap<ObjectRef, usize>,
    interner: BackendInterner,
    /// Backend keys after the last full compile (bounds the unused keys kept since).
    full_backends: usize,
}

impl State {
    /// The state of a full compile of `index`.
    pub(crate) fn new(
        index: &Index,
        routes: OrdMap<ObjectRef, RouteMemory>,
        catalog: PluginCatalog,
        filters: FilterCache,
        consumer_rate_limits: Arc<[ObjectRef]>,
        rate_limit_users: BTreeMap<ObjectRef, usize>,
        interner: BackendInterner,
    ) -> Self {
        let shared = Shared {
            plugins: index.plugins.clone(),
            consumers: index.consumers.clone(),
            services: index.services.clone(),
            secrets: index.secrets.clone(),
            controller_namespace: index.controller_namespace().to_owned(),
            default_certificate: index.default_certificate.clone(),
        };
        State {
            shared: Arc::new(shared),
            endpoint_slices: Arc::new(index.endpoint_slices.clone()),
            backend_policies: Arc::new(index.backend_policies.clone()),
            routes,
            catalog: Arc::new(catalog),
            filters,
            consumer_rate_limits,
            rate_limit_users,
            full_backends: interner.keys().len(),
            interner,
        }
    }

    /// The inputs shared by every Route (`Arc::ptr_eq` tells whether a compile reused them).
    #[cfg(test)]
    pub(crate) fn shared_inputs(&self) -> Arc<impl std::fmt::Debug> {
        Arc::clone(&self.shared)
    }

    /// This state with the index's EndpointSlices.
    pub(crate) fn with_endpoints(&self, index: &Index) -> Self {
        State { endpoint_slices: Arc::new(index.endpoint_slices.clone()), ..self.clone() }
    }

    /// This state with the index's BackendPolicies, Secrets and EndpointSlices (after
    /// [`compile_policies_only`], which read them).
    pub(crate) fn with_policies(&self, index: &Index) -> Self {
        let shared = Shared { secrets: index.secrets.clone(), ..Shared::clone(&self.shared) };
        State {
            shared: Arc::new(shared),
            endpoint_slices: Arc::new(index.endpoint_slices.clone()),
            backend_policies: Arc::new(index.backend_policies.clone()),
            ..self.clone()
        }
    }
}

/// Counts one more user of each rate limit.
pub(crate) fn acquire(users: &mut BTreeMap<ObjectRef, usize>, rate_limits: &[ObjectRef]) {
    for rl in rate_limits {
        *users.entry(rl.clone()).or_default() += 1;
    }
}

fn release(users: &mut BTreeMap<ObjectRef, usize>, rate_limits: &[ObjectRef]) {
    for rl in rate_limits {
        if let Some(n) = users.get_mut(rl) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(rl);
            }
        }
    }
}

/// The rate limits some Consumer or Route uses, in Plugin order.
pub(crate) fn rate_limits_in_use(
    filters: &FilterCache,
    consumers: &[ObjectRef],
    users: &BTreeMap<ObjectRef, usize>,
) -> Vec<Arc<RateLimit>> {
    filters
        .rate_limits
        .iter()
        .filter(|(k, _)| users.contains_key(*k) || consumers.contains(*k))
        .map(|(_, rl)| Arc::clone(rl))
        .collect()
}

/// What changed in the index since a compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Unchanged,
    /// Only EndpointSlices.
    Endpoints,
    /// Routes (added, changed or removed), and maybe EndpointSlices; nothing else.
    Routes {
        /// Routes gone from the index.
        removed: Vec<ObjectRef>,
        /// Routes added or changed.
        changed: Vec<ObjectRef>,
        /// True when EndpointSlices changed too.
        endpoints: bool,
    },
    /// Something else: recompile everything.
    Full,
}

fn same_map<T>(
    a: &BTreeMap<ObjectRef, Arc<T>>,
    b: &BTreeMap<ObjectRef, Arc<T>>,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && (Arc::ptr_eq(va, vb) || same(va, vb)))
}

/// True when two versions of a Route compile the same (status aside).
fn same_route(a: &Arc<RouteObject>, b: &Arc<RouteObject>) -> bool {
    Arc::ptr_eq(a, b) || (a.metadata == b.metadata && a.spec == b.spec)
}

/// Whether Secrets changed since `state`: `None` when none did, `Some(true)` when every
/// changed Secret is read only by BackendPolicies (old or new), `Some(false)` otherwise.
fn secrets_changed(index: &Index, state: &State) -> Option<bool> {
    let (new, old) = (&index.secrets, &state.shared.secrets);
    if same_map(new, old, |a, b| a == b) {
        return None;
    }
    let mut changed: Vec<&ObjectRef> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| !Arc::ptr_eq(o, v) && o != *v))
        .map(|(k, _)| k)
        .collect();
    changed.extend(old.keys().filter(|k| !new.contains_key(*k)));
    let old_index =
        Index { backend_policies: BTreeMap::clone(&state.backend_policies), ..Index::default() };
    let mut policy_refs = backend_policy::referenced_secrets(index);
    policy_refs.extend(backend_policy::referenced_secrets(&old_index));
    let others = secret_refs_outside_policies(index);
    Some(changed.iter().all(|k| policy_refs.contains(*k) && !others.contains(*k)))
}

/// True when BackendPolicies, or Secrets only they read, changed since `state`.
pub(crate) fn policies_changed(index: &Index, state: &State) -> bool {
    !same_map(&index.backend_policies, &state.backend_policies, |a, b| {
        a.metadata == b.metadata && a.spec == b.spec
    }) || secrets_changed(index, state) == Some(true)
}

/// What changed in `index` since the compile that left `state`. O(n) pointer comparisons.
/// BackendPolicies (and the Secrets only they read) are not part of it: see
/// [`policies_changed`].
pub(crate) fn changes(index: &Index, state: &State) -> Change {
    let s = &state.shared;
    let same_others = index.controller_namespace() == s.controller_namespace
        && index.default_certificate == s.default_certificate
        && same_map(&index.plugins, &s.plugins, |a, b| {
            a.metadata == b.metadata && a.spec == b.spec
        })
        && same_map(&index.consumers, &s.consumers, |a, b| {
            a.metadata == b.metadata && a.spec == b.spec
        })
        && same_map(&index.services, &s.services, |a, b| a == b)
        && secrets_changed(index, state).is_none_or(|only_policies| only_policies);
    if !same_others {
        return Change::Full;
    }
    let endpoints = !same_map(&index.endpoint_slices, &state.endpoint_slices, |a, b| a == b);
    let (mut removed, mut changed) = (Vec::new(), Vec::new());
    let mut old = state.routes.iter().peekable();
    for (key, route) in &index.routes {
        while let Some((gone, _)) = old.next_if(|(k, _)| *k < key) {
            removed.push(gone.clone());
        }
        match old.next_if(|(k, _)| *k == key) {
            Some((_, seen)) if same_route(&seen.seen, route) => {}
            _ => changed.push(key.clone()),
        }
    }
    removed.extend(old.map(|(k, _)| k.clone()));
    match (removed.is_empty() && changed.is_empty(), endpoints) {
        (true, false) => Change::Unchanged,
        (true, true) => Change::Endpoints,
        (false, endpoints) => Change::Routes { removed, changed, endpoints },
    }
}

/// Compiles `index` (front ends already expanded) after `previous`: `None` when nothing changed, else the new output,
/// computed from what changed only (see the module documentation). Same result as
/// [`compile_all`]`(index, &previous.memory)` up to backend ids.
pub fn update_expanded(index: &Index, previous: &Compiled) -> Option<Compiled> {
    // A served certificate expired since: everything is recompiled (and the expiry reported).
    if previous.tls_recheck_at.is_some_and(|at| index.now() >= at) {
        return Some(compile_all(index, &previous.memory));
    }
    let policies = policies_changed(index, &previous.state);
    match changes(index, &previous.state) {
        Change::Unchanged if policies => Some(compile_policies_only(index, previous)),
        Change::Unchanged => None,
        Change::Endpoints if policies => Some(compile_policies_only(index, previous)),
        Change::Endpoints => Some(compile_endpoints_only(index, previous)),
        Change::Routes { removed, changed, endpoints } => {
            let state = &previous.state;
            let routes = &state.routes;
            let many = (removed.len() + changed.len()) * 4 > routes.len().max(64);
            let stale = state.interner.keys().len() > 2 * state.full_backends + 64;
            // TLS crosses Routes (host conflicts) and is rebuilt whole: a change to a Route
            // with `tls` (now, before, or remembered) recompiles everything.
            let memory = &previous.memory;
            let tls = removed.iter().chain(&changed).any(|key| {
                let before = routes.get(key).map(|r| &*r.seen);
                tls::touches_tls(key, index.routes.get(key).map(|r| &**r), memory)
                    || before.is_some_and(|r| r.spec.tls.is_some())
            });
            Some(if many || stale || tls {
                compile_all(index, &previous.memory)
            } else if policies {
                let routes = compile_changed(index, previous, &removed, &changed, endpoints);
                compile_policies_only(index, &routes)
            } else {
                compile_changed(index, previous, &removed, &changed, endpoints)
            })
        }
        Change::Full => Some(compile_all(index, &previous.memory)),
    }
}

/// Recompiles the `changed` Routes, drops the `removed` ones, and reuses everything else of
/// `previous`.
pub(crate) fn compile_changed(
    index: &Index,
    previous: &Compiled,
    removed: &[ObjectRef],
    changed: &[ObjectRef],
    endpoints: bool,
) -> Compiled {
    let state = &previous.state;
    let mut memory = Memory::clone(&previous.memory);
    let mut statuses = previous.statuses.clone();
    let mut rule_plugins = previous.rule_plugins.clone();
    let mut users = state.rate_limit_users.clone();
    let mut interner = state.interner.clone();
    let mut status_cache = StatusCache::default();
    let mut builder =
        FilterBuilder::with_cache(index, &state.catalog, &memory.jwks, state.filters.clone());
    let mut gone = Vec::with_capacity(removed.len() + changed.len());
    let mut added = Vec::with_capacity(changed.len());
    for key in removed {
        statuses.remove(&(Kind::Route, key.clone()));
        rule_plugins.remove(key);
        if let Some(old) = memory.routes.remove(key) {
            release(&mut users, &old.rate_limits);
        }
        gone.push(key.object_key());
    }
    let mut cx = RouteContext {
        index,
        memory: &previous.memory,
        catalog: &state.catalog,
        builder: &mut builder,
        interner: &mut interner,
        statuses: &mut status_cache,
        tls: &std::collections::BTreeMap::new(),
    };
    for key in changed {
        let Some(route) = index.routes.get(key) else { continue };
        let out = compile_route(&mut cx, key, route);
        if let Some(old) = memory.routes.get(key) {
            release(&mut users, &old.rate_limits);
        }
        acquire(&mut users, &out.rate_limits);
        match out.rule_plugins {
            Some(p) => rule_plugins.insert(key.clone(), p),
            None => rule_plugins.remove(key),
        };
        statuses.insert((Kind::Route, key.clone()), out.status);
        let remembered = RouteMemory {
            last_good: out.remember,
            seen: Arc::clone(route),
            rate_limits: out.rate_limits,
        };
        memory.routes.insert(key.clone(), remembered);
        gone.push(key.object_key());
        added.extend(out.model);
    }

    let filters = builder.into_cache();
    let rate_limits = rate_limits_in_use(&filters, &state.consumer_rate_limits, &users);
    let (backend_keys, backends) =
        if interner.keys().len() != previous.backend_keys.len() || endpoints {
            let keys: Arc<[BackendKey]> = interner.keys().into();
            let table = Arc::new(compile_backends(index, &keys, &previous.policies));
            (keys, table)
        } else {
            (Arc::clone(&previous.backend_keys), Arc::clone(&previous.backends))
        };
    let endpoint_slices = if endpoints {
        Arc::new(index.endpoint_slices.clone())
    } else {
        Arc::clone(&state.endpoint_slices)
    };
    let next = State {
        shared: Arc::clone(&state.shared),
        endpoint_slices,
        backend_policies: Arc::clone(&state.backend_policies),
        routes: memory.routes.clone(),
        catalog: Arc::clone(&state.catalog),
        filters,
        consumer_rate_limits: Arc::clone(&state.consumer_rate_limits),
        rate_limit_users: users,
        interner,
        full_backends: state.full_backends,
    };
    Compiled {
        routes: Arc::new(previous.routes.patched(&gone, added)),
        backends,
        backend_keys,
        rule_plugins,
        rate_limits,
        identity_headers: Arc::clone(&previous.identity_headers),
        statuses,
        policies: Arc::clone(&previous.policies),
        tls: Arc::clone(&previous.tls),
        tls_error: previous.tls_error.clone(),
        tls_recheck_at: previous.tls_recheck_at,
        memory: Arc::new(memory),
        state: Arc::new(next),
        conflicts: Arc::clone(&previous.conflicts),
    }
}
