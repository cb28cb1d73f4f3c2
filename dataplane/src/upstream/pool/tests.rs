//! The pools over real sockets: TLS (rcgen certificates, a rustls origin on 127.0.0.1),
//! HTTP/1.1 pooling and HTTP/2 multiplexing over TLS, pool keys by transport, the
//! connection caps, connection settings, unpooled requests and connect probes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use http_body_util::BodyExt;

use super::testing::{
    Ca, Leaf, Logs, Silent, TestOrigin, eventually, server_config, server_config_with,
};
use super::*;
use crate::upstream::tls::{ClientIdentity, TlsRoots};

const BOUND: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(5);
const HOST: &str = "orders.internal";

/// An origin with a certificate for `orders.internal` signed by `ca`, offering `alpn`.
async fn origin(ca: &Ca, alpn: &[&[u8]]) -> TestOrigin {
    TestOrigin::start(server_config(&ca.leaf(&[HOST]), None, alpn)).await
}

fn tls(ca: &Ca, hostname: &str, client: Option<&Leaf>, protocol: UpstreamProtocol) -> Transport {
    let client = client.map(|leaf| ClientIdentity {
        chain: leaf.cert_pem.as_bytes(),
        key: leaf.key_pem.as_bytes(),
    });
    let tls =
        UpstreamTls::new(TlsRoots::Pem(ca.pem().as_bytes()), hostname, client, protocol).unwrap();
    Transport { tls: Some(Arc::new(tls)), ..Transport::default() }
}

fn get(path: &str) -> Request<UpstreamBody> {
    Request::get(path).header("host", HOST).body(UpstreamBody::Empty).unwrap()
}

/// A request as the proxy builds it for HTTP/2 (absolute URI, `http` scheme).
fn get_h2(path: &str) -> Request<UpstreamBody> {
    let mut request =
        Request::get(format!("http://{HOST}{path}")).body(UpstreamBody::Empty).unwrap();
    *request.version_mut() = Version::HTTP_2;
    request
}

async fn send(
    upstream: &Upstream,
    addr: SocketAddr,
    transport: &Transport,
    request: Request<UpstreamBody>,
    via: Via,
) -> Result<Response<PooledBody>, AttemptError> {
    tokio::time::timeout(
        BOUND,
        upstream.request(addr, transport, CONNECT, request, via, std::time::Instant::now()),
    )
    .await
    .expect("request hung")
}

async fn text<B: http_body::Body>(response: Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    let body = tokio::time::timeout(BOUND, response.into_body().collect()).await.unwrap().unwrap();
    String::from_utf8(body.to_bytes().to_vec()).unwrap()
}

/// The text of a successful answer.
async fn ok(result: Result<Response<PooledBody>, AttemptError>) -> String {
    match result {
        Ok(response) => text(response).await,
        Err(AttemptError::Connect(e, _)) => panic!("connect failed: {e}"),
        Err(AttemptError::Exchange(e)) => panic!("exchange failed: {e}"),
    }
}

