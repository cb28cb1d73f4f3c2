//! `compile()`: the pure function from the [`Index`] to a data-plane snapshot and a status
//! for every object. The same code runs in `weir run` (both modes) and `weir validate`.
//!
//! Two update rates: Routes, Plugins, Consumers and Services change rarely; EndpointSlices
//! change often. [`compile`] builds everything; [`update`] compiles only what changed since
//! a previous run: nothing, only the [`BackendTable`] when only EndpointSlices changed
//! ([`compile_endpoints_only`]), only the BackendPolicies and the backend table when
//! nothing but BackendPolicies (and Secrets only they read) changed
//! ([`compile_policies_only`]), only the changed Routes when nothing but Routes (and
//! EndpointSlices) changed ([`incremental`]), else everything. Results, statuses and memory
//! are persistent maps (`imbl`), so a one-Route change costs O(log n) per map, not O(n).

pub mod backend_policy;
pub mod backends;
pub mod conditions;
pub mod conflicts;
pub mod consumers;
pub mod convert;
pub mod filters;
pub mod frontends;
pub mod incremental;
pub mod plugins;
pub mod ratelimit;
pub(crate) mod route;
pub(crate) mod routes;
#[cfg(test)]
mod tests;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use weir_crds::{Condition, EffectivePlugin};
use weir_dataplane::filter::jwt::JwksRegistry;
use weir_dataplane::ratelimit::RateLimit;
use weir_dataplane::tls::{HostTls, TlsTable};
use weir_dataplane::{BackendKey, BackendTable, RouteTable};

use crate::index::{Index, Kind, ObjectRef, RouteObject};
pub use backends::compile_backends;
use conditions::accepted;
use incremental::State;
pub use plugins::AppliedPlugin;
pub use routes::{MAX_RETRY_ATTEMPTS, MAX_WEIGHT};

/// What the compiler remembers between runs: the last good version of every Route and
/// Plugin, so an invalid update keeps the previous version serving (an authentication
/// Plugin broken by an edit keeps protecting its routes), and the remote JWKS in use (runtime
/// state that outlives snapshots). Owned by the caller and passed back in.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// What the compiler remembers of each Route of the last compile: its last good
    /// version and what that compile saw of it. One map for both (memory per Route: each
    /// persistent map keyed by Route costs ~100 bytes per Route).
    pub routes: OrdMap<ObjectRef, RouteMemory>,
    /// Last accepted spec and generation of each Plugin.
    pub last_good_plugins: BTreeMap<ObjectRef, (i64, weir_crds::PluginSpec)>,
    /// Remote JWKS shared by successive snapshots (clones share the registry).
    pub jwks: JwksRegistry,
    /// The metric handles of rules, shared by successive snapshots (clones share the
    /// registry): counters survive reloads.
    pub stats: weir_dataplane::observe::stats::RouteStatsRegistry,
    /// Last good certificate of each Route with `tls`: it keeps serving the Route's hosts
    /// while its Secret is missing or invalid.
    pub last_good_tls: OrdMap<ObjectRef, Arc<HostTls>>,
    /// Last good `--default-certificate`.
    pub last_good_default_tls: Option<Arc<HostTls>>,
    /// Certificates built by the last compile, by identity, with the Secrets they were
    /// built from: reused while those Secrets are unchanged and the certificate is within
    /// its dates (parsing and checking keys is the costly part of a compile with many
    /// TLS Routes).
    pub tls_built: OrdMap<Arc<str>, tls::Built>,
    /// Last good version (generation and object) of each BackendPolicy: an invalid update
    /// keeps it in force.
    pub last_good_policies: OrdMap<ObjectRef, (i64, Arc<weir_crds::BackendPolicy>)>,
    /// The compiled BackendPolicies of the last compile, per Service, with their inputs:
    /// reused (the same `Arc`) while the policy and its Secrets are unchanged, so the data
    /// plane keeps the runtime state bound to them.
    pub policies_built: OrdMap<ObjectRef, Vec<backend_policy::Built>>,
}

