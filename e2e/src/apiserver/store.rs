//! The object store: objects by resource/namespace/name, the global resourceVersion counter,
//! the retained event history, and the open watches that events are fanned out to.
//!
//! Every write happens under one mutex and fans its event out to the open watches before
//! the lock is released, so a watch registered under the same lock never misses or
//! duplicates an event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::kinds::Kind;
use super::meta;
use super::selectors::Selectors;

/// At most this many events are retained; older ones are dropped as if etcd compacted them.
const MAX_HISTORY: usize = 10_000;

/// Where an object lives: `(group, plural, namespace or "", name)`, ordered like the real
/// server's storage keys so lists come out sorted by namespace and name.
pub type ObjKey = (String, String, String, String);

/// The key of an object of `kind` in `namespace` (`""` = cluster-scoped).
pub fn key(kind: &Kind, namespace: &str, name: &str) -> ObjKey {
    (kind.group.into(), kind.plural.into(), namespace.into(), name.into())
}

/// A change, as stored in the history.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: &'static Kind,
    namespace: String,
    /// The object after the write (`None` for a deletion).
    object: Option<Value>,
    /// The object before the write (`None` on create).
    prev: Option<Value>,
}

/// What a watch stream is sent.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// `ADDED`, `MODIFIED` or `DELETED` with the object.
    Event(&'static str, Value),
    /// A `BOOKMARK` at this resourceVersion; `true` marks the end of the initial events.
    Bookmark(u64, bool),
    /// An `ERROR` event carrying a `Status`; the stream ends after it.
    Error(Value),
}

/// The filter of one open watch.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// The resource watched.
    pub kind: &'static Kind,
    /// `None` = every namespace.
    pub namespace: Option<String>,
    /// Label and field selectors.
    pub selectors: Selectors,
}

impl WatchFilter {
    fn in_scope(&self, kind: &Kind, namespace: &str) -> bool {
        self.kind == kind && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// The event this watch sees for a change, with the real watch cache's rules: an object
    /// that starts matching is `ADDED`, one that stops matching is `DELETED` (its previous
    /// content at the new resourceVersion).
    fn convert(&self, change: &Change) -> Option<WatchItem> {
        if !self.in_scope(change.kind, &change.namespace) {
            return None;
        }
        let cur = change.object.as_ref().filter(|o| self.selectors.matches(o));
        let old = change.prev.as_ref().filter(|o| self.selectors.matches(o));
        match (cur, old) {
            (Some(obj), None) => Some(WatchItem::Event("ADDED", obj.clone())),
            (Some(obj), Some(_)) => Some(WatchItem::Event("MODIFIED", obj.clone())),
            (None, Some(prev)) => {
                let mut prev = prev.clone();
                meta::set_str(&mut prev, "resourceVersion", &change.rv.to_string());
                Some(WatchItem::Event("DELETED", prev))
            }
            (None, None) => None,
        }
    }
}

#[derive(Debug)]
struct Watcher {
    filter: WatchFilter,
    tx: mpsc::UnboundedSender<WatchItem>,
}

/// Where a new watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic `ADDED` events for every current object, then changes (resourceVersion
    /// unset or `"0"`); with `true`, a bookmark marking the end of the initial events follows
    /// (`sendInitialEvents=true`).
    Current(bool),
    /// Every change after this resourceVersion (410 Expired when it is no longer retained).
    After(u64),
}

/// The state behind the lock.
#[derive(Debug, Default)]
pub struct State {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Change>,
    /// Watches starting before this resourceVersion get 410 Expired.
    floor: u64,
    watchers: HashMap<u64, Watcher>,
    next_watcher: u64,
}

