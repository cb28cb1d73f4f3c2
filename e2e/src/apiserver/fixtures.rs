//! Test fixtures written straight into the store: objects from (multi-document) YAML,
//! created as `kubectl create -f` would, without going through HTTP.

use serde_json::Value;

use super::error::ApiError;
use super::handlers::{self, Call};
use super::meta;
use super::paths::{Query, ResourcePath};
use super::server::Shared;

/// Why a fixture could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The YAML does not parse.
    #[error("fixture YAML does not parse: {0}")]
    Yaml(String),
    /// A document's `apiVersion`/`kind` is not served.
    #[error("document {index}: {api_version}/{kind} is not served by the API server double")]
    UnknownKind {
        /// Position of the document.
        index: usize,
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
    },
    /// The create was refused (already exists, invalid name, ...).
    #[error("document {index}: {source}")]
    Refused {
        /// Position of the document.
        index: usize,
        /// The API error.
        source: ApiError,
    },
}

/// Creates every document of `yaml` (namespace `default` when unset, for namespaced kinds)
/// and returns `namespace/name` (or `name`) of each, in order.
pub fn create_all(shared: &Shared, yaml: &str) -> Result<Vec<String>, FixtureError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| FixtureError::Yaml(e.to_string()))?;
    create_values(shared, docs)
}

/// [`create_all`] for objects already parsed (bulk fixtures skip the YAML parse).
pub fn create_values(shared: &Shared, docs: Vec<Value>) -> Result<Vec<String>, FixtureError> {
    let mut created = Vec::new();
    for (index, doc) in docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
        let text = |f: &str| doc.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (api_version, kind_name) = (text("apiVersion"), text("kind"));
        let kind = shared.kinds.find_by_type(&api_version, &kind_name).ok_or_else(|| {
            FixtureError::UnknownKind {
                index,
                api_version: api_version.clone(),
                kind: kind_name.clone(),
            }
        })?;
        let namespace = kind.namespaced.then(|| {
            meta::get_str(&doc, "namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned()
        });
        let path =
            ResourcePath { kind, namespace: namespace.clone(), name: None, subresource: None };
        let body = doc.to_string().into_bytes();
        let query = Query::default();
        let call = Call {
            path: &path,
            query: &query,
            body: &body,
            content_type: "application/json",
            manager: "weir-e2e-fixture".into(),
            require_namespace: shared.require_namespaces(),
        };
        let stored = handlers::create(&mut shared.store.lock(), &call)
            .map_err(|source| FixtureError::Refused { index, source })?;
        if kind.plural == "customresourcedefinitions" {
            shared.kinds.register_crd(&stored);
        }
        let name = meta::get_str(&stored, "name").unwrap_or_default();
        created.push(match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        });
    }
    Ok(created)
}

/// The Gateway API CustomResourceDefinitions (trimmed to what the double reads: group,
/// names, scope, versions, status subresource), as `kubectl apply` of the standard
/// channel's install manifest would create them.
pub fn gateway_api_crds() -> Vec<Value> {
    let crd = |plural: &str, kind: &str, scope: &str, versions: &[&str]| {
        let versions: Vec<Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::json!({
                    "name": v, "served": true, "storage": i == 0,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": if plural == "referencegrants" {
                        serde_json::json!({})
                    } else {
                        serde_json::json!({"status": {}})
                    },
                })
            })
            .collect();
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.gateway.networking.k8s.io")},
            "spec": {
                "group": "gateway.networking.k8s.io",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind,
                          "listKind": format!("{kind}List")},
                "scope": scope,
                "versions": versions,
            }
        })
    };
    vec![
        crd("gatewayclasses", "GatewayClass", "Cluster", &["v1", "v1beta1"]),
        crd("gateways", "Gateway", "Namespaced", &["v1", "v1beta1"]),
        crd("httproutes", "HTTPRoute", "Namespaced", &["v1", "v1beta1"]),
        crd("grpcroutes", "GRPCRoute", "Namespaced", &["v1"]),
        crd("referencegrants", "ReferenceGrant", "Namespaced", &["v1beta1"]),
    ]
}
