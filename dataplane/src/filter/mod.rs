//! The filter chain: a rule's [`Filter`]s run in the fixed phase order around the proxy.
//!
//! ```text
//! request:  guard → correlation id → ip restriction → CORS → authentication
//!           → consumer plugins merged in → rate limit → request headers → cache → proxy
//! response: response headers → cache store → log
//! ```
//!
//! Filters are a closed enum ([`Filter`]); this module is the one place that dispatches on
//! it. A rule without filters costs one emptiness check: no allocation, no boxed future.
//! The request phase is an `async fn` so filters that need I/O (a Redis rate limit, a JWKS
//! refetch on an unknown `kid`) can await; the rest are synchronous calls inside it.
//!
//! Authentication leaves the caller's identity in the [`RequestContext`]; later phases
//! (rate limiting by consumer or tier) read it from there. When the authenticated Consumer
//! has plugins of its own, they are merged into the rest of the chain: a consumer plugin
//! replaces the rule's filter of the same [`Phase`] (most specific wins).

pub mod auth;
pub mod consumers;
pub mod jwt;
pub mod keyauth;
pub mod ratelimit;

use std::net::SocketAddr;
use std::sync::Arc;

pub use auth::{AuthFailure, Authenticate, Challenge};
pub use consumers::{ConsumerEntry, ConsumerStore};
pub use ratelimit::RateLimitRuntime;

use crate::proxy::ProxyError;
use crate::ratelimit::Decision;
use crate::snapshot::Filter;

/// The fixed phases of the chain, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Rule-level guards that answer before anything else (a misconfigured rule).
    Guard,
    /// Request id propagation.
    CorrelationId,
    /// Client address allow and deny lists.
    IpRestriction,
    /// CORS preflight.
    Cors,
    /// `jwt` and `keyAuth`.
    Authentication,
    /// Rate limiting (may key by the consumer and its tier).
    RateLimit,
    /// Request header transforms.
    RequestHeaders,
    /// Response cache lookup.
    Cache,
    /// Response header transforms.
    ResponseHeaders,
}

/// Per-request state the filters share: who the client is, what authentication
/// established, and the rate-limit decision the response headers render.
#[derive(Debug, Default)]
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
}

impl RequestContext<'_> {
    /// The authenticated consumer's tier, for rate limiting.
    pub fn tier(&self) -> Option<&str> {
        self.consumer.as_ref().and_then(|c| c.tier.as_deref())
    }
}

