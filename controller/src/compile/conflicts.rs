//! Exact conflicts between Routes: two Routes (weir's own, or derived from an HTTPRoute,
//! GRPCRoute or Ingress) with a rule match that is identical for the same host — same path
//! type and value, methods, header and query conditions. The router serves the one that
//! wins the precedence tie-break (oldest `creationTimestamp`, then namespace/name); the
//! other's match is never served, so that Route gets `Conflicted=True` (reason
//! `MatchConflict`) with a message naming the match, the host and the winner. Matches that
//! merely overlap (a longer prefix, an extra header) are not conflicts: precedence serves
//! each where it is more specific.
//!
//! Kept incrementally between compiles: only the Routes whose object or status changed are
//! re-keyed, and only the Routes sharing a key with them get their condition recomputed.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use smallvec::SmallVec;
use weir_crds::{Condition, PathMatchType, RouteMatch};

use super::{Compiled, ObjectStatus, Statuses, frontends, insert_dense};
use crate::index::{Index, Kind, ObjectRef, RouteObject};

/// The condition type.
pub const CONFLICTED: &str = "Conflicted";
/// Its reason.
pub const MATCH_CONFLICT: &str = "MatchConflict";

/// A hash of one host and one canonical match (64 bits: a false conflict among 100k keys
/// has a chance of about 1 in 10^9).
type Key = u64;

/// Where a key comes from: the precedence tie-break, then the rule, match and host indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Owner {
    created: i64,
    route: ObjectRef,
    // u32: kept twice per match and host of every Route (memory per Route).
    rule: u32,
    index: u32,
    host: u32,
}

/// A position as stored in an [`Owner`] (no spec has 2^32 rules, matches or hosts).
fn pos(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The key of one match for one host: the host and the match's canonical hash
/// ([`match_hash`]).
fn key(host: &str, match_hash: u64) -> Key {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = hasher();
    (host, match_hash).hash(&mut h);
    h.finish()
}

/// The hasher of [`key`] and [`match_hash`]: foldhash's quality variant with a fixed seed
/// (the same keys in every process and test run, like the SipHash with zero keys it
/// replaces, at a fraction of its instructions: two hashes per match and host in a full
/// compile).
fn hasher() -> foldhash::quality::FoldHasher<'static> {
    use std::hash::BuildHasher as _;
    static STATE: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x7765_6972);
    STATE.build_hasher()
}

/// The owners of one key, in precedence order (the first wins). Almost every key has one
/// owner: it is kept inline, without an allocation.
type Owners = SmallVec<[Owner; 1]>;

/// What the last compile saw: the owners of every key. The Routes and statuses the keys
/// were computed from are not kept here: they are the previous compile's own (its
/// incremental state's Routes and its statuses after this pass), and [`keys_of`] computes
/// the keys again from them when needed (memory per Route; a `Conflicted` condition written
/// by a pass does not change them, only `Programmed` does).
#[derive(Debug, Clone, Default)]
pub struct Conflicts {
    /// Per key: its owners, in precedence order (the first wins).
    owners: OrdMap<Key, Owners>,
}

/// The Routes that have a status, with it, in key order: a merge walk of the Routes and
/// the statuses (both sorted by key), no lookups.
fn with_statuses<'a>(
    routes: impl Iterator<Item = (&'a ObjectRef, &'a Arc<RouteObject>)>,
    statuses: &'a Statuses,
) -> impl Iterator<Item = (&'a ObjectRef, &'a Arc<RouteObject>, &'a Arc<ObjectStatus>)> {
    let first = (Kind::Route, ObjectRef::new("", ""));
    let mut statuses = statuses
        .range(first..)
        .take_while(|((kind, _), _)| *kind == Kind::Route)
        .map(|((_, key), status)| (key, status))
        .peekable();
    routes.filter_map(move |(key, route)| {
        while statuses.next_if(|(k, _)| *k < key).is_some() {}
        statuses.next_if(|(k, _)| *k == key).map(|(_, status)| (key, route, status))
    })
}

