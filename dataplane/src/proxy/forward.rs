//! Sending a request upstream over weir's connection pools, with timeouts and retries.
//!
//! HTTP/1.1 backends use the keep-alive [`Pool`](crate::upstream::pool::Pool); a WebSocket upgrade request goes over a
//! new connection that hyper lets the proxy take over after a 101 (never pooled); h2c
//! backends share one multiplexed HTTP/2 connection per endpoint ([`H2Pool`](crate::upstream::pool::H2Pool)). Timeouts
//! and retries are the same for all three.
//!
//! Each attempt takes an idle keep-alive connection to the chosen endpoint from the
//! pool or opens a new one (the route's connect timeout bounds the TCP connect), and
//! sends the request in origin form with the `Host` header as prepared. A request that a
//! reused connection could not send (it closed while idle) goes out again on another
//! connection, since nothing of it reached the upstream.
//!
//! Retry semantics (`RetryPolicy`): a request is sent again, to the backend's next
//! endpoint, only when its body can still be sent: either the request had no body, or
//! the body was never polled by an upstream connection. Bodies are streamed, never
//! buffered, so a request whose body started flowing is never retried. On top of that,
//! retries on `Timeout` and `Status5xx` (where the upstream may have seen the request)
//! only apply to idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE); a connect
//! failure is retried for any method, because nothing reached the upstream.
//!
//! The upstream layer decides each attempt's endpoint and whether it may go at all: the
//! backend's balancer picks from its usable endpoints (a retry prefers another endpoint),
//! the circuit breaker gives a permit or the fallback answer at once, and the attempt's
//! outcome feeds the breaker, outlier detection and `weir_upstream_requests_total`. With a
//! BackendPolicy `retry`, retries spend its budget and wait a jittered exponential backoff.
//! A backend without a policy pays none of this: no clock read, no lock, no allocation;
//! its in-flight count and counter are relaxed atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::{Instant, timeout_at};

use super::body::{BodySlot, UpstreamBody, unsent};
use super::error::FallbackReason;
use super::error::ProxyError;
use crate::snapshot::{Backend, RetryPolicy, Timeouts, UpstreamProtocol};
use crate::upstream::balance::{EndpointSet, PickContext};
use crate::upstream::breaker::{ParallelSlot, Permit, Refusal, Transition};
use crate::upstream::health::passive::Outcome;
use crate::upstream::policy::{BackendPolicy, LoadBalancer, RetryBudget};
use crate::upstream::pool::{AttemptError, ConnectError, PooledBody, Transport, Upstream, Via};
use crate::upstream::registry::{
    AttemptResult, EndpointState, Outstanding, RuntimeConfig, ServiceRuntime, UpstreamEvent,
};

/// An upstream request, prepared once and built per attempt.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Method.
    pub method: Method,
    /// Path and query sent upstream (rewritten or as received).
    pub path_and_query: PathAndQuery,
    /// Headers sent upstream (hop-by-hop removed, forwarding headers set).
    pub headers: HeaderMap,
    /// The body, `None` when the client sent none.
    pub body: Option<BodySlot>,
    /// A WebSocket upgrade: sent over a new connection that can be taken over after a 101.
    pub upgrade: bool,
    /// The request's ConsistentHash key (`None`: not hashed, or the attribute is absent).
    pub hash: Option<u64>,
}

impl Prepared {
    fn body_available(&self) -> bool {
        self.body.as_ref().is_none_or(unsent)
    }

