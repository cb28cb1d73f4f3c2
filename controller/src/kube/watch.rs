//! Watcher tasks: one `kube::runtime::watcher` per kind and namespace scope (and one per
//! referenced Secret), each converting its objects one by one and reporting [`Change`]s.
//!
//! Watch errors back off (kube's `default_backoff`) and resume; a watch that resumes too late
//! (410 Gone) re-lists, and the re-list replaces what the source held.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::index::{KINDS, WatchWhen};
use crate::index::{Kind, ObjectRef};
use crate::kube::convert::{Item, api_resource, item, key_of};
use crate::kube::state::{Change, SourceId, State};

/// Secrets with this label (value `true`) are watched, whether referenced or not.
pub const SECRET_LABEL: &str = "weir.dev/secret";

/// Scopes a namespaced kind is watched in: every namespace (`None`) or each listed one.
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() { vec![None] } else { namespaces.iter().cloned().map(Some).collect() }
}

/// The running watcher tasks; dropping it stops them all.
pub struct Watchers {
    client: Client,
    tx: mpsc::UnboundedSender<Change>,
    tasks: BTreeMap<SourceId, JoinHandle<()>>,
    secret_refs: BTreeSet<ObjectRef>,
    namespaces: Vec<String>,
    /// The [`WatchWhen::WhenServed`] kinds being watched.
    optional: BTreeSet<Kind>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Watchers {
    /// No watchers yet; changes go to `tx`. `namespaces`: the watched namespaces (empty =
    /// all).
    pub fn new(client: Client, tx: mpsc::UnboundedSender<Change>, namespaces: &[String]) -> Self {
        Watchers {
            client,
            tx,
            tasks: BTreeMap::new(),
            secret_refs: BTreeSet::new(),
            namespaces: namespaces.to_vec(),
            optional: BTreeSet::new(),
        }
    }

    fn start(&mut self, state: &mut State, id: SourceId, config: watcher::Config) {
        let kind = id.kind();
        let resource = api_resource(kind);
        let namespace = match &id {
            SourceId::Kind(_, ns) | SourceId::LabelledSecrets(ns) => ns.clone(),
            SourceId::SecretRef(key) => Some(key.namespace.to_string()),
        };
        let api = match namespace.as_deref() {
            Some(ns) => Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::<DynamicObject>::all_with(self.client.clone(), &resource),
        };
        state.add_source(id.clone());
        let task = tokio::spawn(watch(api, kind, id.clone(), config, self.tx.clone()));
        if let Some(old) = self.tasks.insert(id, task) {
            old.abort();
        }
    }

    fn stop(&mut self, state: &mut State, id: &SourceId) {
        if let Some(task) = self.tasks.remove(id) {
            task.abort();
        }
        state.remove_source(id);
    }

    /// The sources of one kind: one per namespace scope, or one cluster-wide for
    /// cluster-scoped kinds (whatever `--watch-namespaces` says).
    fn kind_sources(&self, kind: Kind) -> Vec<SourceId> {
        if kind.namespaced() {
            scopes(&self.namespaces).into_iter().map(|ns| SourceId::Kind(kind, ns)).collect()
        } else {
            vec![SourceId::Kind(kind, None)]
        }
    }

    /// Starts the watches of every [`WatchWhen::Always`] kind, and of labelled Secrets, in
    /// each namespace scope. When the controller's namespace is not among the watched
    /// ones, its Plugins are watched too (global Plugins live there).
    pub fn start_all(&mut self, state: &mut State, controller_ns: &str) {
        let namespaces = self.namespaces.clone();
        if !namespaces.is_empty() && !namespaces.iter().any(|n| n == controller_ns) {
            let id = SourceId::Kind(Kind::Plugin, Some(controller_ns.to_owned()));
            self.start(state, id, watcher::Config::default());
        }
        for info in KINDS.iter().filter(|i| i.watch == WatchWhen::Always) {
            for id in self.kind_sources(info.kind) {
                self.start(state, id, watcher::Config::default());
            }
        }
        for scope in scopes(&namespaces) {
            let labelled = watcher::Config::default().labels(&format!("{SECRET_LABEL}=true"));
            self.start(state, SourceId::LabelledSecrets(scope), labelled);
        }
    }

    /// Watches exactly the [`WatchWhen::WhenServed`] kinds in `served` (the API server
    /// serves their resource): starts the new ones, stops (and forgets the objects of)
    /// those no longer served. Returns whether anything changed.
    pub fn sync_served(&mut self, state: &mut State, served: &BTreeSet<Kind>) -> bool {
        let wanted: BTreeSet<Kind> =
            served.iter().copied().filter(|k| k.info().watch == WatchWhen::WhenServed).collect();
        if wanted == self.optional {
            return false;
        }
        for kind in self.optional.difference(&wanted).copied().collect::<Vec<_>>() {
            tracing::info!(kind = kind.as_str(), "API no longer served: watch stopped");
            for id in self.kind_sources(kind) {
                self.stop(state, &id);
            }
        }
        for kind in wanted.difference(&self.optional).copied().collect::<Vec<_>>() {
            tracing::info!(kind = kind.as_str(), "API served: watch started");
            for id in self.kind_sources(kind) {
                self.start(state, id, watcher::Config::default());
            }
        }
        self.optional = wanted;
        true
    }

    /// Watches exactly the Secrets in `wanted` (one watch each, by field selector on the
    /// name), starting new ones and stopping those no longer referenced. Returns whether
    /// anything was started.
    pub fn sync_secret_refs(&mut self, state: &mut State, wanted: &BTreeSet<ObjectRef>) -> bool {
        let stale: Vec<ObjectRef> = self.secret_refs.difference(wanted).cloned().collect();
        for key in stale {
            self.stop(state, &SourceId::SecretRef(key.clone()));
            self.secret_refs.remove(&key);
        }
        let new: Vec<ObjectRef> = wanted.difference(&self.secret_refs).cloned().collect();
        for key in &new {
            let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
            self.start(state, SourceId::SecretRef(key.clone()), config);
            self.secret_refs.insert(key.clone());
        }
        !new.is_empty()
    }
}

/// How often API discovery is repeated to notice Gateway API CRDs installed (or removed)
/// after start: `WEIR_API_DISCOVERY_INTERVAL` (e.g. `500ms`), else 10 s.
pub fn discovery_interval() -> std::time::Duration {
    std::env::var("WEIR_API_DISCOVERY_INTERVAL")
        .ok()
        .and_then(|v| weir_crds::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_secs(10))
}

/// The [`WatchWhen::WhenServed`] kinds the API server serves now, by API discovery of
/// their group/version. A group/version the server does not know (404) serves none; any
/// other error is returned (the caller keeps what it knew).
pub async fn served_kinds(client: &Client) -> Result<BTreeSet<Kind>, kube::Error> {
    let mut out = BTreeSet::new();
    let mut asked: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for info in KINDS.iter().filter(|i| i.watch == WatchWhen::WhenServed) {
        let api_version = info.kind.api_version();
        if !asked.contains_key(&api_version) {
            let plurals = match client.list_api_group_resources(&api_version).await {
                Ok(list) => Some(list.resources.into_iter().map(|r| r.name).collect()),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => return Err(e),
            };
            asked.insert(api_version.clone(), plurals);
        }
        if asked.get(&api_version).and_then(Option::as_ref).is_some_and(|p| p.contains(info.plural))
        {
            out.insert(info.kind);
        }
    }
    Ok(out)
}

/// Runs API discovery now and every [`discovery_interval`], sending the served optional
/// kinds whenever they change (the first result is always sent, even when discovery
/// failed: then nothing optional is watched until it succeeds).
pub async fn discover(client: Client, tx: tokio::sync::watch::Sender<Option<BTreeSet<Kind>>>) {
    let interval = discovery_interval();
    loop {
        match served_kinds(&client).await {
            Ok(kinds) => {
                if tx.borrow().as_ref() != Some(&kinds) {
                    tx.send_replace(Some(kinds));
                }
            }
            Err(e) => {
                tracing::warn!("API discovery of the Gateway API (retrying): {e}");
                if tx.borrow().is_none() {
                    tx.send_replace(Some(BTreeSet::new()));
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Logs an object that does not convert (weir kinds also report it in their status).
fn logged(item: Item) -> Item {
    if let Some(invalid) = &item.invalid {
        tracing::warn!(kind = item.kind.as_str(), object = %item.key, "invalid object: {}", invalid.message);
    }
    item
}

/// One watch: converts and forwards events until the receiver is gone.
async fn watch(
    api: Api<DynamicObject>,
    kind: Kind,
    id: SourceId,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<Change>,
) {
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing: Vec<Item> = Vec::new();
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(Event::Init) => {
                listing.clear();
                None
            }
            Ok(Event::InitApply(obj)) => {
                listing.push(logged(item(kind, obj)));
                None
            }
            Ok(Event::InitDone) => Some(Change::Relisted(id.clone(), std::mem::take(&mut listing))),
            Ok(Event::Apply(obj)) => Some(Change::Applied(id.clone(), logged(item(kind, obj)))),
            Ok(Event::Delete(obj)) => Some(Change::Deleted(id.clone(), key_of(kind, &obj))),
            Err(e) => {
                tracing::warn!(source = %id, "watch error (retrying with backoff): {e}");
                None
            }
        };
        if let Some(change) = change
            && tx.send(change).is_err()
        {
            return;
        }
    }
}
