//! `rateLimit` Plugin → the engine's [`RateLimitSpec`]: field mapping and the errors of
//! the engine's own checks, named by their field (`spec.rateLimit.tiers[1].window: ...`).
//!
//! `store: Redis` is accepted whether or not the gateway runs with `--redis-url`:
//! `compile()` is pure and the same config is valid on replicas that have one. Without it
//! the limiter counts per replica (like the fail-open guard of `onStoreError: Allow`) and
//! the process logs a warning when it creates such a limiter.

use std::time::Duration;

use http::HeaderName;
use weir_crds::{RateLimitAlgorithm, RateLimitConfig, RateLimitKey, RateLimitStore};
use weir_dataplane::ObjectKey;
use weir_dataplane::ratelimit::{
    Algorithm, KeySource, OnStoreError, RateLimitSpec, SpecError, StoreKind, TierSpec,
};

fn window(at: &str, value: &str) -> Result<Duration, String> {
    match weir_crds::parse_duration(value) {
        Ok(d) if d.is_zero() => Err(format!("{at}: must be positive")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{at}: {e}")),
    }
}

/// Builds the spec of Plugin `plugin` from its `rateLimit` config, or the errors, each
/// naming its field under `spec.rateLimit`.
pub fn rate_limit_spec(
    plugin: ObjectKey,
    config: &RateLimitConfig,
) -> Result<RateLimitSpec, Vec<String>> {
    let mut errs = Vec::new();
    let algorithm = match config.algorithm {
        RateLimitAlgorithm::FixedWindow => Algorithm::FixedWindow,
        RateLimitAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
        RateLimitAlgorithm::TokenBucket => Algorithm::TokenBucket,
    };
    if config.limit == 0 {
        errs.push("spec.rateLimit.limit: must be greater than 0".to_owned());
    }
    if config.burst.is_some() && algorithm != Algorithm::TokenBucket {
        errs.push(
            "spec.rateLimit.burst: only used with algorithm TokenBucket (remove it or set algorithm: TokenBucket)"
                .to_owned(),
        );
    }
    let base_window = window("spec.rateLimit.window", &config.window).map_err(|e| errs.push(e));
    let key = match (config.key, &config.header) {
        (RateLimitKey::Header, None) => {
            errs.push("spec.rateLimit.header: required when key is Header".to_owned());
            None
        }
        (RateLimitKey::Header, Some(h)) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(KeySource::Header(name)),
            Err(_) => {
                errs.push(format!("spec.rateLimit.header: {h:?} is not a valid header name"));
                None
            }
        },
        (_, Some(_)) => {
            errs.push("spec.rateLimit.header: only used when key is Header".to_owned());
            None
        }
        (RateLimitKey::ClientIP, None) => Some(KeySource::ClientIp),
        (RateLimitKey::Consumer, None) => Some(KeySource::Consumer),
        (RateLimitKey::Route, None) => Some(KeySource::Route),
    };
    let mut tiers = Vec::with_capacity(config.tiers.len());
    for (i, t) in config.tiers.iter().enumerate() {
        if t.tier.trim().is_empty() {
            errs.push(format!("spec.rateLimit.tiers[{i}].tier: must not be empty"));
        }
        if t.limit == 0 {
            errs.push(format!("spec.rateLimit.tiers[{i}].limit: must be greater than 0"));
        }
        if let Ok(w) = window(&format!("spec.rateLimit.tiers[{i}].window"), &t.window)
            .map_err(|e| errs.push(e))
        {
            tiers.push(TierSpec { tier: t.tier.clone(), limit: t.limit, window: w });
        }
    }
    let (Ok(base_window), Some(key), true) = (base_window, key, errs.is_empty()) else {
        return Err(errs);
    };
    let store = match config.store {
        RateLimitStore::Local => StoreKind::Local,
        RateLimitStore::Redis => StoreKind::Redis,
    };
    let on_store_error = match config.on_store_error {
        weir_crds::OnStoreError::Allow => OnStoreError::Allow,
        weir_crds::OnStoreError::Deny => OnStoreError::Deny,
    };
    RateLimitSpec::new(
        plugin,
        algorithm,
        config.limit,
        base_window,
        config.burst.unwrap_or(0),
        key,
        &tiers,
        store,
        on_store_error,
    )
    .map_err(|e| vec![spec_error(&e)])
}

