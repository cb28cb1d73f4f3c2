//! The snapshot: the immutable, fully resolved configuration the data plane serves.
//!
//! This is the contract between the controller's `compile()` and the data plane. Nothing in
//! it is looked up by name at request time: matchers are precompiled, rules are sorted by
//! precedence inside [`RouteTable`], and backends are dense [`BackendId`] indexes into the
//! [`BackendTable`]. Routes change rarely and endpoints often, so the two halves are
//! separate `Arc`s: an EndpointSlice change swaps only the [`BackendTable`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::router::RouteTable;

mod matches;

pub use matches::{HeaderMatcher, PathMatch, QueryMatcher, RequestMatch, ValueMatch};

/// One immutable configuration generation. Requests load it once and run to the end on it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Monotonic version, assigned by the publisher.
    pub version: u64,
    /// Host and rule matching; rebuilt only when Routes (or what they reference) change.
    pub routes: Arc<RouteTable>,
    /// Endpoints of every backend referenced by a rule, indexed by [`BackendId`].
    pub backends: Arc<BackendTable>,
    /// Headers the gateway sets from a verified identity (every `claimsToHeaders` header of
    /// every jwt Plugin): removed from every incoming request, on every route, so a client
    /// can never forge them — also on routes without authentication. `X-Consumer-*` is
    /// always removed besides these.
    pub identity_headers: Arc<[HeaderName]>,
    /// The HTTPS listener's certificates by SNI (empty: no TLS route, no default cert).
    pub tls: Arc<crate::tls::TlsTable>,
}

impl Snapshot {
    /// An empty snapshot: every request gets the gateway's 404.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            routes: Arc::new(RouteTable::new(Vec::new())),
            backends: Arc::new(BackendTable::default()),
            identity_headers: Arc::from([]),
            tls: Arc::default(),
        }
    }
}

/// Identity of a Kubernetes object: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl ObjectKey {
    /// Builds a key from namespace and name.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One compiled Route object, the input of [`RouteTable::new`].
#[derive(Debug, Clone)]
pub struct RouteModel {
    /// The Route object.
    pub key: ObjectKey,
    /// `metadata.generation` this model was compiled from.
    pub generation: i64,
    /// Creation time (seconds since the epoch) for the "oldest object wins" tie-break.
    pub created: i64,
    /// Hosts; empty = any host.
    pub hosts: Vec<HostMatch>,
    /// Rules, in the order of the Route's spec.
    pub rules: Vec<Arc<Rule>>,
}

/// A host name a Route serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// A lower-case host name without port, e.g. `api.example.com`.
    Exact(Box<str>),
    /// A wildcard: the lower-case suffix including the leading dot, e.g. `.example.com` for
    /// `*.example.com`. It matches exactly one or more labels before the suffix, never the
    /// bare suffix itself.
    Wildcard(Box<str>),
}

/// A compiled routing rule.
#[derive(Debug)]
pub struct Rule {
    /// The rule's name, or its index as a string when unnamed.
    pub name: Arc<str>,
    /// The rule's index in the Route's spec.
    pub index: usize,
    /// Matches, OR-ed; never empty (the compiler turns "no matches" into `Prefix /`).
    pub matches: Vec<RequestMatch>,
    /// What happens to a matched request.
    pub action: RuleAction,
    /// Request counters and latency histograms of this rule (and of its Route), shared by
    /// successive snapshots while the rule exists (see [`crate::observe::stats`]). Their
    /// Route's key is the rule's Route ([`Rule::route`]).
    pub stats: Arc<crate::observe::stats::RuleStats>,
}

impl Rule {
    /// The Route this rule belongs to (kept once, in the Route's stats, not in every rule:
    /// memory per Route).
    pub fn route(&self) -> &ObjectKey {
        self.stats.route()
    }
}

