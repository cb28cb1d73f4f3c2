//! Passive outlier ejection, per endpoint: consecutive 5xx answers or gateway errors of
//! real requests eject an endpoint for `baseEjectionTime × n` (n = its ejections in a row,
//! capped at [`OutlierDetection::MAX_EJECTION_MULTIPLIER`]); n decays by one for every
//! `baseEjectionTime` the endpoint spends un-ejected and successful. Whether an ejection may
//! happen (`maxEjectionPercent`) is decided by the backend, which sees every endpoint: an
//! endpoint reaching its threshold asks [`Outlier::record`]'s caller to eject it, and the
//! caller calls [`Outlier::eject`] when allowed.
//!
//! Time is passed in by the caller (`tokio::time::Instant`), so tests run on paused time.
//!
//! Everything is atomics: a success on an endpoint with no failure streak is one load,
//! [`Outlier::is_ejected`] one load and a comparison. While ejected, outcomes (of requests
//! sent before the ejection) are ignored, so the next streak starts when it comes back.
//! A 5xx that is not a gateway error ends a gateway-error streak (as in Envoy).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
#[derive(Debug)]
pub struct Outlier {
    /// Consecutive 5xx answers and gateway errors.
    consecutive_5xx: AtomicU32,
    /// Consecutive gateway errors.
    consecutive_gateway: AtomicU32,
    /// When the last ejection ends (or ended), in nanoseconds since `epoch`; 0 = never
    /// ejected.
    until: AtomicU64,
    /// Ejections in a row, before the decay since `until`.
    streak: AtomicU32,
    /// Ejections since the endpoint appeared.
    ejections: AtomicU32,
    /// The origin of the times kept in atomics.
    epoch: Instant,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier::new()
    }
}

impl Outlier {
    /// A fresh, un-ejected state.
    pub fn new() -> Self {
        Outlier {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            until: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    /// Records one request's outcome; true when a threshold of `config` is reached and the
    /// endpoint should be ejected now (the counters reset when it is).
    pub fn record(&self, config: &OutlierDetection, outcome: Outcome, now: Instant) -> bool {
        let (five, gateway) = match outcome {
            Outcome::Success => {
                // Loads first: a healthy endpoint's counters are not written per request.
                if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                }
                return false;
            }
            _ if self.is_ejected(now) => return false,
            Outcome::Status5xx => {
                if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                }
                (self.consecutive_5xx.fetch_add(1, Ordering::Relaxed).saturating_add(1), 0)
            }
            Outcome::GatewayError => (
                self.consecutive_5xx.fetch_add(1, Ordering::Relaxed).saturating_add(1),
                self.consecutive_gateway.fetch_add(1, Ordering::Relaxed).saturating_add(1),
            ),
        };
        config.consecutive_5xx.is_some_and(|max| five >= max.max(1))
            || config.consecutive_gateway_errors.is_some_and(|max| gateway >= max.max(1))
    }

    /// Ejects the endpoint at `now`; returns how long the ejection lasts. Already ejected
    /// (another request reached the threshold too), the ejection is not extended: the
    /// time it has left is returned.
    pub fn eject(&self, config: &OutlierDetection, now: Instant) -> Duration {
        let at = self.nanos(now);
        let mut until = self.until.load(Ordering::Acquire);
        loop {
            if until > at {
                return Duration::from_nanos(until - at);
            }
            let n = self.next_multiplier(config, until, at);
            let duration = config.base_ejection_time.saturating_mul(n);
            let new_until = at.saturating_add(nanos(duration)).max(1);
            match self.until.compare_exchange(until, new_until, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.streak.store(n, Ordering::Relaxed);
                    self.ejections.fetch_add(1, Ordering::Relaxed);
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                    return duration;
                }
                Err(current) => until = current,
            }
        }
    }

    /// The multiplier of an ejection at `at`: the streak, less one per `baseEjectionTime`
    /// spent un-ejected since the last ejection ended at `last_until`, plus this one.
    fn next_multiplier(&self, config: &OutlierDetection, last_until: u64, at: u64) -> u32 {
        let streak = self.streak.load(Ordering::Relaxed);
        let decayed = if last_until == 0 {
            streak
        } else {
            let base = nanos(config.base_ejection_time).max(1);
            u32::try_from((at - last_until) / base).unwrap_or(u32::MAX)
        };
        streak
            .saturating_sub(decayed)
            .saturating_add(1)
            .min(OutlierDetection::MAX_EJECTION_MULTIPLIER)
    }

    /// True while ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.until.load(Ordering::Acquire) > self.nanos(now)
    }

    /// When the current ejection ends, if ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = self.until.load(Ordering::Acquire);
        (until > self.nanos(now)).then(|| self.epoch + Duration::from_nanos(until))
    }

    /// How many times the endpoint has been ejected (since it appeared).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    fn nanos(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "passive_tests.rs"]
mod tests;
