//! TLS to upstreams through the gateway, against real rustls origins on 127.0.0.1 with
//! rcgen-made certificates: the right CA and hostname pass, a wrong CA or hostname is a 502
//! with the reason in the log, mTLS, HTTP/1.1 over TLS pooled, HTTP/2 over TLS multiplexed,
//! plain and TLS backends on one address kept apart, and a WebSocket over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::tls::{ClientIdentity, TlsRoots, UpstreamTls};
use weir_dataplane::{Backend, Snapshot, UpstreamProtocol};

const BOUND: Duration = Duration::from_secs(10);
const HOST: &str = "orders.internal";

/// The CA, leaf certificates, origin and log capture of the pool's own TLS tests.
#[path = "../src/upstream/pool/testing.rs"]
#[allow(dead_code)]
mod testing;

use testing::{Ca, Leaf, Logs, TestOrigin};

/// A server configuration for `orders.internal` signed by `ca`, offering `alpn`, requiring a
/// client certificate from `client_ca` when given.
fn server_config(ca: &Ca, client_ca: Option<&Ca>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    testing::server_config(&ca.leaf(&[HOST]), client_ca, alpn)
}

/// The upstream TLS of a BackendPolicy trusting `ca` for `hostname`.
fn upstream_tls(
    ca: &Ca,
    hostname: &str,
    client: Option<&Leaf>,
    protocol: UpstreamProtocol,
) -> UpstreamTls {
    let pem = ca.pem();
    let client = client.map(|leaf| ClientIdentity {
        chain: leaf.cert_pem.as_bytes(),
        key: leaf.key_pem.as_bytes(),
    });
    UpstreamTls::new(TlsRoots::Pem(pem.as_bytes()), hostname, client, protocol).unwrap()
}

/// A backend at `addr` under a BackendPolicy with `tls`, spoken in `protocol`.
fn tls_backend(
    name: &str,
    addr: SocketAddr,
    tls: UpstreamTls,
    protocol: UpstreamProtocol,
) -> Backend {
    let policy = BackendPolicy {
        tls: Some(Arc::new(tls)),
        protocol: Some(protocol),
        ..BackendPolicy::default()
    };
    Backend::new(key(name), vec![addr]).with_protocol(protocol).with_policy(Arc::new(policy))
}

/// Every path to `backend`.
fn one_backend(version: u64, backend: Backend) -> Snapshot {
    snapshot(version, vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])], vec![backend])
}

