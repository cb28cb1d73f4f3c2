//! The precedence order between match entries that share a host bucket and a path key.
//!
//! Path types are ordered by the lookup itself (exact, then regular expression, then
//! prefix longest first). Within one candidate list, following the Gateway API:
//! a method condition beats none, then more header conditions, then more query conditions,
//! then the oldest Route, then namespace/name alphabetically, then rule order, then match
//! order. Regular expressions, which share one list, are first ordered by the length of
//! their pattern, longest first (as Envoy Gateway does), then by the same tie-breaks.

use std::cmp::Reverse;

use crate::snapshot::{PathMatch, RequestMatch, Rule};

/// Sort key of a match entry: smaller sorts first and wins. Borrows the Route's name, so
/// computing one costs no allocation or reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence<'a> {
    regex_len: Reverse<usize>,
    has_method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: i64,
    namespace: &'a str,
    name: &'a str,
    rule_index: usize,
    match_index: usize,
}

impl<'a> Precedence<'a> {
    /// The key of match entry `match_index` of `rule`, from a Route created at `created`.
    pub(crate) fn of(rule: &'a Rule, m: &RequestMatch, match_index: usize, created: i64) -> Self {
        let regex_len = match &m.path {
            PathMatch::Regex(re) => re.as_str().len(),
            _ => 0,
        };
        Precedence {
            regex_len: Reverse(regex_len),
            has_method: Reverse(!m.methods().is_empty()),
            headers: Reverse(m.headers().len()),
            query: Reverse(m.query().len()),
            created,
            namespace: &rule.route().namespace,
            name: &rule.route().name,
            rule_index: rule.index,
            match_index,
        }
    }
}
