//! The `Route` kind: hosts, rules with matches, backends, rewrites, timeouts and retries,
//! and TLS (certificate Secret, HTTP redirect, client certificates).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, LocalObjectReference};

/// Routes HTTP requests for a set of hosts to Services in the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Route",
    plural = "routes",
    namespaced,
    status = "RouteStatus",
    category = "weir",
    doc = "Routes HTTP requests for a set of hosts to Services in the same namespace.",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tls) || (has(self.hosts) && size(self.hosts) > 0)").message("spec.tls requires at least one host in spec.hosts"))]
pub struct RouteSpec {
    /// Host names this Route serves, e.g. `api.example.com` or `*.example.com` (one wildcard
    /// label, leftmost). Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Names of Plugins in this namespace applied to every rule of this Route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// Plugin types (e.g. `jwt`, `keyAuth`) whose global Plugins do not apply to this Route:
    /// the explicit opt-out from global authentication. Route- and rule-level Plugins of
    /// those types still apply. Listed in `status.effectivePlugins` with level `skipped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_global_plugins: Vec<String>,
    /// The routing rules. A request is served by the most specific matching rule.
    #[schemars(length(min = 1))]
    pub rules: Vec<RouteRule>,
    /// HTTPS for `hosts`: the certificate (a `kubernetes.io/tls` Secret in this namespace),
    /// the plain-HTTP redirect, and optional client-certificate verification. Requires
    /// `hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<RouteTls>>,
}

/// HTTPS termination for a Route's hosts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTls {
    /// The `kubernetes.io/tls` Secret in this namespace holding `tls.crt` (PEM chain, leaf
    /// first) and `tls.key` (PEM private key: RSA, ECDSA P-256/P-384/P-521 or Ed25519).
    pub secret_ref: LocalObjectReference,
    /// Plain-HTTP requests for these hosts are answered `301` to the same URL over HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_redirect: bool,
    /// Client-certificate verification (mTLS) against a CA bundle.
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<ClientCa>,
    /// Hidden (never read from or written to YAML, not in the CRD): the namespace of
    /// `secretRef` when it is not the Route's. Only Routes derived from a Gateway listener's
    /// `certificateRefs` set it (the Secret lives with the Gateway).
    #[serde(skip)]
    #[schemars(skip)]
    pub secret_namespace: Option<String>,
}

/// The CA that signs accepted client certificates.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCa {
    /// A Secret in this namespace with the PEM CA bundle under the key `ca.crt`.
    pub secret_ref: LocalObjectReference,
    /// `true`: clients without a certificate are let through (without
    /// `X-Client-Cert-Subject`); a presented certificate must still verify. `false`
    /// (default): a verified client certificate is required.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// One routing rule: what it matches and where it sends the request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.aggregate) || !has(self.backends) || size(self.backends) == 0").message("a rule has either backends or aggregate, not both"))]
// The rarely set parts (`rewrite`, `timeouts`, `retries`, `aggregate`, and the spec's
// `tls`) are boxed: the controller keeps every Route it serves, and inline they made each
// rule 344 bytes whether set or not. The schema is the same as unboxed.
pub struct RouteRule {
    /// Optional name, used in status, metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, OR-ed together. None means every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Services in this namespace that receive the traffic, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRef>,
    /// Rewrites applied before the request is proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Box<Rewrite>>,
    /// Upstream timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Box<Timeouts>>,
    /// Retry policy for failed upstream attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Box<Retries>>,
    /// Names of Plugins in this namespace applied to this rule only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// API composition, instead of `backends`: the gateway fetches every part in parallel
    /// and answers one JSON object with each part's JSON under its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Box<Aggregate>>,
}

/// A composed answer: parts fetched in parallel, merged into one JSON object.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// Deadline for the whole answer (default 5s): an optional part still running then
    /// becomes `null`, a required one makes the answer 502 (504 if it timed out).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The parts, fetched in parallel. Keys are unique.
    #[schemars(length(min = 1, max = 32))]
    pub parts: Vec<AggregatePart>,
}

