//! What tests do with `kubectl`: split multi-document YAML, address any object through a
//! dynamic [`Api`], and server-side apply it — against the API server double or a real
//! cluster alike.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

/// The documents of a multi-document YAML text (empty documents skipped).
pub fn yaml_docs(yaml: &str) -> anyhow::Result<Vec<Value>> {
    yaml.split("\n---")
        .map(|d| d.trim().trim_start_matches("---").trim())
        .filter(|d| !d.is_empty())
        .map(|d| Ok(serde_saphyr::from_str(d)?))
        .collect()
}

/// A dynamic API for the kind of `value` (`apiVersion`, `kind`) in its namespace
/// (`metadata.namespace`, default `default`). Missing fields give requests the API
/// server rejects, not a panic.
pub fn api_for(client: &Client, value: &Value) -> Api<DynamicObject> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = value["kind"].as_str().unwrap_or_default();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let namespace = value["metadata"]["namespace"].as_str().unwrap_or("default");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Server-side applies `value` with field manager `manager`, forced (like
/// `kubectl apply --server-side --force-conflicts`).
pub async fn apply(
    client: &Client,
    value: &Value,
    manager: &str,
) -> Result<DynamicObject, kube::Error> {
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    api_for(client, value)
        .patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(value))
        .await
}
