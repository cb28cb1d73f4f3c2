//! The filter chain: a rule's [`Filter`]s run in the fixed phase order around the proxy.
//!
//! ```text
//! request:  guard → correlation id → ip restriction → CORS preflight → redirect / direct
//!           response → size limit → authentication (jwt, keyAuth, extAuth)
//!           → consumer plugins merged in → rate limit → request headers → cache lookup
//!           → (proxy)
//! response: rate-limit headers → correlation id echo → CORS headers → X-Cache-Status
//!           → response headers → compression
//! ```
//!
//! Filters are a closed enum ([`Filter`]); this module is the one place that dispatches on
//! it, in [`apply_request`] and [`apply_response`], without a catch-all arm. A request-phase
//! filter returns [`Flow::Continue`] or [`Flow::Respond`] (the gateway answers: a CORS
//! preflight, a redirect, a fixed response, the auth service's refusal), or an error that
//! the proxy's one error function turns into the gateway's JSON answer (401, 403, 413,
//! 429, 503). The response phase runs on every response of a matched rule: the upstream's
//! and the gateway's own, errors included.
//!
//! A rule without filters costs one emptiness check: no allocation, no boxed future. The
//! request phase is an `async fn` so filters that need I/O (a Redis rate limit, a JWKS
//! refetch, extAuth) can await; the rest are synchronous calls inside it.
//!
//! Authentication leaves the caller's identity in the [`RequestContext`]; later phases
//! (rate limiting by consumer or tier, header templates) read it from there. When the
//! authenticated Consumer has plugins of its own, they are merged into the rest of the
//! chain, response phase included: a consumer plugin replaces the rule's filter of the same
//! [`Phase`] (most specific wins).

pub mod answer;
pub mod auth;
pub mod compression;
pub mod consumers;
pub mod correlation;
pub mod cors;
pub mod extauth;
pub mod headers;
pub mod ip;
pub mod jwt;
pub mod keyauth;
pub mod ratelimit;
pub mod size;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Response};

pub use auth::{AuthFailure, Authenticate, Challenge};
pub use consumers::{ConsumerEntry, ConsumerStore};
pub use ratelimit::RateLimitRuntime;

use crate::observe::otel::{TraceRecord, record as trace_record};
use crate::proxy::{ProxyBody, ProxyError, Upstream};
use crate::ratelimit::Decision;
use crate::snapshot::{BackendTable, Filter, ObjectKey, RequestMatch};

/// The fixed phases of the chain, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Rule-level guards that answer before anything else (a misconfigured rule).
    Guard,
    /// Request id propagation (`correlationId`).
    CorrelationId,
    /// Client address allow and deny lists (`ipRestriction`).
    IpRestriction,
    /// CORS preflight answers and origin checks (`cors`).
    Cors,
    /// Answers made by the gateway: `redirect`, `directResponse`.
    Answer,
    /// Request body size limit (`requestSize`).
    RequestSize,
    /// `jwt`, `keyAuth` and `extAuth`.
    Authentication,
    /// Rate limiting (may key by the consumer and its tier).
    RateLimit,
    /// Request header transforms.
    RequestHeaders,
    /// Response cache lookup ([`crate::cache`]).
    Cache,
    /// Response header transforms.
    ResponseHeaders,
    /// Response compression.
    Compression,
}

/// What a request-phase filter decided. Small on purpose: it is returned by every filter
/// of every request, and only the rare answer pays for the allocation.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next filter, then the upstream.
    Continue,
    /// Answer the client with this response; no later filter and no upstream sees the
    /// request. The response phase still runs on it.
    Respond(Box<Response<ProxyBody>>),
}

