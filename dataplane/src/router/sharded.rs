//! A hash table split into `Arc`'d shards, so a patched copy shares every shard it does
//! not touch.
//!
//! Cloning a [`Sharded`] costs one reference-count increment per shard (about one per
//! [`SHARD_TARGET`] entries); changing an entry of the clone copies only that entry's shard
//! (copy on write through [`Arc::make_mut`]). Lookups hash the key once: middle bits of
//! the hash pick the shard, hashbrown uses the others inside it, so a lookup costs about
//! what a plain `HashMap` lookup costs plus one read of the (small, hot) shard array.

use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Arc;

use hashbrown::HashTable;

use super::hash::FxHasher;

/// Average entries per shard when a table is built: 96 fills hashbrown's 128-slot tables
/// to about 75%, and copying one shard on a patch stays cheap.
const SHARD_TARGET: usize = 96;

/// An entry that carries its own key.
pub(crate) trait Keyed {
    /// The key type.
    type Key: ?Sized + Hash + Eq;
    /// The entry's key.
    fn key(&self) -> &Self::Key;
}

/// The hash of a key (the same function for building and lookups).
#[inline]
pub(crate) fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    BuildHasherDefault::<FxHasher>::default().hash_one(key)
}

/// A hash table of `T`s keyed by [`Keyed::key`], in `Arc`'d shards.
#[derive(Debug)]
pub(crate) struct Sharded<T> {
    shards: Box<[Arc<HashTable<T>>]>,
    len: usize,
}

impl<T> Clone for Sharded<T> {
    fn clone(&self) -> Self {
        Sharded { shards: self.shards.clone(), len: self.len }
    }
}

impl<T> Default for Sharded<T> {
    fn default() -> Self {
        Sharded { shards: Box::new([]), len: 0 }
    }
}

/// The shard of a hash among `n` shards: multiply-shift on bits 24..56, so `n` need not be
/// a power of two and hashbrown keeps what it uses inside a shard: the low bits (position)
/// and the top seven (the tag compared before any key; were they shared by a whole shard,
/// every probe would compare keys).
#[inline]
fn shard_of(hash: u64, n: usize) -> usize {
    ((((hash >> 24) & 0xffff_ffff) * n as u64) >> 32) as usize
}

impl<T: Keyed> Sharded<T> {
    /// Builds a table from `(hash, entry)` pairs; an entry whose key is already present is
    /// handed to `merge` with the present one instead of being inserted.
    pub(crate) fn build(items: Vec<(u64, T)>, mut merge: impl FnMut(&mut T, T)) -> Self {
        if items.is_empty() {
            return Sharded::default();
        }
        let n = items.len().div_ceil(SHARD_TARGET);
        let mut counts = vec![0usize; n];
        for (h, _) in &items {
            if let Some(c) = counts.get_mut(shard_of(*h, n)) {
                *c += 1;
            }
        }
        let mut tables: Vec<HashTable<T>> =
            counts.into_iter().map(HashTable::with_capacity).collect();
        let mut len = 0;
        for (h, item) in items {
            let Some(table) = tables.get_mut(shard_of(h, n)) else {
                continue;
            };
            match table.find_mut(h, |e| e.key() == item.key()) {
                Some(present) => merge(present, item),
                None => {
                    table.insert_unique(h, item, |e| hash_of(e.key()));
                    len += 1;
                }
            }
        }
        Sharded { shards: tables.into_iter().map(Arc::new).collect(), len }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True when there is no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry of `key`, whose hash is `hash`.
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, key: &T::Key) -> Option<&T> {
        let shard = self.shards.get(shard_of(hash, self.shards.len()))?;
        shard.find(hash, |e| e.key() == key)
    }

