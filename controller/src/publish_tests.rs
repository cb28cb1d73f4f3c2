//! Tests of the publisher: change detection, status view, reloads at scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::load::parse_file;

#[test]
fn formats_rfc3339_in_utc_seconds() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_250);
    assert_eq!(rfc3339(t), "2024-05-01T12:00:00Z");
}

fn index(yaml: &str) -> Index {
    let objects = parse_file("t.yaml", yaml).unwrap();
    let (mut index, errors) = crate::load::merge([("t.yaml", objects.as_slice())], "");
    assert!(errors.is_empty());
    for r in index.routes.values_mut() {
        Arc::make_mut(r).metadata.generation = Some(1);
    }
    index
}

const ROUTE: &str = "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\n\
    spec: {rules: [{backends: [{service: s, port: 80}]}]}\n";
const SLICE: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
    metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\n\
    ports: [{port: 9001}]\nendpoints: [{addresses: [127.0.0.1]}]\n";

#[test]
fn publishes_only_when_the_index_changes_and_shares_routes_on_endpoint_changes() {
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    assert!(!shared.status.load().ready);
    let first = index(ROUTE);
    assert_eq!(p.apply(&first, Vec::new()), Outcome::Published(1));
    assert!(shared.status.load().ready);
    assert_eq!(shared.dataplane.current().version, 1);
    assert_eq!(p.apply(&first, Vec::new()), Outcome::Unchanged(1));

    let with_slice = index(&format!("{ROUTE}{SLICE}"));
    let routes_before = Arc::clone(&shared.dataplane.current().routes);
    assert_eq!(p.apply(&with_slice, Vec::new()), Outcome::Published(2));
    let live = shared.dataplane.current();
    assert!(Arc::ptr_eq(&routes_before, &live.routes), "endpoint change rebuilt routes");

    let status = shared.status.load();
    assert_eq!(status.version, 2);
    let route = status.objects.iter().find(|o| o.kind == "Route").unwrap().view;
    assert!(route.conditions.iter().all(|c| c.last_transition_time.is_some()));
    let metrics = shared.metrics.encode();
    assert!(metrics.contains("weir_snapshot_version 2"), "{metrics}");
    assert!(metrics.contains("weir_config_reloads_total{result=\"unchanged\"} 1"), "{metrics}");
}

#[test]
fn change_detection_sees_every_kind_and_keeps_endpoints_and_routes_apart() {
    use crate::compile::incremental::{Change, changes};
    let base = index(&format!("{ROUTE}{SLICE}"));
    let compiled = compile(&base, &Memory::default());
    let state = &compiled.state;
    assert_eq!(changes(&base, state), Change::Unchanged);
    assert_eq!(changes(&base.clone(), state), Change::Unchanged);
    // Equal content in new `Arc`s (a re-parse) is unchanged too.
    assert_eq!(changes(&index(&format!("{ROUTE}{SLICE}")), state), Change::Unchanged);
    let route_changed =
        |c: Change| matches!(c, Change::Routes { changed, .. } if changed.len() == 1);
    // (A Route keeps only the metadata the compiler reads: its key, generation and
    // creation time, the precedence tie-break.)
    let mut older = base.clone();
    let r = Arc::make_mut(older.routes.values_mut().next().unwrap());
    r.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
    assert!(route_changed(changes(&older, state)), "metadata change not seen");
    let mut moved = base.clone();
    let s = Arc::make_mut(moved.endpoint_slices.values_mut().next().unwrap());
    s.endpoints[0].addresses = vec!["127.0.0.2".to_owned()];
    assert_eq!(changes(&moved, state), Change::Endpoints, "endpoint change not seen");
    let mut secret = base.clone();
    let data = [("k".to_owned(), k8s_openapi::ByteString(b"v".to_vec()))].into();
    let s = k8s_openapi::api::core::v1::Secret { data: Some(data), ..Default::default() };
    secret.secrets.insert(ObjectRef::new("default", "s"), Arc::new(s.clone()));
    assert_eq!(changes(&secret, state), Change::Full);
    let with_secret = compile(&secret, &Memory::default());
    let mut changed = s;
    changed.data = Some([("k".to_owned(), k8s_openapi::ByteString(b"w".to_vec()))].into());
    secret.secrets.insert(ObjectRef::new("default", "s"), Arc::new(changed));
    assert_eq!(changes(&secret, &with_secret.state), Change::Full, "Secret change not seen");
    let mut namespaced = base.clone();
    namespaced.controller_namespace = "other".to_owned();
    assert_eq!(changes(&namespaced, state), Change::Full);
    let mut renamed = base.clone();
    let route = renamed.routes.remove(&ObjectRef::new("default", "r")).unwrap();
    renamed.routes.insert(ObjectRef::new("defaul", "tr"), route);
    assert_eq!(
        changes(&renamed, state),
        Change::Routes {
            removed: vec![ObjectRef::new("default", "r")],
            changed: vec![ObjectRef::new("defaul", "tr")],
            endpoints: false
        }
    );
}

