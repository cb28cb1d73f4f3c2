//! The path index of one host bucket: exact paths and prefixes in hash maps, regular
//! expressions in a precedence-ordered list (with a `RegexSet` when there are many).
//!
//! Lookup order is exact, then regular expression, then prefix longest first (Envoy
//! Gateway's order). A prefix lookup probes the map with the full path and then with each
//! shorter prefix ending before a `/`, so it costs O(segments) hash lookups whatever the
//! number of routes; a longer prefix whose other conditions fail falls through to shorter
//! ones. Every candidate list is pre-sorted by [`Precedence`], so the first entry whose
//! method, header and query conditions hold wins.

use std::sync::Arc;

use compact_str::CompactString;
use regex::RegexSet;

use super::hash::FxHashMap;
use super::precedence::Precedence;
use super::{RequestView, RouteMatch, conditions};
use crate::snapshot::{PathMatch, RequestMatch, Rule};

/// With more regexes than this in one bucket, a `RegexSet` pre-filters them.
const REGEX_SET_THRESHOLD: usize = 8;

/// One match entry of one rule.
#[derive(Debug)]
struct Entry {
    rule: Arc<Rule>,
    match_index: usize,
    /// No method, header or query condition: the path alone decides, and the match entry
    /// itself need not be read (one cache miss less on large tables).
    unconditional: bool,
}

impl Entry {
    fn new(rule: &Arc<Rule>, match_index: usize, m: &RequestMatch) -> Self {
        let unconditional = m.methods.is_empty() && m.headers.is_empty() && m.query.is_empty();
        Entry { rule: Arc::clone(rule), match_index, unconditional }
    }

    #[inline]
    fn request_match(&self) -> Option<&RequestMatch> {
        self.rule.matches.get(self.match_index)
    }

    #[inline]
    fn check<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let m = self.request_match()?;
        (self.unconditional || conditions::hold(m, req))
            .then_some(RouteMatch { rule: &self.rule, matched: m })
    }
}

type Candidates = Vec<(Precedence, Entry)>;

/// The precedence-ordered entries of one exact path or prefix. Almost always one, kept
/// inline in the map so a hit costs no extra pointer chase.
#[derive(Debug)]
enum List {
    One(Entry),
    Many(Box<[Entry]>),
}

impl List {
    #[inline]
    fn as_slice(&self) -> &[Entry] {
        match self {
            List::One(e) => std::slice::from_ref(e),
            List::Many(list) => list,
        }
    }
}

/// The key lengths present in a map: a probe whose length no key has is skipped, so
/// requests for long paths do not pay a hash lookup (and its cache misses) per segment.
#[derive(Debug, Default)]
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

/// Collects match entries of one host bucket before sorting them.
#[derive(Debug, Default)]
pub(crate) struct BucketBuilder {
    exact: FxHashMap<Box<str>, Candidates>,
    prefix: FxHashMap<Box<str>, Candidates>,
    regex: Candidates,
}

/// Normalises a prefix: no trailing `/`, so the root prefix is `""`.
pub(crate) fn normalise_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

impl BucketBuilder {
    /// Adds every match entry of `rule`, from a Route created at `created`.
    pub(crate) fn add(&mut self, rule: &Arc<Rule>, created: i64) {
        for (i, m) in rule.matches.iter().enumerate() {
            let item = (Precedence::of(rule, m, i, created), Entry::new(rule, i, m));
            match &m.path {
                PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(item),
                PathMatch::Prefix(p) => {
                    self.prefix.entry(normalise_prefix(p).into()).or_default().push(item)
                }
                PathMatch::Regex(_) => self.regex.push(item),
            }
        }
    }

    /// Sorts every candidate list and freezes the bucket.
    pub(crate) fn build(self) -> Bucket {
        fn freeze(mut c: Candidates) -> Box<[Entry]> {
            c.sort_by(|a, b| a.0.cmp(&b.0));
            c.into_iter().map(|(_, e)| e).collect()
        }
        fn list(c: Candidates) -> List {
            let mut entries = freeze(c).into_vec();
            if entries.len() == 1
                && let Some(only) = entries.pop()
            {
                return List::One(only);
            }
            List::Many(entries.into_boxed_slice())
        }
        fn index(
            map: FxHashMap<Box<str>, Candidates>,
        ) -> (FxHashMap<CompactString, List>, Lengths) {
            let mut lengths = Lengths::default();
            let mut out = FxHashMap::with_capacity_and_hasher(map.len(), Default::default());
            for (k, v) in map {
                lengths.insert(k.len());
                out.insert(CompactString::from(&*k), list(v));
            }
            (out, lengths)
        }
        let (exact, exact_lengths) = index(self.exact);
        let (prefix, prefix_lengths) = index(self.prefix);
        let regex = freeze(self.regex);
        let set = if regex.len() > REGEX_SET_THRESHOLD {
            let patterns = regex.iter().filter_map(|e| match e.request_match().map(|m| &m.path) {
                Some(PathMatch::Regex(re)) => Some(re.as_str()),
                _ => None,
            });
            // If the set cannot be built (size limits), the linear scan still works.
            RegexSet::new(patterns).ok().filter(|s| s.len() == regex.len())
        } else {
            None
        };
        Bucket { exact, exact_lengths, prefix, prefix_lengths, regex, regex_set: set }
    }
}

/// The frozen path index of one host bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    // Keys up to 24 bytes live inline in the map's slots: a hit compares the key without
    // another pointer chase (a cache miss on large tables).
    exact: FxHashMap<CompactString, List>,
    exact_lengths: Lengths,
    prefix: FxHashMap<CompactString, List>,
    prefix_lengths: Lengths,
    regex: Box<[Entry]>,
    regex_set: Option<RegexSet>,
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
            && let Some(list) = self.exact.get(path)
            && let Some(m) = first(list.as_slice(), req)
        {
            return Some(m);
        }
        if !self.regex.is_empty()
            && let Some(m) = self.find_regex(req)
        {
            return Some(m);
        }
        self.find_prefix(req)
    }

    fn find_regex<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let path = req.path;
        let regex_holds = |e: &Entry| matches!(e.request_match().map(|m| &m.path), Some(PathMatch::Regex(re)) if re.is_match(path));
        match &self.regex_set {
            None => self.regex.iter().filter(|e| regex_holds(e)).find_map(|e| e.check(req)),
            Some(set) => {
                if !set.is_match(path) {
                    return None;
                }
                // Indexes come in ascending order, which is precedence order.
                set.matches(path)
                    .iter()
                    .filter_map(|i| self.regex.get(i))
                    .find_map(|e| e.check(req))
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
            self.prefix.get(key).and_then(|list| first(list.as_slice(), req))
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
