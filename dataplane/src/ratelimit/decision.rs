//! A limiter's answer for one request, and the response headers it renders to.

use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Numbers below this render from a table of static header values built once: cloning one
/// copies a pointer (no allocation, no reference count), which covers nearly every
/// `remaining`, reset and `Retry-After` a client sees.
const SMALL: u64 = 1024;

static SMALL_VALUES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    (0..SMALL)
        .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
        .collect()
});

/// `n` as a header value, cheaply for small numbers.
pub fn number_value(n: u64) -> HeaderValue {
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL_VALUES.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

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
        let remaining = number_value(self.remaining);
        let reset = number_value(self.reset_secs());
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit_value.clone());
        headers.insert(RATELIMIT_REMAINING.clone(), remaining.clone());
        headers.insert(RATELIMIT_RESET.clone(), reset.clone());
        headers.insert(X_RATELIMIT_LIMIT.clone(), self.limit_value.clone());
        headers.insert(X_RATELIMIT_REMAINING.clone(), remaining);
        headers.insert(X_RATELIMIT_RESET.clone(), reset);
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(http::header::RETRY_AFTER, number_value(secs));
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
    fn numbers_render_alike_from_the_table_and_beyond_it() {
        for n in [0, 1, 9, 10, 1023, 1024, 1025, u64::MAX] {
            assert_eq!(number_value(n), HeaderValue::from(n));
        }
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