    /// The entry of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &T::Key) -> Option<&T> {
        if self.len == 0 {
            return None;
        }
        self.get_hashed(hash_of(key), key)
    }

    /// How many shards `self` shares with `other`, and how many it has.
    #[cfg(test)]
    pub(crate) fn shared_shards(&self, other: &Sharded<T>) -> (usize, usize) {
        let same = self.shards.iter().zip(other.shards.iter()).filter(|(a, b)| Arc::ptr_eq(a, b));
        (same.count(), self.shards.len())
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

impl<T: Keyed + Clone> Sharded<T> {
    /// The shard `hash` falls in, copied first if another table shares it. Creates the
    /// single shard of an empty table.
    fn shard_mut(&mut self, hash: u64) -> Option<&mut HashTable<T>> {
        if self.shards.is_empty() {
            self.shards = Box::new([Arc::new(HashTable::new())]);
        }
        let i = shard_of(hash, self.shards.len());
        self.shards.get_mut(i).map(Arc::make_mut)
    }

    /// The entry of `key` for changing it (its shard is copied if shared).
    pub(crate) fn get_mut(&mut self, key: &T::Key) -> Option<&mut T> {
        let hash = hash_of(key);
        self.get_hashed(hash, key)?;
        self.shard_mut(hash)?.find_mut(hash, |e| e.key() == key)
    }

    /// Inserts `item`, returning the entry it replaces. When patches have grown the table
    /// to four times its shard target, it is re-sharded (amortised O(1) per insert).
    pub(crate) fn insert(&mut self, item: T) -> Option<T> {
        if self.len >= 4 * SHARD_TARGET * self.shards.len().max(1) {
            self.reshard();
        }
        let hash = hash_of(item.key());
        let shard = self.shard_mut(hash)?;
        match shard.find_mut(hash, |e| e.key() == item.key()) {
            Some(present) => Some(std::mem::replace(present, item)),
            None => {
                shard.insert_unique(hash, item, |e| hash_of(e.key()));
                self.len += 1;
                None
            }
        }
    }

    /// Rebuilds the shards for the current number of entries.
    fn reshard(&mut self) {
        let items = self.iter().map(|e| (hash_of(e.key()), e.clone())).collect();
        *self = Sharded::build(items, |_, _| {});
    }

    /// Calls `f` on every entry, copying every shared shard (for a fresh table's final pass).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        for shard in self.shards.iter_mut() {
            Arc::make_mut(shard).iter_mut().for_each(&mut f);
        }
    }

    /// Removes and returns the entry of `key`.
    pub(crate) fn remove(&mut self, key: &T::Key) -> Option<T> {
        let hash = hash_of(key);
        self.get_hashed(hash, key)?;
        let shard = self.shard_mut(hash)?;
        let (item, _) = shard.find_entry(hash, |e| e.key() == key).ok()?.remove();
        self.len -= 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct E(String, u32);

    impl Keyed for E {
        type Key = str;
        fn key(&self) -> &str {
            &self.0
        }
    }

    fn build(n: u32) -> Sharded<E> {
        let items = (0..n).map(|i| E(format!("k{i}"), i)).map(|e| (hash_of(e.key()), e)).collect();
        Sharded::build(items, |a, b| a.1 += b.1)
    }

    #[test]
    fn build_merges_duplicates_and_finds_every_key() {
        let mut items: Vec<(u64, E)> = Vec::new();
        for i in 0..1000u32 {
            let e = E(format!("k{}", i % 500), 1);
            items.push((hash_of(e.key()), e));
        }
        let t = Sharded::build(items, |a, b| a.1 += b.1);
        assert_eq!(t.len(), 500);
        assert!(t.shards.len() > 1);
        for i in 0..500 {
            assert_eq!(t.get(&format!("k{i}")).unwrap().1, 2);
        }
        assert!(t.get("k500").is_none());
        assert_eq!(t.iter().count(), 500);
    }

    #[test]
    fn patched_copy_shares_untouched_shards_and_leaves_the_original() {
        let a = build(10_000);
        let mut b = a.clone();
        assert_eq!(b.insert(E("k7".into(), 70)), Some(E("k7".into(), 7)));
        assert_eq!(b.remove("k8"), Some(E("k8".into(), 8)));
        assert_eq!(b.insert(E("new".into(), 1)), None);
        b.get_mut("k9").unwrap().1 = 90;
        let mut grown: Sharded<E> = Sharded::default();
        for i in 0..2_000 {
            grown.insert(E(format!("g{i}"), i));
        }
        assert!(grown.shards.len() > 4, "re-sharded as it grew");
        assert!((0..2_000).all(|i| grown.get(&format!("g{i}")).is_some_and(|e| e.1 == i)));
        assert!(b.get_mut("absent").is_none());
        assert_eq!((a.len(), b.len()), (10_000, 10_000));
        assert_eq!((a.get("k7").unwrap().1, b.get("k7").unwrap().1), (7, 70));
        assert_eq!((a.get("k9").unwrap().1, b.get("k9").unwrap().1), (9, 90));
        assert!(a.get("k8").is_some() && b.get("k8").is_none());
        assert!(a.get("new").is_none() && b.get("new").is_some());
        let shared = a.shards.iter().zip(b.shards.iter()).filter(|(x, y)| Arc::ptr_eq(x, y));
        assert!(shared.count() >= a.shards.len() - 4, "at most four shards copied");
    }

    #[test]
    fn empty_table_grows_one_shard() {
        let mut t: Sharded<E> = Sharded::default();
        assert!(t.get("a").is_none() && t.remove("a").is_none() && t.is_empty());
        t.insert(E("a".into(), 1));
        assert_eq!(t.get("a").unwrap().1, 1);
        assert_eq!(t.len(), 1);
    }
}
