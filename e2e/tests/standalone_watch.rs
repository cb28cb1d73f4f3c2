//! e2e: how the real `weir` binary in standalone mode notices changes to its config
//! directory: a file written in place (closed after writing), a file renamed into place
//! from elsewhere, a Kubernetes ConfigMap mount (files are symlinks into `..data/`, updated
//! by swapping the `..data` symlink), a deleted file, and a file turning invalid and back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, poll_until, prefix_route_yaml, service_yaml};

/// How long a reload may take before a test gives up.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// Polls until `GET path` answers `status` (and, for 200, is served by `backend`).
async fn wait_for(weir: &WeirProcess, path: &str, status: u16, backend: &str) {
    poll_until(RELOAD_LIMIT, &format!("{path} -> {status} {backend}"), || async {
        let reply = weir.get("localhost", path).await?;
        let ok = reply.status == status && (status != 200 || reply.json()?["backend"] == backend);
        Ok(ok.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
}

/// The number of load errors in `/debug/status` naming a file that ends with `name`.
async fn errors_for(weir: &WeirProcess, name: &str) -> usize {
    let status = weir.status().await.unwrap();
    status["errors"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["file"].as_str().is_some_and(|f| f.ends_with(name))).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_writes_renames_deletions_and_a_file_turning_invalid_and_back() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let users = EchoOrigin::start("users").await.unwrap();
    let dir = ConfigDir::new("watch").unwrap();
    let services =
        service_yaml("orders", orders.addr.port()) + &service_yaml("users", users.addr.port());
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, prefix_route_yaml("a", "/a", "orders")).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    wait_for(&weir, "/a", 200, "orders").await;

    // Written in place (truncate, write, close): live once closed.
    std::fs::write(&routes, prefix_route_yaml("a", "/a", "users")).unwrap();
    wait_for(&weir, "/a", 200, "users").await;

    // Written elsewhere, then renamed over the file (as bench/bench.py and editors do).
    let stage = ConfigDir::new("watch-stage").unwrap();
    let staged = stage.path().join("next.yaml");
    let two = prefix_route_yaml("a", "/a", "orders") + &prefix_route_yaml("b", "/b", "users");
    std::fs::write(&staged, two).unwrap();
    std::fs::rename(&staged, &routes).unwrap();
    wait_for(&weir, "/b", 200, "users").await;
    wait_for(&weir, "/a", 200, "orders").await;

    // A new file renamed in, in a new subdirectory.
    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(&staged, prefix_route_yaml("c", "/c", "orders")).unwrap();
    std::fs::rename(&staged, dir.path().join("more/c.yaml")).unwrap();
    wait_for(&weir, "/c", 200, "orders").await;

    // Invalid: reported, and the last good contents keep serving.
    std::fs::write(&routes, "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: [oops\n")
        .unwrap();
    poll_until(RELOAD_LIMIT, "routes.yaml error", || async {
        Ok((errors_for(&weir, "routes.yaml").await == 1).then_some(()))
    })
    .await
    .unwrap();
    wait_for(&weir, "/b", 200, "users").await;
    // And back: the error clears and the new contents serve.
    std::fs::write(&routes, prefix_route_yaml("a", "/a", "users")).unwrap();
    wait_for(&weir, "/b", 404, "").await;
    wait_for(&weir, "/a", 200, "users").await;
    assert_eq!(errors_for(&weir, "routes.yaml").await, 0);

    // Deleted: its Routes go; a deleted directory takes its files' Routes with it.
    std::fs::remove_file(&routes).unwrap();
    wait_for(&weir, "/a", 404, "").await;
    std::fs::remove_dir_all(dir.path().join("more")).unwrap();
    wait_for(&weir, "/c", 404, "").await;
}

/// Writes a ConfigMap revision directory `..<rev>` holding `files`.
fn configmap_revision(root: &Path, rev: &str, files: &[(&str, String)]) {
    let dir = root.join(format!("..{rev}"));
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_mount_updated_by_a_data_symlink_swap() {
    use std::os::unix::fs::symlink;

    let orders = EchoOrigin::start("orders").await.unwrap();
    let users = EchoOrigin::start("users").await.unwrap();
    let dir = ConfigDir::new("configmap").unwrap();
    let root = dir.path();
    let services =
        service_yaml("orders", orders.addr.port()) + &service_yaml("users", users.addr.port());
    // The kubelet's layout: `..<timestamp>/` holds the files, `..data` links to it, and
    // each key is a symlink through `..data`.
    configmap_revision(
        root,
        "2026_01",
        &[
            ("services.yaml", services.clone()),
            ("routes.yaml", prefix_route_yaml("a", "/a", "orders")),
        ],
    );
    symlink("..2026_01", root.join("..data")).unwrap();
    symlink("..data/services.yaml", root.join("services.yaml")).unwrap();
    symlink("..data/routes.yaml", root.join("routes.yaml")).unwrap();
    let weir = WeirProcess::start(root).await.unwrap();
    wait_for(&weir, "/a", 200, "orders").await;

    // An update: a new revision, a new `..data_tmp` link renamed over `..data`, the old
    // revision removed. No event names routes.yaml.
    for (i, backend) in ["users", "orders", "users"].into_iter().enumerate() {
        let rev = format!("2026_0{}", i + 2);
        let routes = prefix_route_yaml("a", "/a", backend)
            + &prefix_route_yaml("next", &format!("/n{i}"), backend);
        configmap_revision(
            root,
            &rev,
            &[("services.yaml", services.clone()), ("routes.yaml", routes)],
        );
        symlink(format!("..{rev}"), root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join(format!("..2026_0{}", i + 1))).unwrap();
        wait_for(&weir, &format!("/n{i}"), 200, backend).await;
        wait_for(&weir, "/a", 200, backend).await;
    }
}
