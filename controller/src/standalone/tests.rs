//! Tests of the directory source and the watcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weir_dataplane::DataPlane;

use super::*;
use crate::index::{Index, ObjectRef};
use crate::publish::Shared;

fn route(name: &str, prefix: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n  rules:\n    \
         - matches: [{{path: {{value: {prefix}}}}}]\n      backends: [{{service: s, port: 80}}]\n"
    )
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("weir-standalone-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generation(index: &Index, name: &str) -> Option<i64> {
    index.routes.get(&ObjectRef::new("default", name)).and_then(|r| r.metadata.generation)
}

#[test]
fn bumps_generation_only_when_the_spec_changes() {
    let dir = TempDir::new("gen");
    dir.write("a.yaml", &route("a", "/a"));
    let mut src = DirSource::new(&dir.0, "weir-system");
    let (index, errors) = src.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(generation(index, "a"), Some(1));
    let created = index.routes.values().next().unwrap().metadata.creation_timestamp.clone();
    assert!(created.is_some());

    dir.write("a.yaml", &format!("# a comment\n{}", route("a", "/a")));
    assert_eq!(generation(src.load().0, "a"), Some(1));
    // Metadata is not spec: a new label does not bump the generation either.
    dir.write("a.yaml", &route("a", "/a").replace("{name: a}", "{name: a, labels: {x: y}}"));
    let (index, _) = src.load();
    assert_eq!(generation(index, "a"), Some(1));
    assert_eq!(index.routes.values().next().unwrap().metadata.creation_timestamp, created);
    dir.write("a.yaml", &route("a", "/b"));
    let (index, _) = src.load();
    assert_eq!(generation(index, "a"), Some(2));
    assert_eq!(index.routes.values().next().unwrap().metadata.creation_timestamp, created);

    // Moved to another file, unchanged: same generation. Deleted, then re-created: 1.
    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    dir.write("b.yaml", &route("a", "/b"));
    assert_eq!(generation(src.load().0, "a"), Some(2));
    std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
    assert!(src.load().0.routes.is_empty());
    dir.write("b.yaml", &route("a", "/c"));
    assert_eq!(generation(src.load().0, "a"), Some(1));
}

#[test]
fn a_broken_file_keeps_its_last_good_contents_and_others_are_unaffected() {
    let dir = TempDir::new("lastgood");
    dir.write("a.yaml", &route("a", "/a"));
    dir.write("b.yaml", &route("b", "/b"));
    let mut src = DirSource::new(&dir.0, "");
    assert_eq!(src.load().0.routes.len(), 2);

    dir.write("a.yaml", &format!("{}---\nkind: [broken\n", route("a2", "/a2")));
    dir.write("b.yaml", &format!("{}---\n{}", route("b", "/b"), route("c", "/c")));
    let (index, errors) = src.load();
    let names: Vec<&str> = index.routes.keys().map(|k| &*k.name).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    // The message keeps the file's line number (document 1 starts on line 8).
    assert!(errors[0].reason.contains("line 9") || errors[0].reason.contains(":9:"), "{errors:?}");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file.ends_with("a.yaml"));
    assert_eq!(errors[0].document, 1);

    // A file that never parsed contributes nothing; deleting a file removes its objects.
    dir.write("d.yaml", "kind: [broken\n");
    std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
    let (index, errors) = src.load();
    let names: Vec<&str> = index.routes.keys().map(|k| &*k.name).collect();
    assert_eq!(names, vec!["a"]);
    assert_eq!(errors.len(), 2);

    dir.write("a.yaml", &route("a", "/a"));
    std::fs::remove_file(dir.0.join("d.yaml")).unwrap();
    let (_, errors) = src.load();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Waits (bounded) until the status view satisfies `f`.
