//! Active checks: the counting and jitter on their own, then checkers against real origins
//! on 127.0.0.1 (short real intervals: paused time does not mix with real sockets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

fn check(kind: CheckKind, interval_ms: u64, healthy: u32, unhealthy: u32) -> ActiveCheck {
    ActiveCheck {
        kind,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(200),
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
    }
}

fn http(path: &str, host: Option<&'static str>, expected: &[u16]) -> CheckKind {
    CheckKind::Http {
        path: path.into(),
        host: host.map(HeaderValue::from_static),
        expected_statuses: expected.iter().map(|s| StatusCode::from_u16(*s).unwrap()).collect(),
    }
}

#[test]
fn verdicts_need_consecutive_results() {
    let mut v = Verdicts::new(&check(CheckKind::Tcp, 10, 2, 3));
    assert_eq!(v.observe(true), None, "starts healthy");
    assert_eq!(v.observe(false), None);
    assert_eq!(v.observe(false), None);
    assert_eq!(v.observe(true), None, "a success ends the failure streak");
    assert_eq!(v.observe(false), None);
    assert_eq!(v.observe(false), None);
    assert_eq!(v.observe(false), Some(false));
    assert_eq!(v.observe(false), None, "already unhealthy");
    assert_eq!(v.observe(true), None);
    assert_eq!(v.observe(false), None, "a failure ends the success streak");
    assert_eq!(v.observe(true), None);
    assert_eq!(v.observe(true), Some(true));
    assert_eq!(v.observe(true), None);
}

#[test]
fn thresholds_of_zero_act_as_one() {
    let mut v = Verdicts::new(&check(CheckKind::Tcp, 10, 0, 0));
    assert_eq!(v.observe(false), Some(false));
    assert_eq!(v.observe(true), Some(true));
}

#[test]
fn first_delay_is_a_share_of_the_interval() {
    let interval = Duration::from_secs(5);
    assert_eq!(first_delay(interval, 0), Duration::ZERO);
    assert!(first_delay(interval, u64::MAX) < interval);
    let delays: Vec<_> = (0..1000).map(|_| first_delay(interval, fastrand::u64(..))).collect();
    assert!(delays.iter().all(|d| *d < interval));
    // Spread out: both halves of the interval are used.
    assert!(delays.iter().any(|d| *d < interval / 2));
    assert!(delays.iter().any(|d| *d >= interval / 2));
}

#[test]
fn waits_are_jittered_by_ten_percent() {
    let interval = Duration::from_secs(10);
    assert_eq!(jittered(interval, 0), Duration::from_secs(9));
    assert!(jittered(interval, u64::MAX) < Duration::from_secs(11));
    assert!(jittered(interval, u64::MAX) > Duration::from_millis(10_999));
    let waits: Vec<_> = (0..1000).map(|_| jittered(interval, fastrand::u64(..))).collect();
    assert!(waits.iter().all(|w| *w >= Duration::from_secs(9) && *w < Duration::from_secs(11)));
    assert!(waits.iter().any(|w| *w < interval) && waits.iter().any(|w| *w > interval));
}

#[test]
fn http1_check_request_is_origin_form_with_host_and_user_agent() {
    let addr: SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let c = check(http("/healthz?deep=1", None, &[200]), 10, 1, 1);
    let r = CheckRequest::new(addr, &c, UpstreamProtocol::Http1, &Transport::default())
        .unwrap()
        .unwrap()
        .build();
    assert_eq!(r.method(), http::Method::GET);
    assert_eq!(r.uri(), "/healthz?deep=1");
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.headers()[HOST], "10.0.0.7:8080");
    assert_eq!(r.headers()[USER_AGENT], "weir-health-check");

    let c = check(http("/ready", Some("orders.internal"), &[200]), 10, 1, 1);
    let r = CheckRequest::new(addr, &c, UpstreamProtocol::Http1, &Transport::default())
        .unwrap()
        .unwrap()
        .build();
    assert_eq!(r.headers()[HOST], "orders.internal");
}

