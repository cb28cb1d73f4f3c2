//! Publishing: index → `compile()` → snapshot → data plane, and the shared status view that
//! the admin port serves.
//!
//! A [`Publisher`] is owned by the source (the directory watcher in standalone mode). Each
//! [`Publisher::apply`] compiles only what changed ([`compile::update`]: nothing, only
//! endpoints, only the changed Routes, or everything),
//! publishes a new snapshot version only when its content changed, then exposes the
//! statuses — so `Programmed=True` is visible only once the data plane serves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use weir_crds::{Condition, EffectivePlugin};
use weir_dataplane::{DataPlane, Snapshot};

use crate::compile::{self, Compiled, Memory, ObjectStatus, Statuses, compile};
use crate::index::{Index, Kind, ObjectRef};
use crate::load::LoadError;

/// One object's status as served by `/debug/status` (with its kind, namespace and name,
/// which [`ObjectViews`] holds as the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    /// `metadata.generation` the conditions describe.
    pub generation: i64,
    /// Conditions, with `lastTransitionTime`.
    pub conditions: Vec<Condition>,
    /// Routes only: the plugins that apply.
    pub effective_plugins: Vec<EffectivePlugin>,
}

/// Everything the admin port shows about the configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusView {
    /// Live snapshot version (0 before the first publish).
    pub version: u64,
    /// True once the first snapshot is live.
    pub ready: bool,
    /// Current load errors (file, document, reason).
    pub errors: Vec<LoadError>,
    /// Every weir object with its conditions, sorted by kind, namespace and name. Shared
    /// between successive views: an object whose status did not change keeps its `Arc`.
    pub objects: ObjectViews,
}

/// The view of every weir object, by kind and key, serialised as a list.
///
/// The views are not built for every object at each publish: an object whose status has
/// not changed since the first statuses these views saw (`since`) shows its current status
/// with `lastTransitionTime` `since`, made when read. Only the objects added or changed
/// after that have a view of their own (`changed`), which keeps the times of their
/// conditions whose status stayed the same. So a full compile of 100k Routes does not fill
/// a third persistent map with an entry per Route (a tenth of its time, and memory) for
/// what only `/debug/status` and the dashboard read.
#[derive(Debug, Clone, Default)]
pub struct ObjectViews {
    /// The statuses described (those of the live compile).
    statuses: Statuses,
    /// When the objects without an entry in `changed` got their status.
    since: Arc<str>,
    /// The objects added or whose status changed after `since`.
    changed: OrdMap<(Kind, ObjectRef), Arc<ObjectView>>,
}

impl ObjectViews {
    /// The views with their kind and key, sorted by kind, namespace and name. Derived
    /// Routes and Plugins report through their Gateway API or Ingress source: not listed.
    pub fn iter(&self) -> impl Iterator<Item = ObjectEntry<'_>> {
        self.statuses
            .iter()
            .filter(|((_, key), _)| !crate::compile::frontends::is_derived(key))
            .map(|(id, status)| ObjectEntry {
                kind: id.0.as_str(),
                namespace: &id.1.namespace,
                name: &id.1.name,
                view: self.view_of(id, status),
            })
    }

    /// The view of one object.
    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<Arc<ObjectView>> {
        if crate::compile::frontends::is_derived(key) {
            return None;
        }
        let id = (kind, key.clone());
        let status = self.statuses.get(&id)?;
        Some(self.view_of(&id, status))
    }

    fn view_of(&self, id: &(Kind, ObjectRef), status: &ObjectStatus) -> Arc<ObjectView> {
        match self.changed.get(id) {
            Some(view) => Arc::clone(view),
            None => Arc::new(object_view(status, None, &self.since)),
        }
    }

    /// Number of objects (a walk over the statuses: for tests and diagnostics, not a
    /// per-request path).
    pub fn len(&self) -> usize {
        self.statuses.keys().filter(|(_, key)| !crate::compile::frontends::is_derived(key)).count()
    }

    /// True when there is no object.
    pub fn is_empty(&self) -> bool {
        !self.statuses.keys().any(|(_, key)| !crate::compile::frontends::is_derived(key))
    }
}