#[test]
fn publishing_binds_rate_limits_keeps_unchanged_ones_and_drops_removed_ones() {
    const LIMIT: &str = "---\napiVersion: weir.dev/v1alpha1\nkind: Plugin\n\
        metadata: {name: l}\nspec: {rateLimit: {limit: 5, window: 1m}}\n";
    let routed = ROUTE.replace("spec: {rules", "spec: {plugins: [l], rules");
    let shared = Shared::new(DataPlane::new());
    let limiters = &shared.dataplane.rate_limits.limiters;
    let mut p = Publisher::new(Arc::clone(&shared));
    p.apply(&index(&format!("{routed}{LIMIT}")), Vec::new());
    assert_eq!(limiters.len(), 1);
    let first = Arc::clone(&p.last.as_ref().unwrap().rate_limits[0]);
    let limiter = Arc::clone(limiters.bind(&first));
    // An endpoint change, a Route change and a full recompile keep the same limiter
    // (and counters); only the full recompile builds a new RateLimit.
    p.apply(&index(&format!("{routed}{LIMIT}{SLICE}")), Vec::new());
    let second = ROUTE.replace("name: r", "name: r2");
    let added = index(&format!("{routed}{LIMIT}{SLICE}---\n{second}"));
    assert_eq!(p.apply(&added, Vec::new()), Outcome::Published(3));
    assert!(Arc::ptr_eq(&first, &p.last.as_ref().unwrap().rate_limits[0]));
    const SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n\
        spec: {ports: [{port: 80}]}\n";
    let recompiled = index(&format!("{routed}{LIMIT}{SLICE}---\n{second}{SERVICE}"));
    assert_eq!(p.apply(&recompiled, Vec::new()), Outcome::Published(4));
    let live = &p.last.as_ref().unwrap().rate_limits[0];
    assert!(!Arc::ptr_eq(&first, live), "a new compile builds a new RateLimit");
    assert!(Arc::ptr_eq(&limiter, limiters.bind(live)), "counters were reset");
    assert_eq!(limiters.len(), 1);
    // No Route uses it any more: its limiter is dropped.
    p.apply(&index(&format!("{ROUTE}{LIMIT}")), Vec::new());
    assert!(limiters.is_empty());
    assert!(shared.metrics.encode().contains("weir_ratelimit_store_errors_total 0"));
}

