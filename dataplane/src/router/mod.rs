//! The route table: host lookup (exact map, then wildcards, then any-host) and rule
//! matching in Gateway API precedence order.
//!
//! Host buckets are tried from the most specific to the least: the exact host name, then
//! wildcard suffixes longest first (`*.example.com` matches one or more labels, so both
//! `a.example.com` and `a.b.example.com`, never `example.com`), then Routes without hosts.
//! When no rule of a bucket matches the path, method, headers and query, the next, less
//! specific bucket is tried. Inside a bucket, see [`path`] and [`precedence`].

mod conditions;
mod describe;
mod hash;
mod host;
mod path;
mod precedence;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderMap, Method};

pub use describe::describe_snapshot;
use hash::FxHashMap;
use path::{Bucket, BucketBuilder};

use crate::snapshot::{HostMatch, ObjectKey, RequestMatch, RouteModel, Rule};

/// The compiled, precedence-ordered route table. Built off the hot path by [`RouteTable::new`].
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<RouteModel>,
    exact_hosts: FxHashMap<Box<str>, Bucket>,
    wildcard_hosts: FxHashMap<Box<str>, Bucket>,
    any_host: Option<Bucket>,
}

/// A request as the router sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Host as sent; a `:port` is stripped and matching is case-insensitive.
    pub host: &'a str,
    /// Path, without the query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// The result of a successful match.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'t> {
    /// The matched rule.
    pub rule: &'t Arc<Rule>,
    /// The match entry of the rule that matched (for prefix rewrites).
    pub matched: &'t RequestMatch,
}

impl RouteTable {
    /// Builds the table: indexes hosts and paths and sorts rules by precedence.
    pub fn new(routes: Vec<RouteModel>) -> Self {
        let mut exact: FxHashMap<Box<str>, BucketBuilder> = FxHashMap::default();
        let mut wildcard: FxHashMap<Box<str>, BucketBuilder> = FxHashMap::default();
        let mut any: Option<BucketBuilder> = None;
        for route in &routes {
            if route.hosts.is_empty() {
                let b = any.get_or_insert_with(BucketBuilder::default);
                for rule in &route.rules {
                    b.add(rule, route.created);
                }
                continue;
            }
            let mut seen = HashSet::new();
            for h in &route.hosts {
                if !seen.insert(h) {
                    continue;
                }
                let b = match h {
                    HostMatch::Exact(name) => {
                        exact.entry(name.to_ascii_lowercase().into()).or_default()
                    }
                    HostMatch::Wildcard(suffix) => {
                        wildcard.entry(suffix.to_ascii_lowercase().into()).or_default()
                    }
                };
                for rule in &route.rules {
                    b.add(rule, route.created);
                }
            }
        }
        RouteTable {
            routes,
            exact_hosts: exact.into_iter().map(|(k, b)| (k, b.build())).collect(),
            wildcard_hosts: wildcard.into_iter().map(|(k, b)| (k, b.build())).collect(),
            any_host: any.map(BucketBuilder::build),
        }
    }

    /// A table with the Routes named in `removed` taken out and `added` put in (an added
    /// Route replaces one with the same key). Same result as [`RouteTable::new`] over the
    /// resulting set of Routes, in the order: kept Routes as they were, then `added`.
    ///
    /// For one-route changes at scale (reload latency); this first version rebuilds.
    pub fn patched(&self, removed: &[ObjectKey], added: Vec<RouteModel>) -> RouteTable {
        let gone: HashSet<&ObjectKey> =
            removed.iter().chain(added.iter().map(|r| &r.key)).collect();
        let mut routes: Vec<RouteModel> =
            self.routes.iter().filter(|r| !gone.contains(&r.key)).cloned().collect();
        routes.extend(added);
        RouteTable::new(routes)
    }

    /// Number of Route objects in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no Route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The Routes in the table, as given to [`RouteTable::new`].
    pub fn routes(&self) -> &[RouteModel] {
        &self.routes
    }

    /// Every Route in the table with the generation it was compiled from, so the
    /// controller can tell which generations are live (`Programmed`).
    pub fn route_keys(&self) -> impl Iterator<Item = (&ObjectKey, i64)> {
        self.routes.iter().map(|r| (&r.key, r.generation))
    }

    /// Finds the rule that serves a request: the most specific host bucket with a matching
    /// rule, and in it the rule of highest precedence. No allocation for typical requests.
    pub fn find<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        host::with_normalized(req.host, |host| self.find_in_host(host, req))
    }

    fn find_in_host<'t>(&'t self, host: &str, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        if let Some(m) = self.exact_hosts.get(host).and_then(|b| b.find(req)) {
            return Some(m);
        }
        if !self.wildcard_hosts.is_empty() {
            for suffix in host::wildcard_suffixes(host) {
                if let Some(m) = self.wildcard_hosts.get(suffix).and_then(|b| b.find(req)) {
                    return Some(m);
                }
            }
        }
        self.any_host.as_ref().and_then(|b| b.find(req))
    }
}

/// Length of the part of `path` that the segment-aware prefix `prefix` matches, or `None`
/// when it does not match (`/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; a
/// trailing `/` on the prefix is ignored and the root prefix matches everything).
pub fn path_prefix_len(prefix: &str, path: &str) -> Option<usize> {
    let prefix = path::normalise_prefix(prefix);
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
}
