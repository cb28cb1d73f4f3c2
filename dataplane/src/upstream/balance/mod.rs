//! Load balancers: RoundRobin, LeastRequest (power of two choices), Random, ConsistentHash
//! (Maglev), slow start. They pick from a precomputed [`EndpointSet`] (rebuilt by the
//! registry on health transitions, ejections and endpoint changes, never per request): a
//! pick is a few atomic loads, no lock and no allocation.

pub mod hash;
pub mod maglev;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::upstream::policy::LoadBalancer;
use crate::upstream::registry::EndpointState;
pub use hash::{RequestHash, request_hash};
pub use maglev::{Maglev, hash_key};

/// How many times a pick is redrawn when slow start refuses an endpoint.
const SLOW_START_REDRAWS: usize = 4;
/// The least share an endpoint in slow start gets.
const SLOW_START_MIN_SHARE: f64 = 0.1;

/// The endpoints of one backend as the balancer sees them: every endpoint, and the usable
/// ones (not ejected, not failing active checks; every endpoint in panic mode).
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Every endpoint, in the snapshot's order.
    pub all: Box<[Arc<EndpointState>]>,
    /// Indexes into `all` of the endpoints requests may go to.
    pub usable: Box<[u32]>,
    /// Too few endpoints are usable (under `panicThreshold`): `usable` is every endpoint.
    pub panic: bool,
    /// The Maglev table over `usable` (ConsistentHash only).
    pub maglev: Option<Maglev>,
    /// Some usable endpoint is in slow start.
    pub slow_start: bool,
}

/// What a pick needs besides the set.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The policy's balancer.
    pub balancer: &'a LoadBalancer,
    /// The backend's round-robin cursor (kept across endpoint updates).
    pub cursor: &'a AtomicUsize,
    /// The request's hash (ConsistentHash with the attribute present).
    pub hash: Option<u64>,
    /// The endpoint of the previous attempt, avoided when another is usable.
    pub avoid: Option<SocketAddr>,
    /// The slow-start window and the current time, when the policy has one and some
    /// usable endpoint is in it.
    pub slow_start: Option<(Duration, Instant)>,
}

impl EndpointSet {
    /// The number of usable endpoints.
    pub fn usable_len(&self) -> usize {
        self.usable.len()
    }

    /// Picks an endpoint for one attempt; `None` when nothing is usable.
    pub fn pick(&self, cx: &PickContext<'_>) -> Option<&Arc<EndpointState>> {
        let n = self.usable.len();
        if n == 0 {
            return None;
        }
        let mut position = self.draw(cx);
        // A hashed request's endpoint is not redrawn: the key owns it.
        let hashed = matches!(cx.balancer, LoadBalancer::ConsistentHash(_)) && cx.hash.is_some();
        if let Some(slow) = cx.slow_start.filter(|_| self.slow_start && !hashed) {
            for _ in 0..SLOW_START_REDRAWS {
                if self.accepts(position, slow) {
                    break;
                }
                position = self.draw(cx);
            }
        }
        if n > 1 && cx.avoid.is_some_and(|a| self.at(position).addr == a) {
            position = match cx.balancer {
                // A retry of a hashed request goes to the key's next endpoint.
                LoadBalancer::ConsistentHash(_) if cx.hash.is_some() => (position + 1) % n,
                _ => {
                    let again = self.draw(cx);
                    if again == position { (position + 1) % n } else { again }
                }
            };
        }
        Some(self.at(position))
    }

    fn at(&self, position: usize) -> &Arc<EndpointState> {
        &self.all[self.usable[position] as usize]
    }

    /// One draw: a position in `usable`.
    fn draw(&self, cx: &PickContext<'_>) -> usize {
        let n = self.usable.len();
        match cx.balancer {
            LoadBalancer::RoundRobin => cx.cursor.fetch_add(1, Ordering::Relaxed) % n,
            LoadBalancer::Random => fastrand::usize(..n),
            LoadBalancer::LeastRequest => self.two_choices(),
            LoadBalancer::ConsistentHash(_) => match (cx.hash, &self.maglev) {
                (Some(hash), Some(maglev)) => maglev.get(hash).min(n - 1),
                _ => fastrand::usize(..n),
            },
        }
    }

    /// Power of two choices: of two distinct random endpoints, the one with fewer
    /// requests in flight (the first on a tie).
    fn two_choices(&self) -> usize {
        let n = self.usable.len();
        if n == 1 {
            return 0;
        }
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        if self.at(b).in_flight() < self.at(a).in_flight() { b } else { a }
    }

    /// Slow start: an endpoint in its window is accepted with probability
    /// `elapsed / window` (at least 10%).
    fn accepts(&self, position: usize, (window, now): (Duration, Instant)) -> bool {
        match slow_start_share(self.at(position), window, now) {
            None => true,
            Some(share) => fastrand::f64() < share,
        }
    }
}

