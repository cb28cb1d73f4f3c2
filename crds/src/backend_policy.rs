//! The `BackendPolicy` kind: how weir talks to the endpoints of a Service — load balancing,
//! health checks, circuit breaking, retry budget, upstream TLS, protocol and connection
//! settings. Defaults are in the schema (the API server fills them in) and in serde (the
//! same values in standalone YAML).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, ObjectStatus};
use crate::duration::DURATION_PATTERN;

/// How weir talks to the endpoints of the Services it targets: load balancing, health
/// checks, circuit breaking, retry budget, upstream TLS, protocol and connection settings.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "BackendPolicy",
    plural = "backendpolicies",
    shortname = "bp",
    namespaced,
    status = "ObjectStatus",
    category = "weir",
    doc = "How weir talks to the endpoints of the Services it targets: load balancing, health checks, circuit breaking, retry budget, upstream TLS, protocol and connection settings.",
    printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".spec.targetRefs[*].name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"ResolvedRefs","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.protocol) || self.protocol != 'H2' || has(self.tls)").message("spec.protocol: H2 (HTTP/2 over TLS) requires spec.tls"),
    validation = Rule::new("!has(self.protocol) || self.protocol != 'H2C' || !has(self.tls)").message("spec.protocol: H2C is HTTP/2 without TLS; with spec.tls use H2 (or HTTP1)")
)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicySpec {
    /// The Services in this namespace this policy applies to (every port). A Service has at
    /// most one BackendPolicy: when several target it, the oldest wins and the others are
    /// `Accepted=False` with reason `Conflicted`.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<PolicyTargetRef>,
    /// How an endpoint is chosen for each request (default round robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// Active and passive health checking, and the panic threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// The circuit breaker (closed → open → half-open → closed) and the concurrency caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// The budget Route retries to these Services spend, and their backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// TLS to the endpoints (server verification, SNI, client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsSpec>,
    /// `HTTP1`, `H2C` (HTTP/2 without TLS) or `H2` (HTTP/2 over TLS, requires `tls`);
    /// overrides the Service port's `appProtocol`. Default: from `appProtocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// Upstream connection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSpec>,
}

/// A Service this policy applies to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.kind == 'Service' && (!has(self.group) || self.group == '')").message("targetRefs: only kind Service (group \"\") is supported"))]
pub struct PolicyTargetRef {
    /// API group of the target: `""` (the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub group: Option<String>,
    /// Kind of the target: `Service`.
    #[schemars(length(max = 63))]
    pub kind: String,
    /// Name of the Service, in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// `loadBalancer.type`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LoadBalancerType {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer requests in flight.
    LeastRequest,
    /// Uniformly random.
    Random,
    /// Consistent hashing (Maglev) on a request attribute (`consistentHash`).
    ConsistentHash,
}

/// How an endpoint is chosen for each request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.type != 'ConsistentHash' || has(self.consistentHash)").message("loadBalancer.consistentHash is required when loadBalancer.type is ConsistentHash"))]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// `RoundRobin` (default), `LeastRequest`, `Random` or `ConsistentHash`.
    #[serde(default, rename = "type")]
    pub type_: LoadBalancerType,
    /// What `ConsistentHash` hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashSpec>,
    /// New endpoints ramp up their share of traffic linearly over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartSpec>,
}

/// `consistentHash.type`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConsistentHashType {
    /// The client's IP address.
    #[default]
    SourceIP,
    /// The value of the request header named in `header`.
    Header,
    /// The value of the cookie in `cookie` (weir sets it when the request has none).
    Cookie,
    /// The value of the query parameter named in `queryParam`.
    QueryParam,
}

/// What `ConsistentHash` hashes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.type != 'Header' || has(self.header)").message("consistentHash.header is required when consistentHash.type is Header"),
    validation = Rule::new("self.type != 'Cookie' || has(self.cookie)").message("consistentHash.cookie is required when consistentHash.type is Cookie"),
    validation = Rule::new("self.type != 'QueryParam' || has(self.queryParam)").message("consistentHash.queryParam is required when consistentHash.type is QueryParam")
)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashSpec {
    /// `SourceIP`, `Header`, `Cookie` or `QueryParam`.
    #[serde(rename = "type")]
    pub type_: ConsistentHashType,
    /// `type: Header`: the header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `type: Cookie`: the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookieSpec>,
    /// `type: QueryParam`: the query parameter name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

/// The cookie `ConsistentHash` hashes; weir sets it (a random value) on the response when
/// the request has none.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HashCookieSpec {
    /// Cookie name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Max-Age` of the cookie weir sets (a duration); unset = a session cookie.
    #[schemars(pattern(DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// `Path` of the cookie weir sets (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Slow start for new endpoints.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SlowStartSpec {
    /// How long a new endpoint takes to reach its full share (a duration, e.g. `30s`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub window: String,
}

