//! The request-processing plugins through the real server against real origins: CORS
//! (preflights before authentication, headers on gateway errors), header transforms with
//! templates, correlation ids, IP restriction (IPv4, IPv6, trusted proxies), body size
//! limits (declared and streamed), redirects and fixed answers with the response phase,
//! and the end-of-request record.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use weir_dataplane::filter::answer::{DirectResponse, Redirect};
use weir_dataplane::filter::consumers::hash_api_key;
use weir_dataplane::filter::correlation::CorrelationId;
use weir_dataplane::filter::cors::{Cors, parse_origin};
use weir_dataplane::filter::headers::{HeaderTransform, Template};
use weir_dataplane::filter::ip::{IpRestriction, NetSet, parse_net};
use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use weir_dataplane::filter::size::RequestSize;
use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore, RateLimitRuntime};
use weir_dataplane::observe::{RequestObserver, RequestRecord};
use weir_dataplane::ratelimit::{RateLimiters, TrustedProxies};
use weir_dataplane::{
    Backend, DataPlane, Filter, ObjectKey, PathMatch, RequestMatch, Rewrite, Rule, Snapshot,
};

fn cors(origins: &[&str], methods: &[&str], headers: &[&str], credentials: bool) -> Filter {
    Filter::Cors(Arc::new(Cors::new(
        origins.iter().map(|o| parse_origin(o).unwrap()).collect(),
        methods.iter().map(|m| m.parse().unwrap()).collect(),
        headers.iter().map(|h| h.parse().unwrap()).collect(),
        vec![HeaderName::from_static("x-total-count")],
        credentials,
        Some(600),
    )))
}