/// A hash of one match, equal for matches that are identical to the router: the path type
/// and value (no path is `Prefix /`), the methods upper-cased, sorted and deduplicated,
/// the header conditions (names lower-cased) and query conditions in sorted order. The
/// same identity as comparing canonical texts (`Prefix /x methods=[..] headers=[..]
/// query=[..]`), without formatting one per match: the path and methods are hashed as
/// they are, and only header and query conditions (rare) are formatted, as before.
fn match_hash(m: Option<&RouteMatch>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = hasher();
    let (type_, value) = m
        .and_then(|m| m.path.as_ref())
        .map_or((PathMatchType::Prefix, "/"), |p| (p.type_, p.value.as_str()));
    (type_ as u8, value).hash(&mut h);
    let Some(m) = m else {
        // No methods, headers or query conditions.
        let none: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
        none.hash(&mut h);
        return h.finish();
    };
    let mut methods: Vec<String> = m.methods.iter().map(|x| x.to_ascii_uppercase()).collect();
    methods.sort();
    methods.dedup();
    let mut headers: Vec<String> = m
        .headers
        .iter()
        .map(|h| {
            format!(
                "{}|{:?}|{}",
                h.name.to_ascii_lowercase(),
                h.type_,
                h.value.as_deref().unwrap_or("")
            )
        })
        .collect();
    headers.sort();
    let mut query: Vec<String> = m
        .query_params
        .iter()
        .map(|q| format!("{}|{:?}|{}", q.name, q.type_, q.value.as_deref().unwrap_or("")))
        .collect();
    query.sort();
    (methods, headers, query).hash(&mut h);
    h.finish()
}

/// The keys of a served Route (none when it is not served).
fn keys_of(key: &ObjectRef, route: &RouteObject, status: &ObjectStatus) -> Vec<(Key, Owner)> {
    if !status.is_true("Programmed") {
        return Vec::new();
    }
    let created = route.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
    let hosts = hosts_of(route);
    let matches: usize = route.spec.rules.iter().map(|r| r.matches.len().max(1)).sum();
    let mut out = Vec::with_capacity(matches * hosts.len());
    for (rule_index, rule) in route.spec.rules.iter().enumerate() {
        // A rule without matches has one: `Prefix /` (`None`).
        let matches = rule.matches.iter().map(Some);
        let matches = matches.chain(rule.matches.is_empty().then_some(None));
        for (index, m) in matches.enumerate() {
            let hash = match_hash(m);
            for (host_index, host) in hosts.iter().enumerate() {
                let owner = Owner {
                    created,
                    route: key.clone(),
                    rule: pos(rule_index),
                    index: pos(index),
                    host: pos(host_index),
                };
                out.push((self::key(host, hash), owner));
            }
        }
    }
    out
}

/// The Route's hosts, lower-cased; one empty host for a Route without hosts (any host).
fn hosts_of(route: &RouteObject) -> SmallVec<[String; 1]> {
    if route.spec.hosts.is_empty() {
        SmallVec::from_iter([String::new()])
    } else {
        route.spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
    }
}

/// How a Route is named in a message: derived Routes by their source object.
fn describe(key: &ObjectRef) -> String {
    if frontends::is_derived(key) {
        let mut parts = key.name.splitn(3, '/');
        let kind = match parts.next().unwrap_or("") {
            "httproute" => "HTTPRoute",
            "grpcroute" => "GRPCRoute",
            "ingress" => "Ingress",
            other => other,
        };
        let name = parts.next().unwrap_or("");
        format!("{kind} {}/{name}", key.namespace)
    } else {
        format!("Route {key}")
    }
}

