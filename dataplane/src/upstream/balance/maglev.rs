//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! [`TABLE_SIZE`] (a prime) slots, each owned by one endpoint, filled round by round from
//! every endpoint's own permutation of the slots. A key is hashed to a slot; adding one
//! endpoint to `N` moves about `1/(N+1)` of the slots (and of the keys). Built off the
//! request path when the usable endpoint set changes; a lookup is one modulo and one load.

use std::hash::BuildHasher;
use std::net::SocketAddr;

/// Slots in a table (Envoy's default): a prime well above any endpoint count, so the
/// shares stay even (within about 1%) and the table size never changes with the endpoints.
pub const TABLE_SIZE: usize = 65_537;

/// Seeds of the two hashes of an endpoint address (offset and skip), and of request keys.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;
const KEY_SEED: u64 = 0x6d61_676c_6576_0003;

/// A stable 64-bit hash of a request's key (header, cookie, query value or source IP).
pub fn hash_key(value: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(KEY_SEED).hash_one(value)
}

/// A Maglev lookup table over a list of endpoints; slots hold indexes into that list.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds the table for `endpoints` (in any order: the table depends on the addresses,
    /// not on their positions, except for the indexes it stores). `None` when empty.
    pub fn new(endpoints: &[SocketAddr]) -> Option<Self> {
        if endpoints.is_empty() {
            return None;
        }
        let m = TABLE_SIZE as u64;
        let offset_hasher = foldhash::fast::FixedState::with_seed(OFFSET_SEED);
        let skip_hasher = foldhash::fast::FixedState::with_seed(SKIP_SEED);
        // Each endpoint's permutation: offset + j × skip (mod M), skip in 1..M.
        // Filled in address order, so the table does not depend on the list's order.
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by_key(|&i| endpoints[i]);
        let mut perms: Vec<(u64, u64, u64)> = order
            .iter()
            .map(|&i| {
                let addr = &endpoints[i];
                let offset = offset_hasher.hash_one(addr) % m;
                let skip = skip_hasher.hash_one(addr) % (m - 1) + 1;
                (offset, skip, 0)
            })
            .collect();
        let mut table = vec![u32::MAX; TABLE_SIZE].into_boxed_slice();
        let mut filled = 0usize;
        // Each round gives every endpoint its next free preferred slot; M is prime and every
        // skip is coprime with it, so each permutation visits every slot and this ends.
        'fill: loop {
            for ((offset, skip, next), &i) in perms.iter_mut().zip(&order) {
                let mut slot = ((*offset + *next * *skip) % m) as usize;
                while table[slot] != u32::MAX {
                    *next += 1;
                    slot = ((*offset + *next * *skip) % m) as usize;
                }
                table[slot] = i as u32;
                *next += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Some(Maglev { table })
    }

    /// The index of the endpoint that owns `hash`.
    pub fn get(&self, hash: u64) -> usize {
        self.table[(hash % TABLE_SIZE as u64) as usize] as usize
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080)))
            .collect()
    }

    #[test]
    fn shares_are_even() {
        let eps = addrs(7);
        let maglev = Maglev::new(&eps).unwrap();
        let mut counts = [0usize; 7];
        for slot in maglev.table.iter() {
            counts[*slot as usize] += 1;
        }
        let ideal = TABLE_SIZE / 7;
        for c in counts {
            assert!(c.abs_diff(ideal) < ideal / 50, "{counts:?}");
        }
    }

    #[test]
    fn adding_one_endpoint_moves_about_one_in_n_plus_one_keys() {
        for n in [3u16, 5, 10] {
            let before = addrs(n);
            let after = addrs(n + 1);
            let (a, b) = (Maglev::new(&before).unwrap(), Maglev::new(&after).unwrap());
            let keys = 10_000u32;
            let moved = (0..keys)
                .filter(|k| {
                    let h = hash_key(&k.to_be_bytes());
                    before[a.get(h)] != after[b.get(h)]
                })
                .count();
            let ideal = keys as f64 / f64::from(n + 1);
            // Maglev is near-minimal, not minimal: allow 40% over the ideal share.
            assert!((moved as f64) < ideal * 1.4, "n={n}: {moved} moved, ideal {ideal}");
            assert!((moved as f64) > ideal * 0.7, "n={n}: {moved} moved, ideal {ideal}");
        }
    }

    #[test]
    fn order_of_endpoints_does_not_change_the_owner() {
        let eps = addrs(4);
        let mut reversed = eps.clone();
        reversed.reverse();
        let (a, b) = (Maglev::new(&eps).unwrap(), Maglev::new(&reversed).unwrap());
        for k in 0..1000u32 {
            let h = hash_key(&k.to_be_bytes());
            assert_eq!(eps[a.get(h)], reversed[b.get(h)]);
        }
        assert!(Maglev::new(&[]).is_none());
    }
}
