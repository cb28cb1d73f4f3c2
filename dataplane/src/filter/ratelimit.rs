//! The rate-limit filter: runs the `rateLimit` engine ([`crate::ratelimit`]) in the chain,
//! after authentication, keyed by the consumer and tier that authentication established.
//!
//! The decision is kept in the [`RequestContext`]: the proxy writes its `RateLimit-*` and
//! `X-RateLimit-*` headers on whatever response the request gets (the upstream's, a
//! gateway error after the check, or the 429 itself). A refused request is answered 429 by
//! the proxy's error response and never reaches an upstream.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

use crate::proxy::ProxyError;
use crate::ratelimit::{RateLimit, RateLimiters, TrustedProxies};

use super::RequestContext;

/// The process-wide runtime state of rate limiting: the limiters (with the Redis store of
/// `--redis-url`) and the proxies whose `X-Forwarded-For` is believed
/// (`--trusted-proxies`). Lives in the [`DataPlane`](crate::DataPlane) and outlives
/// snapshots.
#[derive(Debug)]
pub struct RateLimitRuntime {
    /// Every live limiter; `publish` it with each new snapshot's rate limits.
    pub limiters: RateLimiters,
    /// Trusted proxies for `key: ClientIP`.
    pub trusted: TrustedProxies,
}

impl RateLimitRuntime {
    /// Runtime state around `limiters`, believing `X-Forwarded-For` from `trusted`.
    pub fn new(limiters: RateLimiters, trusted: TrustedProxies) -> Self {
        RateLimitRuntime { limiters, trusted }
    }
}

impl Default for RateLimitRuntime {
    /// Local counters only, no trusted proxy.
    fn default() -> Self {
        RateLimitRuntime::new(RateLimiters::new(None), TrustedProxies::default())
    }
}

/// Used when the chain runs without a data plane (unit tests, benchmarks).
static DETACHED: LazyLock<RateLimitRuntime> = LazyLock::new(RateLimitRuntime::default);

/// The request phase of a `rateLimit` plugin when it is decided locally (a `Local` store,
/// or a Redis store's local guard): `None` when the shared store must be asked
/// ([`check`]). Records the decision for the response headers; 429 when spent.
pub fn check_local(
    rate_limit: &RateLimit,
    request: &http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Option<Result<(), ProxyError>> {
    let runtime = ctx.rate_limits.unwrap_or(&DETACHED);
    let peer = ctx.client.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let consumer = ctx.consumer.as_ref().map(|c| &c.username);
    let tier = ctx.consumer.as_ref().and_then(|c| c.tier.as_deref());
    let limiter = runtime.limiters.bind(rate_limit);
    let decision =
        limiter.check_request_local(peer, &request.headers, consumer, tier, &runtime.trusted)?;
    Some(record(decision, ctx))
}

/// The request phase of a `rateLimit` plugin: decides the request (locally when it can,
/// else through the shared store), records the decision for the response headers, and
/// refuses with 429 when the quota is spent.
pub async fn check(
    rate_limit: &RateLimit,
    request: &http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<(), ProxyError> {
    let runtime = ctx.rate_limits.unwrap_or(&DETACHED);
    let peer = ctx.client.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let consumer = ctx.consumer.as_ref().map(|c| &c.username);
    let tier = ctx.consumer.as_ref().and_then(|c| c.tier.as_deref());
    let limiter = runtime.limiters.bind(rate_limit);
    let headers = &request.headers;
    let decision =
        match limiter.check_request_local(peer, headers, consumer, tier, &runtime.trusted) {
            Some(decision) => decision,
            None => limiter.check_request(peer, headers, consumer, tier, &runtime.trusted).await,
        };
    record(decision, ctx)
}

fn record(
    decision: crate::ratelimit::Decision,
    ctx: &mut RequestContext<'_>,
) -> Result<(), ProxyError> {
    let refused = (!decision.allowed).then(|| decision.retry_after_secs().unwrap_or(1));
    ctx.rate_limit = Some(decision);
    match refused {
        None => Ok(()),
        Some(retry_after_secs) => Err(ProxyError::RateLimited { retry_after_secs }),
    }
}