/// What a matched rule does.
#[derive(Debug)]
pub struct RuleAction {
    /// The weighted backends.
    pub backends: WeightedBackends,
    /// Rewrites applied before proxying (boxed: most rules have none, and inline it made
    /// every rule 64 bytes larger).
    pub rewrite: Option<Box<Rewrite>>,
    /// Upstream timeouts (shared: most rules have the defaults, [`Timeouts::shared`]).
    pub timeouts: Arc<Timeouts>,
    /// Retry policy (shared: most rules have none, [`RetryPolicy::shared`]).
    pub retries: Arc<RetryPolicy>,
    /// Filter chain of this rule, in the fixed phase order.
    pub filters: Arc<[Filter]>,
    /// The Route has `tls.httpRedirect` and a certificate that serves: plain-HTTP requests
    /// are answered 301 to `https://` instead.
    pub https_redirect: bool,
    /// `aggregate`: the rule answers one JSON object composed of its parts (fetched from
    /// their own backends) instead of proxying to `backends` (then empty). `None` on every
    /// other rule: the proxy pays one `Option` check for it.
    pub aggregate: Option<Arc<crate::aggregate::Aggregate>>,
}

/// Built-in filters, a closed set, compiled per rule and kept in the fixed phase order of
/// [`crate::filter::Phase`]. The chain runner in [`crate::filter`] dispatches on the
/// variant without a catch-all arm: a new kind of filter is a new variant plus one arm in
/// each phase there, and the compiler will not build until both say what it does.
/// Filters built from one Plugin object are shared (`Arc`) by every rule using it.
#[derive(Debug, Clone)]
pub enum Filter {
    /// The rule cannot be served safely, e.g. it references a Plugin that does not exist
    /// or is not accepted (which might have been an authentication plugin): every request
    /// is answered 503. The message is for logs only.
    Unavailable(Arc<str>),
    /// `correlationId`: keeps or mints the request's correlation id, echoes it.
    CorrelationId(Arc<crate::filter::correlation::CorrelationId>),
    /// `ipRestriction`: 403 for denied client addresses.
    IpRestriction(Arc<crate::filter::ip::IpRestriction>),
    /// `cors`: preflights answered by the gateway, CORS headers on every response.
    Cors(Arc<crate::filter::cors::Cors>),
    /// `redirect`: the gateway answers with a redirect.
    Redirect(Arc<crate::filter::answer::Redirect>),
    /// `directResponse`: the gateway answers with a fixed response.
    DirectResponse(Arc<crate::filter::answer::DirectResponse>),
    /// `requestSize`: 413 for bodies over the limit.
    RequestSize(Arc<crate::filter::size::RequestSize>),
    /// Authentication by `jwt` and/or `keyAuth` (either credential suffices), then
    /// `extAuth` when configured.
    Authenticate(Arc<crate::filter::Authenticate>),
    /// `rateLimit`: one per Plugin object, shared by every rule (and Consumer) using it, so
    /// they share its counters.
    RateLimit(Arc<crate::ratelimit::RateLimit>),
    /// `requestHeaders`: set/add/remove on the upstream request.
    RequestHeaders(Arc<crate::filter::headers::HeaderTransform>),
    /// `responseHeaders`: set/add/remove on the response to the client.
    ResponseHeaders(Arc<crate::filter::headers::HeaderTransform>),
    /// `compression`: gzip, br or zstd by `Accept-Encoding`.
    Compression(Arc<crate::filter::compression::Compression>),
    /// `cache`: answers from the response cache, stores upstream answers.
    Cache(Arc<crate::cache::CachePlugin>),
}

impl Filter {
    /// The phase this filter runs in.
    pub fn phase(&self) -> crate::filter::Phase {
        use crate::filter::Phase;
        match self {
            Filter::Unavailable(_) => Phase::Guard,
            Filter::CorrelationId(_) => Phase::CorrelationId,
            Filter::IpRestriction(_) => Phase::IpRestriction,
            Filter::Cors(_) => Phase::Cors,
            Filter::Redirect(_) | Filter::DirectResponse(_) => Phase::Answer,
            Filter::RequestSize(_) => Phase::RequestSize,
            Filter::Authenticate(_) => Phase::Authentication,
            Filter::RateLimit(_) => Phase::RateLimit,
            Filter::RequestHeaders(_) => Phase::RequestHeaders,
            Filter::ResponseHeaders(_) => Phase::ResponseHeaders,
            Filter::Compression(_) => Phase::Compression,
            Filter::Cache(_) => Phase::Cache,
        }
    }

    /// The kind's name, as in a Plugin spec (`unavailable` for the guard).
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Unavailable(_) => "unavailable",
            Filter::CorrelationId(_) => "correlationId",
            Filter::IpRestriction(_) => "ipRestriction",
            Filter::Cors(_) => "cors",
            Filter::Redirect(_) => "redirect",
            Filter::DirectResponse(_) => "directResponse",
            Filter::RequestSize(_) => "requestSize",
            Filter::Authenticate(_) => "authentication",
            Filter::RateLimit(_) => "rateLimit",
            Filter::RequestHeaders(_) => "requestHeaders",
            Filter::ResponseHeaders(_) => "responseHeaders",
            Filter::Compression(_) => "compression",
            Filter::Cache(_) => "cache",
        }
    }
}