#[test]
fn keeps_transition_times_while_the_status_is_unchanged() {
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    p.apply(&index(ROUTE), Vec::new());
    p.views = ObjectViews::default();
    let nth = |v: &ObjectViews, i: usize| v.iter().nth(i).unwrap().view;
    let t0 = UNIX_EPOCH + Duration::from_secs(100);
    let first = p.objects(t0);
    assert_eq!(
        nth(&first, 0).conditions[0].last_transition_time.as_deref(),
        Some("1970-01-01T00:01:40Z")
    );
    let times = |v: &ObjectViews, i: usize| -> Vec<(String, Option<String>)> {
        let c = &nth(v, i).conditions;
        c.iter().map(|c| (c.status.clone(), c.last_transition_time.clone())).collect()
    };
    // The same statuses in a new compile (a new `Arc`): the same times.
    let compiled = p.last.clone().unwrap();
    let mut copy = Compiled::clone(&compiled);
    copy.statuses =
        compiled.statuses.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect();
    p.last = Some(Arc::new(copy));
    let later = p.objects(t0 + Duration::from_secs(50));
    assert_eq!(times(&first, 0), times(&later, 0));
    assert_eq!(nth(&first, 0), nth(&later, 0), "an unchanged status changed its view");
    assert!(later.changed.is_empty(), "an unchanged status got a view of its own");

    // A new generation with the same conditions keeps their times; a condition whose
    // status flips gets the new time; a new object gets the new time.
    let mut edited = index(&format!("{ROUTE}---\n{}", ROUTE.replace("name: r", "name: r2")));
    let r = Arc::make_mut(edited.routes.get_mut(&ObjectRef::new("default", "r")).unwrap());
    r.metadata.generation = Some(2);
    r.spec.rules[0].backends[0].port = Some(0);
    let recompiled = compile(&edited, &p.memory);
    p.last = Some(Arc::new(recompiled));
    let t1 = t0 + Duration::from_secs(60);
    let third = p.objects(t1);
    assert_eq!(third.len(), 2);
    assert_eq!(nth(&third, 0).generation, 2);
    let (before, after) = (times(&first, 0), times(&third, 0));
    assert_eq!(before.len(), after.len());
    let mut flipped = 0;
    for (b, a) in before.iter().zip(&after) {
        if a.0 == b.0 {
            assert_eq!(a.1, b.1, "{before:?} -> {after:?}");
        } else {
            flipped += 1;
            assert_eq!(a.1.as_deref(), Some("1970-01-01T00:02:40Z"));
        }
    }
    assert!(flipped > 0, "the edit did not change a condition: {after:?}");
    assert!(times(&third, 1).iter().all(|t| t.1.as_deref() == Some("1970-01-01T00:02:40Z")));

    p.last = Some(compiled);
    let errors = vec![LoadError { file: "x.yaml".into(), document: 2, reason: "bad".into() }];
    assert_eq!(p.apply(&index(ROUTE), errors.clone()), Outcome::Unchanged(1));
    assert_eq!(shared.status.load().errors, errors);
}

#[test]
fn objects_whose_status_never_changed_keep_the_first_time_and_get_no_view_of_their_own() {
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    // q on its own host: no match conflict ties the two statuses together.
    let q = ROUTE.replace("name: r", "name: q").replace("spec: {", "spec: {hosts: [q.example], ");
    let two = format!("{ROUTE}---\n{q}");
    p.apply(&index(&two), Vec::new());
    p.views = ObjectViews::default();
    let t0 = UNIX_EPOCH + Duration::from_secs(100);
    let first = p.objects(t0);
    assert_eq!(first.len(), 2);
    assert!(first.changed.is_empty(), "the first views are made when read");
    assert!(first.iter().all(|o| o.view.conditions.iter().all(|c| c.type_ != "Conflicted")));
    let time_of = |v: &ObjectViews, name: &str| -> Vec<Option<String>> {
        let view = v.get(Kind::Route, &ObjectRef::new("default", name)).unwrap();
        view.conditions.iter().map(|c| c.last_transition_time.clone()).collect()
    };
    assert!(time_of(&first, "q").iter().all(|t| t.as_deref() == Some("1970-01-01T00:01:40Z")));
    // q breaks at t1, r stays as it was.
    let mut edited = index(&two);
    let q = Arc::make_mut(edited.routes.get_mut(&ObjectRef::new("default", "q")).unwrap());
    q.metadata.generation = Some(2);
    q.spec.rules[0].backends[0].port = Some(0);
    p.last = Some(Arc::new(compile(&edited, &p.memory)));
    let second = p.objects(t0 + Duration::from_secs(60));
    assert_eq!(time_of(&second, "r"), time_of(&first, "r"));
    assert!(time_of(&second, "q").contains(&Some("1970-01-01T00:02:40Z".to_owned())));
    let keys: Vec<String> = second.changed.keys().map(|(_, k)| k.to_string()).collect();
    assert_eq!(keys, ["default/q"]);
    // q is removed: it leaves the views and their own entries.
    p.last = Some(Arc::new(compile(&index(ROUTE), &p.memory)));
    let third = p.objects(t0 + Duration::from_secs(120));
    assert_eq!(third.len(), 1);
    assert!(third.get(Kind::Route, &ObjectRef::new("default", "q")).is_none());
    assert!(third.changed.is_empty());
    assert_eq!(time_of(&third, "r"), time_of(&first, "r"));
}

