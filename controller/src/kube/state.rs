//! What the watchers have seen, per watch source, and the index kept from it.
//!
//! Each source (one kind in one namespace or all, or one referenced Secret) keeps its own
//! objects, so a re-list (after a watch was lost for too long) replaces exactly what that
//! source had. The [`Index`] is maintained incrementally: every change updates only the
//! objects it names (a re-list: the objects of that source), so a round costs O(change),
//! not O(objects). An object that stops converting keeps its last good version in the
//! index and is reported invalid by the status writer.

use std::collections::{BTreeMap, BTreeSet};

use crate::index::{Index, Kind, ObjectRef};
use crate::kube::convert::{Existing, Invalid, Item};
use crate::load::{Object, remove_from};

/// Identifies one watch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    /// Every object of a kind in one namespace (`None`: all namespaces, or a
    /// cluster-scoped kind).
    Kind(Kind, Option<String>),
    /// Secrets labelled `weir.dev/secret=true` in one namespace (`None`: all).
    LabelledSecrets(Option<String>),
    /// One Secret a weir object refers to.
    SecretRef(ObjectRef),
}

impl SourceId {
    /// The kind the source watches.
    pub fn kind(&self) -> Kind {
        match self {
            SourceId::Kind(kind, _) => *kind,
            SourceId::LabelledSecrets(_) | SourceId::SecretRef(_) => Kind::Secret,
        }
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = |ns: &Option<String>| ns.clone().unwrap_or_else(|| "*".to_owned());
        match self {
            SourceId::Kind(kind, ns) => write!(f, "{}@{}", kind.as_str(), scope(ns)),
            SourceId::LabelledSecrets(ns) => {
                write!(f, "Secret@{}?{}", scope(ns), crate::kube::watch::SECRET_LABEL)
            }
            SourceId::SecretRef(key) => write!(f, "Secret:{key}"),
        }
    }
}

/// What one source holds.
#[derive(Debug, Default)]
struct Source {
    synced: bool,
    objects: BTreeMap<ObjectRef, Object>,
    invalid: BTreeMap<ObjectRef, Invalid>,
    existing: BTreeMap<ObjectRef, Existing>,
}

/// A change reported by a watcher task.
#[derive(Debug)]
pub enum Change {
    /// An object was added or modified.
    Applied(SourceId, Item),
    /// An object was deleted.
    Deleted(SourceId, ObjectRef),
    /// The source listed everything afresh (its first list, or a re-list).
    Relisted(SourceId, Vec<Item>),
}

/// Everything the watchers have seen, and the index of every converted object.
#[derive(Debug, Default)]
pub struct State {
    sources: BTreeMap<SourceId, Source>,
    index: Index,
    /// Every object whose status weir writes, kept per change like the index (a persistent
    /// map: handing it to the status writer is a cheap clone).
    watched: WatchedObjects,
}

/// The status writer's view of every watched object with a status.
pub type WatchedObjects = imbl::OrdMap<(Kind, ObjectRef), Watched>;

/// One weir object as the status writer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// What the API server holds.
    pub existing: Existing,
    /// Set when the current version does not convert.
    pub invalid: Option<Invalid>,
}

impl State {
    /// Registers a source (not synced until its first list arrives).
    pub fn add_source(&mut self, id: SourceId) {
        self.sources.entry(id).or_default();
    }

    /// Forgets a source and everything it held.
    pub fn remove_source(&mut self, id: &SourceId) {
        if let Some(source) = self.sources.remove(id) {
            for key in source.objects.keys() {
                self.refresh(id.kind(), key);
            }
            for key in source.existing.keys() {
                self.watched.remove(&(id.kind(), key.clone()));
            }
        }
    }