/// A parsed rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Replacement for the matched prefix (Prefix matches only).
    pub replace_prefix: Option<Box<str>>,
    /// Replacement for the whole path.
    pub replace_full_path: Option<Box<str>>,
    /// Replacement `Host` header.
    pub host: Option<HeaderValue>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect timeout per attempt.
    pub connect: Duration,
    /// Until response headers, across all attempts; `None` = no limit.
    pub request: Option<Duration>,
    /// Longest silence on a streaming exchange or an upgraded (WebSocket) connection
    /// after the response headers; `None` = no limit.
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Some(Duration::from_secs(60)),
            idle: None,
        }
    }
}

impl Timeouts {
    /// `self` behind an `Arc`: the defaults are one `Arc` shared by every rule that has them
    /// (memory per Route: a rule keeps a pointer instead of 48 bytes).
    pub fn shared(self) -> Arc<Timeouts> {
        static DEFAULT: std::sync::LazyLock<Arc<Timeouts>> =
            std::sync::LazyLock::new(|| Arc::new(Timeouts::default()));
        if self == **DEFAULT { Arc::clone(&DEFAULT) } else { Arc::new(self) }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<Duration>,
    /// Retry on connect failure.
    pub on_connect_failure: bool,
    /// Retry on per-try timeout.
    pub on_timeout: bool,
    /// Retry on 500/502/503/504 answers.
    pub on_5xx: bool,
}

impl RetryPolicy {
    /// `self` behind an `Arc`: no retries (the default) is one `Arc` shared by every rule
    /// without a policy (memory per Route).
    pub fn shared(self) -> Arc<RetryPolicy> {
        static NONE: std::sync::LazyLock<Arc<RetryPolicy>> =
            std::sync::LazyLock::new(|| Arc::new(RetryPolicy::default()));
        if self == **NONE { Arc::clone(&NONE) } else { Arc::new(self) }
    }
}

/// Dense index of a backend in the [`BackendTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

/// A backend with its relative weight.
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    /// Index into the [`BackendTable`].
    pub id: BackendId,
    /// Relative weight; 0 gets no traffic.
    pub weight: u32,
}

/// The weighted backends of a rule, with a precomputed smooth weighted round-robin schedule.
#[derive(Debug)]
pub struct WeightedBackends {
    backends: Box<[WeightedBackend]>,
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl WeightedBackends {
    /// Builds the schedule (off the hot path). Weights are reduced by their gcd and the
    /// schedule is capped in length, so large weights keep their proportion.
    pub fn new(backends: Vec<WeightedBackend>) -> Self {
        let schedule = smooth_schedule(&backends);
        WeightedBackends { backends: backends.into(), schedule, cursor: AtomicUsize::new(0) }
    }

    /// The backends, as configured.
    pub fn backends(&self) -> &[WeightedBackend] {
        &self.backends
    }

    /// Picks the next backend: one atomic increment, no lock. `None` when no backend has
    /// a positive weight.
    pub fn pick(&self) -> Option<BackendId> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        let index = self.schedule[n] as usize;
        self.backends.get(index).map(|b| b.id)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round-robin, unrolled into a fixed schedule of backend indexes.
fn smooth_schedule(backends: &[WeightedBackend]) -> Box<[u32]> {
    const MAX_LEN: u64 = 1000;
    let g = backends.iter().map(|b| b.weight).filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Box::new([]);
    }
    let mut weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight / g)).collect();
    let mut total: u64 = weights.iter().sum();
    if total > MAX_LEN {
        // Scale down, keeping every positive weight at least 1.
        for w in weights.iter_mut() {
            if *w > 0 {
                *w = ((*w * MAX_LEN) / total).max(1);
            }
        }
        total = weights.iter().sum();
    }
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0usize;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out.into()
}

