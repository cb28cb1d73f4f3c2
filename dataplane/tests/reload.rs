//! Publishing snapshots under concurrent keep-alive load fails no request and closes no
//! client connection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use weir_dataplane::{Backend, Snapshot};

const WORKERS: usize = 8;
/// Each worker sends at least this many requests, and keeps going while reloads happen.
const MIN_REQUESTS_PER_WORKER: usize = 100;
/// Hard bound on each worker's loop.
const MAX_REQUESTS_PER_WORKER: usize = 20_000;
const RELOADS: u64 = 100;

fn generation(version: u64, a: &Origin, b: &Origin) -> Snapshot {
    // Alternate which origin serves `/`, and rebuild every part of the snapshot.
    let (first, second) = if version.is_multiple_of(2) { (0, 1) } else { (1, 0) };
    snapshot(
        version,
        vec![
            route("main", &[], vec![rule("main", "/", action(&[(first, 1)]))]),
            route("other", &["other.test"], vec![rule("other", "/", action(&[(second, 1)]))]),
        ],
        vec![Backend::new(key("a"), vec![a.addr]), Backend::new(key("b"), vec![b.addr])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_fails_nothing_and_keeps_connections() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gateway::start(generation(0, &a, &b)).await;
    let publishing = Arc::new(AtomicBool::new(true));
    let completed = Arc::new(AtomicUsize::new(0));

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let addr = gw.addr;
        let publishing = Arc::clone(&publishing);
        let completed = Arc::clone(&completed);
        workers.push(tokio::spawn(async move {
            // One persistent HTTP/1.1 connection per worker: if the gateway closed it, the
            // next request would fail.
            let io = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
            let conn_task = tokio::spawn(conn);
            let mut sent = 0usize;
            for i in 0..MAX_REQUESTS_PER_WORKER {
                if i >= MIN_REQUESTS_PER_WORKER && !publishing.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::timeout(Duration::from_secs(10), sender.ready())
                    .await
                    .unwrap_or_else(|_| panic!("worker {w}: not ready at {i}"))
                    .unwrap_or_else(|e| panic!("worker {w}: connection closed at {i}: {e}"));
                let request = Request::get(format!("/r/{w}/{i}"))
                    .header("host", "gw.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response =
                    tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
                        .await
                        .unwrap_or_else(|_| panic!("worker {w}: request {i} timed out"))
                        .unwrap_or_else(|e| panic!("worker {w}: request {i} failed: {e}"));
                assert_eq!(response.status(), 200, "worker {w} request {i}");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(json["name"] == "a" || json["name"] == "b", "{json}");
                completed.fetch_add(1, Ordering::SeqCst);
                sent += 1;
            }
            assert!(!sender.is_closed(), "worker {w}: connection closed");
            conn_task.abort();
            sent
        }));
    }

    // Interleave: before each reload, wait (bounded) until more requests have completed,
    // so requests run between every pair of reloads.
    let mut last = 0;
    for version in 1..=RELOADS {
        for _ in 0..5_000 {
            if completed.load(Ordering::SeqCst) > last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let now = completed.load(Ordering::SeqCst);
        assert!(now > last, "no request completed before reload {version}");
        last = now;
        gw.dataplane.publish(generation(version, &a, &b));
    }
    publishing.store(false, Ordering::SeqCst);
    assert_eq!(gw.dataplane.current().version, RELOADS);

    let mut sent = 0;
    for worker in workers {
        sent += tokio::time::timeout(Duration::from_secs(120), worker).await.unwrap().unwrap();
    }
    assert!(sent >= WORKERS * MIN_REQUESTS_PER_WORKER);
    let total = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    assert_eq!(total, sent, "every request reached an origin exactly once");
}