/// One object of [`ObjectViews`]: what `/debug/status` lists.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectEntry<'a> {
    /// `Route`, `Plugin` or `Consumer`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Generation, conditions and effective plugins.
    #[serde(flatten)]
    pub view: Arc<ObjectView>,
}

impl Serialize for ObjectViews {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The metrics the controller side exports on `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `weir_config_reloads_total{result="published"|"unchanged"|"error"}`.
    pub reloads: Family<Vec<(String, String)>, Counter>,
    /// `weir_snapshot_version`.
    pub snapshot_version: Gauge,
    /// `weir_config_errors`: load errors currently reported.
    pub config_errors: Gauge,
    /// `weir_leader`: 1 while this replica holds the status writer's lease.
    pub leader: Gauge,
    /// `weir_status_writes_total{result="written"|"error"}` (Kubernetes mode).
    pub status_writes: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let reloads = Family::<Vec<(String, String)>, Counter>::default();
        let snapshot_version = Gauge::default();
        let config_errors = Gauge::default();
        let leader = Gauge::default();
        let status_writes = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "weir_config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "weir_snapshot_version",
            "Version of the live snapshot",
            snapshot_version.clone(),
        );
        registry.register(
            "weir_config_errors",
            "Configuration load errors currently reported",
            config_errors.clone(),
        );
        registry.register(
            "weir_leader",
            "1 while this replica holds the status writer's lease (Kubernetes mode)",
            leader.clone(),
        );
        registry.register(
            "weir_status_writes",
            "Status writes to the Kubernetes API, by result",
            status_writes.clone(),
        );
        Metrics { registry, reloads, snapshot_version, config_errors, leader, status_writes }
    }

    /// Counts one status write with `result`.
    pub fn status_write(&self, result: &str) {
        self.status_writes.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
    }

    fn reload(&self, result: &str) {
        self.reloads.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// State shared by the publisher, the admin server and the data plane.
#[derive(Debug)]
pub struct Shared {
    /// The data plane the snapshots are published to.
    pub dataplane: Arc<DataPlane>,
    /// The status view, replaced after every reload.
    pub status: ArcSwap<StatusView>,
    /// The compiled output behind the live snapshot (for `/debug/match`).
    pub live: ArcSwapOption<Compiled>,
    /// Metrics.
    pub metrics: Metrics,
    /// Leader state: 0 = no election (standalone), 1 = follower, 2 = leader.
    leader: AtomicU8,
    /// True once shutdown began: `/readyz` answers 503.
    draining: AtomicBool,
}

impl Shared {
    /// Shared state around a data plane; not ready until the first publish.
    pub fn new(dataplane: Arc<DataPlane>) -> Arc<Self> {
        let mut metrics = Metrics::new();
        dataplane.rate_limits.limiters.register_metrics(&mut metrics.registry);
        dataplane.listeners.register(&mut metrics.registry);
        dataplane.cache.register(&mut metrics.registry);
        weir_dataplane::observe::stats::register(&mut metrics.registry, &dataplane);
        if let Some(log) = &dataplane.observability.access_log {
            log.register(&mut metrics.registry);
        }
        if let Some(tracing) = &dataplane.observability.tracing {
            tracing.register(&mut metrics.registry);
        }
        Arc::new(Shared {
            dataplane,
            status: ArcSwap::from_pointee(StatusView::default()),
            live: ArcSwapOption::empty(),
            metrics,
            leader: AtomicU8::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown began.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Records whether this replica holds the status writer's lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(if leader { 2 } else { 1 }, Ordering::Relaxed);
        self.metrics.leader.set(i64::from(leader));
    }

    /// `Some(true)` while this replica holds the lease; `None` when there is no election.
    pub fn leader(&self) -> Option<bool> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == 2),
        }
    }
}

/// What [`Publisher::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot with this version is live.
    Published(u64),
    /// The index did not change; the live snapshot stays.
    Unchanged(u64),
}

/// Compiles and publishes; remembers what it needs between runs.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    memory: Arc<Memory>,
    last: Option<Arc<Compiled>>,
    version: u64,
    /// The status views of the last publish; a reload makes views only for the objects
    /// whose status differs (found by a diff of the two persistent maps of statuses).
    views: ObjectViews,
}