fn default_panic_threshold() -> u32 {
    50
}

/// Health checking.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Active checks: weir probes every endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheckSpec>,
    /// Passive checks (outlier ejection) from what real requests see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheckSpec>,
    /// Percent of usable endpoints below which every endpoint is used again (default 50);
    /// 0 = never.
    #[serde(default = "default_panic_threshold")]
    #[schemars(range(min = 0, max = 100))]
    pub panic_threshold: u32,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        HealthCheckSpec { active: None, passive: None, panic_threshold: default_panic_threshold() }
    }
}

/// `healthCheck.active.type`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ActiveCheckType {
    /// `GET path`; healthy when the status is one of `expectedStatuses`.
    #[default]
    HTTP,
    /// A TCP connect (and the TLS handshake with `tls`).
    TCP,
}

fn default_check_path() -> String {
    "/".to_owned()
}
fn default_interval() -> String {
    "5s".to_owned()
}
fn default_check_timeout() -> String {
    "1s".to_owned()
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_expected_statuses() -> Vec<u16> {
    vec![200]
}

/// Active health checks.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthCheckSpec {
    /// `HTTP` (default) or `TCP`.
    #[serde(default, rename = "type")]
    pub type_: ActiveCheckType,
    /// `HTTP`: path (and query) requested, starting with `/` (default `/`).
    #[serde(default = "default_check_path")]
    #[schemars(pattern("^/"))]
    pub path: String,
    /// `HTTP`: `Host` header of the check request (default: the endpoint address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Time between checks of one endpoint (default `5s`; each jittered by up to 10%).
    #[serde(default = "default_interval")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: String,
    /// A check that has not succeeded within this fails (default `1s`).
    #[serde(default = "default_check_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: String,
    /// Consecutive successes that make an unhealthy endpoint healthy (default 2).
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy (default 3).
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: u32,
    /// `HTTP`: statuses that count as healthy (default `[200]`).
    #[serde(default = "default_expected_statuses")]
    #[schemars(length(min = 1), inner(range(min = 100, max = 599)))]
    pub expected_statuses: Vec<u16>,
}

impl Default for ActiveHealthCheckSpec {
    fn default() -> Self {
        ActiveHealthCheckSpec {
            type_: ActiveCheckType::HTTP,
            path: default_check_path(),
            host: None,
            interval: default_interval(),
            timeout: default_check_timeout(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
            expected_statuses: default_expected_statuses(),
        }
    }
}

fn default_base_ejection_time() -> String {
    "30s".to_owned()
}
fn default_max_ejection_percent() -> u32 {
    50
}

/// Passive health checks: outlier ejection. Without `consecutive5xx` and
/// `consecutiveGatewayErrors`, `consecutive5xx` is 5.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheckSpec {
    /// Consecutive 5xx answers (or gateway errors) that eject an endpoint.
    #[serde(default, rename = "consecutive5xx", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (connect failure, timeout, 502, 503, 504) that eject an
    /// endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_gateway_errors: Option<u32>,
    /// How long the first ejection lasts; the n-th in a row lasts n times as long
    /// (default `30s`).
    #[serde(default = "default_base_ejection_time")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub base_ejection_time: String,
    /// At most this percent of the endpoints is ejected at once (default 50).
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: u32,
}

