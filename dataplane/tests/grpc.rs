//! gRPC through the gateway to an h2c origin: a real tonic client (HTTP/2 prior knowledge
//! to the plain listener) and a tonic service served by hyper's HTTP/2 server, with the
//! generic `tonic::server::Grpc` / `tonic::client::Grpc` and a hand-written prost message
//! (no protoc). Unary and server-streaming calls, statuses and trailers both ways, the
//! gateway's own gRPC answers, `grpc-timeout`, and one multiplexed upstream connection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::Stream;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use weir_dataplane::{Backend, Snapshot, Timeouts, UpstreamProtocol};

/// Bounds every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

/// The one message of the test service.
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
    /// Server streaming: how many messages.
    #[prost(uint32, tag = "2")]
    count: u32,
    /// Server streaming: pause before each message.
    #[prost(uint32, tag = "3")]
    delay_ms: u32,
}

type OriginBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type EchoStream = Pin<Box<dyn Stream<Item = Result<Echo, Status>> + Send>>;

/// Unary methods of the origin: `Unary` echoes, `Deny` fails with PERMISSION_DENIED,
/// `Slow` answers after 3 s.
#[derive(Clone)]
struct UnaryEcho(&'static str);

impl tonic::server::UnaryService<Echo> for UnaryEcho {
    type Response = Echo;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Echo>, Status>> + Send + 'static>>;

    fn call(&mut self, request: tonic::Request<Echo>) -> Self::Future {
        let method = self.0;
        Box::pin(async move {
            let seen_deadline = request.metadata().get("grpc-timeout").is_some();
            let message = request.into_inner();
            match method {
                "Deny" => Err(Status::permission_denied("no entry for you – ü")),
                "Slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok(tonic::Response::new(message))
                }
                _ => {
                    let mut response = tonic::Response::new(Echo {
                        text: format!("echo: {}", message.text),
                        ..message
                    });
                    response.metadata_mut().insert("x-origin", "h2c".parse().unwrap());
                    if seen_deadline {
                        response.metadata_mut().insert("x-saw-deadline", "1".parse().unwrap());
                    }
                    Ok(response)
                }
            }
        })
    }
}

