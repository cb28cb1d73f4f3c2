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
//!
//! Cost: a closed circuit admits a request with one atomic load (plus one atomic update
//! and its release when `maxParallelRequests` is set), and records a success with nothing
//! more; failures and state transitions take a mutex.

mod window;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use crate::upstream::policy::CircuitBreaker;
use window::FailureWindow;

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
    /// [`CircuitState`] as a `u8`; an open circuit past `open_until` is still `Open` here
    /// until a request turns it half-open.
    state: AtomicU8,
    /// When an open circuit turns half-open, in nanoseconds since `epoch`.
    open_until: AtomicU64,
    /// The origin of the times kept in atomics.
    epoch: Instant,
    /// Half-open: a probe is in flight.
    probe: AtomicBool,
    /// Permits alive, counted only when `max_parallel_requests` is set.
    in_flight: AtomicU32,
    /// What failures and transitions need.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Failures of the closed circuit within the window.
    failures: FailureWindow,
    /// Consecutive successful probes of the half-open circuit.
    successes: u32,
}

const CLOSED: u8 = CircuitState::Closed as u8;
const OPEN: u8 = CircuitState::Open as u8;
const HALF_OPEN: u8 = CircuitState::HalfOpen as u8;

impl Breaker {
    /// A closed circuit under `config`.
    pub fn new(config: CircuitBreaker) -> Self {
        let failures = FailureWindow::new(config.failure_threshold, config.window);
        Breaker {
            config,
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            probe: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            inner: Mutex::new(Inner { failures, successes: 0 }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreaker {
        &self.config
    }

    /// The state at `now` (an open circuit whose `open_for` has passed is half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            HALF_OPEN => CircuitState::HalfOpen,
            _ if self.nanos(now) >= self.open_until.load(Ordering::Acquire) => {
                CircuitState::HalfOpen
            }
            _ => CircuitState::Open,
        }
    }

    /// Failures counted within the window at `now` while closed (0 when open or
    /// half-open: the count starts again when it closes). Takes the lock: for
    /// `/debug/backends`, not the request path.
    pub fn failures(&self, now: Instant) -> u32 {
        if self.state.load(Ordering::Acquire) != CLOSED {
            return 0;
        }
        self.lock().failures.count(self.nanos(now))
    }

    /// Requests holding a permit now (counted only when `max_parallel_requests` is set;
    /// 0 otherwise).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Before sending one attempt: a permit to send it, or why not. The permit holds a
    /// parallel-request slot (and the probe slot when half-open) until it is recorded or
    /// dropped; dropped without a record (the client went away), it counts as nothing.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Refusal> {
        let probe = match self.state.load(Ordering::Acquire) {
            CLOSED => false,
            _ => self.admit_probe(now)?,
        };
        let parallel = match self.config.max_parallel_requests {
            None => false,
            Some(max) => {
                let taken = self
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .is_ok();
                if !taken {
                    if probe {
                        self.probe.store(false, Ordering::Release);
                    }
                    return Err(Refusal::MaxParallel);
                }
                true
            }
        };
        Ok(Permit { breaker: self, probe, parallel, recorded: false })
    }