/// Drops `value` on a short-lived thread, so freeing a large previous compile (every route
/// model, status and remembered spec) is not on the publish path; inline if no thread starts.
fn drop_in_background<T: Send + 'static>(value: Option<T>) {
    let Some(value) = value else { return };
    // On a spawn error the closure, and `value` with it, is dropped here.
    let _spawned = std::thread::Builder::new().name("weir-drop".into()).spawn(move || {
        drop(value);
        crate::release::freed();
    });
}

/// True when `new` serves exactly what `live` serves (the same route, backend, identity
/// header and TLS tables, and the same rate limits): publishing it would change nothing.
fn serves_the_same(live: &Compiled, new: &Compiled) -> bool {
    Arc::ptr_eq(&live.routes, &new.routes)
        && Arc::ptr_eq(&live.backends, &new.backends)
        && Arc::ptr_eq(&live.identity_headers, &new.identity_headers)
        && Arc::ptr_eq(&live.tls, &new.tls)
        && live.tls_error == new.tls_error
        && live.rate_limits.len() == new.rate_limits.len()
        && live.rate_limits.iter().zip(&new.rate_limits).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// `SystemTime` as RFC 3339 UTC with second precision, e.g. `2024-05-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    match k8s_openapi::jiff::Timestamp::try_from(t) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_owned(),
    }
}

