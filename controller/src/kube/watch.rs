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

use crate::index::{Kind, ObjectRef};
use crate::kube::convert::{Item, api_resource, item, key_of};
use crate::kube::state::{Change, SourceId, State};

/// Secrets with this label (value `true`) are watched, whether referenced or not.
pub const SECRET_LABEL: &str = "weir.dev/secret";

/// The kinds watched in every namespace scope.
pub const WATCHED_KINDS: [Kind; 6] = [
    Kind::Route,
    Kind::Plugin,
    Kind::Consumer,
    Kind::BackendPolicy,
    Kind::Service,
    Kind::EndpointSlice,
];

fn scope_name(namespace: Option<&str>) -> &str {
    namespace.unwrap_or("*")
}

/// Id of the watch of `kind` in a namespace (`None` = all namespaces).
pub fn kind_source(kind: Kind, namespace: Option<&str>) -> SourceId {
    format!("{}@{}", kind.as_str(), scope_name(namespace))
}

/// Id of the watch of labelled Secrets in a namespace scope.
pub fn labelled_secrets_source(namespace: Option<&str>) -> SourceId {
    format!("Secret@{}?{SECRET_LABEL}", scope_name(namespace))
}

/// Id of the watch of one referenced Secret.
pub fn secret_ref_source(key: &ObjectRef) -> SourceId {
    format!("Secret:{}/{}", key.namespace, key.name)
}

/// The running watcher tasks; dropping it stops them all.
pub struct Watchers {
    client: Client,
    tx: mpsc::UnboundedSender<Change>,
    tasks: BTreeMap<SourceId, JoinHandle<()>>,
    secret_refs: BTreeSet<ObjectRef>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Watchers {
    /// No watchers yet; changes go to `tx`.
    pub fn new(client: Client, tx: mpsc::UnboundedSender<Change>) -> Self {
        Watchers { client, tx, tasks: BTreeMap::new(), secret_refs: BTreeSet::new() }
    }

    fn start(
        &mut self,
        state: &mut State,
        id: SourceId,
        kind: Kind,
        namespace: Option<&str>,
        config: watcher::Config,
    ) {
        let resource = api_resource(kind);
        let api = match namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::<DynamicObject>::all_with(self.client.clone(), &resource),
        };
        state.add_source(id.clone());
        let task = tokio::spawn(watch(api, kind, id.clone(), config, self.tx.clone()));
        if let Some(old) = self.tasks.insert(id, task) {
            old.abort();
        }
    }

    /// Starts the watches of every kind, and of labelled Secrets, in each namespace scope
    /// (`namespaces` empty = all namespaces, one watch per kind). When the controller's
    /// namespace is not among `namespaces`, its Plugins are watched too (global Plugins
    /// live there).
    pub fn start_all(&mut self, state: &mut State, namespaces: &[String], controller_ns: &str) {
        if !namespaces.is_empty() && !namespaces.iter().any(|n| n == controller_ns) {
            let scope = Some(controller_ns);
            let id = kind_source(Kind::Plugin, scope);
            self.start(state, id, Kind::Plugin, scope, watcher::Config::default());
        }
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        for scope in scopes {
            for kind in WATCHED_KINDS {
                self.start(
                    state,
                    kind_source(kind, scope),
                    kind,
                    scope,
                    watcher::Config::default(),
                );
            }
            let labelled = watcher::Config::default().labels(&format!("{SECRET_LABEL}=true"));
            self.start(state, labelled_secrets_source(scope), Kind::Secret, scope, labelled);
        }
    }

    /// Watches exactly the Secrets in `wanted` (one watch each, by field selector on the
    /// name), starting new ones and stopping those no longer referenced. Returns whether
    /// anything was started.
    pub fn sync_secret_refs(&mut self, state: &mut State, wanted: &BTreeSet<ObjectRef>) -> bool {
        let stale: Vec<ObjectRef> = self.secret_refs.difference(wanted).cloned().collect();
        for key in stale {
            let id = secret_ref_source(&key);
            if let Some(task) = self.tasks.remove(&id) {
                task.abort();
            }
            state.remove_source(&id);
            self.secret_refs.remove(&key);
        }
        let new: Vec<ObjectRef> = wanted.difference(&self.secret_refs).cloned().collect();
        for key in &new {
            let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
            self.start(state, secret_ref_source(key), Kind::Secret, Some(&key.namespace), config);
            self.secret_refs.insert(key.clone());
        }
        !new.is_empty()
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