impl Default for PassiveHealthCheckSpec {
    fn default() -> Self {
        PassiveHealthCheckSpec {
            consecutive_5xx: None,
            consecutive_gateway_errors: None,
            base_ejection_time: default_base_ejection_time(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_window() -> String {
    "60s".to_owned()
}
fn default_open_for() -> String {
    "30s".to_owned()
}
fn default_success_threshold() -> u32 {
    3
}

/// The circuit breaker, per Service: closed → open (answered at once with the fallback)
/// → half-open (probes) → closed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Failures (5xx, connect error, timeout) within `window` that open it (default 5).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// The window failures are counted in (default `60s`).
    #[serde(default = "default_window")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub window: String,
    /// How long it stays open before half-open (default `30s`).
    #[serde(default = "default_open_for")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub open_for: String,
    /// Consecutive successes in half-open that close it (default 3); one failure reopens it.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1))]
    pub success_threshold: u32,
    /// Open connections to the Service's endpoints; past it, the fallback at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection; past it, the fallback at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the Service; past it, the fallback at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallel_requests: Option<u32>,
    /// The answer while open or over a cap (default 503 with the gateway's JSON error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        CircuitBreakerSpec {
            failure_threshold: default_failure_threshold(),
            window: default_window(),
            open_for: default_open_for(),
            success_threshold: default_success_threshold(),
            max_connections: None,
            max_pending_requests: None,
            max_parallel_requests: None,
            fallback: None,
        }
    }
}

fn default_fallback_status() -> u16 {
    503
}

/// The gateway's answer while the circuit is open or a cap is hit.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FallbackSpec {
    /// Status (default 503).
    #[serde(default = "default_fallback_status")]
    #[schemars(range(min = 200, max = 599))]
    pub status: u16,
    /// Body (default: the gateway's JSON error body, with the request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `Content-Type` of `body` (default `application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl Default for FallbackSpec {
    fn default() -> Self {
        FallbackSpec { status: default_fallback_status(), body: None, content_type: None }
    }
}

fn default_budget_percent() -> u32 {
    20
}

/// The retry budget and backoff.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Retries in flight may be at most this percent of the requests in flight (default 20;
    /// a few retries are always allowed).
    #[serde(default = "default_budget_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub budget_percent: u32,
    /// Backoff between attempts (default base `25ms`, max `250ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { budget_percent: default_budget_percent(), backoff: None }
    }
}

fn default_backoff_base() -> String {
    "25ms".to_owned()
}
fn default_backoff_max() -> String {
    "250ms".to_owned()
}

/// Exponential backoff with jitter.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct BackoffSpec {
    /// Before the first retry (default `25ms`); doubled per retry.
    #[serde(default = "default_backoff_base")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub base: String,
    /// Cap (default `250ms`); at least `base`.
    #[serde(default = "default_backoff_max")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub max: String,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec { base: default_backoff_base(), max: default_backoff_max() }
    }
}

/// The well-known certificate authorities.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WellKnownCaCertificates {
    /// The public web roots (Mozilla's list).
    #[default]
    System,
}

/// TLS to the endpoints. Exactly one of `caSecretRef` or `wellKnownCACertificates`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.caSecretRef) != has(self.wellKnownCACertificates)").message("tls: exactly one of caSecretRef or wellKnownCACertificates must be set"))]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsSpec {
    /// A Secret in this namespace with the PEM CA bundle under `ca.crt` that verifies the
    /// endpoints' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,
    /// `System`: verify against the well-known public roots.
    #[serde(default, rename = "wellKnownCACertificates", skip_serializing_if = "Option::is_none")]
    pub well_known_ca_certificates: Option<WellKnownCaCertificates>,
    /// SNI sent and the name the certificate must carry (default
    /// `<service>.<namespace>.svc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A `kubernetes.io/tls` Secret in this namespace (`tls.crt`, `tls.key`): the client
    /// certificate weir presents (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<LocalObjectReference>,
}

/// `protocol`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum BackendProtocol {
    /// HTTP/1.1 (over TLS with `tls`).
    HTTP1,
    /// HTTP/2 with prior knowledge, without TLS.
    H2C,
    /// HTTP/2 over TLS (ALPN `h2`); requires `tls`.
    H2,
}

fn default_max_idle() -> u32 {
    64
}
fn default_idle_timeout() -> String {
    "60s".to_owned()
}

/// Upstream connection settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Idle keep-alive connections kept per endpoint (default 64; 0 = none kept).
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: u32,
    /// How long an idle connection is kept (default `60s`).
    #[serde(default = "default_idle_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_timeout: String,
}

impl Default for ConnectionSpec {
    fn default() -> Self {
        ConnectionSpec {
            max_idle_per_endpoint: default_max_idle(),
            idle_timeout: default_idle_timeout(),
        }
    }
}
