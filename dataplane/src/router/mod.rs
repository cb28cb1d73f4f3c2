//! The route table: host lookup (exact map, then wildcards, then any-host) and rule
//! matching in Gateway API precedence order.
//!
//! Host buckets are tried from the most specific to the least: the exact host name, then
//! wildcard suffixes longest first (`*.example.com` matches one or more labels, so both
//! `a.example.com` and `a.b.example.com`, never `example.com`), then Routes without hosts.
//! When no rule of a bucket matches the path, method, headers and query, the next, less
//! specific bucket is tried. Inside a bucket, see [`path`] and [`precedence`].
//!
//! Routes, host buckets and path indexes live in `Arc`'d hash-table shards ([`sharded`]):
//! [`RouteTable::patched`] copies the table by reference counts and rebuilds only the
//! shards, lists and buckets the changed Routes touch, for reloads of one Route among
//! 100k in well under a millisecond.

mod conditions;
mod describe;
mod hash;
mod host;
#[cfg(test)]
mod patch_tests;
mod path;
mod precedence;
mod sharded;
mod stored;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;
use http::{HeaderMap, Method};

pub use describe::describe_snapshot;
use hash::FxHashMap;
use path::{Bucket, BucketBuilder};
use sharded::{Keyed, Sharded, hash_of};
use stored::StoredRoute;

use crate::snapshot::{HostMatch, ObjectKey, RequestMatch, RouteModel, Rule};

/// The compiled, precedence-ordered route table. Built off the hot path by
/// [`RouteTable::new`]; [`RouteTable::patched`] derives a changed copy that shares every
/// host bucket, path-index shard and Route it does not touch. Cloning it is cheap (one
/// reference count per shard).
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    routes: Sharded<Box<StoredRoute>>,
    exact_hosts: Sharded<HostBucket>,
    wildcard_hosts: Sharded<HostBucket>,
    any_host: Option<Arc<Bucket>>,
}

/// The bucket of one exact host or wildcard suffix.
#[derive(Debug, Clone)]
struct HostBucket {
    host: CompactString,
    bucket: Arc<Bucket>,
}

impl Keyed for HostBucket {
    type Key = str;
    fn key(&self) -> &str {
        &self.host
    }
}