async fn wait_for(shared: &Shared, f: impl Fn(&crate::publish::StatusView) -> bool) -> bool {
    for _ in 0..500 {
        if f(&shared.status.load()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_the_directory_and_reloads_on_change() {
    let dir = TempDir::new("watch");
    dir.write("a.yaml", &route("a", "/a"));
    let shared = Shared::new(DataPlane::new());
    let (stop, rx) = watch::channel(false);
    let task =
        tokio::spawn(run(DirSource::new(&dir.0, ""), Publisher::new(Arc::clone(&shared)), rx));
    assert!(wait_for(&shared, |s| s.ready && s.version == 1).await, "first load");
    assert_eq!(shared.dataplane.current().routes.len(), 1);

    std::fs::create_dir_all(dir.0.join("sub")).unwrap();
    dir.write("sub/b.yaml", &route("b", "/b"));
    assert!(
        wait_for(&shared, |s| s.objects.iter().any(|o| o.name == "b")).await,
        "new file in a new subdirectory picked up"
    );
    assert_eq!(shared.dataplane.current().routes.len(), 2);

    dir.write("a.yaml", "kind: [broken\n");
    assert!(wait_for(&shared, |s| !s.errors.is_empty()).await, "error reported");
    assert_eq!(shared.dataplane.current().routes.len(), 2, "last good a.yaml keeps serving");

    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn a_duplicate_across_files_is_reported_and_the_first_definition_serves() {
    let dir = TempDir::new("dup");
    dir.write("a.yaml", &route("a", "/a"));
    dir.write("b.yaml", &route("a", "/b"));
    let mut src = DirSource::new(&dir.0, "weir-system");
    for _ in 0..2 {
        let (index, errors) = src.load();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].reason.contains("duplicate Route default/a"), "{errors:?}");
        assert!(errors[0].file.ends_with("b.yaml"), "{errors:?}");
        let served = &index.routes[&ObjectRef::new("default", "a")].spec.rules[0].matches;
        assert_eq!(served[0].path.as_ref().unwrap().value, "/a");
    }
}

/// The bench's config layout: a backend file and `n` Routes, 1000 per file.
fn bench_config(dir: &Path, n: usize) -> Vec<(PathBuf, Vec<(String, String)>)> {
    std::fs::write(
        dir.join("00-backend.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: upstream\nspec:\n  ports:\n    \
         - {name: http, port: 80, targetPort: 9}\n",
    )
    .unwrap();
    let mut files = Vec::new();
    for start in (0..n).step_by(1000) {
        let chunk: Vec<(String, String)> =
            (start..(start + 1000).min(n)).map(|i| (format!("r{i}"), format!("/r{i}"))).collect();
        let path = dir.join(format!("routes-{:05}.yaml", start / 1000));
        std::fs::write(&path, bench_text(&chunk)).unwrap();
        files.push((path, chunk));
    }
    files
}

fn bench_text(chunk: &[(String, String)]) -> String {
    chunk
        .iter()
        .map(|(n, p)| {
            format!(
                "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata:\n  name: {n}\nspec:\n  \
                 rules:\n    - matches:\n        - path: {{type: Prefix, value: {p}}}\n      \
                 backends:\n        - {{service: upstream, port: 80}}\n"
            )
        })
        .collect()
}

/// `WEIR_BENCH_ROUTES=10000 cargo test --release -p weir-controller --lib bench_source --
/// --ignored --nocapture`: first load, then one route changed in the first file (renamed
/// over it, as bench/bench.py does), timed in the source only.
#[test]
#[ignore = "a measurement, not a test"]
fn bench_source() {
    let n: usize =
        std::env::var("WEIR_BENCH_ROUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = TempDir::new(&format!("bench-{n}"));
    let files = bench_config(&dir.0, n);
    let mut src = DirSource::new(&dir.0, "");
    let started = std::time::Instant::now();
    let (index, errors) = src.load();
    eprintln!(
        "first load of {} routes: {:.1} ms",
        index.routes.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(errors.is_empty());
    let (path0, mut chunk) = files[0].clone();
    let mut times = Vec::new();
    let reloads: usize =
        std::env::var("WEIR_BENCH_RELOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    for k in 0..reloads {
        chunk[k].1 = format!("/moved-{k}");
        let stage = dir.0.join(format!(".stage-{k}"));
        std::fs::write(&stage, bench_text(&chunk)).unwrap();
        std::fs::rename(&stage, &path0).unwrap();
        let changes = Changes { rescan: false, paths: [path0.clone()].into() };
        let started = std::time::Instant::now();
        let errors = src.apply(&changes);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(errors.is_empty());
        assert_eq!(src.index().routes.len(), n);
    }
    times.sort_by(f64::total_cmp);
    if times.len() < 10 {
        return;
    }
    eprintln!("one route changed, {n} routes: load_ms p50 {:.2} max {:.2}", times[5], times[9]);
}

fn routes_of(index: &Index) -> Vec<(String, Arc<crate::index::RouteObject>)> {
    index.routes.iter().map(|(k, v)| (k.name.to_string(), Arc::clone(v))).collect()
}

fn changed(paths: &[PathBuf]) -> Changes {
    Changes { rescan: false, paths: paths.iter().cloned().collect() }
}

#[test]
fn a_one_document_change_keeps_every_other_objects_arc() {
    let dir = TempDir::new("arcs");
    let a: Vec<String> = (0..5).map(|i| route(&format!("a{i}"), &format!("/a{i}"))).collect();
    dir.write("a.yaml", &a.join("---\n"));
    dir.write("b.yaml", &route("b", "/b"));
    let mut src = DirSource::new(&dir.0, "");
    let before = routes_of(src.load().0);
    assert_eq!(before.len(), 6);

    let mut edited = a.clone();
    edited[2] = route("a2", "/moved");
    dir.write("a.yaml", &edited.join("---\n"));
    let errors = src.apply(&changed(&[dir.0.join("a.yaml")]));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(src.take_changed());
    let after = routes_of(src.index());
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(Arc::ptr_eq(old, new), name != "a2", "{name}");
    }
    assert_eq!(generation(src.index(), "a2"), Some(2));
    assert_eq!(generation(src.index(), "a1"), Some(1));

    // A document inserted at the top shifts the others: still the same objects.
    dir.write("a.yaml", &format!("{}---\n{}", route("new", "/new"), edited.join("---\n")));
    src.apply(&changed(&[dir.0.join("a.yaml")]));
    let shifted = routes_of(src.index());
    for (name, old) in &after {
        let new = &shifted.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(Arc::ptr_eq(old, new), "{name}");
    }
    assert_eq!(shifted.len(), 7);

    // Touching a file without changing it changes nothing.
    src.take_changed();
    dir.write("b.yaml", &route("b", "/b"));
    src.apply(&changed(&[dir.0.join("b.yaml")]));
    assert!(!src.take_changed());
}

#[test]
fn only_the_named_files_are_read_unless_a_rescan_is_due() {
    let dir = TempDir::new("named");
    dir.write("a.yaml", &route("a", "/a"));
    let mut src = DirSource::new(&dir.0, "");
    src.load();
    dir.write("b.yaml", &route("b", "/b"));
    dir.write("c.yaml", &route("c", "/c"));
    src.apply(&changed(&[dir.0.join("c.yaml"), dir.0.join("notes.txt")]));
    let names: Vec<String> = routes_of(src.index()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["a", "c"], "b.yaml was not named");

    // A hidden file is not loaded: nothing to do. A symlink (a ConfigMap's `..data`
    // swap) or a directory means: rescan.
    dir.write(".b.yaml.swp", "x");
    src.apply(&changed(&[dir.0.join(".b.yaml.swp")]));
    assert_eq!(src.index().routes.len(), 2);
    std::os::unix::fs::symlink(&dir.0, dir.0.join("..data")).unwrap();
    src.apply(&changed(&[dir.0.join("..data")]));
    assert_eq!(src.index().routes.len(), 3);
    std::fs::create_dir_all(dir.0.join("sub")).unwrap();
    dir.write("sub/d.yaml", &route("d", "/d"));
    src.apply(&changed(&[dir.0.join("sub")]));
    assert_eq!(src.index().routes.len(), 4);
    // A deleted directory's files go with it.
    std::fs::remove_dir_all(dir.0.join("sub")).unwrap();
    src.apply(&changed(&[dir.0.join("sub")]));
    assert_eq!(src.index().routes.len(), 3);
    // A deleted file named by its event.
    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    src.apply(&changed(&[dir.0.join("a.yaml")]));
    assert_eq!(src.index().routes.len(), 2);
}

#[test]
fn the_next_definition_takes_over_when_the_first_goes_away() {
    let dir = TempDir::new("takeover");
    dir.write("a.yaml", &route("x", "/a"));
    dir.write("b.yaml", &route("x", "/b"));
    dir.write("c.yaml", &format!("{}---\n{}", route("yy", "/yy"), route("x", "/c")));
    let mut src = DirSource::new(&dir.0, "");
    let served = |src: &DirSource| {
        let r = &src.index().routes[&ObjectRef::new("default", "x")];
        r.spec.rules[0].matches[0].path.as_ref().unwrap().value.clone()
    };
    let errors = src.load().1;
    assert_eq!(served(&src), "/a");
    let dup_files: Vec<(String, usize)> = errors
        .iter()
        .map(|e| (e.file.rsplit('/').next().unwrap().to_owned(), e.document))
        .collect();
    assert_eq!(dup_files, vec![("b.yaml".into(), 0), ("c.yaml".into(), 1)]);
    assert!(
        errors[1].reason.contains("already defined in")
            && errors[1].reason.contains("a.yaml document 0")
    );

    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    let errors = src.apply(&changed(&[dir.0.join("a.yaml")]));
    assert_eq!(served(&src), "/b");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].reason.contains("b.yaml document 0"), "{errors:?}");

    // b.yaml turns invalid: its last good definition still wins.
    dir.write("b.yaml", "kind: [broken\n");
    let errors = src.apply(&changed(&[dir.0.join("b.yaml")]));
    assert_eq!(served(&src), "/b");
    assert_eq!(errors.len(), 2, "{errors:?}");
    std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
    let errors = src.apply(&changed(&[dir.0.join("b.yaml")]));
    assert_eq!(served(&src), "/c");
    assert!(errors.is_empty(), "{errors:?}");

    // An earlier file defining it again takes it back.
    dir.write("a.yaml", &route("x", "/a2"));
    let errors = src.apply(&changed(&[dir.0.join("a.yaml")]));
    assert_eq!(served(&src), "/a2");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file.ends_with("c.yaml"));
    assert_eq!(src.index().routes.len(), 2);
}

#[test]
fn a_first_load_of_many_files_matches_a_sequential_load() {
    let dir = TempDir::new("many");
    for i in 0..24 {
        let docs: Vec<String> = (0..20)
            .map(|j| route(&format!("r{}", (i * 20 + j) % 300), &format!("/f{i}")))
            .collect();
        dir.write(&format!("f{i:02}.yaml"), &docs.join("---\n"));
    }
    let mut src = DirSource::new(&dir.0, "");
    let (index, errors) = src.load();
    let paths: Vec<PathBuf> = (0..24).map(|i| dir.0.join(format!("f{i:02}.yaml"))).collect();
    let (expected, expected_errors) = crate::load::load_paths(&paths, "");
    assert_eq!(index.routes.len(), expected.routes.len());
    for (k, r) in &expected.routes {
        assert_eq!(index.routes[k].spec, r.spec, "{k}");
    }
    assert_eq!(errors.len(), expected_errors.len());
    assert_eq!(errors.len(), 180);
}

fn path_signal(path: &str, complete: bool) -> Signal {
    Signal::Path { path: PathBuf::from(path), complete }
}

#[test]
fn events_say_whether_a_write_is_complete() {
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::{Event, EventKind};
    let of = |kind| events::signals(Ok(Event::new(kind).add_path(PathBuf::from("/d/a.yaml"))));
    let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
    assert_eq!(of(close), vec![path_signal("/d/a.yaml", true)]);
    let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    assert_eq!(of(renamed), vec![path_signal("/d/a.yaml", true)]);
    let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    assert_eq!(of(written), vec![path_signal("/d/a.yaml", false)]);
    assert_eq!(of(EventKind::Create(CreateKind::File)), vec![path_signal("/d/a.yaml", false)]);
    assert!(of(EventKind::Access(AccessKind::Open(AccessMode::Any))).is_empty());
    assert!(of(EventKind::Access(AccessKind::Close(AccessMode::Read))).is_empty());
    let rescan = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    assert_eq!(events::signals(Ok(rescan)), vec![Signal::Rescan]);
    assert_eq!(events::signals(Err(notify::Error::generic("lost"))), vec![Signal::Rescan]);
}

#[tokio::test(start_paused = true)]
async fn a_complete_change_reloads_at_once_and_a_write_in_progress_waits() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    let changes = events::settle(&mut rx, path_signal("/d/a.yaml", true)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(changes.paths.len(), 1);

    // A write, then its close: no wait.
    tx.send(path_signal("/d/a.yaml", true)).unwrap();
    let changes = events::settle(&mut rx, path_signal("/d/a.yaml", false)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!changes.rescan);

    // A write not closed: DEBOUNCE of quiet.
    let changes = events::settle(&mut rx, path_signal("/d/b.yaml", false)).await;
    assert_eq!(start.elapsed(), DEBOUNCE);
    assert_eq!(changes.paths.iter().next().unwrap(), Path::new("/d/b.yaml"));

    // Writes that keep coming: at most MAX_DELAY.
    let start = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(DEBOUNCE / 2).await;
            if tx.send(path_signal("/d/c.yaml", false)).is_err() {
                break;
            }
        }
    });
    let changes = events::settle(&mut rx, path_signal("/d/c.yaml", false)).await;
    assert_eq!(start.elapsed(), MAX_DELAY);
    assert_eq!(changes.paths.len(), 1);
    drop(rx);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_while_nothing_changes_is_reported() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["shop.test".to_owned()]).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + Duration::from_secs(now - 60);
    p.not_after = epoch + Duration::from_secs(now + 5);
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let dir = TempDir::new("tls-expiry");
    dir.write(
        "tls.yaml",
        &format!(
            "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: shop}}\nspec:\n  \
             hosts: [shop.test]\n  tls: {{secretRef: {{name: shop-tls}}}}\n  rules: \
             [{{backends: [{{service: s, port: 80}}]}}]\n---\napiVersion: v1\nkind: Service\n\
             metadata: {{name: s}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Secret\n\
             metadata: {{name: shop-tls}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&p.self_signed(&key).unwrap().pem()),
            indent(&key.serialize_pem())
        ),
    );
    let shared = Shared::new(DataPlane::new());
    let (stop, rx) = watch::channel(false);
    let task =
        tokio::spawn(run(DirSource::new(&dir.0, ""), Publisher::new(Arc::clone(&shared)), rx));
    let resolved = |s: &crate::publish::StatusView| {
        s.objects.iter().find(|o| o.name == "shop").and_then(|o| {
            o.view
                .conditions
                .iter()
                .find(|c| c.type_ == "ResolvedRefs")
                .map(|c| (c.status.clone(), c.message.clone()))
        })
    };
    assert!(
        wait_for(&shared, |s| resolved(s).is_some_and(|(status, _)| status == "True")).await,
        "served while valid"
    );
    // Nothing changes in the directory; the expiry is reported once it has passed.
    let mut reported = false;
    for _ in 0..3 {
        reported = wait_for(&shared, |s| {
            resolved(s).is_some_and(|(status, m)| status == "False" && m.contains("expired at"))
        })
        .await;
        if reported {
            break;
        }
    }
    assert!(reported, "expiry not reported: {:?}", resolved(&shared.status.load()));
    assert!(shared.dataplane.current().tls.select(Some("shop.test")).is_some(), "last good kept");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn front_end_kinds_are_indexed_updated_and_removed_like_other_kinds() {
    let dir = TempDir::new("frontends");
    let objects = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
        metadata: {name: weir}\nspec: {controllerName: weir.dev/gateway-controller}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop}\n\
        spec: {hostnames: [shop.test]}\n---\n\
        apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n\
        spec: {ingressClassName: weir}\n";
    dir.write("front.yaml", objects);
    let mut src = DirSource::new(&dir.0, "weir-system");
    let (index, errors) = src.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(index.gateway_classes.contains_key(&ObjectRef::new("", "weir")));
    assert!(index.http_routes.contains_key(&ObjectRef::new("default", "shop")));
    let web = Arc::clone(&index.ingresses[&ObjectRef::new("default", "web")]);
    assert_eq!(web.metadata.generation, Some(1));
    // A changed spec bumps the generation; an unchanged object keeps its `Arc`.
    let shop = Arc::clone(&index.http_routes[&ObjectRef::new("default", "shop")]);
    dir.write("front.yaml", &objects.replace("shop.test", "shop.example"));
    let index = src.load().0;
    let changed = &index.http_routes[&ObjectRef::new("default", "shop")];
    assert_eq!(changed.metadata.generation, Some(2));
    assert!(!Arc::ptr_eq(&shop, changed));
    assert!(Arc::ptr_eq(&web, &index.ingresses[&ObjectRef::new("default", "web")]));
    std::fs::remove_file(dir.0.join("front.yaml")).unwrap();
    let index = src.load().0;
    assert!(index.gateway_classes.is_empty() && index.http_routes.is_empty());
    assert!(index.ingresses.is_empty());
}
