//! Shared helpers of the data-plane integration tests: in-process echo origins, a gateway
//! on a free port, snapshot builders and a client.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_dataplane::{
    Backend, BackendId, BackendKey, BackendTable, DataPlane, Filter, HostMatch, ObjectKey,
    PathMatch, RequestMatch, RetryPolicy, Rewrite, RouteModel, RouteTable, Rule, RuleAction,
    Snapshot, Timeouts, WeightedBackend, WeightedBackends,
};

/// How an origin behaves, beyond echoing.
#[derive(Debug, Clone, Default)]
pub struct OriginOptions {
    /// Sleep this long before answering every request.
    pub delay: Option<Duration>,
    /// Answer every request with this status.
    pub status: Option<u16>,
}

/// An in-process HTTP/1.1 origin. It answers `/echo-body…` by streaming the request body
/// back, and everything else with JSON `{name, method, path, headers}`. Query parameters
/// `sleep_ms=N` (delay), `status=N` and `hop=1` (adds hop-by-hop response headers).
pub struct Origin {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Requests received (counted when they arrive, before any delay).
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    serde_json::Value::Object(map)
}

type OriginBody = http_body_util::Either<Full<Bytes>, Incoming>;

async fn origin_answer(
    name: &'static str,
    options: &OriginOptions,
    request: Request<Incoming>,
) -> Response<OriginBody> {
    let query = request.uri().query();
    let sleep =
        query_param(query, "sleep_ms").and_then(|v| v.parse().ok()).map(Duration::from_millis);
    if let Some(d) = sleep.or(options.delay) {
        tokio::time::sleep(d).await;
    }
    let status =
        query_param(query, "status").and_then(|v| v.parse().ok()).or(options.status).unwrap_or(200);
    let hop = query_param(query, "hop").is_some();
    if request.uri().path().starts_with("/echo-body") {
        let mut response = Response::new(OriginBody::Right(request.into_body()));
        response.headers_mut().insert("x-origin", name.parse().unwrap());
        return response;
    }
    let body = serde_json::json!({
        "name": name,
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        "headers": headers_json(request.headers()),
    });
    // Drain the request body so the connection stays reusable.
    let _ = request.into_body().collect().await;
    let mut response = Response::new(OriginBody::Left(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if hop {
        response.headers_mut().insert("connection", "x-resp-drop".parse().unwrap());
        response.headers_mut().insert("x-resp-drop", "1".parse().unwrap());
        response.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
        response.headers_mut().insert("x-resp-keep", "1".parse().unwrap());
    }
    response
}

impl Origin {
    /// Starts an echo origin on 127.0.0.1:0.
    pub async fn start(name: &'static str) -> Origin {
        Origin::start_with(name, OriginOptions::default()).await
    }

    /// Starts an origin with options.
    pub async fn start_with(name: &'static str, options: OriginOptions) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counter = Arc::clone(&counter);
                let options = Arc::clone(&options);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let options = Arc::clone(&options);
                        async move { Ok::<_, Infallible>(origin_answer(name, &options, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { name, addr, requests, task }
    }
}

/// An origin's own answer to one request (see [`Origin::start_service`]).
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<TestBody> + Send + Sync>;

impl Origin {
    /// Starts an HTTP/1.1 origin on 127.0.0.1:0 that answers every request with `handler`.
    pub async fn start_service(name: &'static str, handler: Handler) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counter = Arc::clone(&counter);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { name, addr, requests, task }
    }
}

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The gateway under test, serving on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    pub dataplane: Arc<DataPlane>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Starts `weir_dataplane::serve` with `snapshot` published.
    pub async fn start(snapshot: Snapshot) -> Gateway {
        let dataplane = DataPlane::new();
        dataplane.publish(snapshot);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(weir_dataplane::serve(listener, Arc::clone(&dataplane), async {
            let _ = rx.await;
        }));
        Gateway { addr, dataplane, shutdown: Some(tx), task: Some(task) }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts a graceful shutdown and returns the server task, to await the drain.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Builds a backend key for `service`.
pub fn key(service: &str) -> BackendKey {
    BackendKey { namespace: "default".into(), service: service.into(), port: 80 }
}

/// A rule action over `(backend index, weight)` with default timeouts and no retries.
pub fn action(backends: &[(u32, u32)]) -> RuleAction {
    RuleAction {
        backends: WeightedBackends::new(
            backends
                .iter()
                .map(|&(id, weight)| WeightedBackend { id: BackendId(id), weight })
                .collect(),
        ),
        rewrite: None,
        timeouts: Timeouts::default().shared(),
        retries: RetryPolicy::default().shared(),
        filters: Arc::from(Vec::<Filter>::new()),
        https_redirect: false,
        aggregate: None,
    }
}

/// A rule of Route `route` matching the path `prefix`.
pub fn rule(route: &str, prefix: &str, action: RuleAction) -> Arc<Rule> {
    Arc::new(Rule {
        name: prefix.into(),
        index: 0,
        stats: weir_dataplane::observe::stats::RuleStats::detached(
            &ObjectKey::new("default", route),
            prefix,
        ),
        matches: vec![RequestMatch::path(PathMatch::Prefix(prefix.trim_end_matches('/').into()))],
        action,
    })
}

/// A Route named `name` for `hosts` (`*.x` is a wildcard).
pub fn route(name: &str, hosts: &[&str], rules: Vec<Arc<Rule>>) -> RouteModel {
    static CREATED: AtomicU64 = AtomicU64::new(1);
    RouteModel {
        key: ObjectKey::new("default", name),
        generation: 1,
        created: CREATED.fetch_add(1, Ordering::Relaxed) as i64,
        hosts: hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.into()),
                None => HostMatch::Exact((*h).into()),
            })
            .collect(),
        rules,
    }
}

/// A snapshot of `routes` over `backends`.
pub fn snapshot(version: u64, routes: Vec<RouteModel>, backends: Vec<Backend>) -> Snapshot {
    Snapshot {
        version,
        routes: Arc::new(RouteTable::new(routes)),
        backends: Arc::new(BackendTable { backends }),
        identity_headers: Arc::from([]),
        tls: Arc::default(),
    }
}

/// A prefix rewrite, optionally with a host.
pub fn rewrite(replace_prefix: &str, host: Option<&str>) -> Rewrite {
    Rewrite {
        replace_prefix: Some(replace_prefix.into()),
        replace_full_path: None,
        host: host.map(|h| h.parse().unwrap()),
    }
}

/// The test client's request body.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A collected response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The echo origin's name.
    pub fn origin(&self) -> String {
        self.json()["name"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends `request` and collects the response, failing after 20 s.
pub async fn send(client: &Client<HttpConnector, TestBody>, request: Request<TestBody>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// `GET url` with `Host: host`.
pub async fn get(client: &Client<HttpConnector, TestBody>, url: &str, host: &str) -> Answer {
    let request = Request::get(url).header("host", host).body(empty()).unwrap();
    send(client, request).await
}

/// Asserts the gateway's own JSON error shape and status.
pub fn assert_gateway_error(answer: &Answer, status: u16) {
    assert_eq!(answer.status.as_u16(), status, "{:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers["content-type"], "application/json");
    let json = answer.json();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), 3, "{json}");
    assert!(json["error"].as_str().is_some_and(|s| !s.is_empty()), "{json}");
    assert_eq!(json["status"], status, "{json}");
    assert!(json["requestId"].as_str().is_some_and(|s| !s.is_empty()), "{json}");
}