impl Conflicts {
    /// Updates the conflicts for `index` (the expanded index the statuses come from) and
    /// rewrites the `Conflicted` condition of every Route whose conflicts changed, after
    /// `previous` (a compile this pass ran on, as [`compile`](super::compile) and
    /// [`update`](super::update) return: its conflicts, Routes and statuses belong
    /// together). A full rebuild when `previous` is `None`.
    pub fn update(previous: Option<&Compiled>, index: &Index, statuses: &mut Statuses) -> Self {
        let mut this = previous.map(|p| Conflicts::clone(&p.conflicts)).unwrap_or_default();
        // Routes whose object or status changed since the previous compile, and removed
        // ones: one merge walk over maps sorted by key (the index's Routes and their
        // statuses, the previous compile's Routes and statuses), no lookups: O(Routes)
        // pointer comparisons. `changed` comes out sorted by key; `gone` has what the keys
        // of the changed Routes that had a status were computed from, `current` the changed
        // Routes that have a status now, with it.
        let (no_routes, no_statuses) = (OrdMap::new(), Statuses::new());
        let (old_routes, old_statuses) =
            previous.map_or((&no_routes, &no_statuses), |p| (&p.memory.routes, &p.statuses));
        let mut old =
            with_statuses(old_routes.iter().map(|(k, r)| (k, &r.seen)), old_statuses).peekable();
        // A full rebuild has every Route in `changed` and `current`: room for them at once.
        let all = if previous.is_none() { index.routes.len() } else { 0 };
        let mut changed: Vec<ObjectRef> = Vec::with_capacity(all);
        let mut gone: Vec<(ObjectRef, Arc<RouteObject>, Arc<ObjectStatus>)> = Vec::new();
        let mut current: Vec<(ObjectRef, Arc<RouteObject>, Arc<ObjectStatus>)> =
            Vec::with_capacity(all);
        let mut served = 0;
        let own = |(k, r, s): (&ObjectRef, &Arc<RouteObject>, &Arc<ObjectStatus>)| {
            (k.clone(), Arc::clone(r), Arc::clone(s))
        };
        for (key, route, status) in with_statuses(index.routes.iter(), statuses) {
            served += 1;
            // Seen before but no longer in the index (or without a status): removed.
            while let Some(before) = old.next_if(|(k, _, _)| *k < key) {
                changed.push(before.0.clone());
                gone.push(own(before));
            }
            match old.next_if(|(k, _, _)| *k == key) {
                Some((_, r, s)) if Arc::ptr_eq(r, route) && Arc::ptr_eq(s, status) => {}
                before => {
                    changed.push(key.clone());
                    gone.extend(before.map(own));
                    current.push(own((key, route, status)));
                }
            }
        }
        for before in old {
            changed.push(before.0.clone());
            gone.push(own(before));
        }
        if changed.is_empty() {
            return this;
        }
        tracing::debug!(
            changed = changed.len(),
            gone = gone.len(),
            current = current.len(),
            served,
            "conflicts pass"
        );
        let mut touched: Vec<Key> = Vec::with_capacity(all);
        for (key, route, status) in &gone {
            for (k, owner) in &keys_of(key, route, status) {
                if let Some(list) = this.owners.get_mut(k) {
                    list.retain(|o| o != owner);
                    if list.is_empty() {
                        this.owners.remove(k);
                    }
                }
                touched.push(*k);
            }
        }
        // The changed Routes that are served, with their keys (computed once: the pass
        // below reuses them) and what they were computed from, in key order.
        let mut computed = Vec::with_capacity(current.len());
        // No owners yet (a full rebuild): every key's owners are gathered and sorted first,
        // and the map is filled densely ([`insert_dense`]: about 5/6 full nodes instead of
        // the ~2/3 of inserting keys in hash order).
        let mut fresh = this.owners.is_empty().then(|| Vec::with_capacity(current.len()));
        for (key, route, status) in current {
            let keys = keys_of(&key, &route, &status);
            for (k, owner) in &keys {
                if let Some(fresh) = &mut fresh {
                    fresh.push((*k, owner.clone()));
                } else {
                    let list = this.owners.entry(*k).or_default();
                    let at = list.binary_search(owner).unwrap_or_else(|at| at);
                    list.insert(at, owner.clone());
                }
                touched.push(*k);
            }
            computed.push((key, route, status, keys));
        }
        if let Some(mut fresh) = fresh {
            // By key, then in precedence order (the order the binary-search inserts keep).
            fresh.sort_unstable();
            let mut grouped: Vec<(Key, Owners)> = Vec::with_capacity(fresh.len());
            for (k, owner) in fresh {
                match grouped.last_mut() {
                    Some((last, list)) if *last == k => list.push(owner),
                    _ => grouped.push((k, SmallVec::from_iter([owner]))),
                }
            }
            insert_dense(&mut this.owners, grouped);
        }
        // Every other Route holding a touched key may have gained or lost a conflict too
        // (none when every Route served is a changed one, as in a full compile).
        let mut others: Vec<ObjectRef> = Vec::new();
        if served > computed.len() {
            touched.sort_unstable();
            touched.dedup();
            for k in &touched {
                for owner in this.owners.get(k).into_iter().flatten() {
                    if changed.binary_search(&owner.route).is_err() {
                        others.push(owner.route.clone());
                    }
                }
            }
            others.sort();
            others.dedup();
        }
        let others: Vec<_> = others
            .into_iter()
            .filter_map(|key| {
                // Unchanged: the same object and status as the previous compile's.
                let route = Arc::clone(index.routes.get(&key)?);
                let status = Arc::clone(statuses.get(&(Kind::Route, key.clone()))?);
                let keys = keys_of(&key, &route, &status);
                Some((key, route, status, keys))
            })
            .collect();
        for (key, route, status, keys) in computed.into_iter().chain(others) {
            this.set_condition(statuses, key, route, &status, &keys);
        }
        this
    }

