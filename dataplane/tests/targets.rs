//! Request-target handling: dot segments, CONNECT, absolute-form, sent as raw bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_dataplane::Backend;

/// Sends raw request bytes on a new connection and returns the raw response head and body.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut out));
    read.await.expect("the gateway closed the connection").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_removed_before_routing_and_forwarding() {
    let public = Origin::start("public").await;
    let admin = Origin::start("admin").await;
    let snap = snapshot(
        1,
        vec![route(
            "r",
            &[],
            vec![
                rule("public", "/public", action(&[(0, 1)])),
                rule("admin", "/admin", action(&[(1, 1)])),
            ],
        )],
        vec![
            Backend::new(key("public"), vec![public.addr]),
            Backend::new(key("admin"), vec![admin.addr]),
        ],
    );
    let gw = Gateway::start(snap).await;
    for target in
        ["/public/../admin/x?q=1", "/public/%2e%2e/admin/x?q=1", "/public/./../admin/x?q=1"]
    {
        let answer =
            raw(gw.addr, &format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
                .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        assert!(answer.contains(r#""path":"/admin/x?q=1""#), "{target}: {answer}");
    }
    assert_eq!(public.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_authority_form_are_refused_absolute_form_routes_by_its_authority() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let snap = snapshot(
        1,
        vec![
            route("ra", &["api.example.com"], vec![rule("ra", "/", action(&[(0, 1)]))]),
            route("rb", &[], vec![rule("rb", "/", action(&[(1, 1)]))]),
        ],
        vec![Backend::new(key("a"), vec![a.addr]), Backend::new(key("b"), vec![b.addr])],
    );
    let gw = Gateway::start(snap).await;
    let answer = raw(
        gw.addr,
        "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains(r#""status":405"#), "{answer}");

    let answer = raw(
        gw.addr,
        "GET http://api.example.com/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(b.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "{answer}");
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), 1, "{answer}");

    // HTTP/1.1 without Host is a 400 (RFC 9112 §3.2); HTTP/1.0 without Host is served.
    let answer = raw(gw.addr, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(gw.addr, "GET /x HTTP/1.0\r\n\r\n").await;
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(!answer.contains("x-forwarded-host"), "{answer}");
}