/// Per-request state the filters share: who the client is, what authentication
/// established, and what the response phase must add.
#[derive(Debug)]
pub struct RequestContext<'a> {
    /// True once an authentication filter accepted the request.
    pub authenticated: bool,
    /// The authenticated Consumer, when the credential identified one.
    pub consumer: Option<Arc<ConsumerEntry>>,
    /// The TCP peer (the proxy sets it; rate limiting keys by it).
    pub client: Option<SocketAddr>,
    /// The data plane's rate-limit state (the proxy sets it; without it a process-wide
    /// local-only state is used).
    pub rate_limits: Option<&'a RateLimitRuntime>,
    /// The rate-limit decision of this request, once the rate-limit phase ran: its headers
    /// go on every response.
    pub rate_limit: Option<Decision>,
    /// The request id (`X-Request-ID`, kept when valid, else minted): `${request_id}` and
    /// the `requestId` of the gateway's error bodies.
    pub request_id: HeaderValue,
    /// The scheme the client used (`http`; empty means `http`).
    pub scheme: &'static str,
    /// The Route of the matched rule (`${route}`).
    pub route: Option<&'a ObjectKey>,
    /// The match entry that selected the rule (`redirect` replaces its prefix).
    pub matched: Option<&'a RequestMatch>,
    /// The client address as rate limiting sees it (trusted proxies applied), computed at
    /// the start of the request phase of a rule with filters.
    pub client_ip: Option<IpAddr>,
    /// The backends of the live snapshot (an `extAuth` Service).
    pub backends: Option<&'a BackendTable>,
    /// The upstream pools (an `extAuth` service is asked through them).
    pub upstream: Option<&'a Upstream>,
    /// What the CORS filter decided about the request's `Origin`.
    pub cors: cors::CorsState,
    /// The correlation id header and value to echo on the response.
    pub correlation: Option<(HeaderName, HeaderValue)>,
    /// The response coding negotiated from `Accept-Encoding` (`compression`).
    pub encoding: Option<compression::Negotiated>,
    /// The request body limit (`requestSize`) the proxy enforces while streaming.
    pub body_limit: Option<u64>,
    /// The verified client certificate's subject (TLS with client certificates only):
    /// `${client_cert_subject}`.
    pub client_cert_subject: Option<HeaderValue>,
    /// The spans of a sampled request (tracing on): authentication and rate limit are
    /// timed into it; `None` otherwise (one check per filter).
    pub trace: Option<Box<TraceRecord>>,
    /// The response cache of the data plane (the proxy sets it).
    pub cache_runtime: Option<&'a Arc<crate::cache::CacheRuntime>>,
    /// What the cache filter decided (rules with a cache filter only).
    pub cache: Option<Box<crate::cache::CacheState>>,
    /// The rule's `timeouts.request`: how long a coalesced cache miss waits for its leader.
    pub request_timeout: Option<std::time::Duration>,
}

impl Default for RequestContext<'_> {
    fn default() -> Self {
        RequestContext {
            authenticated: false,
            consumer: None,
            client: None,
            rate_limits: None,
            rate_limit: None,
            request_id: HeaderValue::from_static(""),
            scheme: "http",
            route: None,
            matched: None,
            client_ip: None,
            backends: None,
            upstream: None,
            cors: cors::CorsState::NotApplied,
            correlation: None,
            encoding: None,
            body_limit: None,
            client_cert_subject: None,
            trace: None,
            cache_runtime: None,
            cache: None,
            request_timeout: None,
        }
    }
}

impl RequestContext<'_> {
    /// The authenticated consumer's tier, for rate limiting.
    pub fn tier(&self) -> Option<&str> {
        self.consumer.as_ref().and_then(|c| c.tier.as_deref())
    }

    /// The trusted proxies of `--trusted-proxies` (none without a data plane).
    pub fn trusted(&self) -> Option<&crate::ratelimit::TrustedProxies> {
        self.rate_limits.map(|r| &r.trusted)
    }
}

/// The consumer's plugins, when the authenticated consumer has any.
fn consumer_plugins(ctx: &RequestContext<'_>) -> Option<Arc<[Filter]>> {
    ctx.consumer.as_ref().map(|c| Arc::clone(&c.plugins)).filter(|p| !p.is_empty())
}

