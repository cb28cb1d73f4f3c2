//! The conditions of a rule's match entries: the path, and the methods, headers and query
//! parameters (precompiled; the router checks them without lookups by name).

use http::{HeaderName, Method};
use regex::Regex;

/// Conditions that must all hold: the path, and the methods, headers and query parameters
/// (kept apart, boxed, and only when there are any: most matches are a path alone, and
/// inline the three lists made every match 72 bytes larger).
#[derive(Debug, Clone)]
pub struct RequestMatch {
    /// Path condition.
    pub path: PathMatch,
    conditions: Option<Box<Conditions>>,
}

/// The non-path conditions of a [`RequestMatch`].
#[derive(Debug, Clone, Default)]
struct Conditions {
    methods: Box<[Method]>,
    headers: Box<[HeaderMatcher]>,
    query: Box<[QueryMatcher]>,
}

impl RequestMatch {
    /// A match on `path` with the allowed `methods` (empty = any), and header and query
    /// parameter conditions.
    pub fn new(
        path: PathMatch,
        methods: Vec<Method>,
        headers: Vec<HeaderMatcher>,
        query: Vec<QueryMatcher>,
    ) -> Self {
        let conditions =
            (!methods.is_empty() || !headers.is_empty() || !query.is_empty()).then(|| {
                Box::new(Conditions {
                    methods: methods.into(),
                    headers: headers.into(),
                    query: query.into(),
                })
            });
        RequestMatch { path, conditions }
    }

    /// A match on `path` alone.
    pub fn path(path: PathMatch) -> Self {
        RequestMatch { path, conditions: None }
    }

    /// Allowed methods; empty = any.
    pub fn methods(&self) -> &[Method] {
        self.conditions.as_ref().map_or(&[], |c| &c.methods)
    }

    /// Header conditions.
    pub fn headers(&self) -> &[HeaderMatcher] {
        self.conditions.as_ref().map_or(&[], |c| &c.headers)
    }

    /// Query parameter conditions.
    pub fn query(&self) -> &[QueryMatcher] {
        self.conditions.as_ref().map_or(&[], |c| &c.query)
    }

    /// True when only the path is matched.
    pub fn path_only(&self) -> bool {
        self.conditions.is_none()
    }

    /// The parts, as [`RequestMatch::new`] takes them (to build a changed copy).
    pub fn into_parts(self) -> (PathMatch, Vec<Method>, Vec<HeaderMatcher>, Vec<QueryMatcher>) {
        let c = self.conditions.map(|c| *c).unwrap_or_default();
        (self.path, c.methods.into(), c.headers.into(), c.query.into())
    }
}

/// A compiled path condition.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(Box<str>),
    /// Segment-aware prefix, normalised without a trailing `/` (the root prefix is `""`).
    Prefix(Box<str>),
    /// A regex anchored at both ends (compiled once, at compile time; boxed: rare, and
    /// inline it made every match 16 bytes larger).
    Regex(Box<Regex>),
}

/// A compiled value condition for headers and query parameters.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Exact equality.
    Exact(Box<str>),
    /// A regex anchored at both ends.
    Regex(Regex),
    /// Present with any value.
    Present,
}

/// A header condition.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Header name (lower-case).
    pub name: HeaderName,
    /// Value condition.
    pub value: ValueMatch,
}

/// A query parameter condition.
#[derive(Debug, Clone)]
pub struct QueryMatcher {
    /// Parameter name (case-sensitive).
    pub name: Box<str>,
    /// Value condition.
    pub value: ValueMatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_keeps_its_conditions_and_a_path_alone_has_none() {
        let alone = RequestMatch::new(PathMatch::Prefix("/a".into()), vec![], vec![], vec![]);
        assert!(alone.path_only() && alone.methods().is_empty() && alone.query().is_empty());
        let header = HeaderMatcher {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact("1".into()),
        };
        let m = RequestMatch::new(
            PathMatch::Exact("/b".into()),
            vec![Method::GET],
            vec![header],
            vec![],
        );
        assert!(!m.path_only());
        assert_eq!(m.methods(), [Method::GET]);
        assert_eq!(m.headers()[0].name, "x-canary");
        let (path, methods, headers, query) = m.into_parts();
        assert!(matches!(path, PathMatch::Exact(p) if &*p == "/b"));
        assert_eq!((methods.len(), headers.len(), query.len()), (1, 1, 0));
    }
}