    fn build(&self, headers: HeaderMap) -> Request<UpstreamBody> {
        let body = match &self.body {
            None => UpstreamBody::Empty,
            Some(slot) => UpstreamBody::streamed(slot),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        // Origin form: HTTP/1.1 to an origin server sends the path and query only.
        *request.uri_mut() = Uri::from(self.path_and_query.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        request
    }

    /// The HTTP/2 request: absolute URI (`:scheme` `https` over TLS, else `http`;
    /// `:authority` from the prepared `Host`, else the endpoint's address), no `Host` header.
    fn build_h2(
        &self,
        mut headers: HeaderMap,
        endpoint: &Authority,
        tls: bool,
    ) -> Request<UpstreamBody> {
        let authority = headers
            .remove(HOST)
            .and_then(|h| {
                Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(h.as_bytes())).ok()
            })
            .unwrap_or_else(|| endpoint.clone());
        let mut request = self.build(headers);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
        uri.authority = Some(authority);
        uri.path_and_query = Some(self.path_and_query.clone());
        if let Ok(uri) = Uri::from_parts(uri) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_2;
        request
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// What [`send`] did: how many times it retried and where it last went.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Attempts after the first.
    pub retries: u32,
    /// The endpoint of the last attempt.
    pub last: Option<SocketAddr>,
    /// A sampled request's trace: each attempt is recorded, and its `traceparent` names
    /// the attempt's span.
    pub trace: Option<Box<crate::observe::otel::TraceRecord>>,
}

/// What an attempt saw, for its trace span: the status, or why it failed.
fn traced(seen: Seen) -> (Option<u16>, Option<&'static str>) {
    match seen {
        Seen::Status(status) => (Some(status.as_u16()), None),
        Seen::ConnectError => (None, Some("connect_error")),
        Seen::Timeout => (None, Some("timeout")),
        Seen::BadResponse { client: true } => (None, Some("client_body_error")),
        Seen::BadResponse { client: false } => (None, Some("bad_response")),
    }
}

/// The balancer of backends without a policy.
static ROUND_ROBIN: LoadBalancer = LoadBalancer::RoundRobin;

/// One more in a counter for as long as it lives (also when the request is cancelled).
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one attempt saw, for the breaker, outlier detection and metrics.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Status(StatusCode),
    ConnectError,
    Timeout,
    /// The exchange failed; `client`: because the client's body broke (not the upstream's
    /// fault, counted as nothing).
    BadResponse {
        client: bool,
    },
}

impl Seen {
    fn result(self) -> AttemptResult {
        match self {
            Seen::Status(s) if s.is_server_error() => AttemptResult::Status5xx,
            Seen::Status(_) => AttemptResult::Success,
            Seen::ConnectError => AttemptResult::ConnectError,
            Seen::Timeout => AttemptResult::Timeout,
            Seen::BadResponse { .. } => AttemptResult::BadResponse,
        }
    }

    fn outcome(self) -> Option<Outcome> {
        match self {
            Seen::Status(s) if matches!(s.as_u16(), 502..=504) => Some(Outcome::GatewayError),
            Seen::Status(s) if s.is_server_error() => Some(Outcome::Status5xx),
            Seen::Status(_) => Some(Outcome::Success),
            Seen::ConnectError | Seen::Timeout | Seen::BadResponse { client: false } => {
                Some(Outcome::GatewayError)
            }
            Seen::BadResponse { client: true } => None,
        }
    }
}

/// The policy's fallback answer for `reason`.
fn fallback(backend: &Backend, config: &RuntimeConfig, reason: FallbackReason) -> ProxyError {
    let fallback = config.breaker.as_ref().map(|b| Box::new(b.config().fallback.clone()));
    ProxyError::Fallback { backend: backend.key.clone(), reason, fallback }
}

/// Nothing to pick from: the fallback when the policy has one, else a 503 that says why.
fn nothing_usable(
    backend: &Backend,
    set: &EndpointSet,
    config: Option<&RuntimeConfig>,
) -> ProxyError {
    if set.all.is_empty() {
        return ProxyError::NoEndpoint {
            reason: format!("backend {} has no ready endpoint", backend.key),
        };
    }
    match config {
        Some(config) if config.breaker.is_some() => {
            fallback(backend, config, FallbackReason::NoHealthyEndpoint)
        }
        _ => ProxyError::NoEndpoint {
            reason: format!(
                "backend {}: all {} endpoints are unhealthy or ejected",
                backend.key,
                set.all.len()
            ),
        },
    }
}

/// Takes one retry from `budget` if it fits now, counted in flight until the returned guard
/// drops. The check and the count are one atomic step: two requests failing at the same
/// moment on different threads cannot both take the last retry the budget allows.
fn reserve_retry<'a>(runtime: &'a ServiceRuntime, budget: &RetryBudget) -> Option<Counted<'a>> {
    let requests = u64::from(runtime.requests.load(Ordering::Relaxed));
    let allowed = (requests * u64::from(budget.budget_percent) / 100)
        .max(u64::from(RetryBudget::MIN_RETRIES));
    runtime
        .retries
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (u64::from(n) < allowed).then_some(n + 1)
        })
        .ok()
        .map(|_| Counted(&runtime.retries))
}

