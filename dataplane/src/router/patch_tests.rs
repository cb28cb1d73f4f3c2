//! Randomized equivalence of [`RouteTable::patched`] and [`RouteTable::new`]: seeded,
//! bounded sequences of patches over Routes that share hosts, paths and precedence ties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use super::tests::rule;
use super::*;
use crate::snapshot::{HeaderMatcher, PathMatch, ValueMatch};

/// A small deterministic generator (xorshift), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const HOSTS: &[&str] = &["a.example.com", "B.example.com", "*.example.com", "*.b.example.com"];
const PATHS: &[&str] = &["/", "/a", "/a/b", "/a/b/c", "/b", "/c/d", "/a/b/"];
const NAMES: &[&str] = &["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10"];

/// A random Route named `ns/name`: 0-2 hosts, 1-3 rules of 1-2 matches each, with
/// method, header and regex conditions drawn from small sets so lists collide and tie.
fn random_route(rng: &mut Rng, ns: &str, name: &str) -> RouteModel {
    let key = ObjectKey::new(ns, name);
    let hosts = (0..rng.below(3))
        .map(|_| {
            let h = rng.pick(HOSTS);
            match h.strip_prefix('*') {
                Some(s) => HostMatch::Wildcard(s.into()),
                None => HostMatch::Exact(h.into()),
            }
        })
        .collect();
    let rules = (0..1 + rng.below(3))
        .map(|index| {
            let matches = (0..1 + rng.below(2))
                .map(|_| {
                    let p = rng.pick(PATHS);
                    let path = match rng.below(6) {
                        0 => PathMatch::Exact(p.into()),
                        1 => PathMatch::Regex(Box::new(
                            Regex::new(&format!("^(?:{}[a-z0-9/]*)$", p.trim_end_matches('/')))
                                .unwrap(),
                        )),
                        _ => PathMatch::Prefix(p.trim_end_matches('/').into()),
                    };
                    let methods = if rng.below(4) == 0 { vec![Method::POST] } else { vec![] };
                    let headers = if rng.below(4) == 0 {
                        vec![HeaderMatcher {
                            name: HeaderName::from_static("x-v"),
                            value: ValueMatch::Exact("1".into()),
                        }]
                    } else {
                        vec![]
                    };
                    RequestMatch::new(path, methods, headers, vec![])
                })
                .collect();
            rule(&key, format!("{ns}/{name}#{index}"), index, matches)
        })
        .collect();
    // Few distinct creation times, so the name tie-breaks are exercised too.
    RouteModel { key, generation: rng.below(5) as i64, created: rng.below(3) as i64, hosts, rules }
}

/// Every (host, path, method, header) request view over the generator's sets.
fn answers(t: &RouteTable) -> Vec<String> {
    let hosts = [
        "a.example.com",
        "b.example.com",
        "x.example.com",
        "x.b.example.com",
        "other",
        "A.EXAMPLE.COM:8080",
    ];
    let paths = ["/", "/a", "/a/", "/a/b", "/a/b/c", "/a/b/c/d", "/b", "/bx", "/c/d", "/c", "/z9"];
    let mut with_header = HeaderMap::new();
    with_header.insert("x-v", HeaderValue::from_static("1"));
    let none = HeaderMap::new();
    let mut out = Vec::new();
    for host in hosts {
        for path in paths {
            for method in [Method::GET, Method::POST] {
                for headers in [&none, &with_header] {
                    let view = RequestView { method: &method, host, path, query: None, headers };
                    let found = t.find(&view).map(|m| {
                        let i = m.rule.matches.iter().position(|x| std::ptr::eq(x, m.matched));
                        format!("{}@{:?}", m.rule.name, i)
                    });
                    out.push(found.unwrap_or_default());
                }
            }
        }
    }
    out
}

#[test]
fn patched_tables_answer_like_fresh_ones() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let namespaces = ["a", "b"];
        let mut current: Vec<RouteModel> =
            (0..6).map(|i| random_route(&mut rng, namespaces[i % 2], NAMES[i])).collect();
        let mut table = RouteTable::new(current.clone());
        for step in 0..25 {
            let mut removed = Vec::new();
            for _ in 0..rng.below(3) {
                if !current.is_empty() {
                    let r = current.remove(rng.below(current.len()));
                    removed.push(r.key);
                }
            }
            // Sometimes remove a key that is not there.
            if rng.below(5) == 0 {
                removed.push(ObjectKey::new("zz", "absent"));
            }
            let mut added = Vec::new();
            for _ in 0..rng.below(3) {
                let ns = namespaces[rng.below(2)];
                let name = rng.pick(NAMES);
                let r = random_route(&mut rng, ns, name);
                current.retain(|c| c.key != r.key);
                added.push(r);
            }
            // An added Route may also replace an earlier one of the same patch.
            let mut seen = std::collections::HashSet::new();
            let kept: Vec<RouteModel> =
                added.iter().rev().filter(|r| seen.insert(r.key.clone())).cloned().collect();
            current.extend(kept);
            let next = table.patched(&removed, added);
            let fresh = RouteTable::new(current.clone());
            let ctx = format!("seed {seed} step {step}");
            assert_eq!(answers(&next), answers(&fresh), "{ctx}");
            assert_eq!(next.describe(), fresh.describe(), "{ctx}");
            assert_eq!(next.len(), current.len(), "{ctx}");
            table = next;
        }
    }
}

/// A one-Route patch of a large table copies only what it touches: every untouched shard
/// of the Routes and of the path index is shared with the previous table.
#[test]
fn one_route_patch_shares_the_rest() {
    let simple = |i: usize, path: &str| {
        let key = ObjectKey::new("d", &format!("r{i}"));
        let rule = rule(
            &key,
            format!("r{i}"),
            0,
            vec![RequestMatch::path(PathMatch::Prefix(path.into()))],
        );
        RouteModel { key, generation: 1, created: 0, hosts: vec![], rules: vec![rule] }
    };
    let t = RouteTable::new((0..20_000).map(|i| simple(i, &format!("/r{i}"))).collect());
    let p = t.patched(&[], vec![simple(7, "/r7-new")]);
    assert_eq!(p.len(), 20_000);
    let (same, total) = t.routes.shared_shards(&p.routes);
    assert!(total > 100 && same + 1 >= total, "{same}/{total} route shards shared");
    let (before, after) = (t.any_host.as_ref().unwrap(), p.any_host.as_ref().unwrap());
    let (same, total) = before.shared_prefix_shards(after);
    assert!(total > 100 && same + 2 >= total, "{same}/{total} prefix shards shared");
    let get = |t: &RouteTable, path: &str| {
        let headers = HeaderMap::new();
        let view =
            RequestView { method: &Method::GET, host: "h", path, query: None, headers: &headers };
        t.find(&view).map(|m| m.rule.name.to_string())
    };
    assert_eq!(get(&t, "/r7/x").as_deref(), Some("r7"));
    assert_eq!(get(&p, "/r7/x"), None);
    assert_eq!(get(&p, "/r7-new/x").as_deref(), Some("r7"));
    assert_eq!(get(&p, "/r8/x").as_deref(), Some("r8"));
}
