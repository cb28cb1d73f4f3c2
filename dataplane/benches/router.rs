//! Route table benchmarks: lookup with 1, 1k, 10k and 100k Routes with distinct path
//! prefixes (64k request paths spread over the table, so large tables are not all in
//! cache); building a table of 10k/100k simple Routes (`r<i>` on `Prefix /r<i>`, like the
//! scaling figure of `bench/bench.py`); and patching one Route into such a table.
//!
//! Before criterion runs, a counting global allocator prints the noise-free figures: live
//! bytes per simple Route (the models, and the table's own structures on top of them), and
//! bytes allocated by a build and by a one-Route patch.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;

use cap::Cap;
use criterion::{BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use weir_dataplane::{
    BackendId, ObjectKey, PathMatch, RequestMatch, RequestView, RetryPolicy, RouteModel,
    RouteTable, Rule, RuleAction, Timeouts, WeightedBackend, WeightedBackends,
};

/// Counts live bytes and bytes allocated (for the memory figures).
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// (live bytes, bytes allocated so far).
fn counters() -> (isize, usize) {
    (ALLOC.allocated() as isize, ALLOC.total_allocated())
}

fn rule(key: &ObjectKey, index: usize, backend: u32, path: PathMatch) -> Arc<Rule> {
    Arc::new(Rule {
        name: format!("r{index}").into(),
        index,
        stats: weir_dataplane::observe::stats::RuleStats::detached(key, &format!("r{index}")),
        matches: vec![RequestMatch::path(path)],
        action: RuleAction {
            backends: WeightedBackends::new(vec![WeightedBackend {
                id: BackendId(backend),
                weight: 1,
            }]),
            rewrite: None,
            timeouts: Timeouts::default().shared(),
            retries: RetryPolicy::default().shared(),
            filters: Arc::new([]),
            https_redirect: false,
            aggregate: None,
        },
    })
}

/// Routes with three rules each (two prefixes and an exact path), for lookups.
fn routes(n: usize) -> Vec<RouteModel> {
    (0..n)
        .map(|i| {
            let key = ObjectKey::new("default", &format!("svc-{i}"));
            let b = i as u32;
            RouteModel {
                key: key.clone(),
                generation: 1,
                created: i as i64,
                hosts: vec![],
                rules: vec![
                    rule(&key, 0, b, PathMatch::Prefix(format!("/svc-{i}/api").into())),
                    rule(&key, 1, b, PathMatch::Prefix(format!("/svc-{i}").into())),
                    rule(&key, 2, b, PathMatch::Exact(format!("/svc-{i}/health").into())),
                ],
            }
        })
        .collect()
}

/// The scaling figure's Route `r<i>`: one rule on `Prefix /r<i>`, any host.
fn simple_route(i: usize, path: &str) -> RouteModel {
    let key = ObjectKey::new("default", &format!("r{i}"));
    RouteModel {
        key: key.clone(),
        generation: 1,
        created: 1_700_000_000,
        hosts: vec![],
        rules: vec![rule(&key, 0, 0, PathMatch::Prefix(path.into()))],
    }
}

fn simple_routes(n: usize) -> Vec<RouteModel> {
    (0..n).map(|i| simple_route(i, &format!("/r{i}"))).collect()
}

/// Request paths spread over the table (a cheap LCG, so the list is reproducible).
fn paths(n: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..65_536)
        .map(|k| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let i = (x >> 33) as usize % n;
            match k % 3 {
                0 => format!("/svc-{i}/api/v1/orders/{k}"),
                1 => format!("/svc-{i}/static/app.js"),
                _ => format!("/svc-{i}/health"),
            }
        })
        .collect()
}

/// Live bytes per simple Route, and what a build and a one-Route patch allocate.
fn memory_report() {
    for n in [10_000usize, 100_000] {
        let (live0, _) = counters();
        let models = simple_routes(n);
        let (live1, b1) = counters();
        let table = RouteTable::new(models);
        let (live2, b2) = counters();
        let changed = vec![simple_route(7, "/r7-changed")];
        let (_, b3) = counters();
        let patched = table.patched(&[], changed);
        let (_, b4) = counters();
        let per = |bytes: isize| bytes as f64 / n as f64;
        println!(
            "route_table_memory/{n}: models {:.0} B/route, table on top {:.0} B/route, \
             total {:.0} B/route; build allocates {:.0} B/route; one-route patch \
             allocates {} B",
            per(live1 - live0),
            per(live2 - live1),
            per(live2 - live0),
            (b2 - b1) as f64 / n as f64,
            b4 - b3,
        );
        drop(black_box(patched));
        drop(black_box(table));
    }
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    let headers = HeaderMap::new();
    for n in [1usize, 1_000, 10_000, 100_000] {
        let table = RouteTable::new(routes(n));
        let paths = paths(n);
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % paths.len();
                let req = RequestView {
                    method: &Method::GET,
                    host: "api.example.com:8080",
                    path: &paths[k],
                    query: Some("a=1"),
                    headers: &headers,
                };
                let m = table.find(black_box(&req));
                assert!(m.is_some());
                black_box(m.map(|m| m.rule.index))
            })
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_table_build");
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        let models = simple_routes(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || models.clone(),
                |m| RouteTable::new(black_box(m)),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn patch(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_table_patch_one");
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        let table = RouteTable::new(simple_routes(n));
        let changed = simple_route(7, "/r7-changed");
        let removed = [changed.key.clone()];
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| table.patched(black_box(&removed), vec![changed.clone()]))
        });
    }
    group.finish();
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    lookup(&mut c);
    build(&mut c);
    patch(&mut c);
    c.final_summary();
}
