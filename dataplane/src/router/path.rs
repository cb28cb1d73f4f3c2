//! The path index of one host bucket: exact paths and prefixes in hash maps, regular
//! expressions in a precedence-ordered list (with a `RegexSet` when there are many).
//!
//! Lookup order is exact, then regular expression, then prefix longest first (Envoy
//! Gateway's order). A prefix lookup probes the map with the full path and then with each
//! shorter prefix ending before a `/`, so it costs O(segments) hash lookups whatever the
//! number of routes; a longer prefix whose other conditions fail falls through to shorter
//! ones. Every candidate list is pre-sorted by [`Precedence`], so the first entry whose
//! method, header and query conditions hold wins.

use std::cmp::Ordering;
use std::sync::Arc;

use compact_str::CompactString;
use regex::RegexSet;

use super::precedence::Precedence;
use super::sharded::{Keyed, Sharded, hash_of};
use super::stored::StoredRoute;
use super::{RequestView, RouteMatch, conditions};
use crate::snapshot::{ObjectKey, PathMatch, RequestMatch, Rule};

/// With more regexes than this in one bucket, a `RegexSet` pre-filters them.
const REGEX_SET_THRESHOLD: usize = 8;

/// The creation time of a Route in the table, for the precedence tie-break.
pub(crate) trait CreatedOf: Fn(&ObjectKey) -> i64 {}
impl<F: Fn(&ObjectKey) -> i64> CreatedOf for F {}

/// One match entry of one rule.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    rule: Arc<Rule>,
    match_index: u32,
    /// No method, header or query condition: the path alone decides, and the match entry
    /// itself need not be read (one cache miss less on large tables).
    unconditional: bool,
}

impl Entry {
    fn new(rule: &Arc<Rule>, match_index: usize, m: &RequestMatch) -> Self {
        let unconditional = m.path_only();
        let match_index = u32::try_from(match_index).unwrap_or(u32::MAX);
        Entry { rule: Arc::clone(rule), match_index, unconditional }
    }

    #[inline]
    fn request_match(&self) -> Option<&RequestMatch> {
        self.rule.matches.get(self.match_index as usize)
    }

    #[inline]
    fn check<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let m = self.request_match()?;
        (self.unconditional || conditions::hold(m, req))
            .then_some(RouteMatch { rule: &self.rule, matched: m })
    }

    fn belongs_to(&self, route: &ObjectKey) -> bool {
        self.rule.route() == route
    }

    fn precedence(&self, created: &impl CreatedOf) -> Option<Precedence<'_>> {
        let m = self.request_match()?;
        Some(Precedence::of(&self.rule, m, self.match_index as usize, created(self.rule.route())))
    }
}

/// Precedence order of two entries (smaller wins).
fn compare(a: &Entry, b: &Entry, created: &impl CreatedOf) -> Ordering {
    a.precedence(created).cmp(&b.precedence(created))
}

/// The precedence-ordered entries of one exact path or prefix. Almost always one, kept
/// inline in the map slot so a hit costs no extra pointer chase; several sit behind a thin
/// pointer so the slot stays small.
#[derive(Debug, Clone)]
enum List {
    One(Entry),
    // A thin pointer on purpose: it keeps `List` (and every map slot) 8 bytes smaller.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Entry>>),
}

impl List {
    #[inline]
    fn as_slice(&self) -> &[Entry] {
        match self {
            List::One(e) => std::slice::from_ref(e),
            List::Many(list) => list,
        }
    }

    /// Appends without sorting (see [`List::sort`]).
    fn push(&mut self, e: Entry) {
        match self {
            List::Many(list) => list.push(e),
            List::One(first) => {
                let first = first.clone();
                *self = List::Many(Box::new(vec![first, e]));
            }
        }
    }

    fn sort(&mut self, created: &impl CreatedOf) {
        if let List::Many(list) = self {
            list.sort_by(|a, b| compare(a, b, created));
        }
    }

    /// Drops the entries of `route`; `false` when none is left.
    fn remove_route(&mut self, route: &ObjectKey) -> bool {
        match self {
            List::One(e) => !e.belongs_to(route),
            List::Many(list) => {
                list.retain(|e| !e.belongs_to(route));
                if list.len() == 1
                    && let Some(only) = list.pop()
                {
                    *self = List::One(only);
                }
                !self.as_slice().is_empty()
            }
        }
    }
}

/// An exact path or a normalised prefix with its entries.
#[derive(Debug, Clone)]
struct PathEntry {
    // Keys up to 24 bytes live inline in the map's slots: a hit compares the key without
    // another pointer chase (a cache miss on large tables).
    key: CompactString,
    list: List,
}

impl Keyed for PathEntry {
    type Key = str;
    fn key(&self) -> &str {
        &self.key
    }
}

