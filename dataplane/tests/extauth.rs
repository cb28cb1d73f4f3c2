//! `extAuth` through the real server: a real in-process auth service (plain or TLS) that
//! decides by the forwarded `Authorization`, records what it was sent and counts TCP
//! connections, in front of a real echo origin. A 2xx admits the request with the auth
//! service's identity headers, any other answer goes back to the client as sent (the
//! upstream never sees the request), and an auth service that cannot be asked is a 503 or
//! is let through, per `onError`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "auth_support.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_dataplane::filter::consumers::hash_api_key;
use weir_dataplane::filter::extauth::{ExtAuth, ExtAuthSettings, ExtAuthTarget, MAX_BODY_BYTES};
use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore};
use weir_dataplane::{Backend, BackendId, Filter, ObjectKey, Snapshot};

/// What the auth service was sent.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body_len: usize,
}

/// A forward-auth service on 127.0.0.1. By `Authorization`: `Bearer good` → 200 with
/// `x-user-id: 42`; `Bearer bad` → 401 with a challenge and a text body; `Bearer huge` →
/// 403 with a 200 KiB body; `Bearer broken` → 503 with a text body; `Bearer slow` → 200
/// after 2 s; anything else → 302 to a login page with two cookies.
struct AuthService {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        response.headers_mut().append(name, HeaderValue::from_str(value).unwrap());
    }
    response
}

async fn decide(authorization: Option<&str>) -> Response<Full<Bytes>> {
    match authorization {
        Some("Bearer good") => answer(200, &[("x-user-id", "42"), ("x-other", "no")], "ok"),
        Some("Bearer bad") => answer(
            401,
            &[
                ("www-authenticate", r#"Bearer realm="shop", error="invalid_token""#),
                ("content-type", "text/plain"),
            ],
            "token rejected by shop-auth",
        ),
        Some("Bearer huge") => {
            answer(403, &[("content-type", "text/plain")], vec![b'h'; 200 * 1024])
        }
        Some("Bearer broken") => {
            answer(503, &[("content-type", "text/plain")], "auth backend down")
        }
        Some("Bearer slow") => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            answer(200, &[("x-user-id", "slow")], "")
        }
        _ => answer(
            302,
            &[
                ("location", "https://login.test/start?rd=%2Forders"),
                ("set-cookie", "csrf=1; HttpOnly"),
                ("set-cookie", "flow=2; Secure"),
            ],
            "",
        ),
    }
}

