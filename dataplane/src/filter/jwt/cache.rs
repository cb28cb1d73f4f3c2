//! The verified-token cache: a hot token is verified once, then served from here until its
//! `exp` (plus clock skew) or until the key set changes. Bounded in size.
//!
//! Tokens are hashed with foldhash (randomly seeded per cache), not SipHash: a hit hashes
//! the whole token (often 500+ bytes) on every request, and SipHash made that the largest
//! part of a cached verification. Flooding needs colliding *inserted* keys, and only tokens
//! whose signature verified are inserted, so the weaker hash gives an attacker nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue};

use crate::filter::consumers::ConsumerEntry;

/// What a successful verification established, reused for every hit.
#[derive(Debug)]
pub struct Verified {
    /// `exp` (seconds since the epoch).
    pub exp: u64,
    /// The key-set generation the token was verified with.
    pub generation: u64,
    /// The authenticated consumer, if the token identified one.
    pub consumer: Option<Arc<ConsumerEntry>>,
    /// `claimsToHeaders`, rendered once.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
}

type Map = HashMap<Box<str>, Arc<Verified>, foldhash::fast::RandomState>;

/// A bounded map from token to its verification result. When full, expired entries are
/// dropped, and if that is not enough the whole map is cleared (hot tokens come back on
/// their next request).
pub struct TokenCache {
    map: Mutex<Map>,
    capacity: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        TokenCache { map: Mutex::new(Map::default()), capacity }
    }

    /// The cached result for `token`, if still valid at `now` with `generation`.
    pub fn get(&self, token: &str, now: u64, skew: u64, generation: u64) -> Option<Arc<Verified>> {
        if self.capacity == 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let hit = map.get(token)?;
        if hit.generation == generation && now <= hit.exp.saturating_add(skew) {
            return Some(Arc::clone(hit));
        }
        map.remove(token);
        None
    }

    /// Caches a verification result.
    pub fn insert(&self, token: &str, verified: Arc<Verified>, now: u64, skew: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, v| now <= v.exp.saturating_add(skew));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(token.into(), verified);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v(exp: u64, generation: u64) -> Arc<Verified> {
        Arc::new(Verified { exp, generation, consumer: None, headers: Box::new([]) })
    }

    #[test]
    fn honours_exp_generation_and_capacity() {
        let c = TokenCache::new(2);
        c.insert("a", v(100, 1), 50, 0);
        assert!(c.get("a", 100, 0, 1).is_some());
        assert!(c.get("a", 100, 0, 2).is_none(), "a new key set invalidates");
        assert!(c.get("a", 100, 0, 1).is_none(), "and the entry is gone");
        c.insert("a", v(100, 1), 50, 5);
        assert!(c.get("a", 105, 5, 1).is_some(), "skew tolerated");
        assert!(c.get("a", 106, 5, 1).is_none(), "expired");
        c.insert("a", v(100, 1), 50, 0);
        c.insert("b", v(100, 1), 50, 0);
        c.insert("c", v(100, 1), 50, 0);
        assert!(c.len() <= 2);
        assert!(c.get("c", 60, 0, 1).is_some());
        let debug = format!("{c:?}");
        assert!(!debug.contains("\"c\""), "{debug}");
    }
}
