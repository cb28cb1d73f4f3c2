//! The compiled `BackendPolicy`: how weir talks to one Service's endpoints. Built by the
//! controller's compiler (validated, defaults applied, Secrets turned into a rustls client
//! configuration), carried by [`crate::snapshot::Backend::policy`], read by the upstream
//! layer. A backend without a policy gets [`BackendPolicy::default`]'s behaviour: round
//! robin, no health checks, no circuit breaker, no retry budget, plain connections.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::snapshot::{ObjectKey, UpstreamProtocol};
use crate::upstream::tls::UpstreamTls;

/// One compiled BackendPolicy, as it applies to one backend.
#[derive(Debug, Clone)]
pub struct BackendPolicy {
    /// The BackendPolicy object (for `/debug/backends`, metrics and Events); `None` for the
    /// built-in default.
    pub source: Option<ObjectKey>,
    /// `metadata.generation` it was compiled from.
    pub generation: i64,
    /// `loadBalancer`.
    pub load_balancer: LoadBalancer,
    /// `loadBalancer.slowStart.window`: a new endpoint's share ramps up linearly over it.
    pub slow_start: Option<Duration>,
    /// `healthCheck.active`.
    pub active: Option<Arc<ActiveCheck>>,
    /// `healthCheck.passive`.
    pub passive: Option<OutlierDetection>,
    /// `healthCheck.panicThreshold` in percent (default 50): below this share of usable
    /// endpoints, every endpoint is used again. 0 = never.
    pub panic_threshold: u8,
    /// `circuitBreaker`.
    pub breaker: Option<CircuitBreaker>,
    /// `retry`: what Route retries may spend, and their backoff.
    pub retry: Option<RetryBudget>,
    /// `tls`: TLS to the endpoints.
    pub tls: Option<Arc<UpstreamTls>>,
    /// `protocol`, when set (it overrides the Service port's `appProtocol`; the compiler has
    /// already applied it to [`crate::snapshot::Backend::protocol`]).
    pub protocol: Option<UpstreamProtocol>,
    /// `connection`.
    pub connection: ConnectionSettings,
}

impl BackendPolicy {
    /// The default panic threshold, in percent.
    pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;
}

impl Default for BackendPolicy {
    /// An empty policy with API.md's defaults: round robin, no checks (panic threshold
    /// 50%), no breaker, no budget, plain connections.
    fn default() -> Self {
        BackendPolicy {
            source: None,
            generation: 0,
            load_balancer: LoadBalancer::default(),
            slow_start: None,
            active: None,
            passive: None,
            panic_threshold: Self::DEFAULT_PANIC_THRESHOLD,
            breaker: None,
            retry: None,
            tls: None,
            protocol: None,
            connection: ConnectionSettings::default(),
        }
    }
}

/// `loadBalancer.type`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Each endpoint in turn; the cursor survives endpoint updates.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer requests in flight.
    LeastRequest,
    /// Uniformly random.
    Random,
    /// Maglev consistent hashing on a request attribute.
    ConsistentHash(HashOn),
}

/// `loadBalancer.consistentHash`: what the hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address (after trusted proxies, as the filters see it).
    SourceIp,
    /// A request header's value (absent: a random endpoint).
    Header(HeaderName),
    /// A cookie's value; weir sets the cookie (a random value) on the response when the
    /// request has none, so the client sticks from its next request on.
    Cookie(HashCookie),
    /// A query parameter's value (absent: a random endpoint).
    QueryParam(Box<str>),
}

/// The cookie of `consistentHash.type: Cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCookie {
    /// Cookie name.
    pub name: Box<str>,
    /// `Max-Age` of the cookie weir sets; `None` = a session cookie.
    pub ttl: Option<Duration>,
    /// `Path` of the cookie weir sets (default `/`).
    pub path: Box<str>,
}

/// `healthCheck.active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// What is checked.
    pub kind: CheckKind,
    /// Time between checks of one endpoint (each check jittered by up to 10%).
    pub interval: Duration,
    /// A check that has not succeeded within this fails.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// `healthCheck.active.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path` over the backend's transport (plain or TLS, HTTP/1.1 or HTTP/2); healthy
    /// when the status is one of `expected_statuses`.
    Http {
        /// Path and query of the check request, starting with `/`.
        path: Box<str>,
        /// `Host` (HTTP/2 `:authority`) of the check request; `None` = the endpoint address.
        host: Option<HeaderValue>,
        /// Statuses that count as healthy (default `[200]`).
        expected_statuses: Box<[StatusCode]>,
    },
    /// A TCP connect (and the TLS handshake, when the policy has `tls`).
    Tcp,
}

/// `healthCheck.passive`: outlier ejection from what real requests see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (from the upstream, or gateway errors) that eject an endpoint.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (connect failure, timeout, bad response, 502/503/504) that
    /// eject an endpoint.
    pub consecutive_gateway_errors: Option<u32>,
    /// The first ejection lasts this long; the n-th in a row lasts n times as long (capped
    /// at [`OutlierDetection::MAX_EJECTION_MULTIPLIER`]).
    pub base_ejection_time: Duration,
    /// At most this share (percent) of a backend's endpoints is ejected at once. Endpoints
    /// that fail active checks are removed regardless.
    pub max_ejection_percent: u8,
}

impl OutlierDetection {
    /// The ejection time grows up to this many times `base_ejection_time`.
    pub const MAX_EJECTION_MULTIPLIER: u32 = 10;
}

/// `circuitBreaker`: per backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failures (5xx answers, connect errors, timeouts) within `window` that open it.
    pub failure_threshold: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long it stays open (answering with the fallback at once) before half-open.
    pub open_for: Duration,
    /// Consecutive successes in half-open that close it; one failure reopens it.
    pub success_threshold: u32,
    /// Open upstream connections of the backend; past it, a request that would need a new
    /// connection gets the fallback at once. `None` = unlimited.
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection; past it, the fallback at once. `None` = unlimited.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the backend; past it, the fallback at once. `None` = unlimited.
    pub max_parallel_requests: Option<u32>,
    /// The answer while open or over a cap.
    pub fallback: Fallback,
}

/// `circuitBreaker.fallback`: the gateway's answer when the circuit is open or a cap is hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Status (default 503).
    pub status: StatusCode,
    /// Body (default: the gateway's JSON error body for 503, with the request id).
    pub body: Option<Bytes>,
    /// `Content-Type` of `body` (default `application/json`).
    pub content_type: HeaderValue,
}

/// `retry`: the budget Route retries spend, and their backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries in flight may be at most this share (percent) of requests in flight to the
    /// backend (at least [`RetryBudget::MIN_RETRIES`] are always allowed).
    pub budget_percent: u32,
    /// Backoff before the first retry; doubled per retry, jittered, capped at `backoff_max`.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
}

impl RetryBudget {
    /// Retries in flight always allowed, whatever the budget says (Envoy's
    /// `min_retry_concurrency`).
    pub const MIN_RETRIES: u32 = 3;
}

/// `connection`: upstream connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_idle_per_endpoint: crate::upstream::pool::MAX_IDLE_PER_ENDPOINT,
            idle_timeout: crate::upstream::pool::POOL_IDLE_TIMEOUT,
        }
    }
}