impl AuthService {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (Arc::clone(&connections), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (record, tls) = (Arc::clone(&record), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
                            let authorization =
                                parts.headers.get("authorization").map(|v| v.to_str().unwrap());
                            let response = decide(authorization).await;
                            record.lock().unwrap().push(Seen {
                                method: parts.method.clone(),
                                path: parts.uri.to_string(),
                                headers: parts.headers.clone(),
                                body_len,
                            });
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        AuthService { addr, connections, seen, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn asked(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the auth service was asked")
    }
}

struct Options {
    allow_on_error: bool,
    timeout: Duration,
    forward: Option<&'static [&'static str]>,
}

const DENY: Options =
    Options { allow_on_error: false, timeout: Duration::from_secs(5), forward: None };

fn ext_auth(target: ExtAuthTarget, options: &Options) -> Arc<ExtAuth> {
    let names = |list: &[&str]| -> Box<[HeaderName]> {
        list.iter().map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()).collect()
    };
    Arc::new(ExtAuth::new(ExtAuthSettings {
        source: ObjectKey::new("default", "forward-auth"),
        target,
        timeout: options.timeout,
        forward_headers: options.forward.map(names),
        upstream_headers: names(&["x-user-id"]),
        allow_on_error: options.allow_on_error,
    }))
}

fn url(addr: SocketAddr, scheme: &str) -> ExtAuthTarget {
    ExtAuthTarget::Url(format!("{scheme}://{addr}/check").parse().unwrap())
}

/// The auth Service: backend 1 of [`protected`]'s snapshots.
fn service() -> ExtAuthTarget {
    ExtAuthTarget::Service {
        backend: BackendId(1),
        path_and_query: "/verify?from=weir".parse().unwrap(),
        host: HeaderValue::from_static("auth.default.svc:80"),
    }
}

/// `/` protected by `auth`, proxied to `origin`; backend 1 is the auth Service at `auth`.
fn protected(
    version: u64,
    auth: Authenticate,
    origin: SocketAddr,
    auth_at: SocketAddr,
) -> Snapshot {
    let mut a = action(&[(0, 1)]);
    a.filters = Arc::from(vec![Filter::Authenticate(Arc::new(auth))]);
    snapshot(
        version,
        vec![route("p", &[], vec![rule("p", "/", a)])],
        vec![Backend::new(key("o"), vec![origin]), Backend::new(key("auth"), vec![auth_at])],
    )
}

fn only(ext: Arc<ExtAuth>) -> Authenticate {
    Authenticate { jwt: None, key_auth: None, ext_auth: Some(ext) }
}

async fn call(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(gw.url(path)).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = if b.method_ref() == Some(&Method::POST) { full("order=1") } else { empty() };
    send(&client(), b.body(body).unwrap()).await
}

async fn bearer(gw: &Gateway, token: &str) -> Answer {
    call(gw, Method::GET, "/orders", &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_admits_with_the_auth_services_identity_and_sees_what_the_client_asked() {
    let (origin, auth) = (Origin::start("o").await, AuthService::start(None).await);
    let gw = Gateway::start(protected(
        1,
        only(ext_auth(url(auth.addr, "http"), &DENY)),
        origin.addr,
        auth.addr,
    ))
    .await;
    let headers = [
        ("authorization", "Bearer good"),
        ("cookie", "session=abc"),
        ("x-user-id", "forged-admin"),
        ("x-forwarded-uri", "/forged"),
        ("x-request-id", "req-123"),
    ];
    let answer = call(&gw, Method::POST, "/orders/7?expand=items", &headers).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let upstream = answer.json();
    assert_eq!(upstream["method"], "POST");
    assert_eq!(upstream["headers"]["x-user-id"], "42", "copied from the answer, not forged");
    assert!(upstream["headers"].get("x-other").is_none(), "only upstreamHeaders are copied");
    assert!(upstream["headers"].get("x-consumer-username").is_none(), "extAuth sets no consumer");
    assert_eq!(upstream["headers"]["content-length"], "7", "the client's body goes upstream");

    let seen = auth.last();
    assert_eq!((seen.method, seen.path.as_str(), seen.body_len), (Method::GET, "/check", 0));
    let h = &seen.headers;
    assert_eq!(h["host"], auth.addr.to_string());
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["cookie"], "session=abc");
    assert_eq!(h["x-forwarded-method"], "POST");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.test");
    assert_eq!(h["x-forwarded-uri"], "/orders/7?expand=items");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-request-id"], "req-123");
    for absent in ["x-user-id", "content-length", "transfer-encoding", "content-type"] {
        assert!(!h.contains_key(absent), "{absent} was sent: {h:?}");
    }

    // With a forwardHeaders list, only those (plus weir's own) are sent.
    let listed = Options { forward: Some(&["authorization"]), ..DENY };
    gw.dataplane.publish(protected(
        2,
        only(ext_auth(url(auth.addr, "http"), &listed)),
        origin.addr,
        auth.addr,
    ));
    let answer = call(&gw, Method::GET, "/x", &headers).await;
    assert_eq!(answer.status, 200);
    let h = auth.last().headers;
    assert_eq!(h["authorization"], "Bearer good");
    assert!(!h.contains_key("cookie"), "{h:?}");
    assert_eq!(h["x-forwarded-uri"], "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_answer_goes_to_the_client_as_sent_and_never_upstream() {
    let (origin, auth) = (Origin::start("o").await, AuthService::start(None).await);
    let gw = Gateway::start(protected(
        1,
        only(ext_auth(url(auth.addr, "http"), &DENY)),
        origin.addr,
        auth.addr,
    ))
    .await;

    let answer = bearer(&gw, "bad").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers["www-authenticate"], r#"Bearer realm="shop", error="invalid_token""#);
    assert_eq!(answer.headers["content-type"], "text/plain");
    assert_eq!(&answer.body[..], b"token rejected by shop-auth");
    assert!(answer.headers.contains_key("x-request-id"));

    let answer = call(&gw, Method::GET, "/orders", &[]).await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.headers["location"], "https://login.test/start?rd=%2Forders");
    let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["csrf=1; HttpOnly", "flow=2; Secure"]);

    let answer = bearer(&gw, "huge").await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body.len(), MAX_BODY_BYTES, "capped at 64 KiB");
    assert!(answer.body.iter().all(|b| *b == b'h'));
    assert_eq!(answer.headers["content-length"], MAX_BODY_BYTES.to_string());