    /// Updates the status writer's view of `key` from what source `id` holds.
    fn rewatch(&mut self, id: &SourceId, key: &ObjectRef) {
        let id_key = (id.kind(), key.clone());
        let Some(source) = self.sources.get(id) else {
            self.watched.remove(&id_key);
            return;
        };
        match source.existing.get(key) {
            Some(existing) => {
                let invalid = source.invalid.get(key).cloned();
                let watched = Watched { existing: existing.clone(), invalid };
                if self.watched.get(&id_key) != Some(&watched) {
                    self.watched.insert(id_key, watched);
                }
            }
            None => {
                self.watched.remove(&id_key);
            }
        }
    }

    /// The registered sources.
    pub fn source_ids(&self) -> impl Iterator<Item = &SourceId> {
        self.sources.keys()
    }

    /// True once every registered source has completed its first list.
    pub fn synced(&self) -> bool {
        self.sources.values().all(|s| s.synced)
    }

    /// True once every source except the per-Secret ones has completed its first list.
    pub fn synced_except_secret_refs(&self) -> bool {
        self.sources.iter().all(|(id, s)| s.synced || matches!(id, SourceId::SecretRef(_)))
    }

    /// Puts into the index the object some source holds for `kind`/`key`, or removes it
    /// when none does (two sources may hold the same Secret: labelled and referenced).
    fn refresh(&mut self, kind: Kind, key: &ObjectRef) {
        let held = self
            .sources
            .iter()
            .filter(|(id, _)| id.kind() == kind)
            .find_map(|(_, s)| s.objects.get(key));
        match held {
            Some(object) => object.clone().insert_into(&mut self.index),
            None => remove_from(&mut self.index, kind, key),
        }
    }

    /// Applies a change to the source and the index; returns whether the source is known
    /// (changes of removed sources are dropped).
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Applied(id, item) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                let key = item.key.clone();
                let before = source.objects.get(&key).cloned();
                if let Some(object) = source.put(item) {
                    // Unchanged objects keep their `Arc` (e.g. after weir's own status write:
                    // nothing to recompile, and the compiler's pointer comparisons, the
                    // conflict pass's among them, see the same object).
                    match before {
                        Some(before) if before.same_spec(&object) && before.same_meta(&object) => {
                            source.objects.insert(key.clone(), before.clone());
                            before.insert_into(&mut self.index);
                        }
                        _ => object.insert_into(&mut self.index),
                    }
                }
                self.rewatch(&id, &key);
            }
            Change::Deleted(id, key) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                let held = source.objects.remove(&key).is_some();
                source.invalid.remove(&key);
                source.existing.remove(&key);
                if held {
                    self.refresh(id.kind(), &key);
                }
                self.rewatch(&id, &key);
            }
            Change::Relisted(id, items) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                let mut old = std::mem::take(&mut source.objects);
                source.invalid.clear();
                let mut rewatch: BTreeSet<ObjectRef> =
                    std::mem::take(&mut source.existing).into_keys().collect();
                for item in items {
                    // An invalid object keeps its last good version.
                    rewatch.insert(item.key.clone());
                    if item.object.is_none()
                        && let Some(previous) = old.remove(&item.key)
                    {
                        source.objects.insert(item.key.clone(), previous);
                    }
                    if let Some(object) = source.put(item) {
                        let key = object.key();
                        // Unchanged objects keep their `Arc` (nothing to recompile).
                        match old.remove(&key) {
                            Some(before)
                                if before.same_spec(&object) && before.same_meta(&object) =>
                            {
                                source.objects.insert(key, before.clone());
                                before.insert_into(&mut self.index);
                            }
                            _ => object.insert_into(&mut self.index),
                        }
                    }
                }
                source.synced = true;
                let kind = id.kind();
                for key in old.keys() {
                    self.refresh(kind, key);
                }
                for key in &rewatch {
                    self.rewatch(&id, key);
                }
            }
        }
        true
    }

    /// The index of every converted object (`now`, the controller namespace and the
    /// flags are set by the caller).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The index, mutably (for the settings the caller owns).
    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// Every watched object whose status weir writes, for the status writer (a cheap
    /// clone of a persistent map).
    pub fn watched(&self) -> WatchedObjects {
        self.watched.clone()
    }
}