impl Publisher {
    /// A publisher for `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Publisher {
            shared,
            memory: Arc::default(),
            last: None,
            version: 0,
            views: ObjectViews::default(),
        }
    }

    /// How long until a served certificate expires, when the sources should compile again
    /// so the expiry is reported ([`Publisher::tls_recheck_due`]); at most an hour, after
    /// which the caller asks again. `None`: no certificate to watch.
    pub fn tls_recheck_in(&self) -> Option<std::time::Duration> {
        let at = self.last.as_ref()?.tls_recheck_at?;
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Some(left.min(std::time::Duration::from_secs(3600)))
    }

    /// True once the clock passed the expiry of a served certificate: the next
    /// [`Publisher::apply`] recompiles (even when nothing else changed) and reports it.
    pub fn tls_recheck_due(&self) -> bool {
        let at = self.last.as_ref().and_then(|l| l.tls_recheck_at);
        at.is_some_and(|at| SystemTime::now() >= at)
    }

    /// Compiles `index` if it changed, publishes the snapshot, and updates the status view
    /// with the statuses and `errors`.
    pub fn apply(&mut self, index: &Index, mut errors: Vec<LoadError>) -> Outcome {
        let metrics = &self.shared.metrics;
        let compiled = match &self.last {
            Some(previous) => compile::update(index, previous),
            None => Some(compile(index, &self.memory)),
        };
        let mut retired = None;
        let outcome = match compiled {
            None => Outcome::Unchanged(self.version),
            // Only statuses changed (e.g. a Gateway API or Ingress object that derives no
            // Route, or weir's own Service's addresses): the data plane keeps its
            // snapshot, and only the statuses move on.
            Some(compiled) if self.last.as_ref().is_some_and(|l| serves_the_same(l, &compiled)) => {
                self.memory = Arc::clone(&compiled.memory);
                let compiled = Arc::new(compiled);
                self.shared.live.store(Some(Arc::clone(&compiled)));
                retired = self.last.replace(compiled);
                Outcome::Unchanged(self.version)
            }
            Some(compiled) => {
                self.version += 1;
                self.memory = Arc::clone(&compiled.memory);
                // Bind the rate limits to their limiters (unchanged plugins keep their
                // counters) and drop those of removed or changed plugins, before going live.
                let dataplane = &self.shared.dataplane;
                dataplane.rate_limits.limiters.publish(compiled.rate_limits.iter().map(|r| &**r));
                self.shared.dataplane.publish(Snapshot {
                    version: self.version,
                    routes: Arc::clone(&compiled.routes),
                    backends: Arc::clone(&compiled.backends),
                    identity_headers: Arc::clone(&compiled.identity_headers),
                    tls: Arc::clone(&compiled.tls),
                });
                let before = self.last.as_ref().and_then(|l| l.tls_error.as_deref());
                match (&compiled.tls_error, before) {
                    (Some(e), b) if b != Some(e.as_str()) => {
                        tracing::error!("--default-certificate: {e}");
                    }
                    (None, Some(_)) => tracing::info!("--default-certificate: usable again"),
                    _ => {}
                }
                let compiled = Arc::new(compiled);
                self.shared.live.store(Some(Arc::clone(&compiled)));
                retired = self.last.replace(compiled);
                Outcome::Published(self.version)
            }
        };
        // The default certificate is a flag, not an object with a status: its problem is
        // shown with the load errors.
        if let Some(e) = self.last.as_ref().and_then(|l| l.tls_error.clone()) {
            errors.push(LoadError { file: "--default-certificate".into(), document: 0, reason: e });
        }
        metrics.config_errors.set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        metrics.reload(match (&outcome, errors.is_empty()) {
            (_, false) => "error",
            (Outcome::Published(_), true) => "published",
            (Outcome::Unchanged(_), true) => "unchanged",
        });
        metrics.snapshot_version.set(i64::try_from(self.version).unwrap_or(i64::MAX));
        let objects = self.objects(SystemTime::now());
        self.shared.status.store(Arc::new(StatusView {
            version: self.version,
            ready: self.version > 0,
            errors,
            objects,
        }));
        drop_in_background(retired);
        outcome
    }

    /// The status of every object, with `lastTransitionTime` kept per condition type while
    /// its status stays the same. Only the objects whose status changed get a new view.
    fn objects(&mut self, now: SystemTime) -> ObjectViews {
        let Some(compiled) = &self.last else { return ObjectViews::default() };
        let before = &self.views;
        if compiled.statuses.ptr_eq(&before.statuses) {
            return before.clone();
        }
        let now: Arc<str> = rfc3339(now).into();
        if before.statuses.is_empty() {
            // Every object is new: all of them got their status now.
            self.views = ObjectViews {
                statuses: compiled.statuses.clone(),
                since: now,
                changed: OrdMap::new(),
            };
            return self.views.clone();
        }
        let mut changed = before.changed.clone();
        // New objects with the same status (one shared `Arc`) share one view.
        let mut fresh: HashMap<usize, Arc<ObjectView>> = HashMap::new();
        for item in before.statuses.diff(&compiled.statuses) {
            let (DiffItem::Add((_, key), _)
            | DiffItem::Update { new: ((_, key), _), .. }
            | DiffItem::Remove((_, key), _)) = &item;
            if crate::compile::frontends::is_derived(key) {
                continue;
            }
            match item {
                DiffItem::Add(id, status) => {
                    let view = fresh
                        .entry(Arc::as_ptr(status) as usize)
                        .or_insert_with(|| Arc::new(object_view(status, None, &now)));
                    changed.insert(id.clone(), Arc::clone(view));
                }
                DiffItem::Update { old: (id, old), new: (_, status) } => {
                    let previous = before.view_of(id, old);
                    let view = object_view(status, Some(&previous), &now);
                    changed.insert(id.clone(), Arc::new(view));
                }
                DiffItem::Remove(id, _) => {
                    changed.remove(id);
                }
            }
        }
        self.views = ObjectViews {
            statuses: compiled.statuses.clone(),
            since: Arc::clone(&before.since),
            changed,
        };
        self.views.clone()
    }
}

/// The view of one object; each condition keeps the `lastTransitionTime` of `before`'s
/// condition of the same type when its status is the same, else gets `now`.
fn object_view(status: &ObjectStatus, before: Option<&ObjectView>, now: &str) -> ObjectView {
    let mut conditions = status.conditions.clone();
    for c in &mut conditions {
        let kept = before
            .and_then(|b| b.conditions.iter().find(|p| p.type_ == c.type_))
            .filter(|p| p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or_else(|| now.to_owned()));
    }
    ObjectView {
        generation: status.generation,
        conditions,
        effective_plugins: status.effective_plugins.clone(),
    }
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
