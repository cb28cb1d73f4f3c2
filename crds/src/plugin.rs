//! The `Plugin` kind: exactly one typed configuration per object.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{HeaderValue, LocalObjectReference, ObjectStatus};

/// A reusable piece of request processing, attached by Routes, Consumers or globally.
/// Exactly one of the typed configurations must be set.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Plugin",
    plural = "plugins",
    namespaced,
    status = "ObjectStatus",
    category = "weir",
    doc = "A reusable piece of request processing, attached by Routes, Consumers or globally; exactly one typed configuration is set.",
    printcolumn = r#"{"name":"Global","type":"boolean","jsonPath":".spec.global"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "[has(self.rateLimit), has(self.jwt), has(self.keyAuth), has(self.cors), has(self.requestHeaders), has(self.responseHeaders), has(self.correlationId), has(self.circuitBreaker), has(self.cache), has(self.ipRestriction)].filter(x, x).size() == 1"
).message("exactly one plugin configuration (rateLimit, jwt, keyAuth, cors, requestHeaders, responseHeaders, correlationId, circuitBreaker, cache or ipRestriction) must be set"))]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Applies to every Route when true; honoured only in the controller's namespace.
    #[serde(default)]
    pub global: bool,
    /// Rate limiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// JWT authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// API-key authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuthConfig>,
    /// Cross-origin resource sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// Header changes on the request sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderTransform>,
    /// Header changes on the response sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderTransform>,
    /// Request id propagation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationIdConfig>,
    /// Circuit breaking per upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Response caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Client address allow and deny lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_restriction: Option<IpRestrictionConfig>,
}

/// Rate-limit algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RateLimitAlgorithm {
    /// Counter per fixed window.
    FixedWindow,
    /// Sliding-window counter weighted with the previous window.
    #[default]
    SlidingWindow,
    /// Token bucket: rate = limit/window, capacity = limit + burst.
    TokenBucket,
}

/// What a rate-limit counter is keyed by.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RateLimitKey {
    /// The client address.
    #[default]
    ClientIP,
    /// The authenticated consumer (anonymous requests fall back to the client address).
    Consumer,
    /// The value of the header named in `header`.
    Header,
    /// One counter for the whole route.
    Route,
}

/// Where rate-limit counters live.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RateLimitStore {
    /// In this replica's memory.
    #[default]
    Local,
    /// In Redis, shared by every replica (`--redis-url`).
    Redis,
}

/// What to do when the shared store fails.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnStoreError {
    /// Fail open (guarded by a local limiter).
    #[default]
    Allow,
    /// Fail closed.
    Deny,
}

/// A limit for consumers of one tier.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RateLimitTier {
    /// The Consumer `spec.tier` this applies to.
    pub tier: String,
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length (`1s`, `1m`, `1h`).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    pub window: String,
}

/// `rateLimit` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitConfig {
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length (`1s`, `1m`, `1h`).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    pub window: String,
    /// `FixedWindow`, `SlidingWindow` (default) or `TokenBucket`.
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
    /// TokenBucket only: extra capacity above the steady rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// `ClientIP` (default), `Consumer`, `Header` or `Route`.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Header name when `key: Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Per-tier limits, chosen by the authenticated Consumer's `spec.tier`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<RateLimitTier>,
    /// `Local` (default) or `Redis`.
    #[serde(default)]
    pub store: RateLimitStore,
    /// `Allow` (default) or `Deny` when the store fails.
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

/// A claim copied to an upstream request header.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClaimToHeader {
    /// Claim name in the token payload.
    pub claim: String,
    /// Header sent upstream.
    pub header: String,
}

/// `jwt` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtConfig {
    /// Accepted signing algorithms (e.g. RS256, ES256, HS256). `none` is never accepted.
    pub algorithms: Vec<String>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; one must be present in the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of a JWKS document with the verification keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A Secret with a JWKS document under the key `jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_secret_ref: Option<LocalObjectReference>,
    /// Without a JWKS: the claim whose value selects a Consumer's jwt credential (default `iss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_claim: Option<String>,
    /// Claim whose value names a Consumer (its username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// Claims copied to upstream request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Send the Authorization header upstream (default false).
    #[serde(default)]
    pub forward_authorization: bool,
    /// Tolerance for `exp`, `nbf` and `iat` (default `30s`).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
}

/// `keyAuth` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyAuthConfig {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Query parameter carrying the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Send the key upstream (default false).
    #[serde(default)]
    pub forward_credential: bool,
}

/// `cors` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsConfig {
    /// Allowed origins; `*` allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to the browser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Allow credentials.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// Header set/add/remove lists.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HeaderTransform {
    /// Headers set (replacing any existing value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Headers appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Header names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `correlationId` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CorrelationIdConfig {
    /// Header carrying the request id (default `X-Request-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Echo the id on the response (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
}

/// The answer sent while a circuit is open.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Fallback {
    /// Status code.
    pub status: u16,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `circuitBreaker` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerConfig {
    /// Failures within `window` that open the circuit.
    pub failure_threshold: u32,
    /// Successes in half-open state that close it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// How long the circuit stays open.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<String>,
    /// The window failures are counted in.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Answer while open (default 503 with the gateway's JSON body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// `cache` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// How long a response is fresh.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    pub ttl: String,
    /// Cached methods (default GET, HEAD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Request headers that are part of the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary_headers: Vec<String>,
    /// How long a stale response may be served while it is refreshed.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<String>,
}

/// `ipRestriction` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IpRestrictionConfig {
    /// CIDRs or addresses allowed (empty = all not denied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// CIDRs or addresses denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}