/// The backoff before retry `n` (0-based): full jitter over `base × 2^n`, capped at `max`.
fn backoff(budget: &RetryBudget, n: u32) -> Duration {
    let ceiling = budget.backoff_base.saturating_mul(1u32 << n.min(20)).min(budget.backoff_max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(..=nanos))
}

/// Reports an attempt's outcome: the breaker (and its events), outlier detection, metrics.
/// Returns the permit's parallel-request slot, kept for the response body.
fn report(
    runtime: &ServiceRuntime,
    config: Option<&RuntimeConfig>,
    permit: Option<Permit<'_>>,
    endpoint: &EndpointState,
    seen: Seen,
    sent: Instant,
) -> Option<ParallelSlot> {
    runtime.count(seen.result());
    runtime.observe_attempt(sent.elapsed());
    let config = config?;
    let policy = config.policy.as_deref()?;
    if permit.is_none() && policy.passive.is_none() {
        return None;
    }
    let outcome = seen.outcome()?;
    let now = Instant::now();
    let mut slot = None;
    if let (Some(permit), Some(breaker)) = (permit, &config.breaker) {
        let success = outcome == Outcome::Success;
        let (transition, kept) = permit.record_keeping_slot(success, now, breaker);
        slot = kept;
        match transition {
            Some(Transition::Opened { failures }) => runtime.event(UpstreamEvent::CircuitOpened {
                backend: runtime.key.clone(),
                policy: policy.source.clone(),
                failures,
                open_for: policy.breaker.as_ref().map_or(Duration::ZERO, |b| b.open_for),
            }),
            Some(Transition::Closed) => runtime.event(UpstreamEvent::CircuitClosed {
                backend: runtime.key.clone(),
                policy: policy.source.clone(),
            }),
            None => {}
        }
    }
    if let Some(passive) = &policy.passive {
        runtime.record_outlier(endpoint, passive, outcome, now);
    }
    slot
}

/// Whether a policy's request path reads the clock.
fn needs_clock(policy: &BackendPolicy) -> bool {
    policy.passive.is_some() || policy.slow_start.is_some() || policy.breaker.is_some()
}

