//! The HTTPS listener against real rustls clients, with certificates generated here by
//! rcgen: SNI selection (exact, wildcard, default, none), rotation, TLS versions, ALPN h2,
//! the handshake timeout, a WebSocket over TLS across reloads, and the proxy's behaviour
//! over TLS (X-Forwarded-Proto, 421, the client certificate's subject) and towards it (the
//! 301 to HTTPS).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weir_dataplane::listener::{Edge, ListenerOptions, PlainListener, TlsListener};
use weir_dataplane::tls::{HostTls, TlsTable, provider};
use weir_dataplane::{Backend, DataPlane, HostMatch, Snapshot};

const BOUND: Duration = Duration::from_secs(10);

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: PEM chain and key, and the DER the server should present.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn leaf(&self, names: &[&str], common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

fn host_tls(name: &str, leaf: &Leaf) -> Arc<HostTls> {
    Arc::new(
        HostTls::from_pem(
            name.into(),
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            None,
            std::time::SystemTime::now(),
        )
        .unwrap(),
    )
}

fn host(h: &str) -> HostMatch {
    match h.strip_prefix('*') {
        Some(suffix) => HostMatch::Wildcard(suffix.into()),
        None => HostMatch::Exact(h.into()),
    }
}

/// One route for every host over `origin`, with `tls`.
fn snapshot_with(version: u64, origin: SocketAddr, tls: TlsTable) -> Snapshot {
    let mut snap = snapshot(
        version,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("a"), vec![origin])],
    );
    snap.tls = Arc::new(tls);
    snap
}