impl Source {
    /// Records `item`; returns the object to put into the index when it converted.
    fn put(&mut self, item: Item) -> Option<Object> {
        if let Some(existing) = item.existing {
            self.existing.insert(item.key.clone(), existing);
        }
        match (item.object, item.invalid) {
            (Some(object), _) => {
                self.invalid.remove(&item.key);
                self.objects.insert(item.key, object.clone());
                Some(object)
            }
            (None, Some(invalid)) => {
                self.invalid.insert(item.key, invalid);
                None
            }
            (None, None) => None,
        }
    }
}

/// The Secrets the index refers to: Consumer credentials, JWT plugins' JWKS Secrets, Route
/// certificates and client CAs, the default certificate, and BackendPolicy CA and client
/// certificate Secrets.
pub fn referenced_secrets(index: &Index) -> BTreeSet<ObjectRef> {
    let mut out = crate::compile::secret_refs_outside_policies(index);
    out.extend(crate::compile::backend_policy::referenced_secrets(index));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use kube::api::DynamicObject;

    use super::*;
    use crate::kube::convert::item;

    fn plugin(name: &str, limit: serde_json::Value, generation: i64) -> Item {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": {"rateLimit": {"limit": limit, "window": "1m"}}
        }))
        .unwrap();
        item(Kind::Plugin, obj)
    }

    #[test]
    fn an_invalid_update_keeps_the_last_good_version_and_a_relist_drops_the_missing() {
        let mut state = State::default();
        let id = SourceId::Kind(Kind::Plugin, None);
        state.add_source(id.clone());
        assert!(!state.synced());
        state.apply(Change::Relisted(id.clone(), vec![plugin("a", 5.into(), 1)]));
        assert!(state.synced());
        state.apply(Change::Applied(id.clone(), plugin("a", "x".into(), 2)));
        let index = state.index();
        let a = &index.plugins[&ObjectRef::new("ns", "a")];
        assert_eq!(a.spec.rate_limit.as_ref().unwrap().limit, 5);
        let watched = state.watched();
        let w = &watched[&(Kind::Plugin, ObjectRef::new("ns", "a"))];
        assert_eq!(w.existing.generation, 2);
        assert!(w.invalid.is_some());

        state.apply(Change::Relisted(
            id.clone(),
            vec![plugin("a", "x".into(), 2), plugin("b", 1.into(), 1)],
        ));
        let index = state.index();
        assert_eq!(index.plugins.len(), 2, "last good version kept across a re-list");
        state.apply(Change::Relisted(id.clone(), vec![plugin("b", 1.into(), 1)]));
        assert_eq!(state.index().plugins.len(), 1);
        assert_eq!(state.watched().len(), 1);
        state.apply(Change::Deleted(id.clone(), ObjectRef::new("ns", "b")));
        assert!(state.index().plugins.is_empty());
        let gone = SourceId::Kind(Kind::Plugin, Some("gone".into()));
        assert!(!state.apply(Change::Deleted(gone, ObjectRef::new("ns", "b"))));
    }

    fn route(name: &str, path: &str, status: Option<&str>) -> Item {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "ns", "generation": 1},
            "spec": {"rules": [{"matches": [{"path": {"value": path}}],
                                "backends": [{"service": "s", "port": 80}]}]},
            "status": {"conditions": status.map_or_else(Vec::new, |s| vec![serde_json::json!({
                "type": "Accepted", "status": s, "reason": "Accepted", "message": "",
                "lastTransitionTime": "2026-12-03T00:00:00Z"})])}
        }))
        .unwrap();
        item(Kind::Route, obj)
    }

    #[test]
    fn a_status_only_update_keeps_the_routes_arc_and_a_spec_change_replaces_it() {
        let mut state = State::default();
        let id = SourceId::Kind(Kind::Route, None);
        state.add_source(id.clone());
        state.apply(Change::Relisted(id.clone(), vec![route("r", "/a", None)]));
        let key = ObjectRef::new("ns", "r");
        let first = std::sync::Arc::clone(&state.index().routes[&key]);
        // weir's own status write comes back as a watch event: the same Route to the compiler.
        state.apply(Change::Applied(id.clone(), route("r", "/a", Some("True"))));
        assert!(std::sync::Arc::ptr_eq(&first, &state.index().routes[&key]));
        state.apply(Change::Applied(id.clone(), route("r", "/b", Some("True"))));
        assert!(!std::sync::Arc::ptr_eq(&first, &state.index().routes[&key]));
    }

    #[test]
    fn backend_policy_secrets_are_referenced() {
        let policy: weir_crds::BackendPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "BackendPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"targetRefs": [{"kind": "Service", "name": "orders"}],
                     "tls": {"caSecretRef": {"name": "orders-ca"},
                             "clientCertificateRef": {"name": "gw-client"}}}
        }))
        .unwrap();
        let mut index = Index::default();
        index.backend_policies.insert(ObjectRef::new("shop", "p"), std::sync::Arc::new(policy));
        let refs = referenced_secrets(&index);
        assert!(refs.contains(&ObjectRef::new("shop", "orders-ca")));
        assert!(refs.contains(&ObjectRef::new("shop", "gw-client")));
    }

    fn secret(name: &str, value: &str) -> Item {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns"},
            "stringData": {"k": value}
        }))
        .unwrap();
        item(Kind::Secret, obj)
    }

    #[test]
    fn the_index_follows_each_change_and_a_secret_held_twice_stays_until_both_drop_it() {
        let mut state = State::default();
        let labelled = SourceId::LabelledSecrets(None);
        let referenced = SourceId::SecretRef(ObjectRef::new("ns", "s"));
        state.add_source(labelled.clone());
        state.add_source(referenced.clone());
        state.apply(Change::Relisted(labelled.clone(), vec![secret("s", "a"), secret("t", "b")]));
        assert!(!state.synced() && state.synced_except_secret_refs());
        state.apply(Change::Relisted(referenced.clone(), vec![secret("s", "a")]));
        assert!(state.synced());
        assert_eq!(state.index().secrets.len(), 2);
        // A re-list without "s" drops it from that source; the other still holds it.
        state.apply(Change::Relisted(labelled.clone(), vec![secret("t", "b")]));
        assert!(state.index().secrets.contains_key(&ObjectRef::new("ns", "s")));
        state.remove_source(&referenced);
        assert!(!state.index().secrets.contains_key(&ObjectRef::new("ns", "s")));
        // An unchanged object keeps its `Arc` across a re-list; a changed one is replaced.
        let before = std::sync::Arc::clone(&state.index().secrets[&ObjectRef::new("ns", "t")]);
        state.apply(Change::Relisted(labelled.clone(), vec![secret("t", "b")]));
        let t = &state.index().secrets[&ObjectRef::new("ns", "t")];
        assert!(std::sync::Arc::ptr_eq(&before, t));
        state.apply(Change::Applied(labelled.clone(), secret("t", "c")));
        let t = &state.index().secrets[&ObjectRef::new("ns", "t")];
        assert!(!std::sync::Arc::ptr_eq(&before, t));
        state.apply(Change::Deleted(labelled, ObjectRef::new("ns", "t")));
        assert!(state.index().secrets.is_empty());
    }

    #[test]
    fn source_ids_name_their_kind_and_scope() {
        assert_eq!(SourceId::Kind(Kind::Route, None).to_string(), "Route@*");
        assert_eq!(SourceId::Kind(Kind::Route, Some("a".into())).kind(), Kind::Route);
        let r = SourceId::SecretRef(ObjectRef::new("ns", "x"));
        assert_eq!((r.to_string().as_str(), r.kind()), ("Secret:ns/x", Kind::Secret));
        assert_eq!(SourceId::LabelledSecrets(None).kind(), Kind::Secret);
    }
}