/// What the compiler remembers of one Route ([`Memory::routes`]).
#[derive(Debug, Clone)]
pub struct RouteMemory {
    /// Last accepted generation of the Route and the object itself (shared with the index
    /// that held it, not a copy of its spec); `None` when no version was accepted.
    pub last_good: Option<(i64, Arc<RouteObject>)>,
    /// The object the last compile saw (what the next [`update`] compares the index with).
    pub(crate) seen: Arc<RouteObject>,
    /// The rate-limit Plugins its filters use.
    pub(crate) rate_limits: Box<[ObjectRef]>,
}

impl Memory {
    /// The last accepted generation and object of the Route `key`, if any.
    pub fn last_good_route(&self, key: &ObjectRef) -> Option<&(i64, Arc<RouteObject>)> {
        self.routes.get(key)?.last_good.as_ref()
    }

    /// Every Route with a last good version, in key order.
    pub fn last_good_routes(&self) -> impl Iterator<Item = (&ObjectRef, &(i64, Arc<RouteObject>))> {
        self.routes.iter().filter_map(|(key, r)| Some((key, r.last_good.as_ref()?)))
    }
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
    /// Gateway API kinds and Ingress: their whole `status` as the API defines it
    /// (Gateway `addresses`/`conditions`/`listeners`, HTTPRoute `parents`, Ingress
    /// `loadBalancer`), conditions without `lastTransitionTime`. For them `conditions`
    /// above is a summary in weir's shape (for `weir validate`, `/debug/status`, the
    /// dashboard). `None` for weir kinds.
    pub document: Option<serde_json::Value>,
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

/// The status of every weir object (Route, Plugin, Consumer, BackendPolicy), sorted by kind
/// and key. A
/// persistent map: clones are O(1) and share structure, and Routes with the common all-good
/// status share one `Arc`.
pub type Statuses = OrdMap<(Kind, ObjectRef), Arc<ObjectStatus>>;

/// Output of [`compile`].
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The route table.
    pub routes: Arc<RouteTable>,
    /// The backend table (endpoints).
    pub backends: Arc<BackendTable>,
    /// The key of every backend, indexed by `BackendId` (`backend_keys[id.0]`): the input of
    /// [`compile_backends`] when only endpoints changed. After incremental compiles it may
    /// also hold keys no Route uses any more (bounded; a full compile drops them).
    pub backend_keys: Arc<[BackendKey]>,
    /// The plugins of each rule of each served Route that has any (outer index = rule
    /// index; a Route without an entry has none), most specific level first resolved, in
    /// phase order (the filters built from them are in the route table).
    pub rule_plugins: OrdMap<ObjectRef, Arc<[Vec<AppliedPlugin>]>>,
    /// Every rate limit of the snapshot (one per `rateLimit` Plugin in use): the publisher
    /// binds them to their runtime limiters (`RateLimiters::publish`) before going live.
    pub rate_limits: Vec<Arc<RateLimit>>,
    /// Every `claimsToHeaders` header of every jwt Plugin (current or last good): the data
    /// plane removes them from every incoming request.
    pub identity_headers: Arc<[http::HeaderName]>,
    /// Status of every weir object (Route, Plugin, Consumer, BackendPolicy).
    pub statuses: Statuses,
    /// The BackendPolicy (and TLS) of each Service, attached to its backends.
    pub policies: Arc<backend_policy::Policies>,
    /// The HTTPS listener's certificates by SNI (Route hosts with `tls`, and the default).
    pub tls: Arc<TlsTable>,
    /// Why `--default-certificate` cannot be used, if it cannot (not a Route's status: the
    /// publisher logs it and shows it with the load errors).
    pub tls_error: Option<String>,
    /// When the first served certificate expires. The sources compile again once the clock
    /// passes it ([`update`] then recompiles everything), so the expiry is reported even
    /// when nothing else changes.
    pub tls_recheck_at: Option<std::time::SystemTime>,
    /// The memory to pass to the next run.
    pub memory: Arc<Memory>,
    /// What the next [`update`] compares the index with and reuses.
    pub(crate) state: Arc<State>,
    /// Exact match conflicts between Routes, kept for the next [`update`].
    pub(crate) conflicts: Arc<conflicts::Conflicts>,
}

