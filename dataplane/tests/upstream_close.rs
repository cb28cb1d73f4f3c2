//! Upstream connections that the upstream closes, against a raw TCP origin: closes while
//! idle, `Connection: close` and a close in the middle of a body must never leave a dirty or
//! dead connection in the pool, nor end a truncated body cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_dataplane::Backend;

/// What the raw origin does after reading one request head.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers `ok` with keep-alive, then closes the connection (no `Connection: close`),
    /// and reports the close.
    AnswerThenClose,
    /// Answers `ok` with `Connection: close` and closes.
    ConnectionClose,
    /// Promises 100 bytes, sends 10 and closes.
    CloseMidBody,
}

/// A raw TCP origin serving one request per connection in `mode`, counting connections.
struct RawOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        assert!(head.len() < 64 * 1024, "request head too large");
    }
    true
}

impl RawOrigin {
    async fn start(mode: Mode) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    if !read_head(&mut stream).await {
                        return;
                    }
                    let answer: &[u8] = match mode {
                        Mode::AnswerThenClose => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                        Mode::ConnectionClose => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        }
                        Mode::CloseMidBody => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789"
                        }
                    };
                    let _ = stream.write_all(answer).await;
                    let _ = stream.flush().await;
                    drop(stream);
                    let _ = closed_tx.send(());
                });
            }
        });
        RawOrigin { addr, accepted, closed, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn wait_closed(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.closed.recv()).await.unwrap().unwrap();
    }
}

async fn gateway_to(origin: &RawOrigin) -> Gateway {
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    );
    Gateway::start(snap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_by_the_upstream_is_not_reused() {
    let mut origin = RawOrigin::start(Mode::AnswerThenClose).await;
    let gw = gateway_to(&origin).await;
    let client = client();
    for i in 1..=5 {
        let answer = get(&client, &gw.url("/x"), "h.test").await;
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(answer.body, "ok");
        origin.wait_closed().await;
        // The close reaches the gateway's reactor asynchronously; nothing observable tells
        // when, so give it a moment (a request in that window would be a lost race with
        // the upstream, as with any keep-alive client).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.accepted(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_answers_are_not_pooled() {
    let mut origin = RawOrigin::start(Mode::ConnectionClose).await;
    let gw = gateway_to(&origin).await;
    let client = client();
    for i in 1..=3 {
        let answer = get(&client, &gw.url("/x"), "h.test").await;
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(answer.body, "ok");
        origin.wait_closed().await;
        assert_eq!(gw.dataplane.upstream.pool().idle_count(origin.addr), 0);
    }
    assert_eq!(origin.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_mid_body_fails_the_client_response() {
    let origin = RawOrigin::start(Mode::CloseMidBody).await;
    let gw = gateway_to(&origin).await;
    let client = client();
    for _ in 0..2 {
        let request = Request::get(gw.url("/x")).header("host", "h.test").body(empty()).unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(20), client.request(request)).await.unwrap();
        // The head may or may not have left before the error; either way the client must
        // not see a clean end of a truncated body.
        if let Ok(response) = response {
            assert_eq!(response.status(), 200);
            let collected =
                tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
                    .await
                    .unwrap();
            assert!(collected.is_err(), "a truncated body ended cleanly");
        }
        assert_eq!(gw.dataplane.upstream.pool().idle_count(origin.addr), 0);
    }
    assert_eq!(origin.accepted(), 2);
}
