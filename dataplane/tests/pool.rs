//! The upstream connection pool against a real origin that counts accepted TCP
//! connections: keep-alive reuse, and no reuse of a connection still streaming a response.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_dataplane::Backend;

type Body = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// An origin counting accepted connections. `/hold` answers `start`, then waits for the
/// test to finish its body through `held`; anything else answers with its request target
/// and whether it was origin-form.
struct CountingOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Option<Sender<Bytes, Infallible>>>>,
    task: JoinHandle<()>,
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    held: Arc<Mutex<Option<Sender<Bytes, Infallible>>>>,
) -> Response<Body> {
    if request.uri().path() == "/hold" {
        let (mut tx, body) = Channel::new(4);
        tx.send_data(Bytes::from_static(b"start")).await.unwrap();
        *held.lock().unwrap() = Some(tx);
        return Response::new(Either::Right(body));
    }
    let text = format!(
        "{} origin-form={} host={}",
        request.uri(),
        request.uri().authority().is_none(),
        request.headers().get("host").map_or("", |h| h.to_str().unwrap()),
    );
    Response::new(Either::Left(Full::new(Bytes::from(text))))
}

impl CountingOrigin {
    async fn start() -> CountingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(None));
        let (count, hold) = (Arc::clone(&accepted), Arc::clone(&held));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let hold = Arc::clone(&hold);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let hold = Arc::clone(&hold);
                        async move { Ok::<_, Infallible>(answer(request, hold).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingOrigin { addr, accepted, held, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn gateway_to(origin: &CountingOrigin) -> Gateway {
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    );
    Gateway::start(snap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let origin = CountingOrigin::start().await;
    let gw = gateway_to(&origin).await;
    let client = client();
    for i in 0..50 {
        let answer = get(&client, &gw.url(&format!("/n/{i}?q=1")), "shop.test").await;
        assert_eq!(answer.status, 200);
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        assert_eq!(text, format!("/n/{i}?q=1 origin-form=true host=shop.test"));
    }
    assert_eq!(origin.accepted(), 1, "50 sequential requests should share one connection");
    assert_eq!(gw.dataplane.upstream.pool().idle_count(origin.addr), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_streaming_a_response_is_not_reused() {
    let origin = CountingOrigin::start().await;
    let gw = gateway_to(&origin).await;
    let client = client();
    let pool = gw.dataplane.upstream.pool();

    // A response whose body is still open upstream.
    let request = Request::get(gw.url("/hold")).header("host", "h.test").body(empty()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut held_body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(20), held_body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "start");
    assert_eq!(origin.accepted(), 1);
    assert_eq!(pool.idle_count(origin.addr), 0, "a busy connection must not be idle");

    // Meanwhile, other requests need (and then share) a second connection.
    for _ in 0..3 {
        let answer = get(&client, &gw.url("/quick"), "h.test").await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(origin.accepted(), 2);
    assert_eq!(pool.idle_count(origin.addr), 1);

    // Finishing the held body returns its connection too.
    let mut tx = origin.held.lock().unwrap().take().unwrap();
    tx.send_data(Bytes::from_static(b"-end")).await.unwrap();
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(20), held_body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "-end");
    assert_eq!(pool.idle_count(origin.addr), 2);
    for _ in 0..3 {
        assert_eq!(get(&client, &gw.url("/quick"), "h.test").await.status, 200);
    }
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_dropped_early_closes_its_connection() {
    let origin = CountingOrigin::start().await;
    let gw = gateway_to(&origin).await;
    let client = client();
    let request = Request::get(gw.url("/hold")).header("host", "h.test").body(empty()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let _ = tokio::time::timeout(Duration::from_secs(20), body.frame()).await.unwrap();
    // The client gives up on the response; the gateway drops the upstream body.
    drop(body);
    drop(client);
    let client = common::client();
    assert_eq!(get(&client, &gw.url("/quick"), "h.test").await.status, 200);
    assert_eq!(origin.accepted(), 2, "a half-read connection is never reused");
}
