//! The compiled `rateLimit` plugin: what compile() builds from a Plugin object, and the
//! stable identity under which its runtime counters live.

use std::fmt;
use std::time::Duration;

use crate::snapshot::ObjectKey;

use super::algorithm::{Algorithm, Limit, LimitError};
use super::key::KeySource;

/// Where the counters live (API.md `rateLimit.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreKind {
    /// In this replica's memory: "N per window" is per replica.
    #[default]
    Local,
    /// In Redis, shared by every replica.
    Redis,
}

/// What a Redis failure means (API.md `rateLimit.onStoreError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnStoreError {
    /// Fail open, guarded by a local limiter with the same limit.
    #[default]
    Allow,
    /// Fail closed: refuse with 429.
    Deny,
}

/// Identity of a limiter: the Plugin object and a hash of its `rateLimit` config. A reload
/// that leaves both unchanged keeps the counters; any change starts fresh ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimiterId {
    /// The Plugin object.
    pub plugin: ObjectKey,
    /// FNV-1a of the canonical config: stable across processes and builds, so every replica
    /// names the same Redis keys.
    pub config_hash: u64,
}

impl fmt::Display for LimiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{:016x}", self.plugin.namespace, self.plugin.name, self.config_hash)
    }
}

/// A compiled `rateLimit` plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    id: LimiterId,
    key: KeySource,
    limits: Box<[Limit]>,
    tiers: Box<[Box<str>]>,
    store: StoreKind,
    on_store_error: OnStoreError,
}

/// Builder input for one tier.
#[derive(Debug, Clone)]
pub struct TierSpec {
    /// The Consumer `spec.tier` it applies to.
    pub tier: String,
    /// Requests per window.
    pub limit: u64,
    /// Window.
    pub window: Duration,
}

/// Why a spec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The base limit is unusable.
    #[error("rateLimit: {0}")]
    Limit(#[from] LimitError),
    /// A tier's limit is unusable.
    #[error("rateLimit.tiers[{index}]: {error}")]
    Tier {
        /// Position in `tiers`.
        index: usize,
        /// The problem.
        error: LimitError,
    },
    /// Two tiers have the same name.
    #[error("rateLimit.tiers[{index}]: tier {tier:?} is listed twice")]
    DuplicateTier {
        /// Position of the second one.
        index: usize,
        /// The name.
        tier: String,
    },
}

impl RateLimitSpec {
    /// Builds the spec of Plugin `plugin`. Tiers use the plugin's algorithm and burst.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plugin: ObjectKey,
        algorithm: Algorithm,
        limit: u64,
        window: Duration,
        burst: u64,
        key: KeySource,
        tiers: &[TierSpec],
        store: StoreKind,
        on_store_error: OnStoreError,
    ) -> Result<Self, SpecError> {
        let mut limits = vec![Limit::new(algorithm, limit, window, burst)?];
        let mut names: Vec<Box<str>> = Vec::with_capacity(tiers.len());
        for (index, t) in tiers.iter().enumerate() {
            if names.iter().any(|n| **n == *t.tier) {
                return Err(SpecError::DuplicateTier { index, tier: t.tier.clone() });
            }
            let l = Limit::new(algorithm, t.limit, t.window, burst)
                .map_err(|error| SpecError::Tier { index, error })?;
            limits.push(l);
            names.push(t.tier.as_str().into());
        }
        let mut canonical = format!("v1|{key:?}|{store:?}|{on_store_error:?}");
        for (i, l) in limits.iter().enumerate() {
            let tier = if i == 0 { "" } else { &names[i - 1] };
            canonical.push_str(&format!(
                "|{tier}:{}:{}:{}:{}",
                l.algorithm(),
                l.limit(),
                l.window_ms(),
                l.burst()
            ));
        }
        let id = LimiterId { plugin, config_hash: fnv1a(canonical.as_bytes()) };
        Ok(RateLimitSpec {
            id,
            key,
            limits: limits.into(),
            tiers: names.into(),
            store,
            on_store_error,
        })
    }

    /// The limiter identity.
    pub fn id(&self) -> &LimiterId {
        &self.id
    }
    /// Where the key comes from.
    pub fn key(&self) -> &KeySource {
        &self.key
    }
    /// Local or Redis.
    pub fn store(&self) -> StoreKind {
        self.store
    }
    /// Fail open or closed.
    pub fn on_store_error(&self) -> OnStoreError {
        self.on_store_error
    }
    /// Every limit: index 0 is the base limit, then one per tier in order.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The position in [`limits`](Self::limits) of the limit for a consumer of `tier`: its
    /// tier's when listed, else the base limit (also for anonymous requests).
    pub fn limit_index(&self, tier: Option<&str>) -> usize {
        tier.and_then(|t| self.tiers.iter().position(|n| **n == *t)).map_or(0, |i| i + 1)
    }

    /// The limit for a consumer of `tier` (the base limit when unlisted or anonymous).
    pub fn limit_for(&self, tier: Option<&str>) -> &Limit {
        &self.limits[self.limit_index(tier)]
    }
}

/// 64-bit FNV-1a: tiny, stable everywhere (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
