//! Generation of the CustomResourceDefinition YAML printed by `weir crds` and committed
//! under `charts/weir/crds/`.
//!
//! Optional fields are omitted when unset (every `Option` field skips serialising `None`),
//! so the schemas never say `nullable: true`: a 1.26 API server publishes a nullable
//! field without its type (`kubectl explain` shows `port <>`). [`crds`] removes the
//! `nullable` that schemars' OpenAPI settings put on every `Option`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{BackendPolicy, Consumer, Plugin, Route};

/// Every weir CRD, in alphabetical order of kind: BackendPolicy, Consumer, Plugin, Route;
/// without any `nullable` (see the module documentation).
pub fn crds() -> Vec<CustomResourceDefinition> {
    [BackendPolicy::crd(), Consumer::crd(), Plugin::crd(), Route::crd()]
        .into_iter()
        .map(without_nullable)
        .collect()
}

/// `crd` with every `nullable` removed from its schemas.
fn without_nullable(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut versions = crd.spec.versions.clone();
    for version in &mut versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let Ok(mut value) = serde_json::to_value(&*schema) else { continue };
        strip(&mut value);
        if let Ok(stripped) = serde_json::from_value(value) {
            *schema = stripped;
        }
    }
    let mut crd = crd;
    crd.spec.versions = versions;
    crd
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn no_schema_is_nullable_and_optional_fields_keep_their_type() {
        let yaml = crd_yaml();
        assert!(!yaml.contains("nullable"), "a CRD still has nullable fields");
        let route = serde_json::to_value(Route::crd()).unwrap();
        // The raw kube output does have them: the transform is what removes them.
        assert!(route.to_string().contains("\"nullable\""), "nothing to strip any more?");
        let stripped = serde_json::to_value(&crds()[3]).unwrap();
        let port = &stripped["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["rules"]["items"]["properties"]["backends"]["items"]["properties"]["port"];
        assert_eq!(port["type"], "integer", "{port}");
        assert!(port.get("nullable").is_none());
    }

    #[test]
    fn backend_policy_crd_has_its_names_columns_and_cel_rules() {
        let all = crds();
        let bp = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(bp["metadata"]["name"], "backendpolicies.weir.dev");
        assert_eq!(bp["spec"]["names"]["kind"], "BackendPolicy");
        assert_eq!(bp["spec"]["names"]["shortNames"], serde_json::json!(["bp"]));
        assert_eq!(bp["spec"]["names"]["categories"], serde_json::json!(["weir"]));
        assert_eq!(bp["spec"]["scope"], "Namespaced");
        let columns: Vec<&str> = bp["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Targets", "Accepted", "ResolvedRefs", "Age"]);
        let text = bp.to_string();
        for rule in [
            "self.kind == 'Service'",
            "self.type != 'ConsistentHash' || has(self.consistentHash)",
            "self.type != 'Header' || has(self.header)",
            "self.type != 'Cookie' || has(self.cookie)",
            "self.type != 'QueryParam' || has(self.queryParam)",
            "has(self.caSecretRef) != has(self.wellKnownCACertificates)",
            "self.protocol != 'H2' || has(self.tls)",
        ] {
            assert!(text.contains(rule), "missing CEL rule {rule}");
        }
    }
}
