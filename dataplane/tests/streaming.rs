//! Bodies stream through the gateway in both directions, h2c clients are served, and a
//! shutdown drains in-flight requests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Channel, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_dataplane::Backend;

fn echo_snapshot(origin: &Origin) -> weir_dataplane::Snapshot {
    snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("svc"), vec![origin.addr])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_is_echoed() {
    let origin = Origin::start("o").await;
    let gw = Gateway::start(echo_snapshot(&origin)).await;
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let request = Request::post(gw.url("/echo-body"))
        .header("host", "h")
        .body(full(payload.clone()))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-origin"], "o");
    assert_eq!(answer.body.len(), payload.len());
    assert!(answer.body == payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_without_buffering() {
    // Each chunk must come back before the next one is sent: a gateway that buffered the
    // request or the response would never answer, and the test would time out.
    let origin = Origin::start("o").await;
    let gw = Gateway::start(echo_snapshot(&origin)).await;
    let (mut tx, body) = Channel::<Bytes, std::convert::Infallible>::new(1);
    let request =
        Request::post(gw.url("/echo-body")).header("host", "h").body(body.boxed()).unwrap();
    let client = client();
    let response = tokio::spawn(async move { client.request(request).await });
    tx.send_data(Bytes::from_static(b"chunk-0")).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no response headers while the request body is still open")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    for i in 0..5 {
        let mut got = Vec::new();
        let expected = format!("chunk-{i}");
        while got.len() < expected.len() {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("chunk did not come back: the gateway buffers")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(got, expected.as_bytes());
        if i < 4 {
            tx.send_data(Bytes::from(format!("chunk-{}", i + 1))).await.unwrap();
        }
    }
    drop(tx);
    let rest =
        tokio::time::timeout(Duration::from_secs(10), body.collect()).await.unwrap().unwrap();
    assert!(rest.to_bytes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let snap = snapshot(
        1,
        vec![
            route("any", &[], vec![rule("any", "/", action(&[(0, 1)]))]),
            route("h2", &["h2.test"], vec![rule("h2", "/", action(&[(1, 1)]))]),
        ],
        vec![Backend::new(key("a"), vec![a.addr]), Backend::new(key("b"), vec![b.addr])],
    );
    let gw = Gateway::start(snap).await;
    let h2: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    for _ in 0..3 {
        let request = Request::get(gw.url("/p?x=1"))
            .version(http::Version::HTTP_2)
            .header("host", "ignored")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = h2.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["name"], "a");
        assert_eq!(json["path"], "/p?x=1");
        assert_eq!(json["headers"]["x-forwarded-host"], gw.addr.to_string());
    }
    // Host routing uses `:authority` for HTTP/2.
    let io = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    let conn_task = tokio::spawn(conn);
    let request = Request::get("http://h2.test/x").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["name"], "b");
    assert_eq!(json["headers"]["host"], "h2.test");
    conn_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let origin = Origin::start("o").await;
    let mut gw = Gateway::start(echo_snapshot(&origin)).await;
    let client = client();
    let url = gw.url("/?sleep_ms=300");
    let in_flight = tokio::spawn(async move { get(&client, &url, "h").await });
    // Wait (bounded) until the origin has the request, then shut the gateway down.
    for _ in 0..500 {
        if origin.requests.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1);
    let server = gw.begin_shutdown();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    // The listener is closed: new connections are refused.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}