/// The connect error of a failed attempt.
fn connect_error(result: Result<Response<PooledBody>, AttemptError>) -> ConnectError {
    match result {
        Ok(response) => panic!("answered {}", response.status()),
        Err(AttemptError::Connect(e, _)) => e,
        Err(AttemptError::Exchange(e)) => panic!("exchange failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_is_verified_and_pooled() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"h2", b"http/1.1"]).await;
    let upstream = Upstream::default();
    let transport = tls(&ca, HOST, None, UpstreamProtocol::Http1);
    for i in 0..5 {
        let answer =
            ok(send(&upstream, origin.addr, &transport, get(&format!("/n/{i}")), Via::Pooled)
                .await)
            .await;
        assert_eq!(answer, format!("tls HTTP/1.1 /n/{i} client-cert=no"));
    }
    assert_eq!(origin.tls_count(), 1, "sequential requests share one TLS connection");
    assert_eq!(*origin.alpn.lock().unwrap(), vec![Some(b"http/1.1".to_vec())]);
    assert_eq!(upstream.pool().idle_count_over(origin.addr, &transport), 1);
    assert_eq!(upstream.pool().idle_count_over(origin.addr, &Transport::default()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_transports_never_share_connections() {
    let ca = Ca::new("upstream ca");
    let leaf = ca.leaf(&[HOST, "other.internal"]);
    let origin = TestOrigin::start(server_config(&leaf, None, &[b"http/1.1"])).await;
    let upstream = Upstream::default();
    let plain = Transport::default();
    let (a, b) = (
        tls(&ca, HOST, None, UpstreamProtocol::Http1),
        tls(&ca, "other.internal", None, UpstreamProtocol::Http1),
    );
    for _ in 0..3 {
        for (transport, kind) in [(&plain, "plain"), (&a, "tls"), (&b, "tls")] {
            let answer =
                ok(send(&upstream, origin.addr, transport, get("/"), Via::Pooled).await).await;
            assert!(answer.starts_with(kind), "{answer}");
        }
    }
    assert_eq!(origin.plain_count(), 1);
    assert_eq!(origin.tls_count(), 2, "one connection per TLS configuration");
    assert_eq!(upstream.pool().idle_count(origin.addr), 3);
    for transport in [&plain, &a, &b] {
        assert_eq!(upstream.pool().idle_count_over(origin.addr, transport), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake_with_the_reason() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"http/1.1"]).await;
    let upstream = Upstream::default();
    let transport = tls(&Ca::new("someone else"), HOST, None, UpstreamProtocol::Http1);
    let e = connect_error(send(&upstream, origin.addr, &transport, get("/"), Via::Pooled).await);
    assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("TLS handshake with {}: invalid peer certificate: UnknownIssuer", origin.addr)
    );
    assert_eq!(origin.tls_count(), 0);
    assert_eq!(upstream.pool().idle_count(origin.addr), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_fails_the_handshake_with_the_reason() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"http/1.1"]).await;
    let upstream = Upstream::default();
    let transport = tls(&ca, "payments.internal", None, UpstreamProtocol::Http1);
    let e = connect_error(send(&upstream, origin.addr, &transport, get("/"), Via::Pooled).await);
    assert_eq!(
        e.to_string(),
        format!(
            "TLS handshake with {}: invalid peer certificate: certificate not valid for name \
             \"payments.internal\"; certificate is only valid for DnsName(\"{HOST}\")",
            origin.addr
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_hostname_is_verified_against_ip_sans() {
    let ca = Ca::new("upstream ca");
    let origin =
        TestOrigin::start(server_config(&ca.leaf(&["127.0.0.1"]), None, &[b"http/1.1"])).await;
    let upstream = Upstream::default();
    let transport = tls(&ca, "127.0.0.1", None, UpstreamProtocol::Http1);
    let answer = ok(send(&upstream, origin.addr, &transport, get("/ip"), Via::Pooled).await).await;
    assert_eq!(answer, "tls HTTP/1.1 /ip client-cert=no");
}

#[tokio::test]
async fn mtls_presents_the_client_certificate_and_a_refusal_is_logged_with_its_reason() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let ca = Ca::new("upstream ca");
    let clients = Ca::new("client ca");
    let config = server_config(&ca.leaf(&[HOST]), Some(&clients), &[b"http/1.1"]);
    let origin = TestOrigin::start(config).await;
    let upstream = Upstream::default();

    // Without a client certificate the origin refuses the connection (TLS 1.3: after the
    // client's side of the handshake, so the exchange fails).
    let without = tls(&ca, HOST, None, UpstreamProtocol::Http1);
    match send(&upstream, origin.addr, &without, get("/"), Via::Pooled).await {
        Ok(response) => panic!("answered {}", response.status()),
        Err(AttemptError::Connect(e, _)) => assert!(matches!(e, ConnectError::Tls { .. }), "{e}"),
        Err(AttemptError::Exchange(_)) => {}
    }
    eventually("the origin refused a handshake", || {
        origin.tls_failed.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    // The request may only see "connection error": the connection says why.
    let want = format!(
        "upstream TLS connection failed addr={} reason=received fatal alert: CertificateRequired",
        origin.addr
    );
    eventually("the refusal is logged", || logs.text().contains(&want)).await;
    assert!(logs.text().contains(" WARN "), "{}", logs.text());

    let identity = clients.leaf(&["gateway.weir"]);
    let with = tls(&ca, HOST, Some(&identity), UpstreamProtocol::Http1);
    let answer = ok(send(&upstream, origin.addr, &with, get("/m"), Via::Pooled).await).await;
    assert_eq!(answer, "tls HTTP/1.1 /m client-cert=yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_multiplexes_one_connection() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"h2", b"http/1.1"]).await;
    let upstream = Upstream::default();
    let transport = tls(&ca, HOST, None, UpstreamProtocol::H2);
    let requests = (0..20).map(|i| {
        let (upstream, transport) = (&upstream, &transport);
        async move {
            ok(send(upstream, origin.addr, transport, get_h2(&format!("/s/{i}")), Via::H2).await)
                .await
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(*answer, format!("tls HTTP/2.0 /s/{i} client-cert=no"));
    }
    assert_eq!(origin.tls_count(), 1, "20 concurrent requests share one connection");
    assert_eq!(*origin.alpn.lock().unwrap(), vec![Some(b"h2".to_vec())]);
    assert_eq!(upstream.h2().connections(), 1);

    // Over TLS, `:scheme` is https (the proxy builds its HTTP/2 requests as for h2c).
    let response = send(&upstream, origin.addr, &transport, get_h2("/x"), Via::H2).await;
    let response = response.ok().unwrap();
    assert_eq!(response.headers()["x-scheme"], "https");
    assert_eq!(response.headers()["x-authority"], HOST);

    // h2c to the same address is another connection, with `:scheme` http.
    let response = send(&upstream, origin.addr, &Transport::default(), get_h2("/c"), Via::H2).await;
    let response = response.ok().unwrap();
    assert_eq!(response.headers()["x-scheme"], "http");
    assert_eq!(text(response).await, "plain HTTP/2.0 /c client-cert=no");
    assert_eq!(upstream.h2().connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_needs_the_server_to_choose_h2_by_alpn() {
    let ca = Ca::new("upstream ca");
    // A server without ALPN chooses nothing.
    let origin = origin(&ca, &[]).await;
    let upstream = Upstream::default();
    let transport = tls(&ca, HOST, None, UpstreamProtocol::H2);
    let e = connect_error(send(&upstream, origin.addr, &transport, get_h2("/"), Via::H2).await);
    assert_eq!(
        e.to_string(),
        format!(
            "TLS handshake with {}: the server did not choose HTTP/2 by ALPN (offered \"h2\", \
             chosen: none)",
            origin.addr
        )
    );
    // A server that only speaks HTTP/1.1 refuses the handshake.
    let origin = origin_h1_only(&ca).await;
    let e = connect_error(send(&upstream, origin.addr, &transport, get_h2("/"), Via::H2).await);
    assert!(matches!(e, ConnectError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("NoApplicationProtocol"), "{e}");
}

async fn origin_h1_only(ca: &Ca) -> TestOrigin {
    origin(ca, &[b"http/1.1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_fails_a_new_connection_at_once_and_closed_ones_give_back_their_slot() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"http/1.1"]).await;
    let upstream = Upstream::default();
    let count = Arc::new(ConnectionCount::new(Some(1), None));
    let transport = Transport {
        connections: Some(Arc::clone(&count)),
        ..tls(&ca, HOST, None, UpstreamProtocol::Http1)
    };

    // A response not read yet keeps its connection busy.
    let held = send(&upstream, origin.addr, &transport, get("/held"), Via::Pooled).await;
    let Ok(held) = held else { panic!("first request failed") };
    assert_eq!(count.open(), 1);
    let e = connect_error(send(&upstream, origin.addr, &transport, get("/"), Via::Pooled).await);
    assert!(matches!(e, ConnectError::ConnectionLimit), "{e}");
    assert_eq!(e.to_string(), "connection limit of the backend reached");
    assert_eq!(count.pending(), 0);
    // The upgrade path makes a new connection too.
    let e = connect_error(send(&upstream, origin.addr, &transport, get("/"), Via::Upgrade).await);
    assert!(matches!(e, ConnectError::ConnectionLimit), "{e}");

    // Read to the end, it is pooled and reused: no new connection needed.
    assert_eq!(text(held).await, "tls HTTP/1.1 /held client-cert=no");
    let answer =
        ok(send(&upstream, origin.addr, &transport, get("/again"), Via::Pooled).await).await;
    assert_eq!(answer, "tls HTTP/1.1 /again client-cert=no");
    assert_eq!(origin.tls_count(), 1);

    // The origin closes it: the slot comes back when its driver ends.
    let answer =
        ok(send(&upstream, origin.addr, &transport, get("/close"), Via::Pooled).await).await;
    assert!(answer.contains("/close"));
    eventually("the closed connection's slot is given back", || count.open() == 0).await;
    let answer = ok(send(&upstream, origin.addr, &transport, get("/new"), Via::Pooled).await).await;
    assert_eq!(answer, "tls HTTP/1.1 /new client-cert=no");
    assert_eq!(count.open(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_counts_its_one_shared_connection() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"h2"]).await;
    let upstream = Upstream::default();
    let count = Arc::new(ConnectionCount::new(Some(1), None));
    let transport = Transport {
        connections: Some(Arc::clone(&count)),
        ..tls(&ca, HOST, None, UpstreamProtocol::H2)
    };
    let requests = (0..5).map(|_| ok_h2(&upstream, origin.addr, &transport));
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer, "tls HTTP/2.0 / client-cert=no");
    }
    assert_eq!(count.open(), 1);
    // Another backend's cap at 0 connections: its first request fails at once.
    let full = Arc::new(ConnectionCount::new(Some(0), None));
    let other = Transport { connections: Some(full), ..Transport::default() };
    let e = connect_error(send(&upstream, origin.addr, &other, get_h2("/"), Via::H2).await);
    assert!(matches!(e, ConnectError::ConnectionLimit), "{e}");
}

async fn ok_h2(upstream: &Upstream, addr: SocketAddr, transport: &Transport) -> String {
    ok(send(upstream, addr, transport, get_h2("/"), Via::H2).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_fails_at_once_while_a_connection_is_being_made() {
    let ca = Ca::new("upstream ca");
    let silent = Silent::start().await;
    let upstream = Arc::new(Upstream::default());
    let count = Arc::new(ConnectionCount::new(None, Some(1)));
    let transport = Transport {
        connections: Some(Arc::clone(&count)),
        ..tls(&ca, HOST, None, UpstreamProtocol::Http1)
    };

    // The first request waits for a TLS handshake that never comes.
    let stuck = {
        let (upstream, transport) = (Arc::clone(&upstream), transport.clone());
        let addr = silent.addr;
        tokio::spawn(async move {
            let request = upstream.request(
                addr,
                &transport,
                Duration::from_secs(60),
                get("/"),
                Via::Pooled,
                std::time::Instant::now(),
            );
            drop(request.await);
        })
    };
    eventually("a request is pending", || count.pending() == 1).await;
    let e = connect_error(send(&upstream, silent.addr, &transport, get("/"), Via::Pooled).await);
    assert!(matches!(e, ConnectError::PendingLimit), "{e}");
    assert_eq!(e.to_string(), "pending request limit of the backend reached");

    // A request given up (its timeout, a client gone) gives its slots back.
    stuck.abort();
    eventually("the pending slot is given back", || count.pending() == 0).await;
    assert_eq!(count.open(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_is_bounded_by_the_connect_timeout() {
    let ca = Ca::new("upstream ca");
    let silent = Silent::start().await;
    let upstream = Upstream::default();
    let count = Arc::new(ConnectionCount::new(Some(10), Some(10)));
    let transport = Transport {
        connections: Some(Arc::clone(&count)),
        ..tls(&ca, HOST, None, UpstreamProtocol::Http1)
    };
    let attempt = upstream.request(
        silent.addr,
        &transport,
        Duration::from_millis(100),
        get("/"),
        Via::Pooled,
        std::time::Instant::now(),
    );
    let e = connect_error(tokio::time::timeout(BOUND, attempt).await.expect("not bounded"));
    assert_eq!(e.to_string(), format!("TLS handshake with {}: timed out", silent.addr));
    assert_eq!((count.open(), count.pending()), (0, 0), "a failed connect gives its slots back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_settings_bound_the_idle_connections_kept() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"http/1.1"]).await;
    let upstream = Upstream::default();
    let base = tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let one = Transport {
        connection: ConnectionSettings {
            max_idle_per_endpoint: 1,
            idle_timeout: Duration::from_secs(60),
        },
        ..base.clone()
    };
    // Two connections at once; only one is kept idle afterwards.
    let (a, b) = tokio::join!(
        send(&upstream, origin.addr, &one, get("/a"), Via::Pooled),
        send(&upstream, origin.addr, &one, get("/b"), Via::Pooled)
    );
    let (a, b) = (a.ok().unwrap(), b.ok().unwrap());
    assert_eq!(origin.tls_count(), 2);
    text(a).await;
    text(b).await;
    assert_eq!(upstream.pool().idle_count_over(origin.addr, &one), 1);

    // An idle timeout of 10 ms: after 50 ms the idle connection is not reused.
    let short = Transport {
        connection: ConnectionSettings {
            max_idle_per_endpoint: 8,
            idle_timeout: Duration::from_millis(10),
        },
        ..base
    };
    ok(send(&upstream, origin.addr, &short, get("/s"), Via::Pooled).await).await;
    let made = origin.tls_count();
    tokio::time::sleep(Duration::from_millis(50)).await;
    ok(send(&upstream, origin.addr, &short, get("/s"), Via::Pooled).await).await;
    assert_eq!(origin.tls_count(), made + 1, "an expired idle connection is not reused");

    // No idle connection kept at all.
    let upstream = Upstream::default();
    let none = Transport {
        connection: ConnectionSettings {
            max_idle_per_endpoint: 0,
            idle_timeout: Duration::from_secs(60),
        },
        ..tls(&ca, HOST, None, UpstreamProtocol::Http1)
    };
    let made = origin.tls_count();
    for _ in 0..2 {
        ok(send(&upstream, origin.addr, &none, get("/n"), Via::Pooled).await).await;
    }
    assert_eq!(origin.tls_count(), made + 2);
    assert_eq!(upstream.pool().idle_count_over(origin.addr, &none), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_h2_connection_is_let_go_after_the_idle_timeout() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"h2"]).await;
    let upstream = Upstream::default();
    let transport = Transport {
        connection: ConnectionSettings {
            max_idle_per_endpoint: 8,
            idle_timeout: Duration::from_secs(1),
        },
        ..tls(&ca, HOST, None, UpstreamProtocol::H2)
    };
    ok_h2(&upstream, origin.addr, &transport).await;
    ok_h2(&upstream, origin.addr, &transport).await;
    assert_eq!(origin.tls_count(), 1, "used within the idle timeout: shared");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ok_h2(&upstream, origin.addr, &transport).await;
    assert_eq!(origin.tls_count(), 2, "unused past the idle timeout: a new connection");
    assert_eq!(upstream.h2().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_unpooled_speaks_http1_and_h2_over_tls_and_h2c() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"h2", b"http/1.1"]).await;
    let check =
        |path: &str| Request::get(path).header("host", HOST).body(UpstreamBody::Empty).unwrap();
    let cases = [
        (tls(&ca, HOST, None, UpstreamProtocol::Http1), UpstreamProtocol::Http1, "tls HTTP/1.1"),
        (tls(&ca, HOST, None, UpstreamProtocol::H2), UpstreamProtocol::H2, "tls HTTP/2.0"),
        (Transport::default(), UpstreamProtocol::H2c, "plain HTTP/2.0"),
        (Transport::default(), UpstreamProtocol::Http1, "plain HTTP/1.1"),
    ];
    for (transport, protocol, want) in cases {
        let response =
            request_unpooled(origin.addr, &transport, protocol, BOUND, check("/healthz"))
                .await
                .unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        assert_eq!(response.status(), 200);
        if protocol != UpstreamProtocol::Http1 {
            let scheme = if transport.tls.is_some() { "https" } else { "http" };
            assert_eq!(response.headers()["x-scheme"], scheme);
            assert_eq!(response.headers()["x-authority"], HOST);
        }
        assert_eq!(text(response).await, format!("{want} /healthz client-cert=no"));
    }
    // Without a Host header, the endpoint address is the authority.
    let bare = Request::get("/x").body(UpstreamBody::Empty).unwrap();
    let transport = tls(&ca, HOST, None, UpstreamProtocol::H2);
    let response =
        request_unpooled(origin.addr, &transport, UpstreamProtocol::H2, BOUND, bare).await.unwrap();
    assert_eq!(response.headers()["x-authority"], origin.addr.to_string());
    assert_eq!(text(response).await, "tls HTTP/2.0 /x client-cert=no");

    // A wrong CA is a connect failure, with the reason.
    let wrong = tls(&Ca::new("other"), HOST, None, UpstreamProtocol::Http1);
    let e = request_unpooled(origin.addr, &wrong, UpstreamProtocol::Http1, BOUND, check("/"))
        .await
        .unwrap_err();
    let crate::proxy::error::ProxyError::UpstreamConnect { source } = e else { panic!("{e:?}") };
    assert!(source.to_string().ends_with("invalid peer certificate: UnknownIssuer"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_connect_does_the_tls_handshake() {
    let ca = Ca::new("upstream ca");
    let origin = origin(&ca, &[b"http/1.1"]).await;
    let transport = tls(&ca, HOST, None, UpstreamProtocol::Http1);
    probe_connect(origin.addr, &transport, BOUND).await.unwrap();
    eventually("the probe's handshake reached the origin", || origin.tls_count() == 1).await;
    probe_connect(origin.addr, &Transport::default(), BOUND).await.unwrap();

    let wrong = tls(&Ca::new("other"), HOST, None, UpstreamProtocol::Http1);
    let e = probe_connect(origin.addr, &wrong, BOUND).await.unwrap_err();
    assert!(matches!(e, ConnectError::Tls { .. }), "{e}");
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let e = probe_connect(closed, &transport, BOUND).await.unwrap_err();
    assert!(matches!(e, ConnectError::Io { .. }), "{e}");
}

#[test]
fn a_backend_without_policy_gets_the_plain_transport() {
    let backend = crate::snapshot::Backend::new(
        crate::snapshot::BackendKey { namespace: "ns".into(), service: "s".into(), port: 80 },
        vec!["127.0.0.1:1".parse().unwrap()],
    );
    let transport = Transport::for_backend(&backend);
    assert!(transport.tls.is_none() && transport.connections.is_none());
    assert_eq!(transport.connection, ConnectionSettings::default());
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(transport.key(addr), PoolKey { addr, transport: 0, worker: 0 });

    let ca = Ca::new("upstream ca");
    let tls = tls(&ca, HOST, None, UpstreamProtocol::Http1).tls.unwrap();
    let settings =
        ConnectionSettings { max_idle_per_endpoint: 3, idle_timeout: Duration::from_secs(7) };
    let policy = crate::upstream::BackendPolicy {
        tls: Some(Arc::clone(&tls)),
        connection: settings,
        ..Default::default()
    };
    let transport = Transport::for_backend(&backend.with_policy(Arc::new(policy)));
    assert_eq!(transport.key(addr), PoolKey { addr, transport: tls.id(), worker: 0 });
    assert_eq!(transport.connection, settings);
    assert!(transport.connections.is_none());
}

#[test]
fn each_per_core_worker_pools_its_own_connections() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let here = Transport::default().key(addr);
    let on_worker = |n| {
        std::thread::spawn(move || {
            super::set_pool_worker(n);
            Transport::default().key(addr)
        })
        .join()
        .unwrap()
    };
    let (one, two) = (on_worker(1), on_worker(2));
    assert_eq!((here.worker, one.worker, two.worker), (0, 1, 2));
    assert!(here != one && one != two, "workers share no pooled connection");
    assert_eq!((one.addr, one.transport), (here.addr, here.transport));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_tls_connection_keeps_its_slot_until_it_closes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let ca = Ca::new("upstream ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(server_config(&ca.leaf(&[HOST]), None, &[b"http/1.1"]));
    let origin = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let stream = acceptor.accept(stream).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_err() {
                return;
            }
        }
    });

    let upstream = Upstream::default();
    let count = Arc::new(ConnectionCount::new(Some(1), None));
    let transport = Transport {
        connections: Some(Arc::clone(&count)),
        ..tls(&ca, HOST, None, UpstreamProtocol::Http1)
    };
    let request = Request::get("/chat")
        .header("host", HOST)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(UpstreamBody::Empty)
        .unwrap();
    let response = match send(&upstream, addr, &transport, request, Via::Upgrade).await {
        Ok(response) => response,
        Err(AttemptError::Connect(e, _)) => panic!("connect failed: {e}"),
        Err(AttemptError::Exchange(e)) => panic!("exchange failed: {e}"),
    };
    assert_eq!(response.status(), 101);
    let upgraded =
        tokio::time::timeout(BOUND, hyper::upgrade::on(response)).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(BOUND, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("over tls"));
    // The upgraded connection still counts: no second connection under a cap of one.
    assert_eq!(count.open(), 1);
    let e = connect_error(send(&upstream, addr, &transport, get("/"), Via::Pooled).await);
    assert!(matches!(e, ConnectError::ConnectionLimit), "{e}");

    drop(ws);
    eventually("the upgraded connection's slot is given back", || count.open() == 0).await;
    origin.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_origins_are_both_reached() {
    let ca = Ca::new("upstream ca");
    let upstream = Upstream::default();
    for (version, alpn) in [
        (&rustls::version::TLS12, &[&b"http/1.1"[..]][..]),
        (&rustls::version::TLS13, &[&b"http/1.1"[..]][..]),
        (&rustls::version::TLS12, &[&b"h2"[..]][..]),
    ] {
        let config = server_config_with(&ca.leaf(&[HOST]), None, alpn, &[version]);
        let origin = TestOrigin::start(config).await;
        let answer = if alpn == [b"h2"] {
            let transport = tls(&ca, HOST, None, UpstreamProtocol::H2);
            ok_h2(&upstream, origin.addr, &transport).await
        } else {
            let transport = tls(&ca, HOST, None, UpstreamProtocol::Http1);
            ok(send(&upstream, origin.addr, &transport, get("/"), Via::Pooled).await).await
        };
        assert!(answer.starts_with("tls "), "{version:?}: {answer}");
        assert_eq!(origin.tls_count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_http_port_fails_clearly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
    });
    let ca = Ca::new("upstream ca");
    let transport = tls(&ca, HOST, None, UpstreamProtocol::Http1);
    let e =
        connect_error(send(&Upstream::default(), addr, &transport, get("/"), Via::Pooled).await);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("TLS handshake with {addr}: received corrupt message")),
        "{text}"
    );
    origin.abort();
}