/// One part of a composed answer: a `GET` to a Service in this namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregatePart {
    /// The part's key in the answer's JSON object.
    #[schemars(length(min = 1, max = 128))]
    pub key: String,
    /// Service name.
    pub service: String,
    /// Service port number (`spec.ports[].port`). May be omitted when the Service has one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Path and query sent to the part's Service. `${path.NAME}` is the segment captured by
    /// `{NAME}` in the rule's path match (percent-encoded as received); `${query.NAME}` is
    /// the request's query parameter `NAME` (empty when absent).
    #[schemars(length(min = 1))]
    pub path: String,
    /// An optional part that fails or is late becomes `null` and the answer says
    /// `X-Weir-Completed: false`; a required one (default) makes the answer 502.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// This part's own deadline (at most the aggregate's `timeout`).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Largest body read from this part (default 1Mi); a larger one is a failed part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<crate::common::ByteSize>,
}

/// Conditions on a request; all that are set must hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Path match; defaults to `Prefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP methods; empty means any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
}

/// How a request path is compared.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, on a `/` segment boundary (`/api` matches `/api/x`, not `/apix`).
    #[default]
    Prefix,
    /// The path matches the regular expression (RE2-like syntax, anchored at both ends).
    RegularExpression,
}

/// A path condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PathMatch {
    /// `Exact`, `Prefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub type_: PathMatchType,
    /// The path or pattern; paths start with `/`.
    pub value: String,
}

/// How a header or query value is compared.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StringMatchType {
    /// The value equals `value` exactly.
    #[default]
    Exact,
    /// The value matches the regular expression in `value` (anchored at both ends).
    RegularExpression,
    /// The header or parameter is present, whatever its value.
    Present,
}

/// A header condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// `Exact` (default), `RegularExpression` or `Present`.
    #[serde(default, rename = "type")]
    pub type_: StringMatchType,
    /// The value or pattern; not used with `Present`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A query parameter condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct QueryParamMatch {
    /// Parameter name (case-sensitive).
    pub name: String,
    /// `Exact` (default), `RegularExpression` or `Present`.
    #[serde(default, rename = "type")]
    pub type_: StringMatchType,
    /// The value or pattern; not used with `Present`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A Service in the Route's namespace, and its share of the traffic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BackendRef {
    /// Service name.
    pub service: String,
    /// Service port number (`spec.ports[].port`). May be omitted when the Service has one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative weight (default 1); 0 sends no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Hidden (not in YAML or the CRD): the Service's namespace when it is not the Route's.
    /// Only Routes derived from Gateway API objects set it, after checking the
    /// ReferenceGrant.
    #[serde(skip)]
    #[schemars(skip)]
    pub namespace: Option<String>,
    /// Hidden (not in YAML or the CRD): this backend is invalid (a Gateway API backendRef
    /// that is not permitted, not found or of an unsupported kind); its share of the traffic
    /// is answered `500` and the text says why (in logs only). Set only on derived Routes.
    #[serde(skip)]
    #[schemars(skip)]
    pub invalid: Option<String>,
}

/// Rewrites applied to the request sent upstream.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replaces the matched path prefix (only with `Prefix` matches). `/` strips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix: Option<String>,
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// Replaces the `Host` header sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Upstream timeouts, as durations (`250ms`, `5s`, `1m`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Timeouts {
    /// Time to establish a TCP connection to an endpoint (default 5s).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Time until the upstream's response headers arrive, across retries (default 60s).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Longest silence, in either direction, on an upgraded (WebSocket) connection or a
    /// streaming response once its headers arrived; the connection or stream is then closed
    /// (default: no limit).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

/// What makes an upstream attempt retryable.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetryOn {
    /// The TCP connection could not be established (the request was never sent).
    ConnectFailure,
    /// The attempt exceeded `perTryTimeout`.
    Timeout,
    /// The upstream answered 500, 502, 503 or 504.
    Status5xx,
}

/// Retry policy. Only idempotent requests are re-sent, unless the body was never sent.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Extra attempts after the first one.
    pub attempts: u32,
    /// Timeout of each attempt.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Conditions that trigger a retry (default `[ConnectFailure]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RetryOn>,
}

/// Observed state of a Route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Plugins that apply to this Route, in execution order, with the object each came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective_plugins: Vec<EffectivePlugin>,
}

/// A plugin that applies to a Route, and where it came from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EffectivePlugin {
    /// Plugin type, e.g. `rateLimit`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The Plugin object, as `namespace/name`.
    pub source: String,
    /// Where it was attached: `global`, `route`, `rule:<name or index>` or `consumer`;
    /// `skipped` for a global Plugin this Route opts out of (`spec.skipGlobalPlugins`).
    pub level: String,
}
