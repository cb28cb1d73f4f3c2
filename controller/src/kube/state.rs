//! What the watchers have seen, per watch source, and the index built from it.
//!
//! Each source (one kind in one namespace or all, or one referenced Secret) keeps its own
//! objects, so a re-list (after a watch was lost for too long) replaces exactly what that
//! source had. An object that stops converting keeps its last good version in the index and
//! is reported invalid by the status writer.

use std::collections::{BTreeMap, BTreeSet};

use crate::index::{Index, Kind, ObjectRef};
use crate::kube::convert::{Existing, Invalid, Item};
use crate::load::Object;

/// Identifies one watch: e.g. `Route@ns`, `Route@*`, `Secret:ns/name`.
pub type SourceId = String;

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

/// Everything the watchers have seen.
#[derive(Debug, Default)]
pub struct State {
    sources: BTreeMap<SourceId, Source>,
}

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
    pub fn remove_source(&mut self, id: &str) {
        self.sources.remove(id);
    }

    /// The registered sources.
    pub fn source_ids(&self) -> impl Iterator<Item = &SourceId> {
        self.sources.keys()
    }

    /// True once every registered source has completed its first list.
    pub fn synced(&self) -> bool {
        self.sources.values().all(|s| s.synced)
    }

    /// True once every source except the per-Secret ones (ids starting `Secret:`) has
    /// completed its first list.
    pub fn synced_except_secret_refs(&self) -> bool {
        self.sources.iter().all(|(id, s)| s.synced || id.starts_with("Secret:"))
    }

    /// Applies a change; returns whether the source is known (changes of removed sources
    /// are dropped).
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Applied(id, item) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                source.put(item);
            }
            Change::Deleted(id, key) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                source.objects.remove(&key);
                source.invalid.remove(&key);
                source.existing.remove(&key);
            }
            Change::Relisted(id, items) => {
                let Some(source) = self.sources.get_mut(&id) else { return false };
                let mut old = std::mem::take(&mut source.objects);
                source.invalid.clear();
                source.existing.clear();
                for item in items {
                    // An invalid object keeps its last good version.
                    if item.object.is_none()
                        && let Some(previous) = old.remove(&item.key)
                    {
                        source.objects.insert(item.key.clone(), previous);
                    }
                    source.put(item);
                }
                source.synced = true;
            }
        }
        true
    }

    /// The index of every converted object.
    pub fn index(&self, controller_namespace: &str) -> Index {
        let mut index = Index {
            controller_namespace: controller_namespace.to_owned(),
            // The clock certificates are checked against in the compile that follows.
            now: Some(std::time::SystemTime::now()),
            ..Index::default()
        };
        for source in self.sources.values() {
            for object in source.objects.values() {
                object.clone().insert_into(&mut index);
            }
        }
        index
    }

    /// Every watched weir object, for the status writer.
    pub fn watched(&self) -> BTreeMap<(Kind, ObjectRef), Watched> {
        let mut out = BTreeMap::new();
        for (id, source) in &self.sources {
            let Some(kind) = source_kind(id) else { continue };
            for (key, existing) in &source.existing {
                let invalid = source.invalid.get(key).cloned();
                out.insert((kind, key.clone()), Watched { existing: existing.clone(), invalid });
            }
        }
        out
    }
}

impl Source {
    fn put(&mut self, item: Item) {
        if let Some(existing) = item.existing {
            self.existing.insert(item.key.clone(), existing);
        }
        match (item.object, item.invalid) {
            (Some(object), _) => {
                self.invalid.remove(&item.key);
                self.objects.insert(item.key, object);
            }
            (None, Some(invalid)) => {
                self.invalid.insert(item.key, invalid);
            }
            (None, None) => {}
        }
    }
}

/// The kind of a source id (`Route@ns` → Route).
pub fn source_kind(id: &str) -> Option<Kind> {
    let name = id.split(['@', ':']).next()?;
    [
        Kind::Route,
        Kind::Plugin,
        Kind::Consumer,
        Kind::BackendPolicy,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Namespace,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
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
        let id = "Plugin@*".to_owned();
        state.add_source(id.clone());
        assert!(!state.synced());
        state.apply(Change::Relisted(id.clone(), vec![plugin("a", 5.into(), 1)]));
        assert!(state.synced());
        state.apply(Change::Applied(id.clone(), plugin("a", "x".into(), 2)));
        let index = state.index("weir-system");
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
        let index = state.index("weir-system");
        assert_eq!(index.plugins.len(), 2, "last good version kept across a re-list");
        state.apply(Change::Relisted(id.clone(), vec![plugin("b", 1.into(), 1)]));
        assert_eq!(state.index("").plugins.len(), 1);
        assert_eq!(state.watched().len(), 1);
        state.apply(Change::Deleted(id.clone(), ObjectRef::new("ns", "b")));
        assert!(state.index("").plugins.is_empty());
        assert!(!state.apply(Change::Deleted("gone".into(), ObjectRef::new("ns", "b"))));
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
        assert_eq!(source_kind("BackendPolicy@*"), Some(Kind::BackendPolicy));
    }

    #[test]
    fn source_kinds_parse() {
        assert_eq!(source_kind("Route@*"), Some(Kind::Route));
        assert_eq!(source_kind("Secret:ns/x"), Some(Kind::Secret));
        assert_eq!(source_kind("Nope@x"), None);
    }
}