/// Runs the request phase of `filters` on the request head. `Ok(Flow::Respond)` and `Err`
/// are answered by the gateway (the latter by the proxy's error response) and the request
/// never reaches an upstream.
pub async fn request_phase(
    filters: &[Filter],
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<Flow, ProxyError> {
    prepare(filters, request, ctx);
    for (i, filter) in filters.iter().enumerate() {
        let started = trace_start(filter, ctx);
        let flow = match apply_sync(filter, request, ctx) {
            Some(decided) => decided,
            None => apply_async(filter, request, ctx).await,
        };
        let flow = trace_end(filter, started, ctx, flow)?;
        if let Flow::Respond(response) = flow {
            return Ok(Flow::Respond(response));
        }
        if filter.phase() == Phase::Authentication
            && let Some(plugins) = consumer_plugins(ctx)
        {
            let rest = filters.get(i + 1..).unwrap_or(&[]);
            for next in Merged::new(rest, &plugins) {
                // Authentication does not run twice; consumer plugins never authenticate.
                if next.phase() == Phase::Authentication {
                    continue;
                }
                let started = trace_start(next, ctx);
                let flow = match apply_sync(next, request, ctx) {
                    Some(decided) => decided,
                    None => apply_async(next, request, ctx).await,
                };
                let flow = trace_end(next, started, ctx, flow)?;
                if let Flow::Respond(response) = flow {
                    return Ok(Flow::Respond(response));
                }
            }
            return Ok(Flow::Continue);
        }
    }
    Ok(Flow::Continue)
}

/// The start of a timed filter (authentication, rate limit) of a sampled request.
fn trace_start(filter: &Filter, ctx: &RequestContext<'_>) -> Option<u64> {
    match ctx.trace {
        Some(_) if trace_record::timed(filter) => Some(trace_record::now_nanos()),
        _ => None,
    }
}

/// Records what a timed filter decided in the request's trace.
fn trace_end(
    filter: &Filter,
    started: Option<u64>,
    ctx: &mut RequestContext<'_>,
    flow: Result<Flow, ProxyError>,
) -> Result<Flow, ProxyError> {
    if let Some(start) = started
        && let Some(trace) = ctx.trace.as_deref_mut()
    {
        trace.filter_done(filter, start, &flow);
    }
    flow
}

impl RequestContext<'_> {
    /// Sets [`RequestContext::client_ip`]: the TCP peer, or the client address from
    /// `X-Forwarded-For` when the peer is a trusted proxy.
    pub(crate) fn resolve_client_ip(&mut self, headers: &http::HeaderMap) {
        if let Some(peer) = self.client {
            self.client_ip = Some(match self.trusted() {
                Some(trusted) if !trusted.is_empty() => crate::ratelimit::client_ip(
                    peer,
                    headers.get_all(crate::proxy::headers::X_FORWARDED_FOR).iter(),
                    trusted,
                ),
                _ => peer.ip().to_canonical(),
            });
        }
    }
}

/// What every filter of the rule may need before the chain runs, whatever stops it: the
/// client address, the CORS verdict on the `Origin` (a 403 from `ipRestriction`, which
/// runs before CORS, is still readable by the browser), and the response coding (a
/// `directResponse` or an error answer is compressed like an upstream response).
fn prepare(filters: &[Filter], request: &http::request::Parts, ctx: &mut RequestContext<'_>) {
    ctx.resolve_client_ip(&request.headers);
    for filter in filters {
        if let Filter::Cors(cors) = filter {
            ctx.cors = cors.evaluate(&request.headers);
        }
        // Before any filter can answer: the gateway's own answers are compressed too.
        if let Filter::Compression(compression) = filter {
            compression.negotiate(request, ctx);
        }
    }
}

/// The rest of a rule's chain merged with a consumer's plugins, both in phase order: a
/// consumer filter replaces the rule's filters of its phase. No allocation.
struct Merged<'f> {
    rule: &'f [Filter],
    consumer: &'f [Filter],
    r: usize,
    c: usize,
}

impl<'f> Merged<'f> {
    fn new(rule: &'f [Filter], consumer: &'f [Filter]) -> Self {
        Merged { rule, consumer, r: 0, c: 0 }
    }
}

impl<'f> Iterator for Merged<'f> {
    type Item = &'f Filter;

    fn next(&mut self) -> Option<&'f Filter> {
        loop {
            match (self.rule.get(self.r), self.consumer.get(self.c)) {
                (None, None) => return None,
                (Some(rf), Some(cf)) if cf.phase() <= rf.phase() => {
                    self.c += 1;
                    return Some(cf);
                }
                (Some(rf), _) => {
                    self.r += 1;
                    if self.consumer.iter().any(|cf| cf.phase() == rf.phase()) {
                        continue;
                    }
                    return Some(rf);
                }
                (None, Some(cf)) => {
                    self.c += 1;
                    return Some(cf);
                }
            }
        }
    }
}

