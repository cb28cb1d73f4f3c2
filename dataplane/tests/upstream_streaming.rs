//! A request stays in flight until its response body ends, not only until its response
//! headers: `maxParallelRequests` counts a response that is still streaming, and so does
//! the endpoint's in-flight count that LeastRequest compares (`/debug/backends`'s
//! `inFlight`). Against a real origin on 127.0.0.1 whose `/hold` response sends its headers
//! and a first chunk, then waits for the test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod upstream_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, client, get};
use http::{Request, Response};
use http_body_util::channel::Sender;
use http_body_util::{BodyExt as _, Channel, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use upstream_support::{HOST, breaker};
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::{Backend, Snapshot};

type Held = Arc<Mutex<Option<Sender<Bytes, Infallible>>>>;
type Body = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// An origin whose `/hold` answer streams until the test drops the held sender.
async fn streaming_origin() -> (SocketAddr, Held) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Held = Arc::default();
    let shared = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let held = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let held = Arc::clone(&held);
                    async move {
                        let body: Body = if request.uri().path() == "/hold" {
                            let (mut tx, body) = Channel::new(4);
                            tx.send_data(Bytes::from_static(b"start")).await.unwrap();
                            *held.lock().unwrap() = Some(tx);
                            Either::Right(body)
                        } else {
                            Either::Left(Full::new(Bytes::from_static(b"ok")))
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, held)
}

fn snapshot(addr: SocketAddr) -> Snapshot {
    let mut config = breaker(1000, Duration::from_secs(10), 1);
    config.max_parallel_requests = Some(1);
    let policy = BackendPolicy { breaker: Some(config), ..BackendPolicy::default() };
    let backend = Backend::new(common::key("svc"), vec![addr]).with_policy(Arc::new(policy));
    common::snapshot(
        1,
        vec![common::route("r", &[HOST], vec![common::rule("r", "/", common::action(&[(0, 1)]))])],
        vec![backend],
    )
}

fn in_flight(gateway: &Gateway) -> u64 {
    let described = gateway.dataplane.registry.describe();
    described["backends"][0]["endpoints"][0]["inFlight"].as_u64().unwrap()
}

#[tokio::test]
async fn a_streaming_response_holds_its_parallel_slot_and_in_flight_count_until_it_ends() {
    let (addr, held) = streaming_origin().await;
    let gateway = Gateway::start(snapshot(addr)).await;
    let client = client();

    // Headers and a first chunk arrive; the body is still open.
    let request =
        Request::get(gateway.url("/hold")).header("host", HOST).body(common::empty()).unwrap();
    let mut streaming = client.request(request).await.unwrap();
    assert_eq!(streaming.status(), 200);
    let first = streaming.body_mut().frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "start");
    assert_eq!(in_flight(&gateway), 1, "{}", gateway.dataplane.registry.describe());

    // The only parallel slot is taken by the streaming response: the fallback, at once.
    let refused = get(&client, &gateway.url("/other"), HOST).await;
    assert_eq!(refused.status.as_u16(), 503, "{:?}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.body, upstream_support::FALLBACK_BODY.as_bytes());

    // The body ends: the slot and the count are given back.
    drop(held.lock().unwrap().take());
    let rest = streaming.into_body().collect().await.unwrap().to_bytes();
    assert!(rest.is_empty(), "{rest:?}");
    upstream_support::eventually(Duration::from_secs(5), "in-flight back to 0", || {
        in_flight(&gateway) == 0
    })
    .await;
    let served = get(&client, &gateway.url("/other"), HOST).await;
    assert_eq!(served.status.as_u16(), 200, "{:?}", String::from_utf8_lossy(&served.body));
    assert_eq!(served.body, "ok".as_bytes());
}

#[tokio::test]
async fn a_response_dropped_by_the_client_gives_its_slot_back() {
    let (addr, held) = streaming_origin().await;
    let gateway = Gateway::start(snapshot(addr)).await;
    let client = client();
    let request =
        Request::get(gateway.url("/hold")).header("host", HOST).body(common::empty()).unwrap();
    let streaming = client.request(request).await.unwrap();
    assert_eq!(streaming.status(), 200);
    assert_eq!(in_flight(&gateway), 1);
    // The client goes away mid-body.
    drop(streaming);
    upstream_support::eventually(Duration::from_secs(5), "in-flight back to 0", || {
        in_flight(&gateway) == 0
    })
    .await;
    drop(held);
    let served = get(&client, &gateway.url("/other"), HOST).await;
    assert_eq!(served.status.as_u16(), 200, "{:?}", String::from_utf8_lossy(&served.body));
}