/// The key lengths present in a map: a probe whose length no key has is skipped, so
/// requests for long paths do not pay a hash lookup (and its cache misses) per segment.
/// A patch that removes a key leaves its length set: the filter may let a useless probe
/// through, never hide a key.
#[derive(Debug, Default, Clone)]
struct Lengths {
    short: [u64; 4],
    long: bool,
}

impl Lengths {
    fn insert(&mut self, len: usize) {
        match self.short.get_mut(len / 64) {
            Some(word) => *word |= 1 << (len % 64),
            None => self.long = true,
        }
    }

    #[inline]
    fn may_contain(&self, len: usize) -> bool {
        match self.short.get(len / 64) {
            Some(word) => word & (1 << (len % 64)) != 0,
            None => self.long,
        }
    }
}

/// Normalises a prefix: no trailing `/`, so the root prefix is `""`.
pub(crate) fn normalise_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// Where one match entry is indexed.
enum Slot<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex,
}

/// Every match entry of every rule of `route`, with its slot.
fn entries(route: &StoredRoute) -> impl Iterator<Item = (Slot<'_>, Entry)> {
    route.rules.iter().flat_map(|rule| {
        rule.matches.iter().enumerate().map(move |(i, m)| {
            let slot = match &m.path {
                PathMatch::Exact(p) => Slot::Exact(p),
                PathMatch::Prefix(p) => Slot::Prefix(normalise_prefix(p)),
                PathMatch::Regex(_) => Slot::Regex,
            };
            (slot, Entry::new(rule, i, m))
        })
    })
}

/// The regular-expression entries of a bucket, in precedence order, with their set.
#[derive(Debug, Default)]
struct Regexes {
    entries: Box<[Entry]>,
    set: Option<RegexSet>,
}

impl Regexes {
    /// Sorts `entries` and builds the set when there are many.
    fn new(mut entries: Vec<Entry>, created: &impl CreatedOf) -> Self {
        entries.sort_by(|a, b| compare(a, b, created));
        let set = if entries.len() > REGEX_SET_THRESHOLD {
            let patterns =
                entries.iter().filter_map(|e| match e.request_match().map(|m| &m.path) {
                    Some(PathMatch::Regex(re)) => Some(re.as_str()),
                    _ => None,
                });
            // If the set cannot be built (size limits), the linear scan still works.
            RegexSet::new(patterns).ok().filter(|s| s.len() == entries.len())
        } else {
            None
        };
        Regexes { entries: entries.into_boxed_slice(), set }
    }
}

/// Collects the match entries of one host bucket for [`RouteTable::new`](super::RouteTable::new).
#[derive(Debug, Default)]
pub(crate) struct BucketBuilder {
    routes: usize,
    exact: Vec<(u64, PathEntry)>,
    prefix: Vec<(u64, PathEntry)>,
    regex: Vec<Entry>,
}

impl BucketBuilder {
    /// Adds every match entry of every rule of `route`.
    pub(crate) fn add(&mut self, route: &StoredRoute) {
        self.routes += 1;
        for (slot, e) in entries(route) {
            let (items, key) = match slot {
                Slot::Exact(k) => (&mut self.exact, k),
                Slot::Prefix(k) => (&mut self.prefix, k),
                Slot::Regex => {
                    self.regex.push(e);
                    continue;
                }
            };
            items.push((hash_of(key), PathEntry { key: key.into(), list: List::One(e) }));
        }
    }

    /// Merges entries that share a key, sorts every list and freezes the bucket.
    pub(crate) fn build(self, created: &impl CreatedOf) -> Bucket {
        fn index(
            items: Vec<(u64, PathEntry)>,
            created: &impl CreatedOf,
        ) -> (Sharded<PathEntry>, Lengths) {
            let mut lengths = Lengths::default();
            for (_, e) in &items {
                lengths.insert(e.key.len());
            }
            let mut shared = false;
            let mut map = Sharded::build(items, |present: &mut PathEntry, e: PathEntry| {
                shared = true;
                for x in e.list.as_slice() {
                    present.list.push(x.clone());
                }
            });
            if shared {
                map.for_each_mut(|e| e.list.sort(created));
            }
            (map, lengths)
        }
        let (exact, exact_lengths) = index(self.exact, created);
        let (prefix, prefix_lengths) = index(self.prefix, created);
        let regex = Arc::new(Regexes::new(self.regex, created));
        Bucket { routes: self.routes, exact, exact_lengths, prefix, prefix_lengths, regex }
    }
}

/// The frozen path index of one host bucket. Cloning it shares every shard; a patch copies
/// only the shards it changes.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Routes indexed here (the bucket exists while there is one).
    routes: usize,
    exact: Sharded<PathEntry>,
    exact_lengths: Lengths,
    prefix: Sharded<PathEntry>,
    prefix_lengths: Lengths,
    regex: Arc<Regexes>,
}

