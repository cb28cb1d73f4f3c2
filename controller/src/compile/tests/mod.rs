//! compile() tests from the YAML fixtures in `controller/tests/fixtures/compile/`, with a
//! small test-only loader that dispatches on `kind`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aggregate;
mod auth;
mod backend_policy;
mod conflicts;
mod endpoints;
mod gateway;
mod incremental;
mod ingress;
mod invalid;
mod kinds;
mod protocols;
mod ratelimit;
mod stats;
mod tls;
mod units;
mod valid;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weir_crds::{Condition, Consumer, Plugin};

use super::{Compiled, Memory, ObjectStatus, compile};
use crate::index::{Index, Kind, ObjectRef, RouteObject};

/// Loads a multi-document YAML string into an index (namespace defaults to `default`).
pub(super) fn load_str(yaml: &str) -> Index {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).expect("yaml");
    let mut index = Index::default();
    for mut doc in docs {
        if doc.is_null() {
            continue;
        }
        let meta = doc.get_mut("metadata").and_then(|m| m.as_object_mut()).expect("metadata");
        meta.entry("namespace").or_insert_with(|| "default".into());
        let ns = meta["namespace"].as_str().unwrap().to_owned();
        let name = meta["name"].as_str().unwrap().to_owned();
        let key = ObjectRef::new(ns, name);
        let kind = doc["kind"].as_str().expect("kind").to_owned();
        match kind.as_str() {
            "Route" => {
                index
                    .routes
                    .insert(key, Arc::new(serde_json::from_value::<RouteObject>(doc).unwrap()));
            }
            "Plugin" => {
                index.plugins.insert(key, Arc::new(serde_json::from_value::<Plugin>(doc).unwrap()));
            }
            "Consumer" => {
                index
                    .consumers
                    .insert(key, Arc::new(serde_json::from_value::<Consumer>(doc).unwrap()));
            }
            "BackendPolicy" => {
                let p = serde_json::from_value::<weir_crds::BackendPolicy>(doc).unwrap();
                index.backend_policies.insert(key, Arc::new(p));
            }
            "Service" => {
                index
                    .services
                    .insert(key, Arc::new(serde_json::from_value::<Service>(doc).unwrap()));
            }
            "EndpointSlice" => {
                let s = serde_json::from_value::<EndpointSlice>(doc).unwrap();
                index.endpoint_slices.insert(key, Arc::new(s));
            }
            "Secret" => {
                index.secrets.insert(key, Arc::new(serde_json::from_value::<Secret>(doc).unwrap()));
            }
            other => panic!("unknown kind {other}"),
        }
    }
    index
}

/// Loads a multi-document YAML string with the real loader (`load.rs`), so every kind it
/// reads (Gateway API, Ingress, Namespace, ...) is available; fails on any load error.
pub(super) fn load_yaml(yaml: &str) -> Index {
    let loaded = crate::load::parse_file("t.yaml", yaml).expect("parse");
    let (index, errors) = crate::load::merge([("t.yaml", loaded.as_slice())], "weir-system");
    assert!(errors.is_empty(), "{errors:?}");
    index
}

/// Loads a fixture file by name.
pub(super) fn load(name: &str) -> Index {
    let path = format!("{}/tests/fixtures/compile/{name}", env!("CARGO_MANIFEST_DIR"));
    load_str(&std::fs::read_to_string(&path).expect(&path))
}

pub(super) fn status<'c>(c: &'c Compiled, kind: Kind, ns: &str, name: &str) -> &'c ObjectStatus {
    c.statuses
        .get(&(kind, ObjectRef::new(ns, name)))
        .unwrap_or_else(|| panic!("no status for {kind:?} {ns}/{name}"))
}

pub(super) fn cond<'s>(s: &'s ObjectStatus, type_: &str) -> &'s Condition {
    s.condition(type_).unwrap_or_else(|| panic!("no {type_} condition in {s:#?}"))
}

/// Asserts a condition's status and reason and that its message contains every `needle`.
pub(super) fn assert_cond(
    s: &ObjectStatus,
    type_: &str,
    status: &str,
    reason: &str,
    needles: &[&str],
) {
    let c = cond(s, type_);
    assert_eq!((c.status.as_str(), c.reason.as_str()), (status, reason), "{c:#?}");
    for n in needles {
        assert!(c.message.contains(n), "message {:?} lacks {n:?}", c.message);
    }
    assert_eq!(c.observed_generation, Some(s.generation));
    assert!(c.last_transition_time.is_none());
}

pub(super) fn compile_fixture(name: &str) -> Compiled {
    compile(&load(name), &Memory::default())
}