fn transform(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderTransform {
    let entries = |list: &[(&str, &str)]| -> Box<[(HeaderName, Template)]> {
        list.iter().map(|(n, v)| (n.parse().unwrap(), Template::parse(v).unwrap())).collect()
    };
    HeaderTransform {
        set: entries(set),
        add: entries(add),
        remove: remove.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

/// A keyAuth filter with one consumer `mobile` holding `key`.
fn key_auth(key: &[u8]) -> Filter {
    let entry = ConsumerEntry::new(
        ObjectKey::new("default", "mobile"),
        "mobile",
        None,
        Arc::from(Vec::new()),
    );
    let mut store = ConsumerStore::default();
    store.add_consumer(&entry);
    store.add_api_key(hash_api_key(key), &entry);
    let key_auth = KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: None,
        forward_credential: false,
        consumers: Arc::new(store),
    };
    Filter::Authenticate(Arc::new(Authenticate {
        jwt: None,
        key_auth: Some(Arc::new(key_auth)),
        ext_auth: None,
    }))
}

/// A rule of Route `route` on `prefix`, limited to `methods`, with `filters` (phase order).
fn rule_with(route: &str, prefix: &str, methods: &[Method], mut filters: Vec<Filter>) -> Arc<Rule> {
    filters.sort_by_key(Filter::phase);
    let mut a = action(&[(0, 1)]);
    a.filters = Arc::from(filters);
    Arc::new(Rule {
        name: prefix.into(),
        index: 0,
        stats: weir_dataplane::observe::stats::RuleStats::detached(
            &ObjectKey::new("default", route),
            prefix,
        ),
        matches: vec![RequestMatch::new(
            PathMatch::Prefix(prefix.trim_end_matches('/').into()),
            methods.to_vec(),
            vec![],
            vec![],
        )],
        action: a,
    })
}

fn one_route(origin: SocketAddr, rules: Vec<Arc<Rule>>) -> Snapshot {
    snapshot(1, vec![route("r", &[], rules)], vec![Backend::new(key("o"), vec![origin])])
}

async fn call(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(gw.url(path)).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&client(), b.body(empty()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_before_authentication_and_errors_stay_readable() {
    let origin = Origin::start("o").await;
    let app = "https://app.example.com";
    let gw = Gateway::start(one_route(
        origin.addr,
        vec![rule_with(
            "r",
            "/api",
            &[Method::GET],
            vec![
                cors(
                    &[app, "https://*.shop.test"],
                    &["GET", "POST"],
                    &["authorization", "content-type"],
                    true,
                ),
                key_auth(b"k-1"),
            ],
        )],
    ))
    .await;
    // A preflight for GET on a GET-only rule protected by keyAuth: answered 204 by the
    // gateway, no credential needed, never forwarded.
    let pre = call(
        &gw,
        Method::OPTIONS,
        "/api/x",
        &[
            ("origin", app),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "Authorization"),
        ],
    )
    .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert_eq!(pre.headers["access-control-allow-origin"], app);
    assert_eq!(pre.headers["access-control-allow-credentials"], "true");
    assert_eq!(pre.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(pre.headers["access-control-allow-headers"], "authorization, content-type");
    assert_eq!(pre.headers["access-control-max-age"], "600");
    assert!(pre.headers["vary"].to_str().unwrap().contains("Origin"));
    assert!(pre.headers.contains_key("x-request-id"));
    // Wildcard subdomain origin.
    let sub = call(
        &gw,
        Method::OPTIONS,
        "/api/x",
        &[("origin", "https://eu.shop.test"), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(sub.headers["access-control-allow-origin"], "https://eu.shop.test");
    // A disallowed origin: answered, but no CORS headers.
    let evil = call(
        &gw,
        Method::OPTIONS,
        "/api/x",
        &[("origin", "https://evil.test"), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(evil.status, StatusCode::NO_CONTENT);
    assert!(!evil.headers.contains_key("access-control-allow-origin"), "{:?}", evil.headers);
    // The announced method does not match the rule (GET only): no rule, no CORS success.
    let delete = call(
        &gw,
        Method::OPTIONS,
        "/api/x",
        &[("origin", app), ("access-control-request-method", "DELETE")],
    )
    .await;
    assert_gateway_error(&delete, 404);
    assert!(!delete.headers.contains_key("access-control-allow-origin"));
    assert_eq!(
        origin.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no preflight reached the origin"
    );

    // Actual requests: a 401 from the gateway a browser can read; an authenticated 200.
    let denied = call(&gw, Method::GET, "/api/x", &[("origin", app)]).await;
    assert_gateway_error(&denied, 401);
    assert_eq!(denied.headers["access-control-allow-origin"], app);
    assert_eq!(denied.headers["access-control-allow-credentials"], "true");
    assert_eq!(denied.headers["access-control-expose-headers"], "x-total-count");
    assert_eq!(denied.headers["vary"], "Origin");
    let ok = call(&gw, Method::GET, "/api/x", &[("origin", app), ("x-api-key", "k-1")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["access-control-allow-origin"], app);
    let other =
        call(&gw, Method::GET, "/api/x", &[("origin", "https://evil.test"), ("x-api-key", "k-1")])
            .await;
    assert_eq!(other.status, 200);
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    assert_eq!(other.headers["vary"], "Origin");
    // A plain OPTIONS (not a preflight) on a route that does not accept it: normal routing.
    let plain = call(&gw, Method::OPTIONS, "/api/x", &[]).await;
    assert_gateway_error(&plain, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_transforms_apply_templates_and_reach_gateway_answers() {
    let origin = Origin::start("o").await;
    let request = transform(
        &[("x-caller", "gateway"), ("x-route", "${route}"), ("x-who", "${consumer}@${client_ip}")],
        &[("x-trace", "${request_id}")],
        &["x-internal"],
    );
    let response = transform(&[("x-served-by", "weir")], &[("x-id", "${uuid}")], &["x-resp-keep"]);
    let gw = Gateway::start(one_route(
        origin.addr,
        vec![
            rule_with(
                "r",
                "/open",
                &[],
                vec![
                    Filter::RequestHeaders(Arc::new(request)),
                    Filter::ResponseHeaders(Arc::new(response.clone())),
                ],
            ),
            rule_with(
                "r",
                "/closed",
                &[],
                vec![key_auth(b"k-2"), Filter::ResponseHeaders(Arc::new(response))],
            ),
        ],
    ))
    .await;
    let a = call(
        &gw,
        Method::GET,
        "/open?hop=1",
        &[("x-internal", "secret"), ("x-request-id", "rid-42")],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = &a.json()["headers"];
    assert_eq!(seen["x-caller"], "gateway");
    assert_eq!(seen["x-route"], "default/r");
    assert_eq!(seen["x-who"], "@127.0.0.1", "anonymous: ${{consumer}} is empty");
    assert_eq!(seen["x-trace"], "rid-42");
    assert!(seen.get("x-internal").is_none(), "{seen}");
    assert_eq!(a.headers["x-served-by"], "weir");
    assert_eq!(a.headers["x-id"].len(), 36);
    assert!(!a.headers.contains_key("x-resp-keep"), "removed from the upstream's response");
    // The response phase runs on the gateway's own 401 too.
    let e = call(&gw, Method::GET, "/closed", &[]).await;
    assert_gateway_error(&e, 401);
    assert_eq!(e.headers["x-served-by"], "weir");
    let b = call(&gw, Method::GET, "/closed", &[("x-api-key", "k-2")]).await;
    assert_eq!(b.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_ids_are_kept_when_valid_minted_otherwise_and_echoed() {
    let origin = Origin::start("o").await;
    let corr = |header: &'static str, echo| {
        Filter::CorrelationId(Arc::new(CorrelationId {
            header: HeaderName::from_static(header),
            echo,
        }))
    };
    let gw = Gateway::start(one_route(
        origin.addr,
        vec![
            rule_with("r", "/c", &[], vec![corr("x-correlation-id", true)]),
            rule_with("r", "/quiet", &[], vec![corr("x-correlation-id", false)]),
            rule_with("r", "/rid", &[], vec![corr("x-request-id", true), key_auth(b"k")]),
        ],
    ))
    .await;
    let kept = call(&gw, Method::GET, "/c", &[("x-correlation-id", "abc-123")]).await;
    assert_eq!(kept.json()["headers"]["x-correlation-id"], "abc-123");
    assert_eq!(kept.headers["x-correlation-id"], "abc-123");
    let replaced =
        call(&gw, Method::GET, "/c", &[("x-correlation-id", "bad id; drop table")]).await;
    let minted = replaced.headers["x-correlation-id"].to_str().unwrap().to_owned();
    assert_eq!(minted.len(), 36);
    assert_eq!(replaced.json()["headers"]["x-correlation-id"], minted.as_str());
    let quiet = call(&gw, Method::GET, "/quiet", &[]).await;
    assert!(quiet.json()["headers"]["x-correlation-id"].is_string());
    assert!(!quiet.headers.contains_key("x-correlation-id"));
    // With X-Request-ID it is the request id of the gateway's own error bodies, echoed on
    // them too.
    let e = call(&gw, Method::GET, "/rid", &[("x-request-id", "rid-7")]).await;
    assert_gateway_error(&e, 401);
    assert_eq!(e.json()["requestId"], "rid-7");
    assert_eq!(e.headers["x-request-id"], "rid-7");
}

fn restriction(allow: &[&str], deny: &[&str]) -> Filter {
    let set = |l: &[&str]| NetSet::new(l.iter().map(|n| parse_net(n).unwrap()));
    Filter::IpRestriction(Arc::new(IpRestriction { allow: set(allow), deny: set(deny) }))
}

/// Starts the data plane on `listener` (any address) with `trusted` proxies.
async fn serve_on(
    listener: TcpListener,
    snap: Snapshot,
    trusted: &[&str],
    observer: Option<Arc<dyn RequestObserver>>,
) -> (Arc<DataPlane>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let runtime = RateLimitRuntime::new(
        RateLimiters::new(None),
        TrustedProxies::parse(trusted.iter().copied()).unwrap(),
    );
    let dp = DataPlane::with_observer(runtime, observer);
    dp.publish(snap);
    let task =
        tokio::spawn(weir_dataplane::serve(listener, Arc::clone(&dp), std::future::pending()));
    (dp, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_denies_v4_v6_and_forwarded_clients() {
    let origin = Origin::start("o").await;
    let snap = || {
        one_route(
            origin.addr,
            vec![
                rule_with(
                    "r",
                    "/deny-v6",
                    &[],
                    vec![
                        restriction(&[], &["::1/128", "2001:db8::/32"]),
                        cors(&["*"], &[], &[], false),
                    ],
                ),
                rule_with("r", "/only-10", &[], vec![restriction(&["10.0.0.0/8"], &[])]),
                rule_with("r", "/deny-v4", &[], vec![restriction(&[], &["127.0.0.0/8"])]),
            ],
        )
    };
    // An IPv6 client on [::1].
    let v6 = TcpListener::bind("[::1]:0").await.unwrap();
    let v6_addr = v6.local_addr().unwrap();
    let (_dp, v6_task) = serve_on(v6, snap(), &[], None).await;
    let http = client();
    let get6 = |path: &str, origin_header: Option<&str>| {
        let mut b = Request::get(format!("http://{v6_addr}{path}")).header("host", "api.test");
        if let Some(o) = origin_header {
            b = b.header("origin", o);
        }
        send(&http, b.body(empty()).unwrap())
    };
    let denied = get6("/deny-v6", Some("https://app.test")).await;
    assert_gateway_error(&denied, 403);
    assert_eq!(denied.headers["access-control-allow-origin"], "*", "a 403 a browser can read");
    assert_eq!(get6("/deny-v4", None).await.status, 200, "::1 is not in 127.0.0.0/8");
    assert_gateway_error(&get6("/only-10", None).await, 403);
    v6_task.abort();

    // An IPv4 client, and clients behind a trusted proxy (X-Forwarded-For).
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let v4_addr = v4.local_addr().unwrap();
    let (_dp, v4_task) = serve_on(v4, snap(), &["127.0.0.1"], None).await;
    let get4 = |path: &str, xff: Option<&str>| {
        let mut b = Request::get(format!("http://{v4_addr}{path}")).header("host", "api.test");
        if let Some(x) = xff {
            b = b.header("x-forwarded-for", x);
        }
        send(&http, b.body(empty()).unwrap())
    };
    assert_gateway_error(&get4("/deny-v4", None).await, 403);
    assert_eq!(get4("/deny-v4", Some("203.0.113.9")).await.status, 200);
    assert_gateway_error(&get4("/deny-v6", Some("2001:db8::77")).await, 403);
    assert_eq!(get4("/only-10", Some("10.1.2.3")).await.status, 200);
    // Spoofing the left part of the list does not help: the right-most untrusted entry counts.
    assert_gateway_error(&get4("/only-10", Some("10.1.2.3, 198.51.100.1")).await, 403);
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    v4_task.abort();
}

/// An origin that reads each request body to the end and reports what it saw: the bytes,
/// or that the body failed (the gateway aborted it).
async fn body_origin()
-> (SocketAddr, Arc<Mutex<Vec<Result<usize, String>>>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let result = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .map_err(|e| e.to_string());
                        log.lock().unwrap().push(result);
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"stored"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_refuses_declared_and_streamed_bodies_over_the_limit() {
    let (addr, seen, task) = body_origin().await;
    let limit = Filter::RequestSize(Arc::new(RequestSize { max_body: 64 * 1024 }));
    let gw = Gateway::start(one_route(addr, vec![rule_with("r", "/up", &[], vec![limit])])).await;
    let http = client();
    let post = |body: TestBody| {
        Request::post(gw.url("/up")).header("host", "api.test").body(body).unwrap()
    };
    // Under the limit, with Content-Length.
    assert_eq!(send(&http, post(full(vec![b'a'; 1000]))).await.status, 200);
    // Declared over the limit: refused before the upstream is contacted.
    let big = send(&http, post(full(vec![b'a'; 64 * 1024 + 1]))).await;
    assert_gateway_error(&big, 413);
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Streamed (chunked, no Content-Length) under the limit: delivered complete.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let sender = tokio::spawn(async move {
        for _ in 0..4 {
            tx.send_data(Bytes::from(vec![b'b'; 8 * 1024])).await.unwrap();
        }
    });
    assert_eq!(send(&http, post(body.boxed())).await.status, 200);
    sender.await.unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap().as_ref().ok(), Some(&(32 * 1024)));
    // Streamed over the limit: 413 to the client, and the upstream never sees a complete body.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(16);
    let sender = tokio::spawn(async move {
        for _ in 0..12 {
            if tx.send_data(Bytes::from(vec![b'c'; 8 * 1024])).await.is_err() {
                break;
            }
        }
    });
    let over = tokio::time::timeout(Duration::from_secs(10), http.request(post(body.boxed())))
        .await
        .expect("answered in time");
    sender.abort();
    // The rest of the body is drained by the gateway, so the answer reaches the client.
    assert_eq!(over.expect("an answer, not a reset").status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Give the origin a moment to record what it got, bounded.
    for _ in 0..50 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = seen.lock().unwrap().clone();
    assert!(
        log.iter().all(|r| r.as_ref().map_or(true, |n| *n <= 64 * 1024)),
        "a complete oversized body reached the origin: {log:?}"
    );
    assert_eq!(log.len(), 3, "the declared oversized body never reached it: {log:?}");
    assert!(log[2].is_err(), "the aborted body must not look complete: {:?}", log[2]);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_direct_responses_are_gateway_answers_with_the_response_phase() {
    let origin = Origin::start("o").await;
    let redirect = Filter::Redirect(Arc::new(Redirect {
        scheme: Some("https".into()),
        host: Some("new.example.com".into()),
        port: None,
        status: StatusCode::MOVED_PERMANENTLY,
        path: Some(Rewrite {
            replace_prefix: Some("/v2".into()),
            replace_full_path: None,
            host: None,
        }),
    }));
    let direct = Filter::DirectResponse(Arc::new(DirectResponse {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: Bytes::from_static(b"{\"maintenance\":true}"),
        content_type: Some(HeaderValue::from_static("application/json")),
    }));
    let headers =
        Filter::ResponseHeaders(Arc::new(transform(&[("x-served-by", "weir")], &[], &[])));
    let gw = Gateway::start(one_route(
        origin.addr,
        vec![
            rule_with(
                "r",
                "/v1",
                &[],
                vec![redirect, headers.clone(), cors(&["*"], &[], &[], false)],
            ),
            rule_with("r", "/maintenance", &[], vec![direct, headers]),
        ],
    ))
    .await;
    let r = call(&gw, Method::GET, "/v1/users/7?x=1", &[("origin", "https://a.test")]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers["location"], "https://new.example.com/v2/users/7?x=1");
    assert_eq!(r.headers["x-served-by"], "weir");
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let d = call(&gw, Method::POST, "/maintenance/x", &[]).await;
    assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(d.headers["content-type"], "application/json");
    assert_eq!(d.json(), serde_json::json!({"maintenance": true}));
    assert_eq!(d.headers["x-served-by"], "weir");
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<RequestRecord>>);

impl RequestObserver for Collect {
    fn on_request_end(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_ends_with_one_record() {
    let origin = Origin::start("o").await;
    let collect = Arc::new(Collect::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snap = one_route(
        origin.addr,
        vec![
            rule_with("r", "/open", &[], vec![]),
            rule_with("r", "/closed", &[], vec![key_auth(b"k-9")]),
        ],
    );
    let (_dp, task) =
        serve_on(listener, snap, &[], Some(Arc::clone(&collect) as Arc<dyn RequestObserver>)).await;
    let http = client();
    let url = |p: &str| format!("http://{addr}{p}");
    let ok = send(
        &http,
        Request::post(url("/open/x")).header("host", "api.test").body(full("hello")).unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_gateway_error(
        &send(
            &http,
            Request::get(url("/closed")).header("host", "api.test").body(empty()).unwrap(),
        )
        .await,
        401,
    );
    assert_eq!(
        send(
            &http,
            Request::get(url("/closed"))
                .header("host", "api.test")
                .header("x-api-key", "k-9")
                .body(empty())
                .unwrap()
        )
        .await
        .status,
        200
    );
    assert_gateway_error(
        &send(&http, Request::get(url("/nope")).header("host", "api.test").body(empty()).unwrap())
            .await,
        404,
    );
    for _ in 0..100 {
        if collect.0.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let records = collect.0.lock().unwrap().clone();
    assert_eq!(records.len(), 4, "{records:#?}");
    let r = &records[0];
    assert_eq!((r.method.as_str(), &*r.path, r.status.as_u16()), ("POST", "/open/x", 200));
    assert_eq!(r.route.as_ref().unwrap().to_string(), "default/r");
    assert_eq!(r.rule.as_deref(), Some("/open"));
    assert_eq!(r.bytes_in, 5);
    assert_eq!(r.bytes_out, ok.body.len() as u64);
    assert_eq!(r.upstream, Some(origin.addr));
    assert_eq!(r.backend.as_ref().unwrap().to_string(), "default/o:80");
    assert!(r.upstream_duration.is_some() && r.completed && r.error.is_none() && r.retries == 0);
    assert_eq!(records[1].error, Some("unauthorized"));
    assert_eq!(records[1].status.as_u16(), 401);
    assert!(records[1].upstream.is_none() && records[1].consumer.is_none());
    assert_eq!(records[2].consumer.as_deref(), Some("mobile"));
    assert_eq!((records[3].error, records[3].route.is_none()), (Some("no_route"), true));
    assert!(records.iter().all(|r| !r.request_id.is_empty()));
    task.abort();
}