/// Sends `request` to `backend`'s endpoints (picked by the backend's balancer, another
/// endpoint on each retry) under `timeouts` and `retries`, until response headers arrive.
pub(crate) async fn send(
    upstream: &Upstream,
    backend: &Backend,
    timeouts: &Timeouts,
    retries: &RetryPolicy,
    mut request: Prepared,
    attempts: &mut Attempts,
) -> Result<Response<PooledBody>, ProxyError> {
    let deadline = timeouts.request.map(|d| Instant::now() + d);
    let idempotent = idempotent(&request.method);
    let via = match (backend.protocol, request.upgrade) {
        (UpstreamProtocol::H2c | UpstreamProtocol::H2, _) => Via::H2,
        (UpstreamProtocol::Http1, true) => Via::Upgrade,
        (UpstreamProtocol::Http1, false) => Via::Pooled,
    };
    let runtime = ServiceRuntime::of(backend);
    // Only a backend with a policy loads the policy's runtime configuration.
    let config: Option<Arc<RuntimeConfig>> = backend.policy.as_ref().map(|_| runtime.config());
    let policy = config.as_ref().and_then(|c| c.policy.as_deref());
    let plain = Transport::default();
    let transport = config.as_ref().map_or(&plain, |c| &c.transport);
    let budget = policy.and_then(|p| p.retry);
    let _request = budget.map(|_| Counted::new(&runtime.requests));
    let mut retrying: Option<Counted<'_>> = None;
    let mut left = retries.attempts;
    loop {
        // The clock is read only for what needs it (ejection expiry, slow start, breaker).
        let now = policy.filter(|p| needs_clock(p)).map(|p| {
            let now = Instant::now();
            if p.passive.is_some() {
                runtime.expire_ejections(now);
            }
            now
        });
        let endpoint = {
            let set = runtime.endpoints();
            let cx = PickContext {
                balancer: policy.map_or(&ROUND_ROBIN, |p| &p.load_balancer),
                cursor: &runtime.cursor,
                hash: request.hash,
                avoid: attempts.last,
                slow_start: policy.and_then(|p| p.slow_start).zip(now),
            };
            match set.pick(&cx) {
                Some(endpoint) => Arc::clone(endpoint),
                None => return Err(nothing_usable(backend, &set, config.as_deref())),
            }
        };
        let breaker = config.as_deref().and_then(|c| c.breaker.as_ref().map(|b| (c, b)));
        let permit = match (breaker, now) {
            (Some((config, breaker)), Some(now)) => match breaker.try_acquire(now) {
                Ok(permit) => Some(permit),
                Err(refusal) => {
                    let (result, reason) = match refusal {
                        Refusal::Open | Refusal::ProbeInFlight => {
                            (AttemptResult::CircuitOpen, FallbackReason::CircuitOpen)
                        }
                        Refusal::MaxParallel => (AttemptResult::Overflow, FallbackReason::Overflow),
                    };
                    runtime.count(result);
                    return Err(fallback(backend, config, reason));
                }
            },
            _ => None,
        };
        let endpoint_addr = endpoint.addr;
        attempts.last = Some(endpoint_addr);
        // A copy of the headers is needed only when a request that reached the upstream
        // may be sent again; after a connect failure the headers come back unused.
        let resend_after_sent = left > 0 && (retries.on_timeout || retries.on_5xx);
        let mut headers = if resend_after_sent {
            request.headers.clone()
        } else {
            std::mem::take(&mut request.headers)
        };
        if let Some(trace) = attempts.trace.as_deref_mut() {
            headers.insert(
                super::trace::TRACEPARENT,
                trace.begin_attempt(endpoint_addr, attempts.retries),
            );
        }
        let built = match via {
            Via::H2 => request.build_h2(headers, &endpoint.authority, transport.tls.is_some()),
            Via::Pooled | Via::Upgrade => request.build(headers),
        };
        let mut outstanding = Outstanding::begin(Arc::clone(&endpoint));
        let sent = Instant::now();
        let future = upstream.request(
            endpoint_addr,
            transport,
            timeouts.connect,
            built,
            via,
            sent.into_std(),
        );
        let try_deadline = retries.per_try_timeout.map(|d| Instant::now() + d);
        let limit = match (deadline, try_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match limit {
            Some(at) => timeout_at(at, future).await.ok(),
            None => Some(future.await),
        };
        // What the attempt saw, whether the route's retry policy wants it sent again, and
        // the answer when it is not.
        let (seen, wanted, answer) = match result {
            None => {
                let per_try_fired = try_deadline.is_some_and(|t| deadline.is_none_or(|d| t < d));
                let wanted = per_try_fired && retries.on_timeout && idempotent;
                (Seen::Timeout, wanted, Err(ProxyError::UpstreamTimeout))
            }
            Some(Err(AttemptError::Connect(source, headers))) => {
                if !resend_after_sent {
                    request.headers = headers;
                }
                if matches!(source, ConnectError::ConnectionLimit | ConnectError::PendingLimit) {
                    // A cap, not the endpoint's fault: the permit goes back unrecorded
                    // (dropped on return).
                    runtime.count(AttemptResult::Overflow);
                    if let Some(trace) = attempts.trace.as_deref_mut() {
                        trace.end_attempt(None, Some("overflow"));
                    }
                    tracing::debug!(backend = %backend.key, error = %source, "connection cap reached, answering with the fallback");
                    return Err(match config.as_deref() {
                        Some(config) => fallback(backend, config, FallbackReason::Overflow),
                        None => ProxyError::UpstreamConnect { source: Box::new(source) },
                    });
                }
                let wanted = retries.on_connect_failure;
                (
                    Seen::ConnectError,
                    wanted,
                    Err(ProxyError::UpstreamConnect { source: Box::new(source) }),
                )
            }
            Some(Err(AttemptError::Exchange(source))) => {
                let client = super::body::ClientBodyError::is_cause_of(&source);
                (
                    Seen::BadResponse { client },
                    false,
                    Err(ProxyError::BadResponse { source: Box::new(source) }),
                )
            }
            Some(Ok(response)) => {
                let status = response.status();
                let wanted = retries.on_5xx && idempotent && retryable_status(status);
                (Seen::Status(status), wanted, Ok(response))
            }
        };
        if let Some(trace) = attempts.trace.as_deref_mut() {
            let (status, error) = traced(seen);
            trace.end_attempt(status, error);
        }
        outstanding.keep(report(runtime, config.as_deref(), permit, &endpoint, seen, sent));
        // The first retry of a request under a budget takes its place in the budget here;
        // later retries of the same request keep that place.
        let mut reserved = None;
        let can_retry = wanted
            && left > 0
            && request.body_available()
            && match &budget {
                Some(b) if retrying.is_none() => {
                    reserved = reserve_retry(runtime, b);
                    reserved.is_some()
                }
                _ => true,
            };
        if !can_retry {
            if wanted && left > 0 && budget.is_some() && request.body_available() {
                tracing::debug!(backend = %backend.key, "retry budget exhausted, not retrying");
            }
            return match answer {
                // In flight (and holding its parallel slot) until the body ends.
                Ok(mut response) => {
                    response.body_mut().hold(outstanding);
                    Ok(response)
                }
                Err(error) => {
                    tracing::debug!(endpoint = %endpoint_addr, %error, "upstream attempt failed");
                    Err(error)
                }
            };
        }
        match &answer {
            Ok(response) => {
                tracing::debug!(endpoint = %endpoint_addr, status = %response.status(), "upstream 5xx, retrying")
            }
            Err(error) => {
                tracing::debug!(endpoint = %endpoint_addr, %error, "upstream attempt failed, retrying")
            }
        }
        if let Some(budget) = &budget {
            let until = Instant::now() + backoff(budget, attempts.retries);
            if deadline.is_some_and(|d| until >= d) {
                tracing::debug!(backend = %backend.key, "retry backoff past the request deadline, not retrying");
                return answer;
            }
            drop(answer);
            if let Some(place) = reserved {
                retrying = Some(place);
            }
            tokio::time::sleep_until(until).await;
        }
        left -= 1;
        attempts.retries += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let budget = RetryBudget {
            budget_percent: 20,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        };
        for n in 0..8u32 {
            let cap = Duration::from_millis(25 * (1 << n)).min(Duration::from_millis(250));
            let waits: Vec<Duration> = (0..200).map(|_| backoff(&budget, n)).collect();
            assert!(waits.iter().all(|w| *w <= cap), "{n}");
            // Jittered: not all the same, and some in the upper half.
            assert!(waits.iter().any(|w| *w > cap / 2), "{n}");
            assert!(waits.iter().any(|w| *w < cap / 2), "{n}");
        }
        assert!(backoff(&budget, 100) <= Duration::from_millis(250));
    }

    #[test]
    fn concurrent_failures_never_take_more_retries_than_the_budget_allows() {
        let backend = crate::Backend::new(
            crate::BackendKey { namespace: "default".into(), service: "budget".into(), port: 80 },
            vec!["127.0.0.1:9".parse().unwrap()],
        );
        let runtime = ServiceRuntime::of(&backend);
        let budget = RetryBudget {
            budget_percent: 0,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
        };
        let start = std::sync::Barrier::new(8);
        for _ in 0..200 {
            // 8 threads fail at once and each asks for a retry, holding what it got.
            let taken = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let got = reserve_retry(runtime, &budget);
                            start.wait();
                            got.is_some()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).filter(|got| *got).count()
            });
            assert_eq!(taken, RetryBudget::MIN_RETRIES as usize);
            assert_eq!(runtime.retries.load(Ordering::Relaxed), 0, "guards give the places back");
        }
    }

    #[test]
    fn outcomes_follow_the_api() {
        assert_eq!(Seen::Status(StatusCode::NOT_FOUND).outcome(), Some(Outcome::Success));
        assert_eq!(
            Seen::Status(StatusCode::INTERNAL_SERVER_ERROR).outcome(),
            Some(Outcome::Status5xx)
        );
        assert_eq!(Seen::Status(StatusCode::BAD_GATEWAY).outcome(), Some(Outcome::GatewayError));
        assert_eq!(Seen::Timeout.outcome(), Some(Outcome::GatewayError));
        assert_eq!(Seen::BadResponse { client: true }.outcome(), None);
        assert_eq!(Seen::Status(StatusCode::NOT_FOUND).result(), AttemptResult::Success);
        assert_eq!(
            Seen::Status(StatusCode::SERVICE_UNAVAILABLE).result(),
            AttemptResult::Status5xx
        );
    }
}