/// Identity of a backend: a Service port in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct BackendKey {
    /// Namespace of the Service.
    pub namespace: Arc<str>,
    /// Service name.
    pub service: Arc<str>,
    /// Service port as written in the Route (0 when omitted).
    pub port: i32,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// How the gateway speaks to a backend's endpoints (the Service port's `appProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default; WebSocket upgrades allowed).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, without TLS (`kubernetes.io/h2c`, `grpc`).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`): a BackendPolicy with `tls` and `protocol: H2`.
    H2,
}

/// The resolved endpoints of one backend.
#[derive(Debug)]
pub struct Backend {
    /// Which Service port this is.
    pub key: BackendKey,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Ready endpoints (address and target port).
    pub endpoints: Arc<[SocketAddr]>,
    /// Why the backend cannot be used (e.g. the Service does not exist). Answered as 503
    /// (500 when [`Backend::invalid`] is set).
    pub problem: Option<Box<str>>,
    /// An invalid Gateway API backendRef: requests sent to it are answered 500 (only read
    /// once the backend is known unusable, so it costs nothing to working backends).
    pub invalid: bool,
    /// The BackendPolicy that applies to this backend; `None`: round robin, no health
    /// checks, no circuit breaker, plain connections.
    pub policy: Option<Arc<crate::upstream::BackendPolicy>>,
    /// The runtime state this backend is bound to (set by
    /// [`crate::upstream::UpstreamRegistry::bind`] when the snapshot is published, or on
    /// first use).
    pub(crate) runtime: std::sync::OnceLock<Arc<crate::upstream::registry::ServiceRuntime>>,
    /// `endpoints[i]` as a URI authority, built once here instead of per request.
    authorities: Box<[http::uri::Authority]>,
    cursor: AtomicUsize,
}

impl Backend {
    /// A backend with ready endpoints (possibly none).
    pub fn new(key: BackendKey, endpoints: Vec<SocketAddr>) -> Self {
        // A socket address always formats as a valid authority; filter defensively anyway.
        let endpoints: Vec<(SocketAddr, http::uri::Authority)> = endpoints
            .into_iter()
            .filter_map(|e| http::uri::Authority::try_from(e.to_string()).ok().map(|a| (e, a)))
            .collect();
        let (endpoints, authorities): (Vec<_>, Vec<_>) = endpoints.into_iter().unzip();
        Backend {
            key,
            protocol: UpstreamProtocol::Http1,
            endpoints: endpoints.into(),
            problem: None,
            invalid: false,
            policy: None,
            runtime: std::sync::OnceLock::new(),
            authorities: authorities.into(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// A backend that cannot be resolved; requests get 503 with `problem` logged.
    pub fn unresolved(key: BackendKey, problem: impl Into<Box<str>>) -> Self {
        Backend {
            key,
            protocol: UpstreamProtocol::Http1,
            endpoints: Arc::new([]),
            problem: Some(problem.into()),
            invalid: false,
            policy: None,
            runtime: std::sync::OnceLock::new(),
            authorities: Box::new([]),
            cursor: AtomicUsize::new(0),
        }
    }

    /// An invalid backend (a Gateway API backendRef weir must not use): requests for it
    /// are answered 500 with `problem` logged.
    pub fn invalid(key: BackendKey, problem: impl Into<Box<str>>) -> Self {
        let mut backend = Backend::unresolved(key, problem);
        backend.invalid = true;
        backend
    }

    /// The same backend spoken to with `protocol`.
    pub fn with_protocol(mut self, protocol: UpstreamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The same backend under `policy`.
    pub fn with_policy(mut self, policy: Arc<crate::upstream::BackendPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// `endpoints[i]` as a URI authority.
    pub fn authority(&self, i: usize) -> Option<&http::uri::Authority> {
        self.authorities.get(i)
    }

    /// Round-robin over ready endpoints: one atomic increment.
    pub fn next_endpoint(&self) -> Option<SocketAddr> {
        self.next_target().map(|(addr, _)| addr)
    }

    /// Like [`Backend::next_endpoint`], with the endpoint's precomputed URI authority.
    pub fn next_target(&self) -> Option<(SocketAddr, &http::uri::Authority)> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some((self.endpoints[n], &self.authorities[n]))
    }
}

/// Every backend referenced by the route table, indexed by [`BackendId`].
#[derive(Debug, Default)]
pub struct BackendTable {
    /// Backends; `backends[id.0]`.
    pub backends: Vec<Backend>,
}

impl BackendTable {
    /// The backend for an id; `None` only if the snapshot is inconsistent.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize)
    }
}

#[cfg(test)]
mod tests;
