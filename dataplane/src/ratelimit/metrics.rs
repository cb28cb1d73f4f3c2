//! Rate-limit metrics (prometheus-client).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters shared by every limiter of one [`RateLimiters`](super::RateLimiters).
#[derive(Debug, Clone, Default)]
pub struct RateLimitMetrics {
    store_errors: Counter,
}

impl RateLimitMetrics {
    /// Registers `weir_ratelimit_store_errors_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weir_ratelimit_store_errors",
            "Rate-limit decisions whose shared store (Redis) failed or timed out; onStoreError applied",
            self.store_errors.clone(),
        );
    }

    pub(crate) fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Store errors so far.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.get()
    }
}
