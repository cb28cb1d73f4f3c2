//! The three algorithms as pure integer arithmetic over `(state, now)`.
//!
//! Every function here is mirrored line by line in `script.lua`, the Redis store's script,
//! so both stores decide identically. Rules that keep the two exact:
//! - time is whole milliseconds (`u64`); the state is three integers;
//! - only `+`, `-`, `*`, floor division and `min`/`max` are used, and every product stays
//!   below 2^53 (checked by [`Limit::new`]), where Lua's doubles are still exact integers;
//! - the token bucket counts in units of `1/window_ms` token, so refilling `limit` tokens per
//!   window adds exactly `limit` units per millisecond: no fractions, no rounding drift.

use std::fmt;
use std::time::Duration;

/// Largest value a product may reach so that Lua's doubles compute it exactly (2^53).
pub const MAX_EXACT: u64 = 1 << 53;

/// A rate-limit algorithm (API.md `rateLimit.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// One counter per aligned window of `window` length.
    FixedWindow,
    /// Sliding-window counter: this window's count plus the previous window's count
    /// weighted by how much of it still overlaps the sliding window.
    #[default]
    SlidingWindow,
    /// Token bucket: refills `limit` tokens per `window`, holds at most `limit + burst`.
    TokenBucket,
}

impl Algorithm {
    /// The code the Redis script switches on.
    pub(crate) fn code(self) -> u8 {
        match self {
            Algorithm::FixedWindow => 1,
            Algorithm::SlidingWindow => 2,
            Algorithm::TokenBucket => 3,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::FixedWindow => "FixedWindow",
            Algorithm::SlidingWindow => "SlidingWindow",
            Algorithm::TokenBucket => "TokenBucket",
        })
    }
}

/// Why a limit cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `limit` is zero.
    #[error("limit must be at least 1")]
    ZeroLimit,
    /// `window` is shorter than a millisecond.
    #[error("window must be at least 1ms")]
    ZeroWindow,
    /// `(limit + burst) * window_ms` would leave the exactly computable range.
    #[error(
        "(limit + burst) x window in milliseconds must stay below 2^53 (use a shorter window or a lower limit)"
    )]
    TooLarge,
}

/// One validated limit: `limit` requests per `window` (plus `burst` for the token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    algorithm: Algorithm,
    limit: u64,
    window_ms: u64,
    burst: u64,
}

impl Limit {
    /// Validates a limit. `burst` only matters for [`Algorithm::TokenBucket`] and is
    /// ignored (stored as 0) for the window algorithms.
    pub fn new(
        algorithm: Algorithm,
        limit: u64,
        window: Duration,
        burst: u64,
    ) -> Result<Self, LimitError> {
        let window_ms = u64::try_from(window.as_millis()).map_err(|_| LimitError::TooLarge)?;
        if limit == 0 {
            return Err(LimitError::ZeroLimit);
        }
        if window_ms == 0 {
            return Err(LimitError::ZeroWindow);
        }
        let burst = if algorithm == Algorithm::TokenBucket { burst } else { 0 };
        // The sliding window multiplies counts (<= limit) by up to 2 windows.
        let factor = if algorithm == Algorithm::SlidingWindow { 2 } else { 1 };
        let product = limit
            .checked_add(burst)
            .and_then(|c| c.checked_mul(window_ms))
            .and_then(|p| p.checked_mul(factor))
            .ok_or(LimitError::TooLarge)?;
        if product >= MAX_EXACT {
            return Err(LimitError::TooLarge);
        }
        Ok(Limit { algorithm, limit, window_ms, burst })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Requests per window (the steady rate for the token bucket).
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// Window length in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }
    /// Extra token-bucket capacity (0 for the window algorithms).
    pub fn burst(&self) -> u64 {
        self.burst
    }
    /// The quota a client sees in `RateLimit-Limit`: `limit`, or `limit + burst` for the
    /// token bucket (its capacity), so that `remaining <= limit` always holds.
    pub fn quota(&self) -> u64 {
        self.limit + self.burst
    }
}

/// The per-key state, three integers whose meaning depends on the algorithm:
/// - FixedWindow: `a` = window start (ms), `b` = count in it;
/// - SlidingWindow: `a` = current window start, `b` = its count, `c` = previous window's count;
/// - TokenBucket: `a` = time of the last update, `b` = level in `1/window_ms` token units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// A time in ms (see the type's docs).
    pub a: u64,
    /// A count or level.
    pub b: u64,
    /// The previous window's count (SlidingWindow only).
    pub c: u64,
}

/// What one step did: the new state and whether the request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The state to store.
    pub state: State,
    /// The request is admitted.
    pub allowed: bool,
    /// The time the step ran at (never before the stored state's time).
    pub now: u64,
}