impl Compiled {
    /// For heap measurements (`examples/memprobe.rs`): the parts of this compile by name,
    /// so a probe can drop them one by one and see what each holds alone.
    #[doc(hidden)]
    pub fn into_parts(self) -> Vec<(&'static str, Box<dyn std::any::Any>)> {
        vec![
            ("conflicts", Box::new(self.conflicts)),
            ("incremental state", Box::new(self.state)),
            ("memory (last good)", Box::new(self.memory)),
            ("statuses", Box::new(self.statuses)),
            ("rule plugins", Box::new(self.rule_plugins)),
            ("route table (models, rules, router)", Box::new(self.routes)),
            (
                "backends, keys, policies, tls",
                Box::new((self.backends, self.backend_keys, self.policies, self.tls)),
            ),
            ("rest", Box::new((self.rate_limits, self.identity_headers))),
        ]
    }
}

/// Recompiles the BackendPolicies of `previous` (their statuses and the policy of every
/// Service) and rebuilds its backend table; Routes, Plugins and Consumers are reused. Use it
/// when nothing but BackendPolicies, the Secrets only they refer to, and EndpointSlices
/// changed.
pub fn compile_policies_only(index: &Index, previous: &Compiled) -> Compiled {
    let mut memory = Memory::clone(&previous.memory);
    let out = backend_policy::compile_policies(index, &previous.memory, &mut memory);
    let mut statuses = previous.statuses.clone();
    let stale: Vec<(Kind, ObjectRef)> =
        statuses.keys().filter(|(kind, _)| *kind == Kind::BackendPolicy).cloned().collect();
    for id in stale {
        statuses.remove(&id);
    }
    for (key, status) in out.statuses {
        statuses.insert((Kind::BackendPolicy, key), status);
    }
    Compiled {
        routes: Arc::clone(&previous.routes),
        backends: Arc::new(compile_backends(index, &previous.backend_keys, &out.policies)),
        backend_keys: Arc::clone(&previous.backend_keys),
        rule_plugins: previous.rule_plugins.clone(),
        rate_limits: previous.rate_limits.clone(),
        identity_headers: Arc::clone(&previous.identity_headers),
        statuses,
        policies: out.policies,
        tls: Arc::clone(&previous.tls),
        tls_error: previous.tls_error.clone(),
        tls_recheck_at: previous.tls_recheck_at,
        memory: Arc::new(memory),
        state: Arc::new(previous.state.with_policies(index)),
        conflicts: Arc::clone(&previous.conflicts),
    }
}

/// Rebuilds only the backend table of `previous` from the index's current Services and
/// EndpointSlices. Use it when nothing but EndpointSlices changed: the route table `Arc`,
/// the statuses and the memory are shared with `previous`.
pub fn compile_endpoints_only(index: &Index, previous: &Compiled) -> Compiled {
    Compiled {
        routes: Arc::clone(&previous.routes),
        backends: Arc::new(compile_backends(index, &previous.backend_keys, &previous.policies)),
        backend_keys: Arc::clone(&previous.backend_keys),
        rule_plugins: previous.rule_plugins.clone(),
        rate_limits: previous.rate_limits.clone(),
        identity_headers: Arc::clone(&previous.identity_headers),
        statuses: previous.statuses.clone(),
        policies: Arc::clone(&previous.policies),
        tls: Arc::clone(&previous.tls),
        tls_error: previous.tls_error.clone(),
        tls_recheck_at: previous.tls_recheck_at,
        memory: Arc::clone(&previous.memory),
        state: Arc::new(previous.state.with_endpoints(index)),
        conflicts: Arc::clone(&previous.conflicts),
    }
}

fn generation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.generation.unwrap_or(0)
}

/// Compiles the index. Pure: same input, same output; no I/O, no clock.
///
/// Gateway API objects and Ingresses are expanded into derived Routes and Plugins first
/// ([`frontends::expand`]) and get their statuses from them last ([`frontends::finish`]).
pub fn compile(index: &Index, memory: &Memory) -> Compiled {
    let expanded = frontends::expand(index);
    let mut out = compile_all(&expanded.index, memory);
    out.conflicts =
        Arc::new(conflicts::Conflicts::update(None, &expanded.index, &mut out.statuses));
    frontends::finish(&expanded, &mut out.statuses);
    out
}