    /// Not closed: turns an open circuit past `open_for` half-open, then takes the probe
    /// slot. `Ok(false)`: it closed meanwhile, an ordinary permit.
    fn admit_probe(&self, now: Instant) -> Result<bool, Refusal> {
        let mut state = self.state.load(Ordering::Acquire);
        if state == OPEN {
            if self.nanos(now) < self.open_until.load(Ordering::Acquire) {
                return Err(Refusal::Open);
            }
            let mut inner = self.lock();
            state = self.state.load(Ordering::Acquire);
            if state == OPEN && self.nanos(now) >= self.open_until.load(Ordering::Acquire) {
                inner.successes = 0;
                self.probe.store(false, Ordering::Release);
                self.state.store(HALF_OPEN, Ordering::Release);
                state = HALF_OPEN;
            }
        }
        match state {
            CLOSED => Ok(false),
            HALF_OPEN => {
                match self.probe.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => Ok(true),
                    Err(_) => Err(Refusal::ProbeInFlight),
                }
            }
            _ => Err(Refusal::Open),
        }
    }

    /// A failure of an ordinary (not probe) permit: counted while closed, ignored otherwise
    /// (the circuit already opened; a request admitted before does not reopen it).
    fn record_failure(&self, now: Instant) -> Option<Transition> {
        if self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        let mut inner = self.lock();
        if self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        let failures = inner.failures.record(self.nanos(now));
        if failures < self.config.failure_threshold.max(1) {
            return None;
        }
        inner.failures.clear();
        self.open(now);
        Some(Transition::Opened { failures })
    }

    /// The outcome of a probe (a permit admitted while half-open).
    fn record_probe(&self, success: bool, now: Instant) -> Option<Transition> {
        let transition = {
            let mut inner = self.lock();
            match self.state.load(Ordering::Acquire) {
                HALF_OPEN if success => {
                    inner.successes += 1;
                    (inner.successes >= self.config.success_threshold.max(1)).then(|| {
                        inner.successes = 0;
                        inner.failures.clear();
                        self.state.store(CLOSED, Ordering::Release);
                        Transition::Closed
                    })
                }
                HALF_OPEN => {
                    inner.successes = 0;
                    self.open(now);
                    Some(Transition::Opened { failures: 1 })
                }
                _ => None,
            }
        };
        self.probe.store(false, Ordering::Release);
        match transition {
            // Closed meanwhile (a race with another probe): an ordinary failure.
            None if !success => self.record_failure(now),
            other => other,
        }
    }

    /// Opens the circuit at `now` for `open_for` (the caller holds the lock).
    fn open(&self, now: Instant) {
        let until = self
            .nanos(now)
            .saturating_add(u64::try_from(self.config.open_for.as_nanos()).unwrap_or(u64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leave to send one attempt; see [`Breaker::try_acquire`].
#[derive(Debug)]
pub struct Permit<'b> {
    breaker: &'b Breaker,
    /// Holds the half-open probe slot.
    probe: bool,
    /// Holds a parallel-request slot.
    parallel: bool,
    /// Recorded (the probe slot is already given back).
    recorded: bool,
}

impl Permit<'_> {
    /// Records the attempt's outcome (`success`: not a failure as defined above) at `now`;
    /// returns the transition it caused, if any.
    pub fn record(mut self, success: bool, now: Instant) -> Option<Transition> {
        self.recorded = true;
        if self.probe {
            self.breaker.record_probe(success, now)
        } else if success {
            None
        } else {
            self.breaker.record_failure(now)
        }
    }

    /// True when this permit is the half-open circuit's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Like [`Permit::record`], but the parallel-request slot (when the permit holds one)
    /// is kept in the returned [`ParallelSlot`] instead of given back: the outcome is known
    /// at the response headers, while the request stays in flight until its response body
    /// ends. `owner` is the `Arc` of this permit's breaker.
    pub fn record_keeping_slot(
        mut self,
        success: bool,
        now: Instant,
        owner: &Arc<Breaker>,
    ) -> (Option<Transition>, Option<ParallelSlot>) {
        debug_assert!(std::ptr::eq(self.breaker, &**owner));
        let slot =
            std::mem::take(&mut self.parallel).then(|| ParallelSlot { breaker: Arc::clone(owner) });
        (self.record(success, now), slot)
    }
}

/// A `maxParallelRequests` slot held past the permit (see
/// [`Permit::record_keeping_slot`]); given back when dropped.
#[derive(Debug)]
pub struct ParallelSlot {
    breaker: Arc<Breaker>,
}

impl Drop for ParallelSlot {
    fn drop(&mut self) {
        self.breaker.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.parallel {
            self.breaker.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if self.probe && !self.recorded {
            self.breaker.probe.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests;
