//! A limiter's answer for one request, and the response headers it renders to.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `RateLimit-Limit` (IETF draft).
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset` (seconds).
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `X-RateLimit-Limit`.
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (seconds, like `RateLimit-Reset`).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Why the decision was made the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionSource {
    /// The configured store (local counters, or Redis) answered.
    Store,
    /// Redis failed and `onStoreError: Allow` applied: the local guard limiter answered.
    FailOpen,
    /// Redis failed and `onStoreError: Deny` applied.
    FailClosed,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The request may proceed.
    pub allowed: bool,
    /// The quota (`limit`, or `limit + burst` for the token bucket).
    pub limit: u64,
    /// Requests still admitted right now.
    pub remaining: u64,
    /// Until the quota resets (end of window / bucket full; when nothing remains, until the
    /// next request is admitted).
    pub reset: Duration,
    /// On refusal: until a request would be admitted.
    pub retry_after: Option<Duration>,
    /// Store, fail-open guard, or fail-closed.
    pub source: DecisionSource,
    /// The quota's `limit` as a header value, built once per limit (cheap clone).
    pub(crate) limit_value: HeaderValue,
}

/// Whole seconds, rounded up, as clients count them.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// `RateLimit-Reset` in whole seconds (rounded up).
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }

    /// `Retry-After` in whole seconds (rounded up, at least 1) on refusal, for the header
    /// and the 429 body's `retryAfter`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// Adds the `RateLimit-*` and `X-RateLimit-*` headers, and `Retry-After` on refusal,
    /// replacing any an upstream sent.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let remaining = HeaderValue::from(self.remaining);
        let reset = HeaderValue::from(self.reset_secs());
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit_value.clone());
        headers.insert(RATELIMIT_REMAINING.clone(), remaining.clone());
        headers.insert(RATELIMIT_RESET.clone(), reset.clone());
        headers.insert(X_RATELIMIT_LIMIT.clone(), self.limit_value.clone());
        headers.insert(X_RATELIMIT_REMAINING.clone(), remaining);
        headers.insert(X_RATELIMIT_RESET.clone(), reset);
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn decision(allowed: bool, reset_ms: u64, retry_ms: Option<u64>) -> Decision {
        Decision {
            allowed,
            limit: 10,
            remaining: if allowed { 3 } else { 0 },
            reset: Duration::from_millis(reset_ms),
            retry_after: retry_ms.map(Duration::from_millis),
            source: DecisionSource::Store,
            limit_value: HeaderValue::from(10u64),
        }
    }

    #[test]
    fn headers_on_admission_have_no_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit-remaining", HeaderValue::from_static("999"));
        decision(true, 1_500, None).write_headers(&mut headers);
        assert_eq!(headers["ratelimit-limit"], "10");
        assert_eq!(headers["ratelimit-remaining"], "3");
        assert_eq!(headers.get_all("ratelimit-remaining").iter().count(), 1);
        assert_eq!(headers["ratelimit-reset"], "2");
        assert_eq!(headers["x-ratelimit-limit"], "10");
        assert_eq!(headers["x-ratelimit-remaining"], "3");
        assert_eq!(headers["x-ratelimit-reset"], "2");
        assert!(headers.get("retry-after").is_none());
    }

    #[test]
    fn refusal_rounds_retry_after_up_to_whole_seconds() {
        let mut headers = HeaderMap::new();
        let d = decision(false, 2_000, Some(1));
        d.write_headers(&mut headers);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(d.retry_after_secs(), Some(1));
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(decision(false, 0, Some(0)).retry_after_secs(), Some(1));
        assert_eq!(decision(false, 0, Some(60_000)).retry_after_secs(), Some(60));
    }
}
