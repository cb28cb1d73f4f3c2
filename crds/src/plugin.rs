//! The `Plugin` kind: exactly one typed configuration per object.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ByteSize, HeaderValue, LocalObjectReference, ObjectStatus};

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
    "[has(self.rateLimit), has(self.jwt), has(self.keyAuth), has(self.extAuth), has(self.cors), has(self.requestHeaders), has(self.responseHeaders), has(self.correlationId), has(self.cache), has(self.ipRestriction), has(self.requestSize), has(self.redirect), has(self.directResponse), has(self.compression)].filter(x, x).size() == 1"
).message("exactly one plugin configuration (rateLimit, jwt, keyAuth, extAuth, cors, requestHeaders, responseHeaders, correlationId, cache, ipRestriction, requestSize, redirect, directResponse or compression) must be set"))]
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
    /// Response caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Client address allow and deny lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_restriction: Option<IpRestrictionConfig>,
    /// A cap on the request body size (413).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_size: Option<RequestSizeConfig>,
    /// Answers every request with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectConfig>,
    /// Answers every request with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponseConfig>,
    /// Compresses responses by `Accept-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionConfig>,
    /// Forward authentication: an HTTP auth service admits or answers each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuthConfig>,
    /// `circuitBreaker` was a Plugin type; it is a BackendPolicy field now. Kept out of the
    /// schema, read only to say so in the Plugin's condition (standalone YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub circuit_breaker: Option<serde_json::Value>,
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

/// Where cached responses live.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CacheStore {
    /// In this replica's memory.
    #[default]
    Memory,
    /// In Redis, shared by every replica (`--redis-url`).
    Redis,
}

/// `cache` plugin configuration: a shared response cache. The key is host, method, path,
/// query, `varyHeaders` and the consumer (never shared across consumers); responses with
/// `Set-Cookie`, `Cache-Control: private|no-store|no-cache`, or to requests with
/// credentials (unless `public`) are never stored.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// How long a response is fresh.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    pub ttl: String,
    /// Cached methods (default GET, HEAD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Cached response statuses (default 200, 301, 404).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
    /// Request headers that are part of the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary_headers: Vec<String>,
    /// How long a stale response may be served while it is refreshed.
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<String>,
    /// Largest body stored (`1Mi`, `512Ki` or a number of bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// `Memory` (default) or `Redis`.
    #[serde(default)]
    pub store: CacheStore,
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

/// `requestSize` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSizeConfig {
    /// Largest request body accepted (`10Mi`, `512Ki`, `1M` or a number of bytes). Larger
    /// bodies are answered 413: from `Content-Length` before the upstream is contacted, or
    /// as soon as a streamed body passes the limit.
    pub max_body: ByteSize,
}

/// How a redirect changes the path.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedirectPath {
    /// Replaces the prefix the rule matched (Prefix matches), keeping the rest of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix: Option<String>,
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
}

/// `redirect` plugin configuration: the gateway answers with a redirect to the request's
/// URL with the given parts replaced. The query string is kept.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedirectConfig {
    /// `http` or `https` (default: the request's scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name (default: the request's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port (default: the scheme's well-known port when `scheme` is set, else the
    /// request's port). A scheme's well-known port is left out of `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Path change (default: the request's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RedirectPath>,
}

/// `directResponse` plugin configuration: the gateway answers every request itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponseConfig {
    /// Status code (200-599).
    pub status: u16,
    /// Response body (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `Content-Type` of the body (default `text/plain; charset=utf-8` when a body is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A content coding the `compression` plugin can produce.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CompressionType {
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// `compression` plugin configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompressionConfig {
    /// Codings offered, in the order preferred when the client rates several equally
    /// (default Zstd, Brotli, Gzip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<CompressionType>,
    /// Responses whose `Content-Length` is below this are sent as they are (default `1Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<ByteSize>,
    /// Media types compressed; `text/*` matches every text type (default: text/*,
    /// application/json, application/javascript, application/xml, application/*+json,
    /// application/*+xml, image/svg+xml).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
}

/// What `extAuth` does when the auth service cannot be asked (connect failure, timeout,
/// an invalid answer).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExtAuthOnError {
    /// Answer 503 (default, fail closed).
    #[default]
    Deny,
    /// Let the request through, unauthenticated (fail open).
    Allow,
}

/// A Service port in the Plugin's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServicePortRef {
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: i32,
}

/// `extAuth` plugin configuration: forward authentication, like nginx `auth_request` or
/// Traefik ForwardAuth. A 2xx answer lets the request through; any other answer is
/// returned to the client as the auth service sent it (body capped at 64 KiB).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthConfig {
    /// The auth endpoint, `http://` or `https://`. Exactly one of `url` and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The auth Service, in the Plugin's namespace (asked at `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePortRef>,
    /// With `service`: the path asked (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long to wait for the auth service's answer (default `1s`).
    #[schemars(pattern(crate::duration::DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Request headers sent to the auth service (default: every end-to-end header), plus
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// Headers of a 2xx answer copied onto the upstream request (a client's own copies of
    /// them are always removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<String>,
    /// `Deny` (default, 503) or `Allow` when the auth service cannot be asked.
    #[serde(default)]
    pub on_error: ExtAuthOnError,
}