/// A TLS and a plain listener over one data plane, stopped when dropped.
struct Gw {
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
    dataplane: Arc<DataPlane>,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gw {
    async fn start(snapshot: Snapshot, options: ListenerOptions) -> Gw {
        let dataplane = DataPlane::new();
        dataplane.publish(snapshot);
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tls_addr, plain_addr) = (tls.local_addr().unwrap(), plain.local_addr().unwrap());
        dataplane.set_https_port(tls_addr.port());
        let edge = Edge::new(Arc::clone(&dataplane), options);
        let (stop, rx) = oneshot::channel::<()>();
        let (tx2, rx2) = oneshot::channel::<()>();
        let tasks = vec![
            tokio::spawn(TlsListener::new(tls).serve(Arc::clone(&edge), async {
                let _ = rx.await;
                let _ = tx2.send(());
            })),
            tokio::spawn(PlainListener::new(plain).serve(edge, async {
                let _ = rx2.await;
            })),
        ];
        Gw { tls_addr, plain_addr, dataplane, stop: Some(stop), tasks }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(BOUND, TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .expect("handshake hung")
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// An HTTP/1.1 client connection over `stream`.
async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` with `Host: host` on an HTTP/1.1 sender: status and JSON body (if any).
async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = Request::get(path).header("host", host);
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    tokio::time::timeout(BOUND, sender.ready()).await.expect("not ready").unwrap();
    let response =
        tokio::time::timeout(BOUND, sender.send_request(request.body(Empty::new()).unwrap()))
            .await
            .expect("request hung")
            .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_default_and_fails_without_one() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let (a, w, d) = (
        ca.leaf(&["a.example.com"], "a"),
        ca.leaf(&["*.wild.example.com"], "wild"),
        ca.leaf(&["a.example.com", "other.example.com", "x.wild.example.com"], "default"),
    );
    let table = TlsTable::new(
        vec![
            (host("a.example.com"), host_tls("default/a", &a)),
            (host("*.wild.example.com"), host_tls("default/w", &w)),
        ],
        Some(host_tls("default/d", &d)),
    );
    let gw = Gw::start(snapshot_with(1, origin.addr, table), ListenerOptions::default()).await;
    let config = || client_config(&ca, &[b"http/1.1"]);
    for (sni, leaf) in [
        ("a.example.com", &a),
        ("A.Example.com", &a),
        ("x.wild.example.com", &w),
        ("other.example.com", &d),
    ] {
        let stream = connect(gw.tls_addr, sni, config()).await.unwrap();
        assert_eq!(presented(&stream), leaf.der, "SNI {sni}");
    }
    // Served end to end, with X-Forwarded-Proto: https.
    let stream = connect(gw.tls_addr, "x.wild.example.com", config()).await.unwrap();
    let mut sender = h1(stream).await;
    let (status, body) = get1(&mut sender, "x.wild.example.com", "/p", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");

    // Without a default certificate an unknown SNI fails the handshake, and is counted.
    let table = TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &a))], None);
    gw.dataplane.publish(snapshot_with(2, origin.addr, table));
    let before = gw.dataplane.listeners.tls_handshake_errors.get();
    assert!(connect(gw.tls_addr, "other.example.com", config()).await.is_err());
    let counted = async {
        while gw.dataplane.listeners.tls_handshake_errors.get() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(BOUND, counted).await.expect("handshake error not counted");
    let stream = connect(gw.tls_addr, "a.example.com", config()).await.unwrap();
    assert_eq!(presented(&stream), a.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes_and_open_connections_keep_working() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let (old, new) = (ca.leaf(&["a.example.com"], "old"), ca.leaf(&["a.example.com"], "new"));
    let table = |leaf: &Leaf| {
        TlsTable::new(vec![(host("a.example.com"), host_tls("default/a-tls", leaf))], None)
    };
    let gw =
        Gw::start(snapshot_with(1, origin.addr, table(&old)), ListenerOptions::default()).await;
    let config = || client_config(&ca, &[b"http/1.1"]);
    let stream = connect(gw.tls_addr, "a.example.com", config()).await.unwrap();
    assert_eq!(presented(&stream), old.der);
    let mut open = h1(stream).await;
    assert_eq!(get1(&mut open, "a.example.com", "/1", &[]).await.0, 200);

    gw.dataplane.publish(snapshot_with(2, origin.addr, table(&new)));
    let stream = connect(gw.tls_addr, "a.example.com", config()).await.unwrap();
    assert_eq!(presented(&stream), new.der);
    // The connection opened before the rotation keeps working (same certificate identity).
    assert_eq!(get1(&mut open, "a.example.com", "/2", &[]).await.0, 200);
    assert_eq!(gw.dataplane.listeners.https_connections.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_clients_work_and_tls_1_1_is_refused() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let a = ca.leaf(&["a.example.com"], "a");
    let table = TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &a))], None);
    let gw = Gw::start(snapshot_with(1, origin.addr, table), ListenerOptions::default()).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        let stream = connect(gw.tls_addr, "a.example.com", config).await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let mut sender = h1(stream).await;
        assert_eq!(get1(&mut sender, "a.example.com", "/", &[]).await.0, 200);
    }
    // TLS 1.1 from the openssl CLI (allowed on the client side at security level 0), with
    // the same command at TLS 1.2 as the control.
    let s_client = |version: &'static str| {
        let addr = gw.tls_addr.to_string();
        // `timeout` bounds the process; stdin is empty, so s_client ends after the handshake.
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("timeout")
                .args(["10", "openssl", "s_client", "-connect", &addr])
                .args(["-servername", "a.example.com", version, "-cipher", "DEFAULT@SECLEVEL=0"])
                .stdin(std::process::Stdio::null())
                .output()
        })
    };
    let control = s_client("-tls1_2").await.unwrap();
    match control {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE") => {
            let out = s_client("-tls1_1").await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let errors = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "TLS 1.1 handshake succeeded: {text}");
            assert!(!text.contains("BEGIN CERTIFICATE"), "a certificate was sent over TLS 1.1");
            assert!(errors.contains("alert"), "no TLS alert: {errors}");
        }
        other => eprintln!("openssl s_client unusable here ({other:?}); TLS 1.1 not checked"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_serves_http2_over_tls() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let a = ca.leaf(&["a.example.com"], "a");
    let table = TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &a))], None);
    let gw = Gw::start(snapshot_with(1, origin.addr, table), ListenerOptions::default()).await;
    let stream = connect(gw.tls_addr, "a.example.com", client_config(&ca, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let request = Request::get(format!("https://a.example.com/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response =
            tokio::time::timeout(BOUND, sender.send_request(request)).await.unwrap().unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["headers"]["x-forwarded-proto"], "https", "{json}");
        assert_eq!(json["path"], format!("/h2/{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_a_client_hello_is_closed_and_counted() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let a = ca.leaf(&["a.example.com"], "a");
    let table = TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &a))], None);
    let options =
        ListenerOptions { header_read_timeout: Duration::from_millis(300), ..Default::default() };
    let gw = Gw::start(snapshot_with(1, origin.addr, table), options).await;
    let mut silent = TcpStream::connect(gw.tls_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(BOUND, silent.read(&mut buf)).await.expect("never closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(gw.dataplane.listeners.tls_handshake_errors.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_certificate_is_not_the_connections_gets_421() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let (a, b) = (ca.leaf(&["a.example.com"], "a"), ca.leaf(&["b.example.com"], "b"));
    let table = TlsTable::new(
        vec![
            (host("a.example.com"), host_tls("default/a", &a)),
            (host("b.example.com"), host_tls("default/b", &b)),
        ],
        None,
    );
    let gw = Gw::start(snapshot_with(1, origin.addr, table), ListenerOptions::default()).await;
    let stream = connect(gw.tls_addr, "a.example.com", client_config(&ca, &[])).await.unwrap();
    let mut sender = h1(stream).await;
    assert_eq!(get1(&mut sender, "a.example.com:8443", "/", &[]).await.0, 200);
    let (status, body) = get1(&mut sender, "b.example.com", "/", &[]).await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["status"], 421);
    // A host without any certificate is misdirected too.
    assert_eq!(get1(&mut sender, "plain.example.com", "/", &[]).await.0, 421);
    assert_eq!(get1(&mut sender, "a.example.com", "/", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_answers_301_on_plain_http_only() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("test ca");
    let a = ca.leaf(&["a.example.com"], "a");
    let table = TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &a))], None);
    let mut redirecting = action(&[(0, 1)]);
    redirecting.https_redirect = true;
    let mut snap = snapshot(
        1,
        vec![route("r", &["a.example.com"], vec![rule("r", "/", redirecting)])],
        vec![Backend::new(key("a"), vec![origin.addr])],
    );
    snap.tls = Arc::new(table);
    let gw = Gw::start(snap, ListenerOptions::default()).await;
    let client = client();
    let url = format!("http://{}/shop/cart?item=1", gw.plain_addr);
    let answer = get(&client, &url, "a.example.com:8080").await;
    assert_eq!(answer.status, 301);
    let expected = format!("https://a.example.com:{}/shop/cart?item=1", gw.tls_addr.port());
    assert_eq!(answer.headers["location"], expected.as_str());
    let answer = get(&client, &url, "a.example.com").await;
    assert_eq!(answer.headers["location"], "https://a.example.com/shop/cart?item=1");
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Over TLS the same rule proxies.
    let stream = connect(gw.tls_addr, "a.example.com", client_config(&ca, &[])).await.unwrap();
    let mut sender = h1(stream).await;
    assert_eq!(get1(&mut sender, "a.example.com", "/shop/cart", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_subject_is_forwarded_only_when_verified_and_never_from_the_client() {
    let origin = Origin::start("a").await;
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("partners ca");
    let a = ca.leaf(&["a.example.com"], "a");
    let b = ca.leaf(&["b.example.com"], "b");
    // An mTLS host with an optional client certificate, as compiled from clientCA.
    let mtls = Arc::new(
        HostTls::from_pem(
            "default/a+partners".into(),
            a.cert_pem.as_bytes(),
            a.key_pem.as_bytes(),
            Some((client_ca.issuer.pem().as_bytes(), false)),
            std::time::SystemTime::now(),
        )
        .unwrap(),
    );
    let table = TlsTable::new(
        vec![(host("a.example.com"), mtls), (host("b.example.com"), host_tls("default/b", &b))],
        None,
    );
    let gw = Gw::start(snapshot_with(1, origin.addr, table), ListenerOptions::default()).await;
    let forged = [("x-client-cert-subject", "CN=admin")];

    // With a client certificate: the verified subject, not the forged one.
    let alice = client_ca.leaf(&["alice.partners.example"], "alice");
    let alice_key = rustls::pki_types::PrivateKeyDer::from_pem_slice(alice.key_pem.as_bytes());
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(vec![alice.der.clone()], alice_key.unwrap())
        .unwrap();
    let stream = connect(gw.tls_addr, "a.example.com", config).await.unwrap();
    let mut sender = h1(stream).await;
    let (status, body) = get1(&mut sender, "a.example.com", "/", &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-client-cert-subject"], "CN=alice", "{body}");

    // Without one (allowed here): no header, the forged one removed.
    let stream = connect(gw.tls_addr, "a.example.com", client_config(&ca, &[])).await.unwrap();
    let mut sender = h1(stream).await;
    let (_, body) = get1(&mut sender, "a.example.com", "/", &forged).await;
    assert!(body["headers"].get("x-client-cert-subject").is_none(), "{body}");
    // Over plain HTTP too.
    let answer = send(
        &client(),
        Request::get(format!("http://{}/", gw.plain_addr))
            .header("host", "b.example.com")
            .header("x-client-cert-subject", "CN=admin")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(answer.json()["headers"].get("x-client-cert-subject").is_none(), "{:?}", answer.json());
}

/// A WebSocket echo origin (tokio-tungstenite) on loopback; the task is aborted on drop.
struct WsOrigin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WsOrigin {
    async fn start() -> WsOrigin {
        use futures_util::{SinkExt, StreamExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    while let Some(Ok(message)) = ws.next().await {
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        WsOrigin { addr, task }
    }
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_echoes_across_reloads_and_certificate_rotations() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = WsOrigin::start().await;
    let ca = Ca::new("server ca");
    let table = |n: u64| {
        let leaf = ca.leaf(&["a.example.com"], &format!("a{n}"));
        TlsTable::new(vec![(host("a.example.com"), host_tls("default/a", &leaf))], None)
    };
    let gw = Gw::start(snapshot_with(1, origin.addr, table(1)), ListenerOptions::default()).await;
    // WebSocket upgrades are HTTP/1.1: the client offers only http/1.1.
    let stream =
        connect(gw.tls_addr, "a.example.com", client_config(&ca, &[b"http/1.1"])).await.unwrap();
    let (mut ws, response) = tokio::time::timeout(
        BOUND,
        tokio_tungstenite::client_async("wss://a.example.com/chat", stream),
    )
    .await
    .expect("upgrade hung")
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    // 20 reloads, each with a new certificate: the open tunnel keeps echoing.
    for n in 0..20u64 {
        gw.dataplane.publish(snapshot_with(n + 2, origin.addr, table(n + 2)));
        let text = format!("message {n}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(BOUND, ws.next()).await.expect("echo hung");
        assert_eq!(echoed.unwrap().unwrap(), Message::text(text));
    }
    ws.send(Message::binary(vec![7u8; 70_000])).await.unwrap();
    let echoed = tokio::time::timeout(BOUND, ws.next()).await.expect("echo hung").unwrap().unwrap();
    assert_eq!(echoed.into_data().len(), 70_000);
    ws.close(None).await.unwrap();
}
