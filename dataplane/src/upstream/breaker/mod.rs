//! The circuit breaker of one backend (closed → open → half-open → closed) and its
//! parallel-request cap (`maxParallelRequests`). The connection caps (`maxConnections`,
//! `maxPendingRequests`) are enforced by the pool ([`crate::upstream::pool::ConnectionCount`]).
//!
//! - Closed: requests pass. Failures (5xx answers, connect errors, timeouts) are counted in
//!   a sliding `window`; `failure_threshold` of them within it open the circuit.
//! - Open: every request is refused at once (the caller answers with the fallback; the
//!   upstream is not contacted) until `open_for` has passed, then half-open.
//! - Half-open: one probe at a time passes (others are refused); `success_threshold`
//!   consecutive successful probes close it, one failure reopens it for `open_for`.
//!
//! Time is passed in by the caller (`tokio::time::Instant`), so tests run on paused time.

use tokio::time::Instant;

use crate::upstream::policy::CircuitBreaker;

/// The state of a circuit, as exposed by `weir_circuit_state` (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum CircuitState {
    /// Requests pass.
    Closed = 0,
    /// Requests get the fallback.
    Open = 1,
    /// Probes pass one at a time.
    HalfOpen = 2,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The circuit is open.
    Open,
    /// Half-open, and a probe is already in flight.
    ProbeInFlight,
    /// `maxParallelRequests` requests are in flight.
    MaxParallel,
}

impl Refusal {
    /// A stable label (`circuit_open`, `probe_in_flight`, `max_parallel`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Open => "circuit_open",
            Refusal::ProbeInFlight => "probe_in_flight",
            Refusal::MaxParallel => "max_parallel",
        }
    }
}

/// What one request's outcome did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (from closed with `failures` in the window, or reopened from half-open).
    Opened {
        /// Failures counted in the window (1 when a probe failed).
        failures: u32,
    },
    /// It closed (half-open probes succeeded).
    Closed,
}

/// One backend's circuit.
#[derive(Debug)]
pub struct Breaker {
    config: CircuitBreaker,
}

impl Breaker {
    /// A closed circuit under `config`.
    pub fn new(config: CircuitBreaker) -> Self {
        Breaker { config }
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreaker {
        &self.config
    }

    /// The state at `now` (an open circuit whose `open_for` has passed is half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        let _ = now;
        CircuitState::Closed
    }

    /// Before sending one attempt: a permit to send it, or why not. The permit holds a
    /// parallel-request slot (and the probe slot when half-open) until it is recorded or
    /// dropped; dropped without a record (the client went away), it counts as nothing.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Refusal> {
        let _ = now;
        Ok(Permit { breaker: self })
    }
}

/// Leave to send one attempt; see [`Breaker::try_acquire`].
#[derive(Debug)]
pub struct Permit<'b> {
    breaker: &'b Breaker,
}

impl Permit<'_> {
    /// Records the attempt's outcome (`success`: not a failure as defined above) at `now`;
    /// returns the transition it caused, if any.
    pub fn record(self, success: bool, now: Instant) -> Option<Transition> {
        let _ = (self.breaker, success, now);
        None
    }
}