/// Where a Route's rules are indexed: an exact host, a wildcard suffix, or any host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place<'a> {
    Exact(Cow<'a, str>),
    Wildcard(Cow<'a, str>),
    Any,
}

/// The places of a Route, lower-cased and without duplicates (no allocation for the
/// common Route with no host or one lower-case host).
fn places(route: &StoredRoute) -> SmallPlaces<'_> {
    match &*route.hosts {
        [] => return SmallPlaces::One(Some(Place::Any)),
        [HostMatch::Exact(h)] if !h.bytes().any(|b| b.is_ascii_uppercase()) => {
            return SmallPlaces::One(Some(Place::Exact(Cow::Borrowed(h))));
        }
        [HostMatch::Wildcard(h)] if !h.bytes().any(|b| b.is_ascii_uppercase()) => {
            return SmallPlaces::One(Some(Place::Wildcard(Cow::Borrowed(h))));
        }
        _ => {}
    }
    fn lower(h: &str) -> Cow<'_, str> {
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(h.to_ascii_lowercase())
        } else {
            Cow::Borrowed(h)
        }
    }
    let mut out: Vec<Place<'_>> = Vec::with_capacity(route.hosts.len());
    for h in &route.hosts {
        let p = match h {
            HostMatch::Exact(name) => Place::Exact(lower(name)),
            HostMatch::Wildcard(suffix) => Place::Wildcard(lower(suffix)),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    SmallPlaces::Many(out.into_iter())
}

/// The places of one Route: usually one.
enum SmallPlaces<'a> {
    One(Option<Place<'a>>),
    Many(std::vec::IntoIter<Place<'a>>),
}

impl<'a> Iterator for SmallPlaces<'a> {
    type Item = Place<'a>;
    fn next(&mut self) -> Option<Place<'a>> {
        match self {
            SmallPlaces::One(p) => p.take(),
            SmallPlaces::Many(it) => it.next(),
        }
    }
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

/// Freezes per-host builders into a host map.
fn host_map(
    builders: FxHashMap<Cow<'_, str>, BucketBuilder>,
    created: &impl Fn(&ObjectKey) -> i64,
) -> Sharded<HostBucket> {
    let items = builders
        .into_iter()
        .map(|(host, b)| {
            let bucket = Arc::new(b.build(created));
            (hash_of(&*host), HostBucket { host: CompactString::from(&*host), bucket })
        })
        .collect();
    Sharded::build(items, |_, _| {})
}

impl RouteTable {
    /// Builds the table: indexes hosts and paths and sorts rules by precedence. Route keys
    /// are unique; of two Routes with the same key the later one is kept.
    pub fn new(routes: Vec<RouteModel>) -> Self {
        let items = routes.into_iter().map(|r| (hash_of(&r.key), StoredRoute::boxed(r))).collect();
        let routes: Sharded<Box<StoredRoute>> =
            Sharded::build(items, |present, later| *present = later);
        let created = |k: &ObjectKey| routes.get(k).map_or(0, |r| r.created);
        let mut exact: FxHashMap<Cow<'_, str>, BucketBuilder> = FxHashMap::default();
        let mut wildcard: FxHashMap<Cow<'_, str>, BucketBuilder> = FxHashMap::default();
        let mut any: Option<BucketBuilder> = None;
        for route in routes.iter() {
            for place in places(route) {
                let b = match place {
                    Place::Any => any.get_or_insert_with(BucketBuilder::default),
                    Place::Exact(h) => exact.entry(h).or_default(),
                    Place::Wildcard(h) => wildcard.entry(h).or_default(),
                };
                b.add(route);
            }
        }
        let exact_hosts = host_map(exact, &created);
        let wildcard_hosts = host_map(wildcard, &created);
        let any_host = any.map(|b| Arc::new(b.build(&created)));
        RouteTable { routes, exact_hosts, wildcard_hosts, any_host }
    }

    /// A table with the Routes named in `removed` taken out and `added` put in (an added
    /// Route replaces one with the same key; of two added with the same key the later one
    /// is kept). Finds the same rules as [`RouteTable::new`] over the resulting Routes.
    ///
    /// Costs O(changed) plus one reference count per shard: only the host buckets and
    /// path-index shards the removed and added Routes touch are copied and changed.
    pub fn patched(&self, removed: &[ObjectKey], added: Vec<RouteModel>) -> RouteTable {
        let mut t = self.clone();
        let mut old = Vec::new();
        for key in removed.iter().chain(added.iter().map(|r| &r.key)) {
            if let Some(r) = t.routes.remove(key) {
                old.push(r);
            }
        }
        let mut keys = Vec::with_capacity(added.len());
        for r in added {
            keys.push(r.key.clone());
            t.routes.insert(StoredRoute::boxed(r));
        }
        keys.sort_unstable();
        keys.dedup();
        let RouteTable { routes, exact_hosts, wildcard_hosts, any_host } = &mut t;
        let created = |k: &ObjectKey| routes.get(k).map_or(0, |r| r.created);
        for r in &old {
            for place in places(r) {
                with_bucket(exact_hosts, wildcard_hosts, any_host, &place, false, |b| {
                    b.unindex(r, &created)
                });
            }
        }
        for key in &keys {
            let Some(r) = routes.get(key) else { continue };
            for place in places(r) {
                with_bucket(exact_hosts, wildcard_hosts, any_host, &place, true, |b| {
                    b.index(r, &created)
                });
            }
        }
        t
    }

    /// Number of Route objects in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no Route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The Routes in the table, sorted by key (copies of the models: for tests and
    /// debugging, not for the request path).
    pub fn routes(&self) -> Vec<RouteModel> {
        self.sorted_routes().into_iter().map(|r| r.model()).collect()
    }

    /// The Route of `key` (a copy of its model).
    pub fn route(&self, key: &ObjectKey) -> Option<RouteModel> {
        self.routes.get(key).map(|r| r.model())
    }

    /// The Routes as stored, sorted by key.
    fn sorted_routes(&self) -> Vec<&StoredRoute> {
        let mut all: Vec<&StoredRoute> = self.routes.iter().map(|r| &**r).collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Every Route in the table with the generation it was compiled from, so the
    /// controller can tell which generations are live (`Programmed`). In no particular
    /// order.
    pub fn route_keys(&self) -> impl Iterator<Item = (&ObjectKey, i64)> {
        self.routes.iter().map(|r| (&r.key, r.generation))
    }

    /// Every rule of every Route, a Route's rules together in spec order (the Routes in no
    /// particular order): what the metrics collector reads at scrape time.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.routes.iter().flat_map(|r| r.rules.iter())
    }

    /// Finds the rule that serves a request: the most specific host bucket with a matching
    /// rule, and in it the rule of highest precedence. No allocation for typical requests.
    pub fn find<'t>(&'t self, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        host::with_normalized(req.host, |host| self.find_in_host(host, req))
    }

    fn find_in_host<'t>(&'t self, host: &str, req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        if let Some(m) = self.exact_hosts.get(host).and_then(|b| b.bucket.find(req)) {
            return Some(m);
        }
        if !self.wildcard_hosts.is_empty() {
            for suffix in host::wildcard_suffixes(host) {
                if let Some(m) = self.wildcard_hosts.get(suffix).and_then(|b| b.bucket.find(req)) {
                    return Some(m);
                }
            }
        }
        self.any_host.as_ref().and_then(|b| b.find(req))
    }
}

/// Runs `f` on the bucket of `place` (copied first if shared), creating it when `create`,
/// and drops it when no Route is left in it.
fn with_bucket(
    exact: &mut Sharded<HostBucket>,
    wildcard: &mut Sharded<HostBucket>,
    any: &mut Option<Arc<Bucket>>,
    place: &Place<'_>,
    create: bool,
    f: impl FnOnce(&mut Bucket),
) {
    let (map, host) = match place {
        Place::Any => {
            if any.is_none() && create {
                *any = Some(Arc::new(BucketBuilder::default().build(&|_: &ObjectKey| 0)));
            }
            if let Some(b) = any {
                let bucket = Arc::make_mut(b);
                f(bucket);
                if bucket.is_unused() {
                    *any = None;
                }
            }
            return;
        }
        Place::Exact(h) => (exact, &**h),
        Place::Wildcard(h) => (wildcard, &**h),
    };
    if map.get(host).is_none() {
        if !create {
            return;
        }
        let empty = Arc::new(BucketBuilder::default().build(&|_: &ObjectKey| 0));
        map.insert(HostBucket { host: host.into(), bucket: empty });
    }
    let unused = match map.get_mut(host) {
        Some(hb) => {
            let bucket = Arc::make_mut(&mut hb.bucket);
            f(bucket);
            bucket.is_unused()
        }
        None => false,
    };
    if unused {
        map.remove(host);
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
