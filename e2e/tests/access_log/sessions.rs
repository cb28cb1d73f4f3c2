//! Upgraded and streamed requests in the access log: a WebSocket session is logged when
//! it closes (with the whole session's duration and bytes), also when a graceful shutdown
//! closes it; a gRPC call once its trailers are sent, with its `grpc-status`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weir_e2e::{ConfigDir, EchoOrigin};

use crate::origins::{grpc_origin, ws_origin};

use super::{WAIT, config, json_lines, line_for, path_arg, start};

/// A Service `name` (port 80 with `app_protocol`) at `127.0.0.1:port` and a Route `name`
/// whose rule `rule` sends `prefix` to it.
fn streaming_route(name: &str, port: u16, app_protocol: &str, prefix: &str, rule: &str) -> String {
    weir_e2e::app_service_yaml(name, port, app_protocol)
        + &format!(
            r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {{name: {name}}}
spec:
  rules:
    - name: {rule}
      matches: [{{path: {{value: {prefix}}}}}]
      backends: [{{service: {name}, port: 80}}]
"#
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_is_logged_when_it_closes() {
    let (ws_addr, _ws) = ws_origin().await;
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let dir = ConfigDir::new("access-log-ws").unwrap();
    config(&dir, origin.addr.port());
    let yaml = streaming_route("chat", ws_addr.port(), "kubernetes.io/ws", "/ws", "socket");
    dir.write("chat.yaml", &yaml).unwrap();
    let logs = ConfigDir::new("access-log-ws-out").unwrap();
    let file = logs.path().join("access.log");
    let weir = start(&dir, &["--access-log", path_arg(&file)]).await;

    let opened = Instant::now();
    let stream = TcpStream::connect(weir.http_addr).await.unwrap();
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async("ws://chat.test/ws", stream))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("hello"));

    // A later request is logged while the session is open; the session is not.
    assert_eq!(weir.get("shop.test", "/api/meanwhile").await.unwrap().status, 200);
    line_for(&file, "/api/meanwhile", &weir).await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(json_lines(&text).iter().all(|l| l["path"] != "/ws"), "{text}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.close(None).await.unwrap();
    // The server's close frame, then the end of the stream.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    // The client closes its connection too (else the tunnel waits `LINGER` for it).
    drop(ws);
    let line = line_for(&file, "/ws", &weir).await;
    let session = opened.elapsed();
    assert_eq!(line["status"], 101);
    assert_eq!(
        (line["route"].as_str(), line["rule"].as_str()),
        (Some("default/chat"), Some("socket"))
    );
    assert_eq!(line["upstream"], ws_addr.to_string());
    let duration = line["duration_ms"].as_f64().unwrap();
    assert!(duration >= 300.0, "{line}");
    // From the request to the close, within what the client saw.
    assert!(duration <= session.as_secs_f64() * 1000.0, "{line}");
    // Client → upstream: a masked text frame "hello" (2 + 4 + 5) and a masked empty close
    // frame (2 + 4). Upstream → client: the echo (2 + 5) and the close reply (2).
    assert_eq!(
        (line["bytes_in"].as_u64(), line["bytes_out"].as_u64()),
        (Some(17), Some(9)),
        "{line}"
    );
    assert_eq!(line["completed"], true);
    assert!(line["error"].is_null());
}

/// A gRPC call through the gateway (h2c origin) and a gRPC answer of the gateway itself:
/// each logged once its stream has ended, with its `grpc-status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_logged_with_their_status() {
    let (grpc_addr, _grpc) = grpc_origin().await;
    let dir = ConfigDir::new("access-log-grpc").unwrap();
    let yaml = streaming_route(
        "orders-grpc",
        grpc_addr.port(),
        "kubernetes.io/h2c",
        "/shop.Orders",
        "orders",
    );
    dir.write("grpc.yaml", &yaml).unwrap();
    let logs = ConfigDir::new("access-log-grpc-out").unwrap();
    let file = logs.path().join("access.log");
    let weir = start(&dir, &["--access-log", path_arg(&file)]).await;

    for path in ["/shop.Orders/Get", "/other.Svc/Get"] {
        let stream = TcpStream::connect(weir.http_addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::post(format!("http://grpc.test{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 1, 0x2a])))
            .unwrap();
        let response =
            tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::timeout(WAIT, response.into_body().collect()).await.unwrap().unwrap();
    }
    let call = line_for(&file, "/shop.Orders/Get", &weir).await;
    assert_eq!((call["grpc_status"].as_u64(), call["status"].as_u64()), (Some(0), Some(200)));
    assert_eq!((call["bytes_in"].as_u64(), call["bytes_out"].as_u64()), (Some(6), Some(6)));
    assert_eq!(call["completed"], true);
    let answer = line_for(&file, "/other.Svc/Get", &weir).await;
    assert_eq!(
        (answer["grpc_status"].as_u64(), answer["error"].as_str()),
        (Some(5), Some("no_route"))
    );
}

/// A graceful shutdown closes the open WebSocket sessions (logged then, not completed) and
/// writes out every queued line before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_logs_open_sessions_and_writes_every_line() {
    let (ws_addr, _ws) = ws_origin().await;
    let dir = ConfigDir::new("access-log-stop").unwrap();
    let yaml = streaming_route("chat", ws_addr.port(), "kubernetes.io/ws", "/ws", "socket");
    dir.write("chat.yaml", &yaml).unwrap();
    let logs = ConfigDir::new("access-log-stop-out").unwrap();
    let file = logs.path().join("access.log");
    let mut weir = start(&dir, &["--access-log", path_arg(&file)]).await;
    let stream = TcpStream::connect(weir.http_addr).await.unwrap();
    let (mut ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async("ws://chat.test/ws", stream))
            .await
            .unwrap()
            .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("hello"));

    weir.terminate().unwrap();
    let status = weir.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}; log:\n{}", weir.log());
    let lines = json_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let session = &lines[0];
    assert_eq!((session["path"].as_str(), session["status"].as_u64()), (Some("/ws"), Some(101)));
    // Closed by the gateway: not completed; one masked "hello" in (2 + 4 + 5), its echo out.
    assert_eq!(session["completed"], false);
    assert_eq!((session["bytes_in"].as_u64(), session["bytes_out"].as_u64()), (Some(11), Some(7)));
}