    /// Writes the `Conflicted` condition of the Route `key` (holding `keys`) from the
    /// current owners, when it differs from the one `status` has.
    fn set_condition(
        &self,
        statuses: &mut Statuses,
        key: ObjectRef,
        route: Arc<RouteObject>,
        status: &ObjectStatus,
        keys: &[(Key, Owner)],
    ) {
        // The common case: this Route wins every key it holds and had no conflict.
        let wins =
            |k: &Key| self.owners.get(k).and_then(|l| l.first()).is_none_or(|w| w.route == key);
        if keys.iter().all(|(k, _)| wins(k)) && status.condition(CONFLICTED).is_none() {
            return;
        }
        let hosts = hosts_of(&route);
        let mut messages: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
        for (k, owner) in keys {
            let Some(winner) = self.owners.get(k).and_then(|l| l.first()) else { continue };
            if winner.route == key {
                continue;
            }
            let host = match hosts.get(owner.host as usize).map(String::as_str) {
                None | Some("") => "any host".to_owned(),
                Some(h) => format!("host {h}"),
            };
            messages.entry((owner.rule, owner.index)).or_default().push(format!(
                "spec.rules[{}].matches[{}] for {host} is identical to a match of {}, which \
                 wins the tie-break (older, or first by namespace/name): it is never served \
                 there",
                owner.rule,
                owner.index,
                describe(&winner.route)
            ));
        }
        let text: Vec<String> = messages.into_values().flatten().collect();
        let had = status.condition(CONFLICTED).cloned();
        let generation = status.generation;
        let wanted = (!text.is_empty()).then(|| Condition {
            type_: CONFLICTED.to_owned(),
            status: "True".to_owned(),
            reason: MATCH_CONFLICT.to_owned(),
            message: text.join("; "),
            observed_generation: Some(generation),
            last_transition_time: None,
        });
        if had == wanted {
            return;
        }
        let mut next = ObjectStatus::clone(status);
        next.conditions.retain(|c| c.type_ != CONFLICTED);
        next.conditions.extend(wanted);
        let next = Arc::new(next);
        statuses.insert((Kind::Route, key), next);
    }
}
