//! Test material for the upstream TLS tests: an rcgen certificate authority, leaf
//! certificates, and an origin on 127.0.0.1:0 that speaks plain HTTP or TLS on one port
//! (HTTP/1.1 or HTTP/2, by ALPN or preface) and counts its connections. Also included by
//! `dataplane/tests/upstream_tls.rs` (`#[path]`), so it names nothing of this crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A test certificate authority.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
pub(crate) struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses).
    pub(crate) fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

/// A server configuration presenting `leaf`, offering ALPN `alpn`, requiring a client
/// certificate from `client_ca` when given.
pub(crate) fn server_config(
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    server_config_with(leaf, client_ca, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`server_config`] speaking only TLS `versions`.
pub(crate) fn server_config_with(
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    // Not `crate::tls::provider()`: tests/upstream_tls.rs includes this file too.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                .build()
                .unwrap(),
        ),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An origin answering plain HTTP and TLS on one port (a first byte 0x16 is a TLS
/// ClientHello). Each answer says how it came: `{plain|tls} {HTTP version} {path}
/// client-cert={yes|no}`, and for HTTP/2 its `:scheme` and `:authority` in `x-scheme` and
/// `x-authority`. `/close` answers with `Connection: close`.
pub(crate) struct TestOrigin {
    pub addr: SocketAddr,
    /// Plain connections accepted.
    pub plain: Arc<AtomicUsize>,
    /// TLS handshakes completed.
    pub tls: Arc<AtomicUsize>,
    /// TLS handshakes that failed.
    pub tls_failed: Arc<AtomicUsize>,
    /// The ALPN protocol of each TLS connection.
    pub alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    task: JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    pub(crate) async fn start(config: Arc<ServerConfig>) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (plain, tls, tls_failed): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            Default::default();
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let counters = (Arc::clone(&plain), Arc::clone(&tls), Arc::clone(&tls_failed));
        let seen = Arc::clone(&alpn);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (plain, tls, failed) =
                    (Arc::clone(&counters.0), Arc::clone(&counters.1), Arc::clone(&counters.2));
                let (seen, acceptor) = (Arc::clone(&seen), acceptor.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    if stream.peek(&mut first).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if first[0] != 0x16 {
                        plain.fetch_add(1, Ordering::SeqCst);
                        serve(TokioIo::new(stream), "plain", false).await;
                        return;
                    }
                    match acceptor.accept(stream).await {
                        Ok(stream) => {
                            let conn = stream.get_ref().1;
                            seen.lock().unwrap().push(conn.alpn_protocol().map(<[u8]>::to_vec));
                            let cert = conn.peer_certificates().is_some();
                            tls.fetch_add(1, Ordering::SeqCst);
                            serve(TokioIo::new(stream), "tls", cert).await;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        TestOrigin { addr, plain, tls, tls_failed, alpn, task }
    }

    pub(crate) fn tls_count(&self) -> usize {
        self.tls.load(Ordering::SeqCst)
    }

    pub(crate) fn plain_count(&self) -> usize {
        self.plain.load(Ordering::SeqCst)
    }
}

async fn serve<I>(io: I, kind: &'static str, client_cert: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| async move {
        let text = format!(
            "{kind} {:?} {} client-cert={}",
            request.version(),
            request.uri().path(),
            if client_cert { "yes" } else { "no" }
        );
        let mut response = Response::new(Full::new(Bytes::from(text)));
        if request.uri().path() == "/close" {
            response.headers_mut().insert("connection", "close".parse().unwrap());
        }
        // HTTP/2's `:scheme` and `:authority`.
        if let Some(scheme) = request.uri().scheme_str() {
            response.headers_mut().insert("x-scheme", scheme.parse().unwrap());
        }
        if let Some(authority) = request.uri().authority() {
            response.headers_mut().insert("x-authority", authority.as_str().parse().unwrap());
        }
        Ok::<_, Infallible>(response)
    });
    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
}

/// A listener that accepts TCP connections and never answers (a TLS handshake with it
/// hangs). The accepted streams are kept open until it is dropped.
pub(crate) struct Silent {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Silent {
    pub(crate) async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }
}

/// Log lines written while a test runs (on a current-thread runtime: every task logs on
/// the test's thread).
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Captures warnings and errors of this thread until the guard is dropped.
    pub(crate) fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Waits (at most 10 s) until `f` holds, the runtime running meanwhile; panics naming
/// `what` otherwise.
pub(crate) async fn eventually(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}
