//! WebSocket through the gateway: a real tokio-tungstenite client and origin, the upgrade
//! proxied (101, then bytes both ways), kept open across reloads, closed by the idle
//! timeout and at shutdown, and non-101 answers passed through.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// tungstenite's handshake callback returns its large `ErrorResponse` by value.
#![allow(clippy::result_large_err)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};
use weir_dataplane::filter::consumers::hash_api_key;
use weir_dataplane::filter::headers::{HeaderTransform, Template};
use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore};
use weir_dataplane::{Backend, Filter, ObjectKey, Snapshot, Timeouts, UpstreamProtocol};

/// Bounds every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket echo origin on 127.0.0.1:0: echoes text and binary messages, answers a
/// close. `GET /refuse` is answered 403 instead of 101. Counts upgraded sessions, and
/// records the request headers it saw last.
struct WsOrigin {
    addr: std::net::SocketAddr,
    sessions: Arc<AtomicUsize>,
    last_headers: Arc<std::sync::Mutex<Option<http::HeaderMap>>>,
    task: JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsOrigin {
    async fn start() -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let last_headers = Arc::new(std::sync::Mutex::new(None));
        let (counter, seen) = (Arc::clone(&sessions), Arc::clone(&last_headers));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (counter, seen) = (Arc::clone(&counter), Arc::clone(&seen));
                connections.spawn(async move {
                    let callback = |request: &Request, response: Response| {
                        *seen.lock().unwrap() = Some(request.headers().clone());
                        if request.uri().path() == "/refuse" {
                            let mut refused = ErrorResponse::new(Some("not here".to_owned()));
                            *refused.status_mut() = http::StatusCode::FORBIDDEN;
                            return Err(refused);
                        }
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
                        // tungstenite answers the close (and pings) itself.
                        let data = matches!(message, Message::Text(_) | Message::Binary(_));
                        if data && ws.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsOrigin { addr, sessions, last_headers, task }
    }
}

type Client = WebSocketStream<TcpStream>;

fn ws_snapshot(version: u64, origin: &WsOrigin, timeouts: Timeouts) -> Snapshot {
    let mut action = action(&[(0, 1)]);
    action.timeouts = timeouts.into();
    snapshot(
        version,
        vec![route("ws", &[], vec![rule("ws", "/", action)])],
        vec![Backend::new(key("ws"), vec![origin.addr])],
    )
}

async fn connect(gw: &Gateway, path: &str) -> Result<Client, WsError> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let url = format!("ws://ws.test{path}");
    let (client, response) = tokio::time::timeout(WAIT, client_async(url, stream))
        .await
        .expect("handshake timed out")?;
    assert_eq!(response.status(), 101);
    Ok(client)
}

async fn echo(client: &mut Client, message: Message) {
    client.send(message.clone()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, client.next())
        .await
        .expect("no echo")
        .expect("connection ended")
        .expect("connection failed");
    assert_eq!(answer, message);
}

/// Waits (bounded) until the gateway counts `n` open upgraded connections.
async fn wait_open(gw: &Gateway, n: usize) {
    let upgrades = gw.dataplane.upstream.upgrades();
    tokio::time::timeout(WAIT, async {
        while upgrades.open() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("open upgraded connections: {} (want {n})", upgrades.open()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_binary_and_close_are_echoed_through_the_gateway() {
    let origin = WsOrigin::start().await;
    let gw = Gateway::start(ws_snapshot(1, &origin, Timeouts::default())).await;
    let mut client = connect(&gw, "/chat?room=1").await.unwrap();
    echo(&mut client, Message::text("hello")).await;
    echo(&mut client, Message::binary(vec![0u8, 1, 2, 255])).await;
    let big: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
    echo(&mut client, Message::binary(big)).await;
    assert_eq!(origin.sessions.load(Ordering::SeqCst), 1);
    wait_open(&gw, 1).await;
    // Other tests of this process run tunnels too: only the gauge's presence is certain.
    let metrics = weir_dataplane::metrics::encode();
    assert!(metrics.contains("weir_upgraded_connections "), "{metrics}");
    let headers = origin.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["upgrade"], "websocket");
    assert!(headers["connection"].to_str().unwrap().to_ascii_lowercase().contains("upgrade"));
    assert_eq!(headers["x-forwarded-host"], "ws.test");
    assert!(headers.contains_key("sec-websocket-key"));

    client.close(None).await.unwrap();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(_))) => continue,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                None | Some(Err(_)) => break,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the close was not answered");
    // The origin closed its end after the close handshake: the gateway closes the tunnel
    // (at most `LINGER` later) even while this client keeps its socket.
    wait_open(&gw, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_survives_twenty_reloads() {
    let origin = WsOrigin::start().await;
    let gw = Gateway::start(ws_snapshot(1, &origin, Timeouts::default())).await;
    let mut client = connect(&gw, "/").await.unwrap();
    for i in 0..20u64 {
        // A new snapshot each time, the route's timeouts changed too.
        let timeouts = Timeouts { idle: Some(Duration::from_secs(60 + i)), ..Timeouts::default() };
        gw.dataplane.publish(ws_snapshot(i + 2, &origin, timeouts));
        echo(&mut client, Message::text(format!("after reload {i}"))).await;
    }
    // A snapshot without the route at all: the open connection still echoes.
    gw.dataplane.publish(snapshot(100, vec![], vec![]));
    echo(&mut client, Message::text("route gone")).await;
    assert_eq!(gw.dataplane.upstream.upgrades().open(), 1);
    assert_eq!(origin.sessions.load(Ordering::SeqCst), 1);
    // New upgrades follow the new snapshot: no route, 404.
    let refused = connect(&gw, "/").await.unwrap_err();
    let WsError::Http(response) = refused else { panic!("{refused:?}") };
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_connection() {
    let origin = WsOrigin::start().await;
    let timeouts = Timeouts { idle: Some(Duration::from_millis(300)), ..Timeouts::default() };
    let gw = Gateway::start(ws_snapshot(1, &origin, timeouts)).await;
    let mut client = connect(&gw, "/").await.unwrap();
    echo(&mut client, Message::text("still here")).await;
    wait_open(&gw, 1).await;
    // Silence from both sides: the gateway closes both connections.
    let ended = tokio::time::timeout(WAIT, client.next()).await;
    if let Ok(Some(Ok(message))) = &ended {
        panic!("unexpected {message:?}");
    }
    assert!(ended.is_ok(), "the idle connection was not closed");
    wait_open(&gw, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_passed_through() {
    let origin = WsOrigin::start().await;
    let gw = Gateway::start(ws_snapshot(1, &origin, Timeouts::default())).await;
    let refused = connect(&gw, "/refuse").await.unwrap_err();
    let WsError::Http(response) = refused else { panic!("{refused:?}") };
    assert_eq!(response.status(), 403);
    // tungstenite's client reads the body raw (here re-chunked by the gateway).
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap()).into_owned();
    assert!(body.contains("not here"), "{body:?}");
    assert_eq!(gw.dataplane.upstream.upgrades().open(), 0);
    // The gateway keeps working for upgrades and plain requests.
    let mut client = connect(&gw, "/").await.unwrap();
    echo(&mut client, Message::text("ok")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_h2c_backend_is_refused_clearly() {
    let origin = WsOrigin::start().await;
    let gw = Gateway::start(snapshot(
        1,
        vec![route("ws", &[], vec![rule("ws", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("ws"), vec![origin.addr]).with_protocol(UpstreamProtocol::H2c)],
    ))
    .await;
    let refused = connect(&gw, "/").await.unwrap_err();
    let WsError::Http(response) = refused else { panic!("{refused:?}") };
    assert_eq!(response.status(), 501);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("WebSocket"), "{body}");
    assert_eq!(origin.sessions.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_upgraded_connections_last() {
    let origin = WsOrigin::start().await;
    let mut gw = Gateway::start(ws_snapshot(1, &origin, Timeouts::default())).await;
    let mut client = connect(&gw, "/").await.unwrap();
    echo(&mut client, Message::text("before shutdown")).await;
    // The HTTP side drains at once: the upgraded connection has left it.
    let server = gw.begin_shutdown();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("drain waited for the tunnel")
        .unwrap()
        .unwrap();
    echo(&mut client, Message::text("still open after the drain")).await;
    let upgrades = Arc::clone(gw.dataplane.upstream.upgrades());
    upgrades.close();
    tokio::time::timeout(WAIT, upgrades.closed()).await.expect("tunnels not closed");
    let ended = tokio::time::timeout(WAIT, client.next()).await;
    if let Ok(Some(Ok(message))) = &ended {
        panic!("unexpected {message:?}");
    }
    assert!(ended.is_ok(), "the client connection stayed open");
}

fn set_header(name: &str, value: &str) -> Arc<HeaderTransform> {
    Arc::new(HeaderTransform {
        set: Box::new([(name.parse().unwrap(), Template::parse(value).unwrap())]),
        add: Box::new([]),
        remove: Box::new([]),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_on_the_upgrade_request_and_the_101() {
    let origin = WsOrigin::start().await;
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
    let mut filters = vec![
        Filter::Authenticate(Arc::new(Authenticate {
            jwt: None,
            key_auth: Some(Arc::new(key_auth)),
            ext_auth: None,
        })),
        Filter::RequestHeaders(set_header("x-caller", "gateway ${consumer}")),
        Filter::ResponseHeaders(set_header("x-edge", "weir")),
    ];
    filters.sort_by_key(Filter::phase);
    let mut action = action(&[(0, 1)]);
    action.filters = Arc::from(filters);
    let gw = Gateway::start(snapshot(
        1,
        vec![route("ws", &[], vec![rule("ws", "/", action)])],
        vec![Backend::new(key("ws"), vec![origin.addr])],
    ))
    .await;

    // Without the credential: 401, never reaches the origin.
    let refused = connect(&gw, "/").await.unwrap_err();
    let WsError::Http(response) = refused else { panic!("{refused:?}") };
    assert_eq!(response.status(), 401);
    assert_eq!(origin.sessions.load(Ordering::SeqCst), 0);

    let mut request = "ws://ws.test/".into_client_request().unwrap();
    request.headers_mut().insert(DEFAULT_KEY_HEADER, "secret".parse().unwrap());
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, response) =
        tokio::time::timeout(WAIT, client_async(request, stream)).await.unwrap().unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-edge"], "weir");
    echo(&mut client, Message::text("authenticated")).await;
    let headers = origin.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-caller"], "gateway app");
    assert!(!headers.contains_key(DEFAULT_KEY_HEADER), "the credential was forwarded");
}