    // Even a 5xx is the auth service's own answer, not the gateway's 503.
    let answer = bearer(&gw, "broken").await;
    assert_eq!(answer.status, 503);
    assert_eq!(&answer.body[..], b"auth backend down");

    assert_eq!(auth.asked(), 4);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 0, "a refused request reached the upstream");
    // The gateway keeps working after a truncated answer.
    assert_eq!(bearer(&gw, "good").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_service_that_cannot_be_asked_follows_on_error() {
    let origin = Origin::start("o").await;
    let down = closed_port().await;
    let allow = Options { allow_on_error: true, ..DENY };
    for target in [url(down, "http"), service()] {
        let gw =
            Gateway::start(protected(1, only(ext_auth(target.clone(), &DENY)), origin.addr, down))
                .await;
        let answer = bearer(&gw, "good").await;
        assert_gateway_error(&answer, 503);
        assert_eq!(answer.json()["error"], "authorization service unavailable");

        gw.dataplane.publish(protected(2, only(ext_auth(target, &allow)), origin.addr, down));
        let answer = call(&gw, Method::GET, "/x", &[("x-user-id", "forged")]).await;
        assert_eq!(answer.status, 200, "fail open");
        assert!(
            answer.json()["headers"].get("x-user-id").is_none(),
            "no identity when failing open"
        );
    }
    assert_eq!(origin.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_service_slower_than_its_timeout_follows_on_error() {
    let (origin, auth) = (Origin::start("o").await, AuthService::start(None).await);
    let short = Duration::from_millis(200);
    let deny = Options { timeout: short, ..DENY };
    let allow = Options { allow_on_error: true, timeout: short, ..DENY };
    let gw = Gateway::start(protected(
        1,
        only(ext_auth(url(auth.addr, "http"), &deny)),
        origin.addr,
        auth.addr,
    ))
    .await;
    assert_gateway_error(&bearer(&gw, "slow").await, 503);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 0);

    gw.dataplane.publish(protected(2, only(ext_auth(service(), &allow)), origin.addr, auth.addr));
    let answer = bearer(&gw, "slow").await;
    assert_eq!(answer.status, 200);
    assert!(answer.json()["headers"].get("x-user-id").is_none(), "no identity when failing open");
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_auth_service_are_reused_across_requests_and_reloads() {
    let origin = Origin::start("o").await;
    for (name, target) in
        [("url", url as fn(SocketAddr, &str) -> ExtAuthTarget), ("service", |_, _| service())]
    {
        let auth = AuthService::start(None).await;
        let make = |version| {
            protected(
                version,
                only(ext_auth(target(auth.addr, "http"), &DENY)),
                origin.addr,
                auth.addr,
            )
        };
        let gw = Gateway::start(make(1)).await;
        for i in 0..20 {
            // Admissions and refusals alike: both bodies are read to the end.
            let (token, status) = if i % 2 == 0 { ("good", 200) } else { ("bad", 401) };
            assert_eq!(bearer(&gw, token).await.status, status, "{name} #{i}");
            if i == 9 {
                gw.dataplane.publish(make(2));
            }
        }
        assert_eq!(auth.asked(), 20, "{name}");
        assert_eq!(auth.connections(), 1, "{name}: 20 sequential auth requests, one connection");
        if name == "service" {
            assert_eq!(auth.last().path, "/verify?from=weir");
            assert_eq!(auth.last().headers["host"], "auth.default.svc:80");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_urls_are_asked_over_tls() {
    let scratch = support::Scratch::new();
    let (acceptor, client_tls) = support::private_tls(&scratch);
    let (origin, auth) = (Origin::start("o").await, AuthService::start(Some(acceptor)).await);
    let target = ExtAuthTarget::Url(
        format!("https://localhost:{}/check", auth.addr.port()).parse().unwrap(),
    );
    let gw =
        Gateway::start(protected(1, only(ext_auth(target, &DENY)), origin.addr, auth.addr)).await;
    assert!(gw.dataplane.upstream.set_ext_auth_tls(&client_tls));
    assert!(!gw.dataplane.upstream.set_ext_auth_tls(&client_tls), "the client exists now");
    let answer = bearer(&gw, "good").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["headers"]["x-user-id"], "42");
    assert_eq!(auth.last().headers["host"], format!("localhost:{}", auth.addr.port()));
    assert_eq!(bearer(&gw, "bad").await.status, 401);
    assert_eq!(auth.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_and_ext_auth_must_both_pass_and_the_consumer_is_kept() {
    let (origin, auth) = (Origin::start("o").await, AuthService::start(None).await);
    let mobile = ConsumerEntry::new(
        ObjectKey::new("default", "mobile"),
        "mobile-app",
        None,
        Arc::from(Vec::new()),
    );
    let mut store = ConsumerStore::default();
    store.add_consumer(&mobile);
    store.add_api_key(hash_api_key(b"k-mobile"), &mobile);
    let key_auth = Arc::new(KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: None,
        forward_credential: false,
        consumers: Arc::new(store),
    });
    let both = Authenticate {
        jwt: None,
        key_auth: Some(key_auth),
        ext_auth: Some(ext_auth(service(), &DENY)),
    };
    let gw = Gateway::start(protected(1, both, origin.addr, auth.addr)).await;
    let ask = |key: &'static str, token: &'static str| {
        let gw = &gw;
        async move {
            let mut headers = vec![("authorization", token)];
            if !key.is_empty() {
                headers.push(("x-api-key", key));
            }
            call(gw, Method::GET, "/orders", &headers).await
        }
    };

    let answer = ask("k-mobile", "Bearer good").await;
    assert_eq!(answer.status, 200);
    let upstream = answer.json()["headers"].clone();
    assert_eq!(upstream["x-consumer-username"], "mobile-app", "keyAuth's consumer is kept");
    assert_eq!(upstream["x-user-id"], "42");
    assert!(upstream.get("x-api-key").is_none());
    assert!(!auth.last().headers.contains_key("x-api-key"), "the key is removed before extAuth");

    // A valid key, refused by the auth service: its answer.
    let answer = ask("k-mobile", "Bearer bad").await;
    assert_eq!(
        (answer.status.as_u16(), &answer.body[..]),
        (401, &b"token rejected by shop-auth"[..])
    );
    let asked = auth.asked();
    // No key or a wrong one: keyAuth's 401, and the auth service is not asked.
    for key in ["", "k-wrong"] {
        let answer = ask(key, "Bearer good").await;
        assert_gateway_error(&answer, 401);
        assert_eq!(answer.headers["www-authenticate"], r#"ApiKey realm="weir""#);
    }
    assert_eq!(auth.asked(), asked);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1, "only the request both admitted");
}