/// `N` Routes (one path each) on one Service, generation 1.
fn big_index(n: usize) -> Index {
    let mut index = index(ROUTE);
    let template = index.routes.values().next().unwrap().clone();
    index.routes.clear();
    for i in 0..n {
        let mut r = (*template).clone();
        r.metadata.key = ObjectRef::new("default", format!("r{i}"));
        r.spec.rules[0].matches = vec![weir_crds::RouteMatch {
            path: Some(weir_crds::PathMatch {
                type_: weir_crds::PathMatchType::Prefix,
                value: format!("/p{i}"),
            }),
            ..Default::default()
        }];
        index.routes.insert(ObjectRef::new("default", format!("r{i}")), Arc::new(r));
    }
    index
}

/// Hand-run timing of a one-Route change at scale (not in CI):
/// `WEIR_BENCH_ROUTES=100000 cargo test -p weir-controller --release reload_at_scale -- --ignored --nocapture`
#[test]
#[ignore = "timing harness, run by hand"]
fn reload_at_scale() {
    let n: usize =
        std::env::var("WEIR_BENCH_ROUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    let mut idx = big_index(n);
    let t = std::time::Instant::now();
    p.apply(&idx, Vec::new());
    eprintln!("{n} routes: first apply {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let full = compile(&idx, &p.memory);
    eprintln!("{n} routes: full compile() {:?}", t.elapsed());
    drop(full);
    let mut times = Vec::new();
    for round in 0..10u32 {
        let r = Arc::make_mut(idx.routes.get_mut(&ObjectRef::new("default", "r7")).unwrap());
        r.spec.rules[0].matches[0].path.as_mut().unwrap().value = format!("/changed{round}");
        r.metadata.generation = Some(i64::from(round) + 2);
        let t = std::time::Instant::now();
        let state = &p.last.as_ref().unwrap().state;
        let _change = crate::compile::incremental::changes(&idx, state);
        let t_detect = t.elapsed();
        let t = std::time::Instant::now();
        assert!(matches!(p.apply(&idx, Vec::new()), Outcome::Published(_)));
        times.push((t.elapsed(), t_detect));
    }
    let t = std::time::Instant::now();
    assert!(matches!(p.apply(&idx, Vec::new()), Outcome::Unchanged(_)));
    let unchanged = t.elapsed();
    times.sort();
    eprintln!(
        "{n} routes: one-route change apply p50 {:?} max {:?} (change detection alone {:?}); unchanged apply {:?}",
        times[5].0, times[9].0, times[5].1, unchanged,
    );
}

#[test]
fn the_tls_table_is_published_and_a_default_certificate_problem_is_a_load_error() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["shop.test".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap().pem();
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let yaml = format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\n\
         spec: {{hosts: [shop.test], tls: {{secretRef: {{name: shop}}}}, \
         rules: [{{backends: [{{service: s, port: 80}}]}}]}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: shop}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert),
        indent(&key.serialize_pem())
    );
    let mut idx = index(&yaml);
    idx.now = Some(SystemTime::now());
    idx.default_certificate = Some(ObjectRef::new("weir-system", "missing"));
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    assert_eq!(p.apply(&idx, Vec::new()), Outcome::Published(1));
    let live = shared.dataplane.current();
    assert_eq!(live.tls.select(Some("shop.test")).map(|t| &*t.name), Some("default/shop"));
    assert!(live.tls.select(Some("other.test")).is_none());
    let status = shared.status.load();
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    assert_eq!(status.errors[0].file, "--default-certificate");
    assert!(status.errors[0].reason.starts_with("secret weir-system/missing not found"));
    // Still reported when nothing changed.
    assert_eq!(p.apply(&idx, Vec::new()), Outcome::Unchanged(1));
    assert_eq!(shared.status.load().errors.len(), 1);
    assert!(shared.metrics.encode().contains("weir_config_errors 1"));
}

#[test]
fn a_compile_that_changes_only_statuses_serves_the_same_snapshot() {
    let shared = Shared::new(DataPlane::new());
    let mut p = Publisher::new(Arc::clone(&shared));
    assert_eq!(p.apply(&index(ROUTE), Vec::new()), Outcome::Published(1));
    let live = shared.live.load_full().unwrap();
    // What `compile::update` returns for a front-end-only status change: the same tables.
    let mut statuses = live.statuses.clone();
    statuses.remove(&(Kind::Route, ObjectRef::new("default", "r")));
    let status_only = Compiled { statuses, ..(*live).clone() };
    assert!(serves_the_same(&live, &status_only));
    // A compile of another index has its own tables.
    let other = compile(&index(&format!("{ROUTE}{SLICE}")), &Memory::default());
    assert!(!serves_the_same(&live, &other));
}
