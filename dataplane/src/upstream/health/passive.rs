//! Passive outlier ejection, per endpoint: consecutive 5xx answers or gateway errors of
//! real requests eject an endpoint for `baseEjectionTime × n` (n = its ejections in a row,
//! capped at [`OutlierDetection::MAX_EJECTION_MULTIPLIER`]); n decays by one for every
//! `baseEjectionTime` the endpoint spends un-ejected and successful. Whether an ejection may
//! happen (`maxEjectionPercent`) is decided by the backend, which sees every endpoint: an
//! endpoint reaching its threshold asks [`Outlier::record`]'s caller to eject it, and the
//! caller calls [`Outlier::eject`] when allowed.
//!
//! Time is passed in by the caller (`tokio::time::Instant`), so tests run on paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::upstream::policy::OutlierDetection;

/// What one request to an endpoint saw, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer below 500.
    Success,
    /// A 500 or other 5xx that is not a gateway error (counts toward `consecutive5xx`).
    Status5xx,
    /// A connect failure, timeout, bad response, or a 502/503/504 answer (counts toward
    /// both `consecutiveGatewayErrors` and `consecutive5xx`).
    GatewayError,
}

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub struct Outlier {}

impl Outlier {
    /// A fresh, un-ejected state.
    pub fn new() -> Self {
        Outlier {}
    }

    /// Records one request's outcome; true when a threshold of `config` is reached and the
    /// endpoint should be ejected now (the counters reset when it is).
    pub fn record(&self, config: &OutlierDetection, outcome: Outcome, now: Instant) -> bool {
        let _ = (config, outcome, now);
        false
    }

    /// Ejects the endpoint at `now`; returns how long the ejection lasts.
    pub fn eject(&self, config: &OutlierDetection, now: Instant) -> Duration {
        let _ = now;
        config.base_ejection_time
    }

    /// True while ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let _ = now;
        false
    }

    /// When the current ejection ends, if ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let _ = now;
        None
    }

    /// How many times the endpoint has been ejected (since it appeared).
    pub fn ejections(&self) -> u32 {
        0
    }
}
