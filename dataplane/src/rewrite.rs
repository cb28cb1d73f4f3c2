//! Path rewrites (`replacePrefix`, `replaceFullPath`), computed from precompiled data.

use crate::snapshot::{RequestMatch, Rewrite};

/// The upstream path-and-query for a request, or `None` when the path is unchanged.
/// `matched` is the match entry that selected the rule (its prefix is what `replacePrefix`
/// replaces). TODO(router): real implementation.
pub fn rewrite_path(
    rewrite: &Rewrite,
    matched: &RequestMatch,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let _ = (rewrite, matched, path, query);
    None
}
