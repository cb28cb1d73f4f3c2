//! The `Consumer` kind: an identity with credentials, a tier and its own plugins.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, ObjectStatus};

/// A client of the APIs behind weir, identified by its credentials.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Consumer",
    plural = "consumers",
    namespaced,
    status = "ObjectStatus",
    category = "weir",
    doc = "A client of the APIs behind weir, identified by its credentials.",
    printcolumn = r#"{"name":"Username","type":"string","jsonPath":".spec.username"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Sent upstream as `X-Consumer-Username`; defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Selects `rateLimit` tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Credentials that identify this consumer; each sets exactly one kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// Plugins in this namespace applied when this consumer is authenticated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
}

/// One credential; exactly one of `apiKey` or `jwt` is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.apiKey) != has(self.jwt)").message("exactly one of apiKey or jwt must be set"))]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// An API key read from the Secret's `key` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretCredential>,
    /// A JWT key read from the Secret's `key`, `algorithm` and `secret` or `publicKey` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<SecretCredential>,
}

/// A credential stored in a Secret in the Consumer's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretCredential {
    /// The Secret.
    pub secret_ref: LocalObjectReference,
}