#[test]
fn http2_check_request_carries_the_authority_in_the_uri() {
    let addr: SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let c = check(http("/healthz", None, &[200]), 10, 1, 1);
    let r = CheckRequest::new(addr, &c, UpstreamProtocol::H2c, &Transport::default())
        .unwrap()
        .unwrap()
        .build();
    assert_eq!(r.uri(), "http://10.0.0.7:8080/healthz");
    assert_eq!(r.version(), Version::HTTP_2);
    assert!(r.headers().get(HOST).is_none());
    assert_eq!(r.headers()[USER_AGENT], "weir-health-check");

    let c = check(http("/healthz", Some("orders.internal"), &[200]), 10, 1, 1);
    let r = CheckRequest::new(addr, &c, UpstreamProtocol::H2, &Transport::default())
        .unwrap()
        .unwrap()
        .build();
    assert_eq!(r.uri(), "https://orders.internal/healthz");
}

#[test]
fn tcp_checks_build_no_request() {
    let addr: SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let c = check(CheckKind::Tcp, 10, 1, 1);
    assert!(
        CheckRequest::new(addr, &c, UpstreamProtocol::Http1, &Transport::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn without_a_runtime_nothing_runs() {
    let checker = spawn(
        "127.0.0.1:9".parse().unwrap(),
        Arc::new(check(CheckKind::Tcp, 10, 1, 1)),
        UpstreamProtocol::Http1,
        Transport::default(),
        Arc::new(|_| panic!("no transition without a runtime")),
    );
    assert!(!checker.is_running());
}

/// What a check origin saw: path, `Host` and `User-Agent` of each request.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP/1.1 origin answering every request with `status` (changeable), after `delay`.
struct CheckOrigin {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CheckOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CheckOrigin {
    async fn start(delay: Duration) -> CheckOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let seen: Seen = Arc::default();
        let (s, v) = (Arc::clone(&status), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (s, v) = (Arc::clone(&s), Arc::clone(&v));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let header = |name| {
                            request
                                .headers()
                                .get(name)
                                .map(|h: &HeaderValue| h.to_str().unwrap().to_owned())
                                .unwrap_or_default()
                        };
                        v.lock().unwrap().push((
                            request.uri().to_string(),
                            header(HOST),
                            header(USER_AGENT),
                        ));
                        let status = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CheckOrigin { addr, status, seen, task }
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Starts a checker whose transitions arrive on the returned channel.
fn start(
    addr: SocketAddr,
    check: ActiveCheck,
) -> (ActiveChecker, mpsc::UnboundedReceiver<(bool, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let checker = spawn(
        addr,
        Arc::new(check),
        UpstreamProtocol::Http1,
        Transport::default(),
        Arc::new(move |healthy| {
            let _ = tx.send((healthy, Instant::now()));
        }),
    );
    (checker, rx)
}

/// The next transition, within 5 s.
async fn next(rx: &mut mpsc::UnboundedReceiver<(bool, Instant)>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a transition within 5 s")
        .expect("the checker is alive")
        .0
}

/// Waits (at most 5 s) until `f` holds.
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn http_check_turns_unhealthy_then_healthy_again_after_the_thresholds() {
    let origin = CheckOrigin::start(Duration::ZERO).await;
    let (checker, mut rx) = start(origin.addr, check(http("/healthz", None, &[200]), 30, 2, 3));
    assert!(checker.is_running());
    // Healthy checks arrive, and nothing is reported.
    until(|| origin.requests() >= 3).await;
    assert!(rx.try_recv().is_err(), "no transition while healthy");
    {
        let seen = origin.seen.lock().unwrap();
        let (path, host, ua) = &seen[0];
        assert_eq!(path, "/healthz");
        assert_eq!(host, &origin.addr.to_string());
        assert_eq!(ua, "weir-health-check");
    }

    origin.status.store(503, Ordering::SeqCst);
    let failing_from = origin.requests();
    assert!(!next(&mut rx).await);
    // At least `unhealthyThreshold` checks failed (one may have been on its way before).
    assert!(origin.requests() - failing_from >= 3, "{} checks", origin.requests() - failing_from);
    assert!(rx.try_recv().is_err());

    origin.status.store(200, Ordering::SeqCst);
    let passing_from = origin.requests();
    assert!(next(&mut rx).await);
    assert!(origin.requests() - passing_from >= 2);
}

#[tokio::test]
async fn a_status_outside_expected_statuses_fails_and_host_is_sent() {
    let origin = CheckOrigin::start(Duration::ZERO).await;
    origin.status.store(204, Ordering::SeqCst);
    // 204 expected: healthy.
    let (ok, mut ok_rx) =
        start(origin.addr, check(http("/live", Some("svc.internal"), &[200, 204]), 20, 1, 2));
    until(|| origin.requests() >= 3).await;
    assert!(ok_rx.try_recv().is_err());
    assert!(
        origin.seen.lock().unwrap().iter().all(|(p, h, _)| p == "/live" && h == "svc.internal")
    );
    drop(ok);
    // Only 200 expected: the 204 fails.
    let (_checker, mut rx) = start(origin.addr, check(http("/live", None, &[200]), 20, 1, 2));
    assert!(!next(&mut rx).await);
}

#[tokio::test]
async fn a_check_that_does_not_answer_within_timeout_fails() {
    let origin = CheckOrigin::start(Duration::from_secs(3)).await;
    let mut c = check(http("/healthz", None, &[200]), 20, 1, 2);
    c.timeout = Duration::from_millis(50);
    let (_checker, mut rx) = start(origin.addr, c);
    assert!(!next(&mut rx).await);
}

#[tokio::test]
async fn connect_errors_fail_http_and_tcp_checks() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let (_http, mut http_rx) = start(closed, check(http("/healthz", None, &[200]), 20, 1, 2));
    let (_tcp, mut tcp_rx) = start(closed, check(CheckKind::Tcp, 20, 1, 2));
    assert!(!next(&mut http_rx).await);
    assert!(!next(&mut tcp_rx).await);
}

#[tokio::test]
async fn tcp_check_follows_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let accept = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        })
    };
    let (_checker, mut rx) = start(addr, check(CheckKind::Tcp, 20, 2, 2));
    until(|| accepted.load(Ordering::SeqCst) >= 3).await;
    assert!(rx.try_recv().is_err(), "connects succeed: healthy");
    accept.abort();
    let _ = accept.await;
    assert!(!next(&mut rx).await);
    // Listening again on the same port: healthy after two connects.
    let listener = TcpListener::bind(addr).await.unwrap();
    let _again = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    assert!(next(&mut rx).await);
}

#[tokio::test]
async fn dropping_the_checker_stops_the_checks() {
    let origin = CheckOrigin::start(Duration::ZERO).await;
    let (checker, _rx) = start(origin.addr, check(http("/healthz", None, &[200]), 20, 1, 1));
    until(|| origin.requests() >= 2).await;
    drop(checker);
    // Let a check already connecting finish, then no more come for 10 intervals.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = origin.requests();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.requests(), after);
}

#[tokio::test]
async fn checks_are_spaced_by_the_interval() {
    let origin = CheckOrigin::start(Duration::ZERO).await;
    let (_checker, _rx) = start(origin.addr, check(http("/healthz", None, &[200]), 100, 1, 1));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(550)).await;
    let elapsed = started.elapsed();
    // First check within [0, 100 ms), then every 90–110 ms: never more than
    // 1 + elapsed / 90 ms checks, however slow the machine.
    let max = 1 + (elapsed.as_millis() / 90) as usize;
    let n = origin.requests();
    assert!(n >= 1 && n <= max, "{n} checks in {elapsed:?}");
}

/// Starts a checker over `transport` in `protocol`; transitions arrive on the channel.
fn start_over(
    addr: SocketAddr,
    check: ActiveCheck,
    protocol: UpstreamProtocol,
    transport: Transport,
) -> (ActiveChecker, mpsc::UnboundedReceiver<(bool, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let checker = spawn(
        addr,
        Arc::new(check),
        protocol,
        transport,
        Arc::new(move |healthy| {
            let _ = tx.send((healthy, Instant::now()));
        }),
    );
    (checker, rx)
}

/// An origin answering `status` to HTTP/2 with prior knowledge (h2c); records each
/// request's version and URI.
async fn h2c_origin(
    status: Arc<AtomicU16>,
) -> (SocketAddr, Arc<Mutex<Vec<(Version, String)>>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<(Version, String)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (status, log) = (Arc::clone(&status), Arc::clone(&log));
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    log.lock().unwrap().push((request.version(), request.uri().to_string()));
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() =
                        StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test]
async fn h2c_checks_speak_http2() {
    let status = Arc::new(AtomicU16::new(200));
    let (addr, seen, task) = h2c_origin(Arc::clone(&status)).await;
    let (_checker, mut rx) = start_over(
        addr,
        check(http("/healthz", None, &[200]), 20, 1, 2),
        UpstreamProtocol::H2c,
        Transport::default(),
    );
    until(|| seen.lock().unwrap().len() >= 3).await;
    assert!(rx.try_recv().is_err(), "healthy over h2c");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, Version::HTTP_2);
        assert_eq!(seen[0].1, format!("http://{addr}/healthz"));
    }
    status.store(500, Ordering::SeqCst);
    assert!(!next(&mut rx).await);
    task.abort();
}

