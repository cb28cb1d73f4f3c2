//! The `rateLimit` engine: three algorithms, a local and a Redis store, keys, tiers and the
//! response headers. Self-contained: the filter chain calls it in a few lines.
//!
//! How the gateway uses it (the snapshot carries `Filter::RateLimit(Arc<RateLimit>)`):
//!
//! ```
//! # use std::{net::SocketAddr, sync::Arc, time::Duration};
//! # use http::{HeaderMap, StatusCode};
//! # use weir_dataplane::ObjectKey;
//! use weir_dataplane::ratelimit::*;
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), SpecError> {
//! // compile(): one spec per Plugin object (shared by every route that uses it).
//! let spec = RateLimitSpec::new(
//!     ObjectKey::new("shop", "orders-limit"), Algorithm::SlidingWindow, 2,
//!     Duration::from_secs(60), 0, KeySource::ClientIp, &[], StoreKind::Local,
//!     OnStoreError::Allow,
//! )?;
//! let rate_limit = Arc::new(RateLimit::new(spec));
//!
//! // Runtime state, created once (with `Some(RedisStore::connect(url, ..).await?)` when
//! // `--redis-url` is set); on every publish, bind the new snapshot's rate limits and drop
//! // the limiters of removed or changed plugins.
//! let limiters = RateLimiters::new(None);
//! limiters.publish([&*rate_limit]);
//!
//! // Request phase, after authentication.
//! let (peer, request_headers) = ("192.0.2.1:5000".parse::<SocketAddr>().unwrap(), HeaderMap::new());
//! let (consumer, tier): (Option<&Arc<str>>, Option<&str>) = (None, None);
//! let trusted = TrustedProxies::default();
//! let mut last = StatusCode::OK;
//! for _ in 0..3 {
//!     let limiter = limiters.bind(&rate_limit);
//!     let decision =
//!         limiter.check_request(peer, &request_headers, consumer, tier, &trusted).await;
//!     let mut response_headers = HeaderMap::new();
//!     decision.write_headers(&mut response_headers); // on every response
//!     if !decision.allowed {
//!         // 429, never proxied; the body's `retryAfter` is decision.retry_after_secs().
//!         last = StatusCode::TOO_MANY_REQUESTS;
//!         assert!(response_headers.contains_key("retry-after"));
//!     }
//! }
//! assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
//! # Ok(()) }
//! ```

pub mod algorithm;
pub mod decision;
pub mod key;
pub mod limiter;
pub mod local;
pub mod metrics;
pub mod redis;
pub mod registry;
pub mod spec;

pub use algorithm::{Algorithm, Limit, LimitError};
pub use decision::{Decision, DecisionSource};
pub use key::{KeySource, LimitKey, TrustedProxies, client_ip};
pub use limiter::{Clock, Limiter};
pub use metrics::RateLimitMetrics;
pub use redis::{RedisOptions, RedisStore, RedisStoreError, RedisTime};
pub use registry::{RateLimit, RateLimiters};
pub use spec::{LimiterId, OnStoreError, RateLimitSpec, SpecError, StoreKind, TierSpec};

#[cfg(test)]
mod tests;
