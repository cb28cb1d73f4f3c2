//! Tests of the directory source and the watcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use weir_dataplane::DataPlane;

use super::*;
use crate::runtime::Shared;

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
    assert_eq!(generation(&index, "a"), Some(1));
    let created = index.routes.values().next().unwrap().metadata.creation_timestamp.clone();
    assert!(created.is_some());

    dir.write("a.yaml", &format!("# a comment\n{}", route("a", "/a")));
    assert_eq!(generation(&src.load().0, "a"), Some(1));
    dir.write("a.yaml", &route("a", "/b"));
    let (index, _) = src.load();
    assert_eq!(generation(&index, "a"), Some(2));
    assert_eq!(index.routes.values().next().unwrap().metadata.creation_timestamp, created);
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
    let names: Vec<&str> = index.routes.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file.ends_with("a.yaml"));
    assert_eq!(errors[0].document, 1);

    // A file that never parsed contributes nothing; deleting a file removes its objects.
    dir.write("d.yaml", "kind: [broken\n");
    std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
    let (index, errors) = src.load();
    let names: Vec<&str> = index.routes.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["a"]);
    assert_eq!(errors.len(), 2);

    dir.write("a.yaml", &route("a", "/a"));
    std::fs::remove_file(dir.0.join("d.yaml")).unwrap();
    let (_, errors) = src.load();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Waits (bounded) until the status view satisfies `f`.
async fn wait_for(shared: &Shared, f: impl Fn(&crate::runtime::StatusView) -> bool) -> bool {
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