fn body(answer: &Answer) -> String {
    String::from_utf8(answer.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_ca_and_hostname_reach_the_origin_over_one_pooled_connection() {
    let ca = Ca::new("upstream ca");
    let origin = TestOrigin::start(server_config(&ca, None, &[b"h2", b"http/1.1"])).await;
    let tls = upstream_tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let backend = tls_backend("orders", origin.addr, tls, UpstreamProtocol::Http1);
    let gw = Gateway::start(one_backend(1, backend)).await;
    let client = client();
    for i in 0..10 {
        let answer = get(&client, &gw.url(&format!("/p/{i}")), "shop.test").await;
        assert_eq!(answer.status, 200);
        assert_eq!(body(&answer), format!("tls HTTP/1.1 /p/{i} client-cert=no"));
    }
    assert_eq!(origin.tls_count(), 1, "sequential requests share one TLS connection");
    assert_eq!(origin.plain_count(), 0);
    assert_eq!(*origin.alpn.lock().unwrap(), vec![Some(b"http/1.1".to_vec())]);
}

/// A 502 from the gateway, with the TLS failure's reason in the warning it logs.
async fn refused_with(tls: UpstreamTls, ca: &Ca, reason: &str) {
    let logs = Logs::default();
    let _capture = logs.capture();
    let origin = TestOrigin::start(server_config(ca, None, &[b"http/1.1"])).await;
    let backend = tls_backend("orders", origin.addr, tls, UpstreamProtocol::Http1);
    let gw = Gateway::start(one_backend(1, backend)).await;
    let answer = get(&client(), &gw.url("/"), "shop.test").await;
    assert_gateway_error(&answer, 502);
    assert_eq!(origin.tls_count(), 0);
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("upstream request failed")).unwrap_or_else(|| {
        panic!("no warning logged:\n{text}");
    });
    assert!(line.contains(" WARN "), "{line}");
    let want = format!("upstream connect failure: TLS handshake with {}: {reason}", origin.addr);
    assert!(line.contains(&want), "{line}\nwanted: {want}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_502_and_the_log_says_why() {
    let (ca, other) = (Ca::new("upstream ca"), Ca::new("someone else"));
    let tls = upstream_tls(&other, HOST, None, UpstreamProtocol::Http1);
    refused_with(tls, &ca, "invalid peer certificate: UnknownIssuer").await;
}

#[tokio::test]
async fn a_certificate_for_another_hostname_is_a_502_and_the_log_says_why() {
    let ca = Ca::new("upstream ca");
    let tls = upstream_tls(&ca, "payments.internal", None, UpstreamProtocol::Http1);
    let reason = "invalid peer certificate: certificate not valid for name \"payments.internal\"";
    refused_with(tls, &ca, reason).await;
}

#[tokio::test]
async fn an_origin_that_requires_a_client_certificate_accepts_the_gateways() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let (ca, clients) = (Ca::new("upstream ca"), Ca::new("client ca"));
    let origin = TestOrigin::start(server_config(&ca, Some(&clients), &[b"http/1.1"])).await;
    let without = upstream_tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let gw = Gateway::start(one_backend(
        1,
        tls_backend("orders", origin.addr, without, UpstreamProtocol::Http1),
    ))
    .await;
    let client = client();
    assert_gateway_error(&get(&client, &gw.url("/m"), "shop.test").await, 502);
    assert_eq!(origin.tls_count(), 0, "refused without a client certificate");
    // The request itself only sees the connection fail; the connection's warning says why.
    let want = format!(
        "upstream TLS connection failed addr={} reason=received fatal alert: CertificateRequired",
        origin.addr
    );
    tokio::time::timeout(BOUND, async {
        while !logs.text().contains(&want) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no warning with the reason:\n{}", logs.text()));

    let identity = clients.leaf(&["gateway.weir"]);
    let with = upstream_tls(&ca, HOST, Some(&identity), UpstreamProtocol::Http1);
    gw.dataplane
        .publish(one_backend(2, tls_backend("orders", origin.addr, with, UpstreamProtocol::Http1)));
    let answer = get(&client, &gw.url("/m"), "shop.test").await;
    assert_eq!(answer.status, 200, "{}", body(&answer));
    assert_eq!(body(&answer), "tls HTTP/1.1 /m client-cert=yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_multiplexes_concurrent_requests_on_one_connection() {
    let ca = Ca::new("upstream ca");
    let origin = TestOrigin::start(server_config(&ca, None, &[b"h2", b"http/1.1"])).await;
    let tls = upstream_tls(&ca, HOST, None, UpstreamProtocol::H2);
    let gw = Gateway::start(one_backend(
        1,
        tls_backend("orders", origin.addr, tls, UpstreamProtocol::H2),
    ))
    .await;
    let client = client();
    let requests = (0..20).map(|i| {
        let (client, url) = (&client, gw.url(&format!("/s/{i}")));
        async move { get(client, &url, "shop.test").await }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "{}", body(answer));
        assert_eq!(body(answer), format!("tls HTTP/2.0 /s/{i} client-cert=no"));
        assert_eq!(answer.headers["x-scheme"], "https");
    }
    assert_eq!(origin.tls_count(), 1, "one TLS connection for 20 concurrent requests");
    assert_eq!(*origin.alpn.lock().unwrap(), vec![Some(b"h2".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_and_a_tls_backend_on_one_address_do_not_share_connections() {
    let ca = Ca::new("upstream ca");
    let origin = TestOrigin::start(server_config(&ca, None, &[b"http/1.1"])).await;
    let tls = upstream_tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let snap = snapshot(
        1,
        vec![route(
            "r",
            &[],
            vec![rule("r", "/plain", action(&[(0, 1)])), rule("r", "/tls", action(&[(1, 1)]))],
        )],
        vec![
            Backend::new(key("plain"), vec![origin.addr]),
            tls_backend("secure", origin.addr, tls, UpstreamProtocol::Http1),
        ],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    for _ in 0..3 {
        for kind in ["plain", "tls"] {
            let answer = get(&client, &gw.url(&format!("/{kind}")), "shop.test").await;
            assert_eq!(body(&answer), format!("{kind} HTTP/1.1 /{kind} client-cert=no"));
        }
    }
    assert_eq!((origin.plain_count(), origin.tls_count()), (1, 1));
    assert_eq!(gw.dataplane.upstream.pool().idle_count(origin.addr), 2);
}

/// A WebSocket echo origin behind TLS.
async fn tls_ws_origin(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_goes_over_tls() {
    let ca = Ca::new("upstream ca");
    let (addr, task) = tls_ws_origin(server_config(&ca, None, &[b"http/1.1"])).await;
    let tls = upstream_tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let gw =
        Gateway::start(one_backend(1, tls_backend("ws", addr, tls, UpstreamProtocol::Http1))).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, response) =
        tokio::time::timeout(BOUND, tokio_tungstenite::client_async("ws://ws.test/chat", stream))
            .await
            .expect("handshake hung")
            .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(BOUND, ws.next()).await.expect("no echo").unwrap().unwrap();
    assert_eq!(echoed, Message::text("over tls"));
    task.abort();
}
