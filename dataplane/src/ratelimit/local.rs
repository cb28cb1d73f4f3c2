//! The local store: per-replica counters in a sharded concurrent map.
//!
//! One [`dashmap::DashMap`] per limit (the plugin's base limit and each tier), keyed by
//! [`LimitKey`]. A decision locks one shard for a few integer operations, never the whole
//! map. Entries that a fresh state would replace are swept at most once per sweep interval
//! by the request that notices it is due (no background task), and the number of keys per
//! limiter is capped, so memory stays bounded even under a flood of distinct keys.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::algorithm::{self, Limit, State, Step};
use super::key::LimitKey;

/// Default cap on the keys one limiter keeps (per replica).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: State,
    expires_at: u64,
}

/// Counters of one limiter, for each of its limits.
#[derive(Debug)]
pub struct LocalStore {
    limits: Box<[Limit]>,
    maps: Box<[DashMap<LimitKey, Slot>]>,
    len: AtomicUsize,
    max_keys: usize,
    next_sweep: AtomicU64,
    sweep_every: u64,
}

impl LocalStore {
    /// A store for `limits` (index 0 = the base limit, then the tiers), holding at most
    /// `max_keys` keys across them.
    pub fn new(limits: Box<[Limit]>, max_keys: usize) -> Self {
        let maps = limits.iter().map(|_| DashMap::new()).collect();
        // Sweep about once per window, between 1 s and 1 min.
        let shortest = limits.iter().map(Limit::window_ms).min().unwrap_or(1_000);
        LocalStore {
            limits,
            maps,
            len: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            next_sweep: AtomicU64::new(0),
            sweep_every: shortest.clamp(1_000, 60_000),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// No key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs one step for `key` under limit `index` at `now` (ms).
    pub fn step(&self, index: usize, key: &LimitKey, now: u64) -> Step {
        let (Some(limit), Some(map)) = (self.limits.get(index), self.maps.get(index)) else {
            // Unreachable by construction (the limiter picks the index); admit rather than panic.
            return Step { state: State::default(), allowed: true, now };
        };
        self.maybe_sweep(now);
        if let Some(mut slot) = map.get_mut(key) {
            return apply(limit, &mut slot, now);
        }
        if self.len.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep(now);
            if self.len.load(Ordering::Relaxed) >= self.max_keys {
                // Full of live keys: decide on a fresh state without remembering it.
                return algorithm::step(limit, None, now);
            }
        }
        match map.entry(key.clone()) {
            Entry::Occupied(mut slot) => apply(limit, slot.get_mut(), now),
            Entry::Vacant(vacant) => {
                let step = algorithm::step(limit, None, now);
                let expires_at = algorithm::expires_at(limit, &step.state);
                vacant.insert(Slot { state: step.state, expires_at });
                self.len.fetch_add(1, Ordering::Relaxed);
                step
            }
        }
    }

    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep
                .compare_exchange(due, now + self.sweep_every, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
    }

    /// Drops every entry a fresh state would replace at `now`.
    pub fn sweep(&self, now: u64) {
        for map in self.maps.iter() {
            map.retain(|_, slot| {
                let keep = slot.expires_at > now;
                if !keep {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                keep
            });
        }
    }
}

fn apply(limit: &Limit, slot: &mut Slot, now: u64) -> Step {
    let previous = (slot.expires_at > now).then_some(slot.state);
    let step = algorithm::step(limit, previous, now);
    slot.state = step.state;
    slot.expires_at = algorithm::expires_at(limit, &step.state);
    step
}