/// The share of traffic an endpoint gets at `now` under a slow-start `window`: `None` when
/// it is not (or no longer) in slow start.
pub fn slow_start_share(endpoint: &EndpointState, window: Duration, now: Instant) -> Option<f64> {
    if !endpoint.slow_start || window.is_zero() {
        return None;
    }
    let elapsed = now.saturating_duration_since(endpoint.added);
    (elapsed < window)
        .then(|| (elapsed.as_secs_f64() / window.as_secs_f64()).max(SLOW_START_MIN_SHARE))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::upstream::policy::HashOn;

    fn set(n: u16, slow: &[usize], now: Instant) -> EndpointSet {
        let all: Vec<Arc<EndpointState>> = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i));
                Arc::new(EndpointState::new(addr, now, slow.contains(&usize::from(i))))
            })
            .collect();
        let addrs: Vec<SocketAddr> = all.iter().map(|e| e.addr).collect();
        EndpointSet {
            usable: (0..u32::from(n)).collect(),
            maglev: Maglev::new(&addrs),
            slow_start: !slow.is_empty(),
            all: all.into(),
            panic: false,
        }
    }

    fn cx<'a>(lb: &'a LoadBalancer, cursor: &'a AtomicUsize) -> PickContext<'a> {
        PickContext { balancer: lb, cursor, hash: None, avoid: None, slow_start: None }
    }

    #[test]
    fn round_robin_visits_each_in_turn_and_retries_avoid_the_last() {
        let now = Instant::now();
        let s = set(3, &[], now);
        let cursor = AtomicUsize::new(0);
        let lb = LoadBalancer::RoundRobin;
        let picks: Vec<u16> =
            (0..6).map(|_| s.pick(&cx(&lb, &cursor)).unwrap().addr.port()).collect();
        assert_eq!(picks, [1000, 1001, 1002, 1000, 1001, 1002]);
        let avoid = Some(SocketAddr::from(([127, 0, 0, 1], 1000)));
        for _ in 0..10 {
            let picked = s.pick(&PickContext { avoid, ..cx(&lb, &cursor) }).unwrap();
            assert_ne!(Some(picked.addr), avoid);
        }
    }

    #[test]
    fn two_choices_prefer_the_less_loaded() {
        let now = Instant::now();
        let s = set(2, &[], now);
        for _ in 0..5 {
            s.all[0].begin();
        }
        let cursor = AtomicUsize::new(0);
        let lb = LoadBalancer::LeastRequest;
        for _ in 0..100 {
            assert_eq!(s.pick(&cx(&lb, &cursor)).unwrap().addr.port(), 1001);
        }
        // Three endpoints: the loaded one is picked only when both draws are it — never,
        // since the two draws are distinct.
        let s = set(3, &[], now);
        for _ in 0..5 {
            s.all[1].begin();
        }
        for _ in 0..300 {
            assert_ne!(s.pick(&cx(&lb, &cursor)).unwrap().addr.port(), 1001);
        }
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let s = set(4, &[], Instant::now());
        let cursor = AtomicUsize::new(0);
        let lb = LoadBalancer::Random;
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[usize::from(s.pick(&cx(&lb, &cursor)).unwrap().addr.port() - 1000)] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn hashed_picks_are_stable_and_missing_keys_spread() {
        let s = set(5, &[], Instant::now());
        let cursor = AtomicUsize::new(0);
        let lb = LoadBalancer::ConsistentHash(HashOn::SourceIp);
        for k in 0..50u32 {
            let hash = Some(hash_key(&k.to_be_bytes()));
            let first = s.pick(&PickContext { hash, ..cx(&lb, &cursor) }).unwrap().addr;
            for _ in 0..5 {
                assert_eq!(s.pick(&PickContext { hash, ..cx(&lb, &cursor) }).unwrap().addr, first);
            }
            // A retry goes elsewhere.
            let retry = s.pick(&PickContext { hash, avoid: Some(first), ..cx(&lb, &cursor) });
            assert_ne!(retry.unwrap().addr, first);
        }
        let distinct: std::collections::HashSet<_> =
            (0..200).map(|_| s.pick(&cx(&lb, &cursor)).unwrap().addr).collect();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn slow_start_ramps_linearly_from_ten_percent() {
        let start = Instant::now();
        let s = set(2, &[1], start);
        let window = Duration::from_secs(100);
        let share = |secs| slow_start_share(&s.all[1], window, start + Duration::from_secs(secs));
        assert_eq!(share(0), Some(0.1));
        assert_eq!(share(50), Some(0.5));
        assert_eq!(share(100), None);
        assert_eq!(slow_start_share(&s.all[0], window, start), None);
        // Round robin at 10% of the window: the new endpoint gets well under half.
        let cursor = AtomicUsize::new(0);
        let lb = LoadBalancer::RoundRobin;
        let now = start + Duration::from_secs(10);
        let slow = Some((window, now));
        let new_picks = (0..2000)
            .filter(|_| {
                s.pick(&PickContext { slow_start: slow, ..cx(&lb, &cursor) }).unwrap().addr.port()
                    == 1001
            })
            .count();
        assert!((50..600).contains(&new_picks), "{new_picks}");
        // After the window, an even split.
        let later = Some((window, start + window));
        let new_picks = (0..2000)
            .filter(|_| {
                s.pick(&PickContext { slow_start: later, ..cx(&lb, &cursor) }).unwrap().addr.port()
                    == 1001
            })
            .count();
        assert_eq!(new_picks, 1000);
    }

    #[test]
    fn nothing_usable_picks_nothing() {
        let mut s = set(2, &[], Instant::now());
        s.usable = Box::new([]);
        let cursor = AtomicUsize::new(0);
        assert!(s.pick(&cx(&LoadBalancer::RoundRobin, &cursor)).is_none());
    }
}