/// Compiles only what changed since `previous` (see [`incremental::update_expanded`]);
/// `None` when nothing did. Front-end statuses are recomputed every time: a change that
/// alters only them (a GatewayClass, a listener nothing attaches to) returns `previous`
/// with the new statuses.
pub fn update(index: &Index, previous: &Compiled) -> Option<Compiled> {
    let expanded = frontends::expand(index);
    match incremental::update_expanded(&expanded.index, previous) {
        Some(mut next) => {
            next.conflicts = Arc::new(conflicts::Conflicts::update(
                Some(previous),
                &expanded.index,
                &mut next.statuses,
            ));
            frontends::finish(&expanded, &mut next.statuses);
            Some(next)
        }
        None => {
            let mut statuses = previous.statuses.clone();
            frontends::finish(&expanded, &mut statuses);
            let changed = !statuses.ptr_eq(&previous.statuses) && statuses != previous.statuses;
            changed.then(|| Compiled { statuses, ..previous.clone() })
        }
    }
}

/// [`compile`] of an index whose front ends are already expanded.
pub(crate) fn compile_all(index: &Index, memory: &Memory) -> Compiled {
    let mut statuses = Statuses::new();
    let mut new_memory =
        Memory { jwks: memory.jwks.clone(), stats: memory.stats.clone(), ..Memory::default() };
    let (catalog, plugin_results) = plugins::catalog(
        index,
        identity_headers(index, memory),
        &memory.last_good_plugins,
        &mut new_memory.last_good_plugins,
    );
    for (key, plugin) in &index.plugins {
        let generation = generation(&plugin.metadata);
        let condition = match plugin_results.get(key) {
            Some((Err(rejection), last_good)) => {
                let suffix = match last_good {
                    Some(g) => format!("; the last good version (generation {g}) keeps serving"),
                    None => String::new(),
                };
                conditions::rejected(
                    rejection.reason.as_str(),
                    &rejection.errors,
                    generation,
                    &suffix,
                )
            }
            _ => accepted(&[], generation, ""),
        };
        let conditions = vec![condition];
        statuses.insert(
            (Kind::Plugin, key.clone()),
            Arc::new(ObjectStatus {
                generation,
                conditions,
                effective_plugins: Vec::new(),
                document: None,
            }),
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
            conditions::resolved_refs(&check.problems, generation),
        ];
        statuses.insert(
            (Kind::Consumer, key.clone()),
            Arc::new(ObjectStatus {
                generation,
                conditions,
                effective_plugins: Vec::new(),
                document: None,
            }),
        );
    }
    let consumer_rate_limits: Arc<[ObjectRef]> = builder.take_touched().into();
    // Before the Routes: a Route's TLS outcome (problems, redirect) is part of its compile.
    let tls = tls::compile_tls(index, memory, &catalog, &mut new_memory);
    let policies = backend_policy::compile_policies(index, memory, &mut new_memory);
    for (key, status) in policies.statuses {
        statuses.insert((Kind::BackendPolicy, key), status);
    }

    let mut interner = backends::BackendInterner::default();
    let mut status_cache = route::StatusCache::default();
    memory.stats.reserve(index.routes.len());
    let mut models = Vec::with_capacity(index.routes.len());
    let mut rule_plugins = OrdMap::new();
    let mut users = BTreeMap::new();
    // The two maps with an entry per Route, filled after the loop ([`insert_dense`]).
    let mut route_statuses = Vec::with_capacity(index.routes.len());
    let mut remembered = Vec::with_capacity(index.routes.len());
    let mut cx = route::RouteContext {
        index,
        memory,
        catalog: &catalog,
        builder: &mut builder,
        interner: &mut interner,
        statuses: &mut status_cache,
        tls: &tls.routes,
    };
    for (key, route) in &index.routes {
        let out = route::compile_route(&mut cx, key, route);
        if let Some(model) = out.model {
            models.push(model);
        }
        if let Some(p) = out.rule_plugins {
            rule_plugins.insert(key.clone(), p);
        }
        route_statuses.push(((Kind::Route, key.clone()), out.status));
        incremental::acquire(&mut users, &out.rate_limits);
        let route_memory = RouteMemory {
            last_good: out.remember,
            seen: Arc::clone(route),
            rate_limits: out.rate_limits,
        };
        remembered.push((key.clone(), route_memory));
    }
    insert_dense(&mut statuses, route_statuses);
    insert_dense(&mut new_memory.routes, remembered);

    let filters = builder.into_cache();
    let rate_limits = incremental::rate_limits_in_use(&filters, &consumer_rate_limits, &users);
    let backend_keys: Arc<[BackendKey]> = interner.keys().into();
    let state = State::new(
        index,
        new_memory.routes.clone(),
        catalog,
        filters,
        consumer_rate_limits,
        users,
        interner,
    );
    let memory = Arc::new(new_memory);
    Compiled {
        routes: Arc::new(RouteTable::new(models)),
        backends: Arc::new(compile_backends(index, &backend_keys, &policies.policies)),
        backend_keys,
        rule_plugins,
        rate_limits,
        identity_headers: identity_headers(index, &memory),
        statuses,
        policies: policies.policies,
        tls: tls.table,
        tls_error: tls.default_error,
        tls_recheck_at: tls.recheck_at,
        memory,
        state: Arc::new(state),
        conflicts: Arc::default(),
    }
}