/// Server-streaming methods: `Stream` sends `count` messages `delay_ms` apart;
/// `StreamThenDeny` sends two, then ends with PERMISSION_DENIED (in the trailers).
#[derive(Clone)]
struct StreamEcho(&'static str);

impl tonic::server::ServerStreamingService<Echo> for StreamEcho {
    type Response = Echo;
    type ResponseStream = EchoStream;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<EchoStream>, Status>> + Send + 'static>>;

    fn call(&mut self, request: tonic::Request<Echo>) -> Self::Future {
        let deny = self.0 == "StreamThenDeny";
        let message = request.into_inner();
        Box::pin(async move {
            let count = if deny { 2 } else { message.count };
            let stream = futures_util::stream::unfold(0u32, move |i| {
                let message = message.clone();
                async move {
                    if i > count {
                        return None;
                    }
                    if i == count {
                        if !deny {
                            return None;
                        }
                        let mut status = Status::permission_denied("quota exhausted");
                        status.metadata_mut().insert("x-reason", "quota".parse().unwrap());
                        return Some((Err(status), i + 1));
                    }
                    tokio::time::sleep(Duration::from_millis(u64::from(message.delay_ms))).await;
                    let item = Echo { text: format!("{}-{i}", message.text), ..message };
                    Some((Ok(item), i + 1))
                }
            });
            Ok(tonic::Response::new(Box::pin(stream) as EchoStream))
        })
    }
}

fn boxed_tonic(response: Response<tonic::body::Body>) -> Response<OriginBody> {
    response.map(|b| {
        b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync()
    })
}

/// `/raw/trailers`: reads the request body and its trailers, answers with the body length
/// and the request's trailers plus `x-response-trailer` as response trailers.
async fn raw_trailers(request: Request<Incoming>) -> Response<OriginBody> {
    let collected = request.into_body().collect().await.unwrap();
    let mut trailers = collected.trailers().cloned().unwrap_or_default();
    let len = collected.to_bytes().len();
    trailers.insert("x-response-trailer", HeaderValue::from_static("yes"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("got {len} bytes")))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Response::new(body.map_err(|e| match e {}).boxed_unsync())
}

async fn origin_answer(request: Request<Incoming>) -> Response<OriginBody> {
    let codec = || ProstCodec::<Echo, Echo>::default();
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/test.Echo/Unary" => {
            boxed_tonic(tonic::server::Grpc::new(codec()).unary(UnaryEcho("Unary"), request).await)
        }
        "/test.Echo/Deny" => {
            boxed_tonic(tonic::server::Grpc::new(codec()).unary(UnaryEcho("Deny"), request).await)
        }
        "/test.Echo/Slow" => {
            boxed_tonic(tonic::server::Grpc::new(codec()).unary(UnaryEcho("Slow"), request).await)
        }
        "/test.Echo/Stream" => boxed_tonic(
            tonic::server::Grpc::new(codec()).server_streaming(StreamEcho("Stream"), request).await,
        ),
        "/test.Echo/StreamThenDeny" => boxed_tonic(
            tonic::server::Grpc::new(codec())
                .server_streaming(StreamEcho("StreamThenDeny"), request)
                .await,
        ),
        "/raw/trailers" => raw_trailers(request).await,
        // Headers at once, then silence until the request body has ended.
        "/idle/count" => {
            let (mut tx, body) = http_body_util::Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                let n = request.into_body().collect().await.map_or(0, |c| c.to_bytes().len());
                let _ = tx.send_data(Bytes::from(format!("got {n} bytes"))).await;
            });
            Response::new(body.map_err(|e| match e {}).boxed_unsync())
        }
        _ => {
            let mut response = Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// An h2c (prior knowledge) gRPC origin on 127.0.0.1:0, counting its connections.
struct GrpcOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcOrigin {
    async fn start() -> GrpcOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut served = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                served.spawn(async move {
                    let service = service_fn(|request| async move {
                        Ok::<_, Infallible>(origin_answer(request).await)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcOrigin { addr, connections, task }
    }
}

/// Routes `/test.Echo` and `/raw` (not `/other.Svc`) to the origin, as an h2c backend.
fn grpc_snapshot(origin: &GrpcOrigin, timeouts: Timeouts) -> Snapshot {
    let mut echo = action(&[(0, 1)]);
    echo.timeouts = timeouts.into();
    snapshot(
        1,
        vec![route(
            "grpc",
            &[],
            vec![rule("grpc", "/test.Echo", echo), rule("raw", "/raw", action(&[(0, 1)]))],
        )],
        vec![Backend::new(key("grpc"), vec![origin.addr]).with_protocol(UpstreamProtocol::H2c)],
    )
}

async fn channel(gw: &Gateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr)).unwrap();
    let channel = tokio::time::timeout(WAIT, endpoint.connect()).await.unwrap().unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    tokio::time::timeout(WAIT, grpc.ready()).await.unwrap().unwrap();
    grpc
}

fn echo(text: &str) -> Echo {
    Echo { text: text.to_owned(), count: 0, delay_ms: 0 }
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    request: tonic::Request<Echo>,
) -> Result<tonic::Response<Echo>, Status> {
    tokio::time::timeout(WAIT, async {
        grpc.ready().await.unwrap();
        grpc.unary(request, PathAndQuery::from_static(path), ProstCodec::default()).await
    })
    .await
    .expect("call timed out")
}

/// A raw HTTP/2 (prior knowledge) connection to the gateway.
async fn h2_client(gw: &Gateway) -> hyper::client::conn::http2::SendRequest<OriginBody> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_and_error_status_pass_through() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let mut grpc = channel(&gw).await;

    let response = unary(&mut grpc, "/test.Echo/Unary", tonic::Request::new(echo("hi"))).await;
    let response = response.unwrap();
    assert_eq!(response.metadata().get("x-origin").unwrap(), "h2c");
    assert_eq!(response.into_inner().text, "echo: hi");

    let status =
        unary(&mut grpc, "/test.Echo/Deny", tonic::Request::new(echo("x"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no entry for you – ü");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_with_trailers_is_not_cut_by_the_request_timeout() {
    let origin = GrpcOrigin::start().await;
    // The stream lasts ~6 × 100 ms, longer than `timeouts.request`, which ends at the
    // response headers.
    let timeouts = Timeouts {
        request: Some(Duration::from_millis(300)),
        idle: Some(Duration::from_secs(5)),
        ..Timeouts::default()
    };
    let gw = Gateway::start(grpc_snapshot(&origin, timeouts)).await;
    let mut grpc = channel(&gw).await;
    let request = Echo { text: "tick".into(), count: 6, delay_ms: 100 };
    let call = async {
        grpc.ready().await.unwrap();
        let response = grpc
            .server_streaming(
                tonic::Request::new(request),
                PathAndQuery::from_static("/test.Echo/Stream"),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
            .unwrap();
        let mut stream = response.into_inner();
        let mut got = Vec::new();
        while let Some(message) = stream.message().await.unwrap() {
            got.push(message.text);
        }
        // grpc-status 0 arrived as a trailer: the stream ended cleanly.
        let trailers = stream.trailers().await.unwrap();
        (got, trailers)
    };
    let (got, _trailers) = tokio::time::timeout(WAIT, call).await.unwrap();
    let want: Vec<String> = (0..6).map(|i| format!("tick-{i}")).collect();
    assert_eq!(got, want);

    // An error status after messages travels in the trailers, with its metadata.
    let call = async {
        grpc.ready().await.unwrap();
        let response = grpc
            .server_streaming(
                tonic::Request::new(echo("m")),
                PathAndQuery::from_static("/test.Echo/StreamThenDeny"),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
            .unwrap();
        let mut stream = response.into_inner();
        let mut got = Vec::new();
        let status = loop {
            match stream.message().await {
                Ok(Some(message)) => got.push(message.text),
                Ok(None) => panic!("stream ended without the error status"),
                Err(status) => break status,
            }
        };
        (got, status)
    };
    let (got, status) = tokio::time::timeout(WAIT, call).await.unwrap();
    assert_eq!(got, ["m-0", "m-1"]);
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "quota exhausted");
    assert_eq!(status.metadata().get("x-reason").unwrap(), "quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let mut sender = h2_client(&gw).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-request-trailer", HeaderValue::from_static("sent"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"0123456789"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames)).map_err(|e| match e {});
    let request = Request::post("http://grpc.test/raw/trailers")
        .header("te", "trailers")
        .body(body.boxed_unsync())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let collected =
        tokio::time::timeout(WAIT, response.into_body().collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned().expect("no response trailers");
    assert_eq!(trailers["x-response-trailer"], "yes");
    assert_eq!(trailers["x-request-trailer"], "sent", "request trailers did not reach the origin");
    assert_eq!(collected.to_bytes(), "got 10 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_to_grpc_are_grpc_statuses() {
    let origin = GrpcOrigin::start().await;
    // `/down.Svc` goes to a backend without endpoints.
    let snapshot = snapshot(
        1,
        vec![route(
            "grpc",
            &[],
            vec![
                rule("grpc", "/test.Echo", action(&[(0, 1)])),
                rule("down", "/down.Svc", action(&[(1, 1)])),
            ],
        )],
        vec![
            Backend::new(key("grpc"), vec![origin.addr]).with_protocol(UpstreamProtocol::H2c),
            Backend::new(key("empty"), vec![]).with_protocol(UpstreamProtocol::H2c),
        ],
    );
    let gw = Gateway::start(snapshot).await;
    let mut grpc = channel(&gw).await;

    let status = unary(&mut grpc, "/other.Svc/Call", tonic::Request::new(echo("x"))).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no route matches the request");

    let status = unary(&mut grpc, "/down.Svc/Call", tonic::Request::new(echo("x"))).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // On the wire: HTTP 200, trailers-only (END_STREAM on the headers).
    let mut sender = h2_client(&gw).await;
    let request = Request::post("http://grpc.test/other.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "5");
    assert_eq!(response.headers()["grpc-message"], "no route matches the request");
    assert!(response.headers().contains_key("x-request-id"));
    assert!(hyper::body::Body::is_end_stream(response.body()));

    // A non-gRPC request still gets the JSON answer.
    let answer = get(&client(), &gw.url("/other.Svc/Call"), "grpc.test").await;
    assert_gateway_error(&answer, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_upstream_exchange() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let mut sender = h2_client(&gw).await;
    let request = Request::post("http://grpc.test/test.Echo/Slow")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "100m")
        // One gRPC frame: not compressed, 0 bytes (an empty `Echo`).
        .body(
            http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(response.headers()["grpc-message"], "upstream timeout");

    // The deadline is forwarded to the origin. (tonic's client enforces a deadline
    // itself too, so a late call through it cannot tell who answered: the raw request
    // above shows the gateway's answer.)
    let mut grpc = channel(&gw).await;
    let mut request = tonic::Request::new(echo("in time"));
    request.set_timeout(Duration::from_secs(10));
    let response = unary(&mut grpc, "/test.Echo/Unary", request).await.unwrap();
    assert_eq!(response.metadata().get("x-saw-deadline").unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_upstream_connection() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let grpc = channel(&gw).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut grpc = grpc.clone();
        calls.spawn(async move {
            let text = format!("call {i}");
            let response = unary(&mut grpc, "/test.Echo/Unary", tonic::Request::new(echo(&text)));
            (text, response.await)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (text, response) = joined.unwrap();
        assert_eq!(response.unwrap().into_inner().text, format!("echo: {text}"));
    }
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    assert_eq!(gw.dataplane.upstream.h2().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_upstream_connection_is_replaced() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let mut grpc = channel(&gw).await;
    unary(&mut grpc, "/test.Echo/Unary", tonic::Request::new(echo("1"))).await.unwrap();
    // The origin goes away (its connections close) and comes back on the same port.
    let addr = origin.addr;
    drop(origin);
    let h2 = gw.dataplane.upstream.h2();
    tokio::time::timeout(WAIT, async {
        while h2.connections() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gateway did not notice the closed connection");
    let listener = tokio::time::timeout(WAIT, async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("port not free again");
    let _task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request| async move {
                    Ok::<_, Infallible>(origin_answer(request).await)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let response = unary(&mut grpc, "/test.Echo/Unary", tonic::Request::new(echo("2"))).await;
    assert_eq!(response.unwrap().into_inner().text, "echo: 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_a_silent_stream() {
    let origin = GrpcOrigin::start().await;
    let timeouts = Timeouts { idle: Some(Duration::from_millis(200)), ..Timeouts::default() };
    let gw = Gateway::start(grpc_snapshot(&origin, timeouts)).await;
    let mut grpc = channel(&gw).await;
    // Headers at once, then 3 s of silence before the first message.
    let request = Echo { text: "slow".into(), count: 2, delay_ms: 3000 };
    let call = async {
        grpc.ready().await.unwrap();
        let response = grpc
            .server_streaming(
                tonic::Request::new(request),
                PathAndQuery::from_static("/test.Echo/Stream"),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await;
        match response {
            Err(status) => status,
            Ok(response) => match response.into_inner().message().await {
                Ok(Some(message)) => panic!("unexpected {message:?}"),
                Ok(None) => panic!("the stream ended cleanly"),
                Err(status) => status,
            },
        }
    };
    let status = tokio::time::timeout(WAIT, call).await.expect("the idle stream was not cut");
    assert_ne!(status.code(), Code::Ok, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_reach_h2c_backends() {
    let origin = GrpcOrigin::start().await;
    let gw = Gateway::start(grpc_snapshot(&origin, Timeouts::default())).await;
    let request = Request::post(gw.url("/raw/trailers"))
        .header("host", "grpc.test")
        .body(full("hello"))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "got 5 bytes");
    assert_eq!(gw.dataplane.upstream.h2().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_grpc_unauthenticated() {
    use weir_dataplane::filter::consumers::hash_api_key;
    use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
    use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore};
    use weir_dataplane::{Filter, ObjectKey};

    let origin = GrpcOrigin::start().await;
    let entry =
        ConsumerEntry::new(ObjectKey::new("default", "app"), "app", None, Arc::from(Vec::new()));
    let mut store = ConsumerStore::default();
    store.add_consumer(&entry);
    store.add_api_key(hash_api_key(b"secret"), &entry);
    let key_auth = KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: None,
        forward_credential: false,
        consumers: Arc::new(store),
    };
    let mut action = action(&[(0, 1)]);
    action.filters = Arc::from(vec![Filter::Authenticate(Arc::new(Authenticate {
        jwt: None,
        key_auth: Some(Arc::new(key_auth)),
        ext_auth: None,
    }))]);
    let gw = Gateway::start(snapshot(
        1,
        vec![route("grpc", &[], vec![rule("grpc", "/test.Echo", action)])],
        vec![Backend::new(key("grpc"), vec![origin.addr]).with_protocol(UpstreamProtocol::H2c)],
    ))
    .await;
    let mut grpc = channel(&gw).await;
    let status = unary(&mut grpc, "/test.Echo/Unary", tonic::Request::new(echo("x"))).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "unauthorized");
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);

    let mut request = tonic::Request::new(echo("with key"));
    assert_eq!(DEFAULT_KEY_HEADER.as_str(), "x-api-key");
    request.metadata_mut().insert("x-api-key", "secret".parse().unwrap());
    let response = unary(&mut grpc, "/test.Echo/Unary", request).await.unwrap();
    assert_eq!(response.into_inner().text, "echo: with key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_request_keeps_the_exchange_alive() {
    let origin = GrpcOrigin::start().await;
    let mut idle = action(&[(0, 1)]);
    idle.timeouts =
        Timeouts { idle: Some(Duration::from_millis(300)), ..Timeouts::default() }.into();
    let gw = Gateway::start(snapshot(
        1,
        vec![route("idle", &[], vec![rule("idle", "/idle", idle)])],
        vec![Backend::new(key("grpc"), vec![origin.addr]).with_protocol(UpstreamProtocol::H2c)],
    ))
    .await;
    let mut sender = h2_client(&gw).await;
    let (mut tx, body) = http_body_util::Channel::<Bytes, Infallible>::new(1);
    let request = Request::post("http://grpc.test/idle/count")
        .body(body.map_err(|e| match e {}).boxed_unsync())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    // The response says nothing for ~1 s (longer than `idle`) while the request streams.
    for _ in 0..10 {
        tx.send_data(Bytes::from_static(b"0123456789")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let collected = tokio::time::timeout(WAIT, response.into_body().collect()).await.unwrap();
    assert_eq!(collected.expect("the exchange was cut as idle").to_bytes(), "got 100 bytes");
}