/// Admits or refuses one request for a key whose stored state is `state` (None = never
/// seen or expired) at time `now` (ms). Mirrors `step` in `script.lua`.
pub fn step(limit: &Limit, state: Option<State>, now: u64) -> Step {
    // A clock that went backwards (another Redis node after a failover, say) never moves a
    // window back: the step runs at the stored time instead.
    let now = match state {
        Some(s) => now.max(s.a),
        None => now,
    };
    let w = limit.window_ms;
    match limit.algorithm {
        Algorithm::FixedWindow => {
            let start = now - now % w;
            let count = match state {
                Some(s) if s.a == start => s.b,
                _ => 0,
            };
            let allowed = count < limit.limit;
            let count = if allowed { count + 1 } else { count };
            Step { state: State { a: start, b: count, c: 0 }, allowed, now }
        }
        Algorithm::SlidingWindow => {
            let start = now - now % w;
            let (curr, prev) = match state {
                Some(s) if s.a == start => (s.b, s.c),
                Some(s) if s.a + w == start => (0, s.b),
                _ => (0, 0),
            };
            let estimate = weighted(prev, now - start, w) + curr;
            let allowed = estimate < limit.limit;
            let curr = if allowed { curr + 1 } else { curr };
            Step { state: State { a: start, b: curr, c: prev }, allowed, now }
        }
        Algorithm::TokenBucket => {
            let cap = limit.quota() * w;
            let level = match state {
                Some(s) => cap.min(s.b.saturating_add((now - s.a).saturating_mul(limit.limit))),
                None => cap,
            };
            let allowed = level >= w;
            let level = if allowed { level - w } else { level };
            Step { state: State { a: now, b: level, c: 0 }, allowed, now }
        }
    }
}

/// The previous window's count that still overlaps a sliding window `elapsed` ms into the
/// current one: `floor(prev * (w - elapsed) / w)`.
fn weighted(prev: u64, elapsed: u64, w: u64) -> u64 {
    prev * (w - elapsed) / w
}

/// When the state may be forgotten because a fresh state behaves the same (ms, absolute).
/// The local store sweeps by it; the Redis script sets the key's TTL from it.
pub fn expires_at(limit: &Limit, state: &State) -> u64 {
    let w = limit.window_ms;
    match limit.algorithm {
        Algorithm::FixedWindow => state.a + w,
        Algorithm::SlidingWindow => state.a + 2 * w,
        Algorithm::TokenBucket => {
            let cap = limit.quota() * w;
            state.a + (cap - state.b.min(cap)).div_ceil(limit.limit)
        }
    }
}

/// Remaining requests and waits derived from a step (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests that would still be admitted right now.
    pub remaining: u64,
    /// Until the quota resets: the end of the window, or the bucket being full; when
    /// nothing remains, until the next request is admitted.
    pub reset_ms: u64,
    /// Until the next request is admitted (0 when one would be now).
    pub wait_ms: u64,
}

/// Computes what a client is told after `step` (same for both stores: it runs in Rust on
/// the state the store returned).
pub fn quota(limit: &Limit, step: &Step) -> Quota {
    let (s, now, w) = (step.state, step.now, limit.window_ms);
    match limit.algorithm {
        Algorithm::FixedWindow => {
            let remaining = limit.limit.saturating_sub(s.b);
            let end = s.a + w - now;
            Quota { remaining, reset_ms: end, wait_ms: if remaining == 0 { end } else { 0 } }
        }
        Algorithm::SlidingWindow => {
            let elapsed = now - s.a;
            let estimate = weighted(s.c, elapsed, w) + s.b;
            let remaining = limit.limit.saturating_sub(estimate);
            let wait_ms = if remaining > 0 { 0 } else { sliding_wait(limit, &s, elapsed) };
            let reset_ms = if remaining > 0 { w - elapsed } else { wait_ms };
            Quota { remaining, reset_ms, wait_ms }
        }
        Algorithm::TokenBucket => {
            let cap = limit.quota() * w;
            let remaining = s.b / w;
            let wait_ms = if remaining > 0 { 0 } else { (w - s.b).div_ceil(limit.limit) };
            let full = (cap - s.b.min(cap)).div_ceil(limit.limit);
            Quota { remaining, reset_ms: if remaining > 0 { full } else { wait_ms }, wait_ms }
        }
    }
}

/// Milliseconds until a sliding window that is full at `elapsed` ms into window `s.a`
/// admits again: the first offset `e` where `weighted(prev, e) + curr < limit`.
fn sliding_wait(limit: &Limit, s: &State, elapsed: u64) -> u64 {
    let (w, l) = (limit.window_ms, limit.limit);
    if s.b < l {
        // Still in this window: floor(prev * (w - e) / w) <= need, need = l - 1 - curr.
        let need = l - 1 - s.b;
        let e = w * (s.c - need - 1) / s.c + 1;
        e.saturating_sub(elapsed).max(1)
    } else {
        // Only the next window helps: there prev' = curr, curr' = 0, need = l - 1.
        let e = w * (s.b - l) / s.b + 1;
        (w - elapsed) + e
    }
}