/// Runs the request phase of `filters` on the request head. An `Err` is answered by the
/// proxy's error response (401, 503…) and the request never reaches an upstream.
pub async fn request_phase(
    filters: &[Filter],
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<(), ProxyError> {
    for (i, filter) in filters.iter().enumerate() {
        apply_request(filter, request, ctx).await?;
        if filter.phase() == Phase::Authentication
            && let Some(plugins) = ctx.consumer.as_ref().map(|c| Arc::clone(&c.plugins))
            && !plugins.is_empty()
        {
            let rest = filters.get(i + 1..).unwrap_or(&[]);
            return merged_request_phase(rest, &plugins, request, ctx).await;
        }
    }
    Ok(())
}

/// Runs the rest of a rule's chain merged with a consumer's plugins, both already in phase
/// order: a consumer filter replaces the rule's filters of its phase. No allocation.
async fn merged_request_phase(
    rule: &[Filter],
    consumer: &[Filter],
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<(), ProxyError> {
    let (mut r, mut c) = (0, 0);
    loop {
        let next = match (rule.get(r), consumer.get(c)) {
            (None, None) => return Ok(()),
            (Some(rf), Some(cf)) if cf.phase() <= rf.phase() => {
                c += 1;
                cf
            }
            (Some(rf), _) => {
                r += 1;
                if consumer.iter().any(|cf| cf.phase() == rf.phase()) {
                    continue;
                }
                rf
            }
            (None, Some(cf)) => {
                c += 1;
                cf
            }
        };
        // Authentication does not run twice; consumer plugins never authenticate.
        if next.phase() != Phase::Authentication {
            apply_request(next, request, ctx).await?;
        }
    }
}

async fn apply_request(
    filter: &Filter,
    request: &mut http::request::Parts,
    ctx: &mut RequestContext<'_>,
) -> Result<(), ProxyError> {
    match filter {
        Filter::Unavailable(reason) => Err(ProxyError::Unavailable { reason: reason.to_string() }),
        Filter::Authenticate(auth) => auth.authenticate(request, ctx).await,
        Filter::RateLimit(rate_limit) => ratelimit::check(rate_limit, request, ctx).await,
    }
}

/// Runs the response phase of `filters` on the response head (synchronous).
pub fn response_phase(
    filters: &[Filter],
    _response: &mut http::response::Parts,
    _ctx: &RequestContext<'_>,
) {
    for filter in filters {
        match filter {
            // None touches the response here: the rate-limit headers are written by the
            // proxy on every response, gateway errors included (`finish_response`).
            Filter::Unavailable(_) | Filter::Authenticate(_) | Filter::RateLimit(_) => {}
        }
    }
}

/// What every response of the request gets from the chain whatever produced it (the
/// upstream or the gateway): the rate-limit headers, when the rate-limit phase ran.
pub fn finish_response(headers: &mut http::HeaderMap, ctx: &RequestContext<'_>) {
    if let Some(decision) = &ctx.rate_limit {
        decision.write_headers(headers);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use futures_util::FutureExt;

    use super::*;
    use crate::filter::consumers::hash_api_key;
    use crate::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
    use crate::snapshot::ObjectKey;

    fn run(filters: &[Filter], key: &str) -> (Result<(), ProxyError>, RequestContext<'static>) {
        let mut parts =
            http::Request::get("/").header("x-api-key", key).body(()).unwrap().into_parts().0;
        let mut ctx = RequestContext::default();
        let r = request_phase(filters, &mut parts, &mut ctx).now_or_never().unwrap();
        (r, ctx)
    }

    #[test]
    fn consumer_plugins_are_merged_after_authentication() {
        let blocked: Arc<[Filter]> = Arc::from(vec![Filter::Unavailable("consumer".into())]);
        let a = ConsumerEntry::new(ObjectKey::new("ns", "a"), "a", Some("pro"), blocked);
        let b = ConsumerEntry::new(ObjectKey::new("ns", "b"), "b", None, Arc::from(Vec::new()));
        let mut store = ConsumerStore::default();
        for (c, k) in [(&a, b"ka"), (&b, b"kb")] {
            store.add_consumer(c);
            store.add_api_key(hash_api_key(k), c);
        }
        let key_auth = Arc::new(KeyAuth {
            header: DEFAULT_KEY_HEADER,
            query: None,
            forward_credential: false,
            consumers: Arc::new(store),
        });
        let chain =
            [Filter::Authenticate(Arc::new(Authenticate { jwt: None, key_auth: Some(key_auth) }))];
        let (r, ctx) = run(&chain, "kb");
        assert!(r.is_ok() && ctx.authenticated);
        assert_eq!(ctx.consumer.unwrap().username.as_ref(), "b");
        let (r, ctx) = run(&chain, "ka");
        assert!(matches!(r, Err(ProxyError::Unavailable { .. })), "a's own filter ran");
        assert_eq!(ctx.tier(), Some("pro"));
        let (r, ctx) = run(&chain, "nope");
        assert!(matches!(r, Err(ProxyError::Unauthorized { .. })) && !ctx.authenticated);
    }

    fn limit(name: &str, limit: u64, key: crate::ratelimit::KeySource) -> Filter {
        use crate::ratelimit::*;
        let spec = RateLimitSpec::new(
            ObjectKey::new("ns", name),
            Algorithm::TokenBucket,
            limit,
            std::time::Duration::from_secs(3600),
            0,
            key,
            &[TierSpec {
                tier: "pro".into(),
                limit: limit * 10,
                window: std::time::Duration::from_secs(3600),
            }],
            StoreKind::Local,
            OnStoreError::Allow,
        )
        .unwrap();
        Filter::RateLimit(Arc::new(RateLimit::new(spec)))
    }

    #[test]
    fn rate_limit_runs_after_authentication_keyed_by_consumer_and_tier() {
        use crate::ratelimit::KeySource;
        // `a` (tier pro) brings its own limit, which replaces the rule's; `b` has no tier.
        let own: Arc<[Filter]> = Arc::from(vec![limit("own", 2, KeySource::Consumer)]);
        let a = ConsumerEntry::new(ObjectKey::new("ns", "a"), "a", Some("pro"), own);
        let b = ConsumerEntry::new(ObjectKey::new("ns", "b"), "b", None, Arc::from(Vec::new()));
        let c = ConsumerEntry::new(ObjectKey::new("ns", "c"), "c", None, Arc::from(Vec::new()));
        let mut store = ConsumerStore::default();
        for (entry, k) in [(&a, b"ka"), (&b, b"kb"), (&c, b"kc")] {
            store.add_consumer(entry);
            store.add_api_key(hash_api_key(k), entry);
        }
        let key_auth = Arc::new(KeyAuth {
            header: DEFAULT_KEY_HEADER,
            query: None,
            forward_credential: false,
            consumers: Arc::new(store),
        });
        let chain = [
            Filter::Authenticate(Arc::new(Authenticate { jwt: None, key_auth: Some(key_auth) })),
            limit("rule", 1, KeySource::Consumer),
        ];
        // b: the rule's limit, 1.
        let (r, ctx) = run(&chain, "kb");
        assert!(r.is_ok());
        let d = ctx.rate_limit.unwrap();
        assert_eq!((d.limit, d.remaining), (1, 0));
        let (r, ctx) = run(&chain, "kb");
        assert!(
            matches!(r, Err(ProxyError::RateLimited { retry_after_secs }) if retry_after_secs > 0)
        );
        assert!(!ctx.rate_limit.unwrap().allowed);
        // c has its own counter under the same limit.
        assert!(run(&chain, "kc").0.is_ok());
        // a: its own plugin, at its tier's limit (20).
        for remaining in (18..20).rev() {
            let (r, ctx) = run(&chain, "ka");
            assert!(r.is_ok());
            let d = ctx.rate_limit.unwrap();
            assert_eq!((d.limit, d.remaining), (20, remaining));
        }
        // Authentication failed: the rate limit never ran.
        let (r, ctx) = run(&chain, "nope");
        assert!(matches!(r, Err(ProxyError::Unauthorized { .. })) && ctx.rate_limit.is_none());
    }
}
