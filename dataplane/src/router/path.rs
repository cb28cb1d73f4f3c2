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
}

impl Entry {
    #[inline]
    fn request_match(&self) -> Option<&RequestMatch> {
        self.rule.matches.get(self.match_index)
    }

    #[inline]
    fn check<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        let m = self.request_match()?;
        conditions::hold(m, req).then_some(RouteMatch { rule: &self.rule, matched: m })
    }
}

type Candidates = Vec<(Precedence, Entry)>;

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
            let item =
                (Precedence::of(rule, m, i, created), Entry { rule: rule.clone(), match_index: i });
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
        let longest_prefix = self.prefix.keys().map(|k| k.len()).max().unwrap_or(0);
        let exact = self.exact.into_iter().map(|(k, v)| (k, freeze(v))).collect();
        let prefix = self.prefix.into_iter().map(|(k, v)| (k, freeze(v))).collect();
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
        Bucket { exact, prefix, longest_prefix, regex, regex_set: set }
    }
}

/// The frozen path index of one host bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    exact: FxHashMap<Box<str>, Box<[Entry]>>,
    prefix: FxHashMap<Box<str>, Box<[Entry]>>,
    longest_prefix: usize,
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
        if let Some(list) = self.exact.get(path)
            && let Some(m) = first(list, req)
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
            if key.len() > self.longest_prefix {
                return None;
            }
            self.prefix.get(key).and_then(|list| first(list, req))
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
