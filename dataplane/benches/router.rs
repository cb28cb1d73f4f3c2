//! Route lookup benchmarks: 1, 1k, 10k and 100k Routes with distinct path prefixes (64k
//! request paths spread over the table, so large tables are not all in cache), plus the
//! time to build a 10k-Route table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use weir_dataplane::{
    BackendId, ObjectKey, PathMatch, RequestMatch, RequestView, RetryPolicy, RouteModel,
    RouteTable, Rule, RuleAction, Timeouts, WeightedBackend, WeightedBackends,
};

fn routes(n: usize) -> Vec<RouteModel> {
    (0..n)
        .map(|i| {
            let key = ObjectKey::new("default", &format!("svc-{i}"));
            let rule = |index: usize, path: PathMatch| {
                Arc::new(Rule {
                    route: key.clone(),
                    name: format!("r{index}").into(),
                    index,
                    matches: vec![RequestMatch {
                        path,
                        methods: vec![],
                        headers: vec![],
                        query: vec![],
                    }],
                    action: RuleAction {
                        backends: WeightedBackends::new(vec![WeightedBackend {
                            id: BackendId(i as u32),
                            weight: 1,
                        }]),
                        rewrite: None,
                        timeouts: Timeouts::default(),
                        retries: RetryPolicy::default(),
                        filters: Arc::new([]),
                    },
                })
            };
            RouteModel {
                key: key.clone(),
                generation: 1,
                created: i as i64,
                hosts: vec![],
                rules: vec![
                    rule(0, PathMatch::Prefix(format!("/svc-{i}/api").into())),
                    rule(1, PathMatch::Prefix(format!("/svc-{i}").into())),
                    rule(2, PathMatch::Exact(format!("/svc-{i}/health").into())),
                ],
            }
        })
        .collect()
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
    let models = routes(10_000);
    c.bench_function("route_table_build/10000", |b| {
        b.iter(|| RouteTable::new(black_box(models.clone())))
    });
}

criterion_group!(benches, lookup, build);
criterion_main!(benches);
