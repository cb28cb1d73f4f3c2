//! Rate-limit metrics (prometheus-client): store errors, and
//! `weir_ratelimit_decisions_total{plugin,result}` whose counters each limiter resolves
//! once when it is created (deciding a request is one relaxed add, no label lookup).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::decision::{Decision, DecisionSource};
use crate::snapshot::ObjectKey;

/// `plugin` and `result` of `weir_ratelimit_decisions_total`.
type DecisionLabels = [(&'static str, String); 2];

/// The `result` label values of `weir_ratelimit_decisions_total`.
pub const DECISION_RESULTS: [&str; 4] = ["allowed", "limited", "error_allowed", "error_denied"];

/// The index in [`DECISION_RESULTS`] of a decision: the store's answer (`allowed`,
/// `limited`); with the store failing, `error_allowed` (`onStoreError: Allow`, admitted by
/// the local guard; `limited` when the guard refused) or `error_denied`
/// (`onStoreError: Deny`).
pub fn decision_result(decision: &Decision) -> usize {
    match (decision.source, decision.allowed) {
        (DecisionSource::FailClosed, _) => 3,
        (DecisionSource::FailOpen, true) => 2,
        (_, true) => 0,
        (_, false) => 1,
    }
}

/// One plugin's decision counters, in [`DECISION_RESULTS`] order.
pub(crate) type DecisionCounters = [Counter; 4];

/// Counters shared by every limiter of one [`RateLimiters`](super::RateLimiters).
#[derive(Debug, Clone, Default)]
pub struct RateLimitMetrics {
    store_errors: Counter,
    decisions: Family<DecisionLabels, Counter>,
    /// Limiters holding each plugin's decision series (a changed config makes a new
    /// limiter for the same plugin: its counters continue).
    holders: Arc<Mutex<HashMap<ObjectKey, u32>>>,
}

impl RateLimitMetrics {
    /// Registers `weir_ratelimit_store_errors_total` and `weir_ratelimit_decisions_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weir_ratelimit_store_errors",
            "Rate-limit decisions whose shared store (Redis) failed or timed out; onStoreError applied",
            self.store_errors.clone(),
        );
        registry.register(
            "weir_ratelimit_decisions",
            "Rate-limit decisions by Plugin (namespace/name): allowed, limited, error_allowed (store failed, onStoreError Allow), error_denied (store failed, onStoreError Deny)",
            self.decisions.clone(),
        );
    }

    pub(crate) fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Store errors so far.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.get()
    }

    fn labels(plugin: &ObjectKey, result: &str) -> DecisionLabels {
        [("plugin", format!("{}/{}", plugin.namespace, plugin.name)), ("result", result.to_owned())]
    }

    /// The decision counters of `plugin` for a new limiter; give them back with
    /// [`release_decisions`](Self::release_decisions) when the limiter goes.
    pub(crate) fn decisions(&self, plugin: &ObjectKey) -> DecisionCounters {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        *holders.entry(plugin.clone()).or_default() += 1;
        DECISION_RESULTS.map(|r| self.decisions.get_or_create(&Self::labels(plugin, r)).clone())
    }

    /// A limiter of `plugin` is gone: when it was the last, the plugin's series go.
    pub(crate) fn release_decisions(&self, plugin: &ObjectKey) {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(count) = holders.get_mut(plugin) else { return };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        holders.remove(plugin);
        for result in DECISION_RESULTS {
            self.decisions.remove(&Self::labels(plugin, result));
        }
    }

    /// Decisions so far for `plugin` with `result` (tests, dashboard).
    pub fn decisions_of(&self, plugin: &ObjectKey, result: &str) -> Option<u64> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner).get(plugin)?;
        Some(self.decisions.get_or_create(&Self::labels(plugin, result)).get())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn result(allowed: bool, source: DecisionSource) -> &'static str {
        let decision = Decision {
            allowed,
            limit: 1,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
            source,
            limit_value: HeaderValue::from(1u64),
        };
        DECISION_RESULTS[decision_result(&decision)]
    }

    #[test]
    fn decisions_map_to_their_result_label() {
        assert_eq!(result(true, DecisionSource::Store), "allowed");
        assert_eq!(result(false, DecisionSource::Store), "limited");
        assert_eq!(result(true, DecisionSource::FailOpen), "error_allowed");
        assert_eq!(result(false, DecisionSource::FailOpen), "limited");
        assert_eq!(result(false, DecisionSource::FailClosed), "error_denied");
    }
}