impl State {
    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Every object of `kind`, in one namespace or all, sorted by namespace and name.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                g == kind.group && p == kind.plural && namespace.is_none_or(|want| want == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `object` (a create when `prev` is `None`, else an update) at a new
    /// resourceVersion, emits the event, and returns the stored object.
    pub fn put(
        &mut self,
        kind: &'static Kind,
        key: ObjKey,
        mut object: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta::set_str(&mut object, "resourceVersion", &self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        let change =
            Change { rv: self.rv, kind, namespace: key.2, object: Some(object.clone()), prev };
        self.record(change);
        object
    }

    /// Removes an object at a new resourceVersion, emits `DELETED`, and returns its last
    /// state carrying the deletion's resourceVersion.
    pub fn remove(&mut self, kind: &'static Kind, key: &ObjKey) -> Option<Value> {
        let prev = self.objects.remove(key)?;
        self.rv += 1;
        let mut last = prev.clone();
        meta::set_str(&mut last, "resourceVersion", &self.rv.to_string());
        let change =
            Change { rv: self.rv, kind, namespace: key.2.clone(), object: None, prev: Some(prev) };
        self.record(change);
        Some(last)
    }

    fn record(&mut self, change: Change) {
        self.watchers.retain(|_, w| match w.filter.convert(&change) {
            Some(item) => w.tx.send(item).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        while self.history.len() > MAX_HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = self.floor.max(dropped.rv);
            }
        }
    }

    /// Opens a watch: queues its initial events and registers it for later changes.
    /// Returns its id and the receiving end. A start before the retained history yields a
    /// stream with a single 410 `ERROR` event, like the real server.
    pub fn watch(
        &mut self,
        filter: WatchFilter,
        start: WatchStart,
    ) -> (u64, mpsc::UnboundedReceiver<WatchItem>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.next_watcher += 1;
        let id = self.next_watcher;
        match start {
            WatchStart::After(from) if from < self.floor => {
                let err =
                    ApiError::Expired(format!("too old resource version: {from} ({})", self.floor));
                let _ = tx.send(WatchItem::Error(err.to_status()));
                return (id, rx);
            }
            WatchStart::After(from) => {
                for change in self.history.iter().filter(|c| c.rv > from) {
                    if let Some(item) = filter.convert(change) {
                        let _ = tx.send(item);
                    }
                }
            }
            WatchStart::Current(end_bookmark) => {
                let ns = filter.namespace.as_deref();
                for obj in
                    self.list(filter.kind, ns).into_iter().filter(|o| filter.selectors.matches(o))
                {
                    let _ = tx.send(WatchItem::Event("ADDED", obj));
                }
                if end_bookmark {
                    let _ = tx.send(WatchItem::Bookmark(self.rv, true));
                }
            }
        }
        self.watchers.insert(id, Watcher { filter, tx });
        (id, rx)
    }

    /// Queues a bookmark at the current resourceVersion on watch `id`; `false` when that
    /// watch is no longer open.
    pub fn bookmark(&mut self, id: u64) -> bool {
        let rv = self.rv;
        match self.watchers.get(&id) {
            Some(w) => w.tx.send(WatchItem::Bookmark(rv, false)).is_ok(),
            None => false,
        }
    }

    /// Forgets watch `id`.
    pub fn unwatch(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Ends every open watch (their streams close once drained).
    pub fn break_watches(&mut self) {
        self.watchers.clear();
    }

    /// Forgets the history and moves the counter on, so that every resourceVersion handed
    /// out so far is too old to watch from.
    pub fn expire_history(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.floor = self.rv;
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.watchers.len()
    }
}

/// The store shared by every connection.
#[derive(Debug, Default)]
pub struct Store(Mutex<State>);

impl Store {
    /// Locks the state. Never held across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn lease_kind() -> &'static Kind {
        Kind::find("coordination.k8s.io", "v1", "leases").unwrap()
    }

    fn filter() -> WatchFilter {
        WatchFilter {
            kind: lease_kind(),
            namespace: Some("ns".into()),
            selectors: Selectors::default(),
        }
    }

    #[test]
    fn history_is_capped_like_a_compaction() {
        let mut state = State::default();
        let kind = lease_kind();
        for i in 0..=MAX_HISTORY {
            state.put(
                kind,
                key(kind, "ns", "l"),
                json!({"metadata": {"name": "l"}, "spec": {"n": i}}),
                None,
            );
        }
        let (_, mut rx) = state.watch(filter(), WatchStart::After(0));
        assert!(matches!(rx.try_recv(), Ok(WatchItem::Error(status)) if status["code"] == 410));
        let recent = state.rv() - 3;
        let (_, mut rx) = state.watch(filter(), WatchStart::After(recent));
        let mut replayed = 0;
        while let Ok(item) = rx.try_recv() {
            assert!(matches!(item, WatchItem::Event("ADDED", _)));
            replayed += 1;
        }
        assert_eq!(replayed, 3);
    }

    #[test]
    fn watches_only_see_their_namespace_and_end_when_broken() {
        let mut state = State::default();
        let kind = lease_kind();
        let (_, mut rx) = state.watch(filter(), WatchStart::Current(true));
        assert!(matches!(rx.try_recv(), Ok(WatchItem::Bookmark(0, true))));
        state.put(kind, key(kind, "other", "x"), json!({"metadata": {"name": "x"}}), None);
        state.put(kind, key(kind, "ns", "y"), json!({"metadata": {"name": "y"}}), None);
        match rx.try_recv() {
            Ok(WatchItem::Event("ADDED", obj)) => {
                assert_eq!(obj["metadata"]["resourceVersion"], "2")
            }
            other => panic!("{other:?}"),
        }
        state.remove(kind, &key(kind, "ns", "y"));
        assert!(
            matches!(rx.try_recv(), Ok(WatchItem::Event("DELETED", obj)) if obj["metadata"]["resourceVersion"] == "3")
        );
        state.break_watches();
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }
}