/// Inserts `sorted` (in key order, none of its keys in `map`) into `map` so that its nodes
/// end up about 5/6 full instead of half full (memory per Route: the maps with an entry per
/// Route hold 64-entry nodes). `imbl` splits a full node into two halves, so keys inserted
/// in order leave every node but the last half full: the left half is never inserted into
/// again. Inserting five keys of every eight first leaves half-full nodes that each span
/// about 53 keys, and the other three of every eight then fill them without splitting.
/// The same map as inserting in order, in another shape.
pub(crate) fn insert_dense<K: Ord + Clone, V: Clone>(map: &mut OrdMap<K, V>, sorted: Vec<(K, V)>) {
    let mut later = Vec::with_capacity(sorted.len() / 8 * 3 + 3);
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i % 8 < 5 {
            map.insert(key, value);
        } else {
            later.push((key, value));
        }
    }
    for (key, value) in later {
        map.insert(key, value);
    }
}

/// The Secrets the compiler reads for anything but BackendPolicies: Consumer credentials,
/// JWT Plugins' JWKS Secrets, Route certificates and client CAs, the default certificate.
pub fn secret_refs_outside_policies(index: &Index) -> std::collections::BTreeSet<ObjectRef> {
    let mut out = std::collections::BTreeSet::new();
    for (key, consumer) in &index.consumers {
        for credential in &consumer.spec.credentials {
            for secret in [&credential.api_key, &credential.jwt].into_iter().flatten() {
                out.insert(ObjectRef::new(key.namespace.clone(), secret.secret_ref.name.clone()));
            }
        }
    }
    for (key, plugin) in &index.plugins {
        if let Some(secret) = plugin.spec.jwt.as_ref().and_then(|j| j.jwks_secret_ref.as_ref()) {
            out.insert(ObjectRef::new(key.namespace.clone(), secret.name.clone()));
        }
    }
    for (key, route) in &index.routes {
        let Some(tls) = &route.spec.tls else { continue };
        let ca = tls.client_ca.as_ref().map(|ca| &ca.secret_ref);
        if !tls.secret_ref.name.is_empty() {
            let ns = tls.secret_namespace.as_deref().unwrap_or(&key.namespace);
            out.insert(ObjectRef::new(ns, tls.secret_ref.name.clone()));
        }
        if let Some(secret) = ca
            && !secret.name.is_empty()
        {
            out.insert(ObjectRef::new(key.namespace.clone(), secret.name.clone()));
        }
    }
    out.extend(index.default_certificate.clone());
    out.extend(frontends::referenced_secrets(index));
    out
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
