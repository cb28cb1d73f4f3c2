//! The `rateLimit` engine: three algorithms, a local and a Redis store, keys, tiers and the
//! response headers. Self-contained: the filter chain calls it in a few lines.
//!
//! ```ignore
//! // compile(): one spec per Plugin (shared by every route using it).
//! let spec = RateLimitSpec::new(plugin, Algorithm::SlidingWindow, 100, 60s, 0,
//!                               KeySource::ClientIp, &[], StoreKind::Local, OnStoreError::Allow)?;
//! let filter = Filter::RateLimit(Arc::new(RateLimit::new(spec)));
//! // publish: bind limiters and drop those of removed plugins.
//! rate_limiters.publish(snapshot_rate_limits);
//! // request phase:
//! let limiter = rate_limiters.bind(&rate_limit);
//! let key = limiter.spec().key().key(peer, req.headers(), consumer, &trusted_proxies);
//! let decision = limiter.check(&key, consumer_tier).await;
//! if !decision.allowed { /* 429 with decision.retry_after_secs() */ }
//! decision.write_headers(response.headers_mut());
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
