//! The e2e helpers themselves: the echo origin answers with the JSON the tests and the
//! README rely on, and the config directory writes and removes files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use weir_e2e::{ConfigDir, EchoOrigin, http_request};

#[tokio::test]
async fn echo_origin_describes_the_request() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let reply =
        http_request(origin.addr, "POST", "api.test", "/a/b?c=1&d=2", &[("x-canary", "true")])
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json().unwrap();
    assert_eq!(body["backend"], "orders-v1");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/a/b?c=1&d=2");
    assert_eq!(body["host"], "api.test");
    assert_eq!(body["headers"]["x-canary"], "true");
}

#[tokio::test]
async fn echo_origin_stops_when_dropped() {
    let origin = EchoOrigin::start("gone").await.unwrap();
    let addr = origin.addr;
    drop(origin);
    let mut refused = false;
    for _ in 0..100 {
        if http_request(addr, "GET", "x", "/", &[]).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "origin still answers after drop");
}

#[test]
fn config_dir_writes_and_cleans_up() {
    let dir = ConfigDir::new("helpers").unwrap();
    let path = dir.write("a.yaml", "x: 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "x: 1\n");
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["a.yaml"], "no temporary file left behind");
    let root = dir.path().to_path_buf();
    drop(dir);
    assert!(!root.exists());
}