/// Removes the entries of `route` from the list of `key`, and the key when none is left.
fn unindex_key(map: &mut Sharded<PathEntry>, key: &str, route: &ObjectKey) {
    let keep = match map.get_mut(key) {
        Some(e) => e.list.remove_route(route),
        None => true,
    };
    if !keep {
        map.remove(key);
    }
}

/// Adds an entry to the list of `key` (creating it) in precedence order.
fn index_key(
    map: &mut Sharded<PathEntry>,
    lengths: &mut Lengths,
    key: &str,
    e: Entry,
    created: &impl CreatedOf,
) {
    match map.get_mut(key) {
        Some(present) => {
            present.list.push(e);
            present.list.sort(created);
        }
        None => {
            lengths.insert(key.len());
            map.insert(PathEntry { key: key.into(), list: List::One(e) });
        }
    }
}

impl Bucket {
    /// How many prefix shards `self` shares with `other`, and how many it has.
    #[cfg(test)]
    pub(crate) fn shared_prefix_shards(&self, other: &Bucket) -> (usize, usize) {
        self.prefix.shared_shards(&other.prefix)
    }

    /// True when no Route is indexed here any more.
    pub(crate) fn is_unused(&self) -> bool {
        self.routes == 0
    }

    /// Takes the entries of `route` out (the Route as it was indexed).
    pub(crate) fn unindex(&mut self, route: &StoredRoute, created: &impl CreatedOf) {
        self.routes = self.routes.saturating_sub(1);
        let mut regex = false;
        for (slot, _) in entries(route) {
            match slot {
                Slot::Exact(k) => unindex_key(&mut self.exact, k, &route.key),
                Slot::Prefix(k) => unindex_key(&mut self.prefix, k, &route.key),
                Slot::Regex => regex = true,
            }
        }
        if regex {
            let kept =
                self.regex.entries.iter().filter(|e| !e.belongs_to(&route.key)).cloned().collect();
            self.regex = Arc::new(Regexes::new(kept, created));
        }
    }

    /// Puts the entries of `route` in, each at its place in precedence order.
    pub(crate) fn index(&mut self, route: &StoredRoute, created: &impl CreatedOf) {
        self.routes += 1;
        let mut regex = Vec::new();
        for (slot, e) in entries(route) {
            match slot {
                Slot::Exact(k) => {
                    index_key(&mut self.exact, &mut self.exact_lengths, k, e, created)
                }
                Slot::Prefix(k) => {
                    index_key(&mut self.prefix, &mut self.prefix_lengths, k, e, created)
                }
                Slot::Regex => regex.push(e),
            }
        }
        if !regex.is_empty() {
            regex.extend(self.regex.entries.iter().cloned());
            self.regex = Arc::new(Regexes::new(regex, created));
        }
    }
}

#[inline]
fn first<'t>(list: &'t [Entry], req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
    list.iter().find_map(|e| e.check(req))
}

impl Bucket {
    /// The best match in this bucket, or `None` so the caller falls back to the next bucket.
    pub(crate) fn find<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let path = req.path;
        if self.exact_lengths.may_contain(path.len())
            && let Some(e) = self.exact.get(path)
            && let Some(m) = first(e.list.as_slice(), req)
        {
            return Some(m);
        }
        if !self.regex.entries.is_empty()
            && let Some(m) = self.find_regex(req)
        {
            return Some(m);
        }
        self.find_prefix(req)
    }

    fn find_regex<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let path = req.path;
        let regex_holds = |e: &Entry| matches!(e.request_match().map(|m| &m.path), Some(PathMatch::Regex(re)) if re.is_match(path));
        let entries = &self.regex.entries;
        match &self.regex.set {
            None => entries.iter().filter(|e| regex_holds(e)).find_map(|e| e.check(req)),
            Some(set) => {
                if !set.is_match(path) {
                    return None;
                }
                // Indexes come in ascending order, which is precedence order.
                set.matches(path).iter().filter_map(|i| entries.get(i)).find_map(|e| e.check(req))
            }
        }
    }

    fn find_prefix<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        if self.prefix.is_empty() {
            return None;
        }
        let path = req.path;
        let probe = |key: &str| {
            if !self.prefix_lengths.may_contain(key.len()) {
                return None;
            }
            self.prefix.get(key).and_then(|e| first(e.list.as_slice(), req))
        };
        if !path.ends_with('/')
            && let Some(m) = probe(path)
        {
            return Some(m);
        }
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind('/') {
            if let Some(m) = probe(&path[..slash]) {
                return Some(m);
            }
            end = slash;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Map slots stay small: an inline key, and one entry inline or a thin pointer.
    #[test]
    fn slots_are_compact() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert!(std::mem::size_of::<PathEntry>() <= 48, "{}", std::mem::size_of::<PathEntry>());
    }
}
