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
use std::sync::atomic::{AtomicU8, Ordering};
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

/// The view of every weir object, by kind and key: a persistent map, so a reload updates
/// only the views of objects whose status changed. Serialised as a list.
#[derive(Debug, Clone, Default)]
pub struct ObjectViews(OrdMap<(Kind, ObjectRef), Arc<ObjectView>>);

impl ObjectViews {
    /// The views with their kind and key, sorted by kind, namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = ObjectEntry<'_>> {
        self.0.iter().map(|((kind, key), view)| ObjectEntry {
            kind: kind.as_str(),
            namespace: &key.namespace,
            name: &key.name,
            view,
        })
    }

    /// The view of one object.
    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<&Arc<ObjectView>> {
        self.0.get(&(kind, key.clone()))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no object.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One object of [`ObjectViews`]: what `/debug/status` lists.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ObjectEntry<'a> {
    /// `Route`, `Plugin` or `Consumer`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Generation, conditions and effective plugins.
    #[serde(flatten)]
    pub view: &'a Arc<ObjectView>,
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
}

impl Shared {
    /// Shared state around a data plane; not ready until the first publish.
    pub fn new(dataplane: Arc<DataPlane>) -> Arc<Self> {
        let mut metrics = Metrics::new();
        dataplane.rate_limits.limiters.register_metrics(&mut metrics.registry);
        Arc::new(Shared {
            dataplane,
            status: ArcSwap::from_pointee(StatusView::default()),
            live: ArcSwapOption::empty(),
            metrics,
            leader: AtomicU8::new(0),
        })
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
    /// The statuses `views` describe: a reload rebuilds only the views of objects whose
    /// status differs (found by a diff of the two persistent maps).
    view_statuses: Statuses,
    views: ObjectViews,
}

/// Drops `value` on a short-lived thread, so freeing a large previous compile (every route
/// model, status and remembered spec) is not on the publish path; inline if no thread starts.
fn drop_in_background<T: Send + 'static>(value: Option<T>) {
    let Some(value) = value else { return };
    // On a spawn error the closure, and `value` with it, is dropped here.
    let _spawned = std::thread::Builder::new().name("weir-drop".into()).spawn(move || drop(value));
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
            view_statuses: Statuses::new(),
            views: ObjectViews::default(),
        }
    }

    /// Compiles `index` if it changed, publishes the snapshot, and updates the status view
    /// with the statuses and `errors`.
    pub fn apply(&mut self, index: &Index, errors: Vec<LoadError>) -> Outcome {
        let metrics = &self.shared.metrics;
        metrics.config_errors.set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        let compiled = match &self.last {
            Some(previous) => compile::update(index, previous),
            None => Some(compile(index, &self.memory)),
        };
        let mut retired = None;
        let outcome = match compiled {
            None => Outcome::Unchanged(self.version),
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
                });
                let compiled = Arc::new(compiled);
                self.shared.live.store(Some(Arc::clone(&compiled)));
                retired = self.last.replace(compiled);
                Outcome::Published(self.version)
            }
        };
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
        if compiled.statuses.ptr_eq(&self.view_statuses) {
            return self.views.clone();
        }
        let now = rfc3339(now);
        let mut views = self.views.0.clone();
        // New objects with the same status (one shared `Arc`) share one view.
        let mut fresh: HashMap<usize, Arc<ObjectView>> = HashMap::new();
        for item in self.view_statuses.diff(&compiled.statuses) {
            match item {
                DiffItem::Add(id, status) => {
                    let view = fresh
                        .entry(Arc::as_ptr(status) as usize)
                        .or_insert_with(|| Arc::new(object_view(status, None, &now)));
                    views.insert(id.clone(), Arc::clone(view));
                }
                DiffItem::Update { new: (id, status), .. } => {
                    let view = object_view(status, views.get(id).map(|v| &**v), &now);
                    views.insert(id.clone(), Arc::new(view));
                }
                DiffItem::Remove(id, _) => {
                    views.remove(id);
                }
            }
        }
        self.views = ObjectViews(views);
        self.view_statuses = compiled.statuses.clone();
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::load::parse_file;

    #[test]
    fn formats_rfc3339_in_utc_seconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_250);
        assert_eq!(rfc3339(t), "2024-05-01T12:00:00Z");
    }

    fn index(yaml: &str) -> Index {
        let objects = parse_file("t.yaml", yaml).unwrap();
        let (mut index, errors) = crate::load::merge([("t.yaml", objects.as_slice())], "");
        assert!(errors.is_empty());
        for r in index.routes.values_mut() {
            Arc::make_mut(r).metadata.generation = Some(1);
        }
        index
    }

    const ROUTE: &str = "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\n\
        spec: {rules: [{backends: [{service: s, port: 80}]}]}\n";
    const SLICE: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\n\
        ports: [{port: 9001}]\nendpoints: [{addresses: [127.0.0.1]}]\n";

    #[test]
    fn publishes_only_when_the_index_changes_and_shares_routes_on_endpoint_changes() {
        let shared = Shared::new(DataPlane::new());
        let mut p = Publisher::new(Arc::clone(&shared));
        assert!(!shared.status.load().ready);
        let first = index(ROUTE);
        assert_eq!(p.apply(&first, Vec::new()), Outcome::Published(1));
        assert!(shared.status.load().ready);
        assert_eq!(shared.dataplane.current().version, 1);
        assert_eq!(p.apply(&first, Vec::new()), Outcome::Unchanged(1));

        let with_slice = index(&format!("{ROUTE}{SLICE}"));
        let routes_before = Arc::clone(&shared.dataplane.current().routes);
        assert_eq!(p.apply(&with_slice, Vec::new()), Outcome::Published(2));
        let live = shared.dataplane.current();
        assert!(Arc::ptr_eq(&routes_before, &live.routes), "endpoint change rebuilt routes");

        let status = shared.status.load();
        assert_eq!(status.version, 2);
        let route = status.objects.iter().find(|o| o.kind == "Route").unwrap().view;
        assert!(route.conditions.iter().all(|c| c.last_transition_time.is_some()));
        let metrics = shared.metrics.encode();
        assert!(metrics.contains("weir_snapshot_version 2"), "{metrics}");
        assert!(metrics.contains("weir_config_reloads_total{result=\"unchanged\"} 1"), "{metrics}");
    }

    #[test]
    fn change_detection_sees_every_kind_and_keeps_endpoints_and_routes_apart() {
        use crate::compile::incremental::{Change, changes};
        let base = index(&format!("{ROUTE}{SLICE}"));
        let compiled = compile(&base, &Memory::default());
        let state = &compiled.state;
        assert_eq!(changes(&base, state), Change::Unchanged);
        assert_eq!(changes(&base.clone(), state), Change::Unchanged);
        // Equal content in new `Arc`s (a re-parse) is unchanged too.
        assert_eq!(changes(&index(&format!("{ROUTE}{SLICE}")), state), Change::Unchanged);
        let route_changed =
            |c: Change| matches!(c, Change::Routes { changed, .. } if changed.len() == 1);
        let mut labelled = base.clone();
        let r = Arc::make_mut(labelled.routes.values_mut().next().unwrap());
        r.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
        assert!(route_changed(changes(&labelled, state)), "metadata change not seen");
        let mut moved = base.clone();
        let s = Arc::make_mut(moved.endpoint_slices.values_mut().next().unwrap());
        s.endpoints[0].addresses = vec!["127.0.0.2".to_owned()];
        assert_eq!(changes(&moved, state), Change::Endpoints, "endpoint change not seen");
        let mut secret = base.clone();
        let data = [("k".to_owned(), k8s_openapi::ByteString(b"v".to_vec()))].into();
        let s = k8s_openapi::api::core::v1::Secret { data: Some(data), ..Default::default() };
        secret.secrets.insert(ObjectRef::new("default", "s"), Arc::new(s.clone()));
        assert_eq!(changes(&secret, state), Change::Full);
        let with_secret = compile(&secret, &Memory::default());
        let mut changed = s;
        changed.data = Some([("k".to_owned(), k8s_openapi::ByteString(b"w".to_vec()))].into());
        secret.secrets.insert(ObjectRef::new("default", "s"), Arc::new(changed));
        assert_eq!(changes(&secret, &with_secret.state), Change::Full, "Secret change not seen");
        let mut namespaced = base.clone();
        namespaced.controller_namespace = "other".to_owned();
        assert_eq!(changes(&namespaced, state), Change::Full);
        let mut renamed = base.clone();
        let route = renamed.routes.remove(&ObjectRef::new("default", "r")).unwrap();
        renamed.routes.insert(ObjectRef::new("defaul", "tr"), route);
        assert_eq!(
            changes(&renamed, state),
            Change::Routes {
                removed: vec![ObjectRef::new("default", "r")],
                changed: vec![ObjectRef::new("defaul", "tr")],
                endpoints: false
            }
        );
    }

    #[test]
    fn publishing_binds_rate_limits_keeps_unchanged_ones_and_drops_removed_ones() {
        const LIMIT: &str = "---\napiVersion: weir.dev/v1alpha1\nkind: Plugin\n\
            metadata: {name: l}\nspec: {rateLimit: {limit: 5, window: 1m}}\n";
        let routed = ROUTE.replace("spec: {rules", "spec: {plugins: [l], rules");
        let shared = Shared::new(DataPlane::new());
        let limiters = &shared.dataplane.rate_limits.limiters;
        let mut p = Publisher::new(Arc::clone(&shared));
        p.apply(&index(&format!("{routed}{LIMIT}")), Vec::new());
        assert_eq!(limiters.len(), 1);
        let first = Arc::clone(&p.last.as_ref().unwrap().rate_limits[0]);
        let limiter = Arc::clone(limiters.bind(&first));
        // An endpoint change, a Route change and a full recompile keep the same limiter
        // (and counters); only the full recompile builds a new RateLimit.
        p.apply(&index(&format!("{routed}{LIMIT}{SLICE}")), Vec::new());
        let second = ROUTE.replace("name: r", "name: r2");
        let added = index(&format!("{routed}{LIMIT}{SLICE}---\n{second}"));
        assert_eq!(p.apply(&added, Vec::new()), Outcome::Published(3));
        assert!(Arc::ptr_eq(&first, &p.last.as_ref().unwrap().rate_limits[0]));
        const SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n\
            spec: {ports: [{port: 80}]}\n";
        let recompiled = index(&format!("{routed}{LIMIT}{SLICE}---\n{second}{SERVICE}"));
        assert_eq!(p.apply(&recompiled, Vec::new()), Outcome::Published(4));
        let live = &p.last.as_ref().unwrap().rate_limits[0];
        assert!(!Arc::ptr_eq(&first, live), "a new compile builds a new RateLimit");
        assert!(Arc::ptr_eq(&limiter, limiters.bind(live)), "counters were reset");
        assert_eq!(limiters.len(), 1);
        // No Route uses it any more: its limiter is dropped.
        p.apply(&index(&format!("{ROUTE}{LIMIT}")), Vec::new());
        assert!(limiters.is_empty());
        assert!(shared.metrics.encode().contains("weir_ratelimit_store_errors_total 0"));
    }

    #[test]
    fn keeps_transition_times_while_the_status_is_unchanged() {
        let shared = Shared::new(DataPlane::new());
        let mut p = Publisher::new(Arc::clone(&shared));
        p.apply(&index(ROUTE), Vec::new());
        p.view_statuses = Statuses::new();
        p.views = ObjectViews::default();
        let nth = |v: &ObjectViews, i: usize| Arc::clone(v.iter().nth(i).unwrap().view);
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let first = p.objects(t0);
        assert_eq!(
            nth(&first, 0).conditions[0].last_transition_time.as_deref(),
            Some("1970-01-01T00:01:40Z")
        );
        let times = |v: &ObjectViews, i: usize| -> Vec<(String, Option<String>)> {
            let c = &nth(v, i).conditions;
            c.iter().map(|c| (c.status.clone(), c.last_transition_time.clone())).collect()
        };
        // The same statuses in a new compile (a new `Arc`): the same times.
        let compiled = p.last.clone().unwrap();
        let mut copy = Compiled::clone(&compiled);
        copy.statuses =
            compiled.statuses.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect();
        p.last = Some(Arc::new(copy));
        let later = p.objects(t0 + Duration::from_secs(50));
        assert_eq!(times(&first, 0), times(&later, 0));
        assert!(
            Arc::ptr_eq(&nth(&first, 0), &nth(&later, 0)),
            "an unchanged status rebuilt its view"
        );

        // A new generation with the same conditions keeps their times; a condition whose
        // status flips gets the new time; a new object gets the new time.
        let mut edited = index(&format!("{ROUTE}---\n{}", ROUTE.replace("name: r", "name: r2")));
        let r = Arc::make_mut(edited.routes.get_mut(&ObjectRef::new("default", "r")).unwrap());
        r.metadata.generation = Some(2);
        r.spec.rules[0].backends[0].port = Some(0);
        let recompiled = compile(&edited, &p.memory);
        p.last = Some(Arc::new(recompiled));
        let t1 = t0 + Duration::from_secs(60);
        let third = p.objects(t1);
        assert_eq!(third.len(), 2);
        assert_eq!(nth(&third, 0).generation, 2);
        let (before, after) = (times(&first, 0), times(&third, 0));
        assert_eq!(before.len(), after.len());
        let mut flipped = 0;
        for (b, a) in before.iter().zip(&after) {
            if a.0 == b.0 {
                assert_eq!(a.1, b.1, "{before:?} -> {after:?}");
            } else {
                flipped += 1;
                assert_eq!(a.1.as_deref(), Some("1970-01-01T00:02:40Z"));
            }
        }
        assert!(flipped > 0, "the edit did not change a condition: {after:?}");
        assert!(times(&third, 1).iter().all(|t| t.1.as_deref() == Some("1970-01-01T00:02:40Z")));

        p.last = Some(compiled);
        let errors = vec![LoadError { file: "x.yaml".into(), document: 2, reason: "bad".into() }];
        assert_eq!(p.apply(&index(ROUTE), errors.clone()), Outcome::Unchanged(1));
        assert_eq!(shared.status.load().errors, errors);
    }

    /// `N` Routes (one path each) on one Service, generation 1.
    fn big_index(n: usize) -> Index {
        let mut index = index(ROUTE);
        let template = index.routes.values().next().unwrap().clone();
        index.routes.clear();
        for i in 0..n {
            let mut r = (*template).clone();
            r.metadata.name = Some(format!("r{i}"));
            r.spec.rules[0].matches = vec![weir_crds::RouteMatch {
                path: Some(weir_crds::PathMatch {
                    type_: weir_crds::PathMatchType::Prefix,
                    value: format!("/p{i}"),
                }),
                ..Default::default()
            }];
            index.routes.insert(ObjectRef::new("default", format!("r{i}")), Arc::new(r));
        }
        index
    }

    /// Hand-run timing of a one-Route change at scale (not in CI):
    /// `WEIR_BENCH_ROUTES=100000 cargo test -p weir-controller --release reload_at_scale -- --ignored --nocapture`
    #[test]
    #[ignore = "timing harness, run by hand"]
    fn reload_at_scale() {
        let n: usize =
            std::env::var("WEIR_BENCH_ROUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let shared = Shared::new(DataPlane::new());
        let mut p = Publisher::new(Arc::clone(&shared));
        let mut idx = big_index(n);
        let t = std::time::Instant::now();
        p.apply(&idx, Vec::new());
        eprintln!("{n} routes: first apply {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let full = compile(&idx, &p.memory);
        eprintln!("{n} routes: full compile() {:?}", t.elapsed());
        drop(full);
        let mut times = Vec::new();
        for round in 0..10u32 {
            let r = Arc::make_mut(idx.routes.get_mut(&ObjectRef::new("default", "r7")).unwrap());
            r.spec.rules[0].matches[0].path.as_mut().unwrap().value = format!("/changed{round}");
            r.metadata.generation = Some(i64::from(round) + 2);
            let t = std::time::Instant::now();
            let state = &p.last.as_ref().unwrap().state;
            let _change = crate::compile::incremental::changes(&idx, state);
            let t_detect = t.elapsed();
            let t = std::time::Instant::now();
            assert!(matches!(p.apply(&idx, Vec::new()), Outcome::Published(_)));
            times.push((t.elapsed(), t_detect));
        }
        let t = std::time::Instant::now();
        assert!(matches!(p.apply(&idx, Vec::new()), Outcome::Unchanged(_)));
        let unchanged = t.elapsed();
        times.sort();
        eprintln!(
            "{n} routes: one-route change apply p50 {:?} max {:?} (change detection alone {:?}); unchanged apply {:?}",
            times[5].0, times[9].0, times[5].1, unchanged,
        );
    }
}
