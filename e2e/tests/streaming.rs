//! e2e: the real `weir` binary in standalone mode in front of an h2c gRPC-shaped origin
//! (Service port `appProtocol: kubernetes.io/h2c`) and a WebSocket origin
//! (`appProtocol: kubernetes.io/ws`): one gRPC call with its trailers, a gRPC answer of the
//! gateway itself, and a WebSocket echo that survives a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use weir_e2e::{ConfigDir, WeirProcess, poll_until};

const WAIT: Duration = Duration::from_secs(20);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A Service (one port with `app_protocol`) and its EndpointSlice at `127.0.0.1:port`.
fn service(name: &str, port: u16, app_protocol: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: main, port: 80, targetPort: {port}, appProtocol: {app_protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: main, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    )
}

fn route(name: &str, prefix: &str, service: &str, idle: &str) -> String {
    format!(
        r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {{name: {name}}}
spec:
  rules:
    - matches: [{{path: {{value: "{prefix}"}}}}]
      timeouts: {{request: 10s, idle: {idle}}}
      backends: [{{service: {service}, port: 80}}]
"#
    )
}

/// An h2c origin that answers every call with the request's body (one gRPC frame) and
/// the trailers `grpc-status: 0`, `x-origin: h2c`.
async fn grpc_origin() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut served = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            served.spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("x-origin", HeaderValue::from_static("h2c"));
                    let frames = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
                    let mut response: Response<Body> = Response::new(
                        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync(),
                    );
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A WebSocket echo origin.
async fn ws_origin() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut served = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            served.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    let data = matches!(message, Message::Text(_) | Message::Binary(_));
                    if data && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// One gRPC call (a 6-byte message) over HTTP/2 prior knowledge to `addr`.
async fn grpc_call(addr: SocketAddr, path: &str) -> (Response<()>, Bytes, Option<HeaderMap>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let frame = Bytes::from_static(&[0, 0, 0, 0, 1, 0x2a]);
    let request = Request::post(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(WAIT, body.collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned();
    (Response::from_parts(parts, ()), collected.to_bytes(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_through_the_binary() {
    let (grpc_addr, _grpc) = grpc_origin().await;
    let (ws_addr, _ws) = ws_origin().await;
    let dir = ConfigDir::new("streaming").unwrap();
    dir.write(
        "services.yaml",
        &(service("orders-grpc", grpc_addr.port(), "kubernetes.io/h2c")
            + &service("chat", ws_addr.port(), "kubernetes.io/ws")),
    )
    .unwrap();
    dir.write(
        "routes.yaml",
        &(route("orders-grpc", "/shop.Orders", "orders-grpc", "1m")
            + &route("chat", "/ws", "chat", "5m")),
    )
    .unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // gRPC: the call reaches the h2c origin, and its trailers come back.
    let (response, body, trailers) = grpc_call(weir.http_addr, "/shop.Orders/Get").await;
    assert_eq!(response.status(), 200, "{}", weir.log());
    assert_eq!(body, Bytes::from_static(&[0, 0, 0, 0, 1, 0x2a]));
    let trailers = trailers.expect("no trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-origin"], "h2c");

    // The gateway's own answer to a gRPC call: HTTP 200, grpc-status 5.
    let (response, body, _) = grpc_call(weir.http_addr, "/other.Svc/Get").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "5");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert!(body.is_empty());

    // WebSocket: an echo, kept across a reload that changes the Route.
    let stream = TcpStream::connect(weir.http_addr).await.unwrap();
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async("ws://chat.test/ws", stream))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("one")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("one"));

    dir.write("routes.yaml", &route("orders-grpc", "/shop.Orders", "orders-grpc", "1m")).unwrap();
    poll_until(WAIT, "the chat route removed", || async {
        Ok((weir.get("chat.test", "/ws").await?.status == 404).then_some(()))
    })
    .await
    .unwrap();
    ws.send(Message::text("after reload")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("after reload"));
    let metrics = weir.admin("/metrics").await.unwrap().text();
    assert!(metrics.contains("weir_upgraded_connections 1"), "{metrics}");
}