mod tls {
    //! Checks over TLS: the handshake verifies the upstream's certificate.

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::ServerConfig;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::upstream::tls::{TlsRoots, UpstreamTls};

    const NAME: &str = "orders.internal";

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// A TLS HTTP/1.1 origin for `NAME` signed by `ca`, answering 200; counts requests and
    /// completed handshakes.
    async fn tls_origin(
        ca: &CertifiedIssuer<'static, KeyPair>,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let mut params = CertificateParams::new(vec![NAME.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, NAME);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        let chain = CertificateDer::pem_slice_iter(cert.pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (counter, shaken) = (Arc::clone(&requests), Arc::clone(&handshakes));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
                let shaken = Arc::clone(&shaken);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    shaken.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, requests, handshakes, task)
    }

    fn transport(ca: &CertifiedIssuer<'static, KeyPair>) -> Transport {
        let pem = ca.pem();
        let tls =
            UpstreamTls::new(TlsRoots::Pem(pem.as_bytes()), NAME, None, UpstreamProtocol::Http1)
                .unwrap();
        Transport { tls: Some(Arc::new(tls)), ..Transport::default() }
    }

    #[tokio::test]
    async fn https_checks_pass_with_the_right_ca_and_fail_with_another() {
        let right = ca("right CA");
        let (addr, requests, _handshakes, task) = tls_origin(&right).await;
        let c = || check(http("/healthz", None, &[200]), 20, 1, 2);
        let (_good, mut good_rx) =
            start_over(addr, c(), UpstreamProtocol::Http1, transport(&right));
        until(|| requests.load(Ordering::SeqCst) >= 3).await;
        assert!(good_rx.try_recv().is_err(), "healthy with the right CA");

        let (_bad, mut bad_rx) =
            start_over(addr, c(), UpstreamProtocol::Http1, transport(&ca("another CA")));
        assert!(!next(&mut bad_rx).await, "the handshake fails with another CA");
        task.abort();
    }

    #[tokio::test]
    async fn tcp_checks_over_tls_include_the_handshake() {
        let right = ca("right CA");
        let (addr, _requests, handshakes, task) = tls_origin(&right).await;
        let c = || check(CheckKind::Tcp, 20, 1, 2);
        let (_bad, mut bad_rx) =
            start_over(addr, c(), UpstreamProtocol::Http1, transport(&ca("another CA")));
        assert!(!next(&mut bad_rx).await, "a TCP check over TLS fails on the handshake");
        let (_good, mut good_rx) =
            start_over(addr, c(), UpstreamProtocol::Http1, transport(&right));
        until(|| handshakes.load(Ordering::SeqCst) >= 3).await;
        assert!(good_rx.try_recv().is_err(), "healthy with the right CA");
        task.abort();
    }
}

#[test]
fn a_check_that_cannot_be_sent_names_the_field() {
    let addr: SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let c = check(http("/health z", None, &[200]), 10, 1, 1);
    let error =
        CheckRequest::new(addr, &c, UpstreamProtocol::Http1, &Transport::default()).unwrap_err();
    assert!(error.starts_with("healthCheck.active.path \"/health z\""), "{error}");
    let c = check(http("/healthz", Some("bad host/x"), &[200]), 10, 1, 1);
    let error =
        CheckRequest::new(addr, &c, UpstreamProtocol::H2c, &Transport::default()).unwrap_err();
    assert!(error.starts_with("healthCheck.active.host"), "{error}");
}
