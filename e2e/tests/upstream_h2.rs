//! e2e: the real `weir` binary in front of an HTTP/2 (h2c) origin that refuses requests the
//! way real servers do (`weir_e2e::raw_h2`): a GOAWAY below streams in flight (nginx at
//! `keepalive_requests`), `REFUSED_STREAM`, a connection closed under a request. A request
//! the upstream did not process goes out again, body included, on a new connection; one it
//! may have processed is not sent twice unless it is idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_e2e::raw_h2::{RawH2Origin, Script, Seen};
use weir_e2e::{ConfigDir, Reply, WeirProcess, app_service_yaml};

const WAIT: Duration = Duration::from_secs(20);

/// weir with one Route `/` to an h2c Service (`appProtocol: kubernetes.io/h2c`) at `origin`.
async fn weir_in_front_of(origin: &RawH2Origin) -> (ConfigDir, WeirProcess) {
    let port = origin.addr.port();
    let dir = ConfigDir::new("upstream-h2").unwrap();
    let route = r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: grpc}
spec:
  rules:
    - matches: [{path: {value: "/"}}]
      timeouts: {request: 15s}
      backends: [{service: grpc, port: 80}]
"#;
    let services = app_service_yaml("grpc", port, "kubernetes.io/h2c");
    dir.write("config.yaml", &(services + route)).unwrap();
    // One worker: one pool, so every request shares the origin's first connection.
    let args = [OsString::from("--config-dir"), dir.path().as_os_str().to_owned()];
    let weir = WeirProcess::start_with_env(&args, &[("WEIR_WORKER_THREADS", "1")]).await.unwrap();
    (dir, weir)
}

/// `method path` with `body` to weir over a new HTTP/1.1 connection.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &'static str) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "grpc.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let exchange = async {
        let (parts, body) = client.request(request).await.unwrap().into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply { status: parts.status.as_u16(), headers: parts.headers, body }
    };
    tokio::time::timeout(WAIT, exchange).await.expect("request hung")
}

/// The bodies the origin answered, sorted.
fn answered(origin: &RawH2Origin) -> Vec<String> {
    let mut bodies: Vec<String> = origin
        .seen()
        .into_iter()
        .filter(|s| s.answered)
        .map(|s| format!("c{} {}", s.connection, String::from_utf8_lossy(&s.body)))
        .collect();
    bodies.sort();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_above_a_goaways_last_stream_go_out_again_with_their_bodies() {
    // The first connection takes three requests, then says GOAWAY with the first as its
    // last stream: the other two were not processed. The second connection takes those
    // two and does the same: the last one goes out a third time.
    let scripts = vec![Script::GoAwayAfter(3), Script::GoAwayAfter(2)];
    let origin = RawH2Origin::start(scripts).await.unwrap();
    let (_dir, weir) = weir_in_front_of(&origin).await;
    let addr = weir.http_addr;
    let replies = futures_util::future::join_all(
        ["one", "two", "three"].map(|body| send(addr, "POST", "/shop.Orders/Create", body)),
    )
    .await;
    for (reply, body) in replies.iter().zip(["one", "two", "three"]) {
        assert_eq!(reply.status, 200, "{body}: {}\n{}", reply.text(), weir.log());
        // Each answer carries its own request's body: the copy sent again is the right one.
        let text = reply.text();
        assert!(text.ends_with(&format!(" {body}")), "{body} answered {text:?}");
    }
    let mut connections: Vec<String> =
        replies.iter().map(|r| r.text().split(' ').next().unwrap().to_owned()).collect();
    connections.sort();
    assert_eq!(connections, ["c1", "c2", "c3"], "{:?}", origin.seen());
    // Every request processed exactly once; the refused ones were seen again each time.
    assert_eq!(answered(&origin).len(), 3, "{:?}", origin.seen());
    assert_eq!(origin.seen().len(), 3 + 2 + 1, "{:?}", origin.seen());

    // The retired connections are not used again: the next request goes to the third one.
    let reply = send(addr, "GET", "/shop.Orders/Get", "").await;
    assert_eq!((reply.status, reply.text()), (200, "c3 ".to_owned()));
    assert_eq!(origin.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_goes_out_again() {
    let origin = RawH2Origin::start(vec![Script::RefuseFirst]).await.unwrap();
    let (_dir, weir) = weir_in_front_of(&origin).await;
    let reply = send(weir.http_addr, "POST", "/shop.Orders/Create", "one").await;
    assert_eq!((reply.status, reply.text()), (200, "c1 one".to_owned()), "{}", weir.log());
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen[0].answered && seen[1].answered, "{seen:?}");
    // REFUSED_STREAM is about the stream, not the connection: it is kept.
    assert_eq!(origin.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_stream_slot_when_the_connection_goes_away_goes_out_again() {
    // One stream at a time: the second request waits in weir for a slot when the upstream
    // says GOAWAY; it was never sent, and goes out on a new connection (a POST too).
    let origin = RawH2Origin::start(vec![Script::OneStreamThenGoAway]).await.unwrap();
    let (_dir, weir) = weir_in_front_of(&origin).await;
    let addr = weir.http_addr;
    let first = tokio::spawn(send(addr, "POST", "/shop.Orders/Create", "one"));
    weir_e2e::poll_until(WAIT, "the first request at the origin", || async {
        Ok((!origin.seen().is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let second = send(addr, "POST", "/shop.Orders/Create", "two").await;
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text()), (200, "c1 one".to_owned()), "{}", weir.log());
    assert_eq!((second.status, second.text()), (200, "c2 two".to_owned()), "{}", weir.log());
    assert_eq!(origin.seen().len(), 2, "{:?}", origin.seen());
}

/// A request on a connection the upstream closes under it without a word: whether it goes
/// out again depends on its method (nothing tells it was not processed).
async fn closed_under(method: &str) -> (Reply, Vec<Seen>, String) {
    // The first request makes the connection; the second finds it closed under it.
    let origin = RawH2Origin::start(vec![Script::CloseAtSecond]).await.unwrap();
    let (_dir, weir) = weir_in_front_of(&origin).await;
    let first = send(weir.http_addr, "GET", "/first", "").await;
    assert_eq!((first.status, first.text()), (200, "c1 ".to_owned()), "{}", weir.log());
    let second = send(weir.http_addr, method, "/second", "second").await;
    (second, origin.seen(), weir.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_goes_out_again_when_the_connection_closes_under_it() {
    let (reply, seen, log) = closed_under("PUT").await;
    assert_eq!((reply.status, reply.text()), (200, "c2 second".to_owned()), "{log}");
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_sent_twice_when_the_connection_closes_under_it() {
    let (reply, seen, log) = closed_under("POST").await;
    assert_eq!(reply.status, 502, "{}\n{log}", reply.text());
    assert_eq!(seen.len(), 2, "{seen:?}");
}