/// The engine's error with the field path as users write it.
fn spec_error(e: &SpecError) -> String {
    match e {
        SpecError::Limit(l) => format!("spec.rateLimit: {l}"),
        SpecError::Tier { index, error } => format!("spec.rateLimit.tiers[{index}]: {error}"),
        SpecError::DuplicateTier { index, tier } => {
            format!("spec.rateLimit.tiers[{index}].tier: {tier:?} is listed twice")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use weir_crds::RateLimitTier;

    use super::*;

    fn config(yaml: &str) -> RateLimitConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn errors(yaml: &str) -> Vec<String> {
        rate_limit_spec(ObjectKey::new("ns", "p"), &config(yaml)).unwrap_err()
    }

    #[test]
    fn maps_every_field() {
        let c = config(
            "{limit: 5, window: 1m, algorithm: TokenBucket, burst: 2, key: Header, \
             header: X-Api-Key, tiers: [{tier: pro, limit: 50, window: 1m}], store: Redis, \
             onStoreError: Deny}",
        );
        let spec = rate_limit_spec(ObjectKey::new("ns", "p"), &c).unwrap();
        assert_eq!(spec.key(), &KeySource::Header(HeaderName::from_static("x-api-key")));
        assert_eq!(spec.store(), StoreKind::Redis);
        assert_eq!(spec.on_store_error(), OnStoreError::Deny);
        assert_eq!(spec.limit_for(None).quota(), 7);
        assert_eq!(spec.limit_for(Some("pro")).quota(), 52);
        assert_eq!(spec.limit_for(Some("other")).quota(), 7);
        // The same config gives the same identity (counters survive reloads)...
        let again = rate_limit_spec(ObjectKey::new("ns", "p"), &c).unwrap();
        assert_eq!(spec.id(), again.id());
        // ...and any change a new one.
        let mut changed = c.clone();
        changed.tiers[0] = RateLimitTier { tier: "pro".into(), limit: 51, window: "1m".into() };
        let other = rate_limit_spec(ObjectKey::new("ns", "p"), &changed).unwrap();
        assert_ne!(spec.id(), other.id());
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            errors("{limit: 0, window: 1m}"),
            ["spec.rateLimit.limit: must be greater than 0"]
        );
        assert_eq!(
            errors("{limit: 1, window: 1m, burst: 3}"),
            [
                "spec.rateLimit.burst: only used with algorithm TokenBucket (remove it or set algorithm: TokenBucket)"
            ]
        );
        assert_eq!(errors("{limit: 1, window: 0s}"), ["spec.rateLimit.window: must be positive"]);
        assert_eq!(
            errors("{limit: 1, window: 1m, key: Header}"),
            ["spec.rateLimit.header: required when key is Header"]
        );
        assert_eq!(
            errors("{limit: 1, window: 1m, header: x-k}"),
            ["spec.rateLimit.header: only used when key is Header"]
        );
        assert_eq!(
            errors(
                "{limit: 1, window: 1m, tiers: [{tier: a, limit: 2, window: 1m}, \
                 {tier: a, limit: 3, window: 1m}]}"
            ),
            ["spec.rateLimit.tiers[1].tier: \"a\" is listed twice"]
        );
        let e = errors(
            "{limit: 1, window: 1m, tiers: [{tier: a, limit: 4000000000000000, window: 1h}]}",
        );
        assert!(e[0].starts_with("spec.rateLimit.tiers[0]: (limit + burst) x window"), "{e:?}");
        let e = errors("{limit: 4000000000000000, window: 1h}");
        assert!(e[0].starts_with("spec.rateLimit: (limit + burst) x window"), "{e:?}");
    }
}
