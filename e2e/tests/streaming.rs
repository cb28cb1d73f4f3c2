//! e2e: the real `weir` binary in standalone mode in front of an h2c gRPC-shaped origin
//! (Service port `appProtocol: kubernetes.io/h2c`) and a WebSocket origin
//! (`appProtocol: kubernetes.io/ws`): one gRPC call with its trailers, a gRPC answer of the
//! gateway itself, and a WebSocket echo that survives a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/origins.rs"]
mod origins;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use origins::{grpc_origin, ws_origin};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weir_e2e::{ConfigDir, WeirProcess, app_service_yaml, poll_until};

const WAIT: Duration = Duration::from_secs(20);

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
        &(app_service_yaml("orders-grpc", grpc_addr.port(), "kubernetes.io/h2c")
            + &app_service_yaml("chat", ws_addr.port(), "kubernetes.io/ws")),
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
