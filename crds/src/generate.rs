//! Generation of the CustomResourceDefinition YAML printed by `weir crds` and committed
//! under `charts/weir/crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Consumer, Plugin, Route};

/// Every weir CRD, in alphabetical order of kind: Consumer, Plugin, Route.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Consumer::crd(), Plugin::crd(), Route::crd()]
}

/// The file name under `charts/weir/crds/` of each CRD, in the order of [`crds`]
/// (`<plural>.<group>.yaml`).
pub fn crd_file_names() -> Vec<String> {
    crds()
        .iter()
        .map(|c| format!("{}.yaml", c.metadata.name.as_deref().unwrap_or("unnamed")))
        .collect()
}

/// One CRD as a YAML document starting with `---\n`. Deterministic: the schema's maps are
/// ordered.
pub fn crd_document(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd)
        .unwrap_or_else(|e| format!("# failed to serialise the CRD: {e}\n"));
    let mut out = String::with_capacity(body.len() + 4);
    out.push_str("---\n");
    out.push_str(&body);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Every CRD as multi-document YAML: what `weir crds` prints, and byte for byte the
/// concatenation of the files under `charts/weir/crds/` in name order.
pub fn crd_yaml() -> String {
    crds().iter().map(crd_document).collect()
}