/// The request phase of one filter, when it can be decided without I/O; `None` for the
/// filters that may await ([`apply_async`]). Every kind is named: a new kind does not
/// compile until it says what it does here. Synchronous filters never build a future.
fn apply_sync(
    filter: &Filter,
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Option<Result<Flow, ProxyError>> {
    Some(match filter {
        Filter::Unavailable(reason) => Err(ProxyError::Unavailable { reason: reason.to_string() }),
        Filter::CorrelationId(c) => {
            c.request(request, ctx);
            Ok(Flow::Continue)
        }
        Filter::IpRestriction(ip) => ip.check(ctx).map(|()| Flow::Continue),
        Filter::Cors(cors) => Ok(cors.request(request, ctx)),
        Filter::Redirect(redirect) => Ok(Flow::Respond(Box::new(redirect.respond(request, ctx)))),
        Filter::DirectResponse(direct) => Ok(Flow::Respond(Box::new(direct.respond()))),
        Filter::RequestSize(size) => size.check(request, ctx).map(|()| Flow::Continue),
        // A local decision (or a cached one) needs no I/O; a Redis one does.
        Filter::RateLimit(rate_limit) => {
            return ratelimit::check_local(rate_limit, request, ctx)
                .map(|r| r.map(|()| Flow::Continue));
        }
        Filter::RequestHeaders(transform) => {
            transform.apply(&mut request.headers, ctx);
            Ok(Flow::Continue)
        }
        // The rule's own was negotiated by `prepare`; again here for a consumer's, which
        // replaces it (idempotent).
        Filter::Compression(compression) => {
            compression.negotiate(request, ctx);
            Ok(Flow::Continue)
        }
        Filter::ResponseHeaders(_) => Ok(Flow::Continue),
        Filter::Authenticate(_) | Filter::Cache(_) => return None,
    })
}

/// The request phase of the filters that may await: authentication (a JWKS refetch,
/// extAuth) and a rate limit kept in Redis.
async fn apply_async(
    filter: &Filter,
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<Flow, ProxyError> {
    match filter {
        Filter::Authenticate(auth) => auth.authenticate(request, ctx).await,
        Filter::RateLimit(rate_limit) => {
            ratelimit::check(rate_limit, request, ctx).await.map(|()| Flow::Continue)
        }
        Filter::Cache(cache) => crate::cache::lookup(cache, request, ctx).await,
        // Decided synchronously by `apply_sync`.
        Filter::Unavailable(_)
        | Filter::CorrelationId(_)
        | Filter::IpRestriction(_)
        | Filter::Cors(_)
        | Filter::Redirect(_)
        | Filter::DirectResponse(_)
        | Filter::RequestSize(_)
        | Filter::RequestHeaders(_)
        | Filter::ResponseHeaders(_)
        | Filter::Compression(_) => Ok(Flow::Continue),
    }
}

/// Runs the response phase of a matched rule's chain (merged with the authenticated
/// consumer's plugins) on `response`, whoever produced it: the upstream or the gateway.
/// Synchronous; the rate-limit headers are written first ([`finish_response`]).
pub fn response_phase(
    filters: &[Filter],
    response: &mut Response<ProxyBody>,
    ctx: &RequestContext<'_>,
) {
    match consumer_plugins(ctx) {
        None => filters.iter().for_each(|f| apply_response(f, response, ctx)),
        Some(plugins) => {
            Merged::new(filters, &plugins).for_each(|f| apply_response(f, response, ctx))
        }
    }
}

/// The response phase of one filter.
fn apply_response(filter: &Filter, response: &mut Response<ProxyBody>, ctx: &RequestContext<'_>) {
    match filter {
        Filter::CorrelationId(c) => c.response(response.headers_mut(), ctx),
        Filter::Cors(cors) => cors.response(response.headers_mut(), ctx),
        Filter::ResponseHeaders(transform) => transform.apply(response.headers_mut(), ctx),
        Filter::Compression(compression) => compression.response(response, ctx),
        Filter::Cache(_) => crate::cache::response(response, ctx),
        // Request-phase only. The rate-limit headers are written by `finish_response`.
        Filter::Unavailable(_)
        | Filter::IpRestriction(_)
        | Filter::Redirect(_)
        | Filter::DirectResponse(_)
        | Filter::RequestSize(_)
        | Filter::Authenticate(_)
        | Filter::RateLimit(_)
        | Filter::RequestHeaders(_) => {}
    }
}

/// What every response of the request gets whatever produced it (the upstream or the
/// gateway): the rate-limit headers, when the rate-limit phase ran.
pub fn finish_response(headers: &mut http::HeaderMap, ctx: &RequestContext<'_>) {
    if let Some(decision) = &ctx.rate_limit {
        decision.write_headers(headers);
    }
}
