//! Path rewrites (`replacePrefix`, `replaceFullPath`), computed from precompiled data.
//!
//! `replacePrefix` follows the Gateway API table: the matched prefix (segment-aware) is
//! replaced and the rest of the path kept, never producing a double slash at the joint:
//! prefix `/api` with `/` turns `/api/x` into `/x` and `/api` into `/`; with `/v2` it turns
//! `/api/x` into `/v2/x`. The query string is always kept.

use crate::router::path_prefix_len;
use crate::snapshot::{PathMatch, RequestMatch, Rewrite};

/// The upstream path-and-query for a request, or `None` when the path is unchanged.
/// `matched` is the match entry that selected the rule (its prefix is what `replacePrefix`
/// replaces). `replacePrefix` on a match that is not a `Prefix` (which the compiler rejects)
/// yields `None`.
pub fn rewrite_path(
    rewrite: &Rewrite,
    matched: &RequestMatch,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 16);
    if let Some(full) = &rewrite.replace_full_path {
        out.push_str(full);
    } else if let Some(replacement) = &rewrite.replace_prefix {
        let PathMatch::Prefix(prefix) = &matched.path else {
            return None;
        };
        let rest = path.get(path_prefix_len(prefix, path)?..)?;
        out.push_str(replacement.trim_end_matches('/'));
        out.push_str(rest);
    } else {
        return None;
    }
    if out.is_empty() {
        out.push('/');
    } else if !out.starts_with('/') {
        out.insert(0, '/');
    }
    if out == path {
        return None;
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_match(prefix: &str) -> RequestMatch {
        RequestMatch::path(PathMatch::Prefix(prefix.trim_end_matches('/').into()))
    }

    fn replace_prefix(r: &str) -> Rewrite {
        Rewrite { replace_prefix: Some(r.into()), replace_full_path: None, host: None }
    }

    fn rw(prefix: &str, replacement: &str, path: &str) -> Option<String> {
        rewrite_path(&replace_prefix(replacement), &prefix_match(prefix), path, None)
    }

    #[test]
    fn replace_prefix_follows_the_gateway_api_table() {
        assert_eq!(rw("/api", "/", "/api/x").as_deref(), Some("/x"));
        assert_eq!(rw("/api", "/", "/api").as_deref(), Some("/"));
        assert_eq!(rw("/api", "/", "/api/").as_deref(), Some("/"));
        assert_eq!(rw("/api", "/v2", "/api/x").as_deref(), Some("/v2/x"));
        assert_eq!(rw("/api", "/v2/", "/api/x").as_deref(), Some("/v2/x"));
        assert_eq!(rw("/api/", "/v2", "/api/x").as_deref(), Some("/v2/x"));
        assert_eq!(rw("/foo", "/xyz", "/foo").as_deref(), Some("/xyz"));
        assert_eq!(rw("/foo", "/xyz", "/foo/").as_deref(), Some("/xyz/"));
        assert_eq!(rw("/foo", "", "/foo/bar").as_deref(), Some("/bar"));
        assert_eq!(rw("/foo", "", "/foo").as_deref(), Some("/"));
        assert_eq!(rw("/", "/v2", "/x").as_deref(), Some("/v2/x"));
        assert_eq!(rw("/a/b", "/c", "/a/b/d/e").as_deref(), Some("/c/d/e"));
    }

    #[test]
    fn replace_prefix_keeps_the_query_and_skips_unchanged_paths() {
        let r = replace_prefix("/v2");
        let m = prefix_match("/api");
        assert_eq!(rewrite_path(&r, &m, "/api/x", Some("a=1&b")).as_deref(), Some("/v2/x?a=1&b"));
        assert_eq!(rw("/api", "/api", "/api/x"), None);
        // The path does not carry the prefix (cannot happen after a match): nothing to do.
        assert_eq!(rw("/api", "/v2", "/apix"), None);
    }

    #[test]
    fn replace_full_path_and_non_prefix_matches() {
        let full =
            Rewrite { replace_prefix: None, replace_full_path: Some("/new".into()), host: None };
        let exact = RequestMatch::path(PathMatch::Exact("/old".into()));
        assert_eq!(rewrite_path(&full, &exact, "/old", Some("q=1")).as_deref(), Some("/new?q=1"));
        assert_eq!(rewrite_path(&full, &prefix_match("/a"), "/a/b", None).as_deref(), Some("/new"));
        assert_eq!(rewrite_path(&replace_prefix("/v2"), &exact, "/old", None), None);
        let none = Rewrite { replace_prefix: None, replace_full_path: None, host: None };
        assert_eq!(rewrite_path(&none, &exact, "/old", None), None);
    }
}
