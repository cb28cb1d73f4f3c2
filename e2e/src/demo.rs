//! The demo backend's origin: the echo of [`crate::echo`], plus switches that make it
//! misbehave on demand, to show what the gateway does about it (breakers, health checks,
//! least-request balancing). Served by the `weir-demo-backend` binary behind `make run`, and
//! in-process by the e2e tests.
//!
//! - `?fail=NNN` on any request: answer with status NNN (100–599) instead of 200, same body.
//! - `?delay=MS` on any request: wait MS milliseconds (at most 10 000) before answering.
//! - `GET /healthz`: 200 `{"backend":…,"healthy":true}`, or the status set with
//!   `POST /demo/health?status=NNN` (sent to the backend's own address, not through weir);
//!   `POST /demo/health?status=200` makes it healthy again.
//! - `GET /users/ID`: a small JSON user `{"id":"ID","name":"User ID","backend":…}`, and
//!   `GET /orders?user=ID`: a JSON array of two orders of that user — the parts of the
//!   quickstart's composed profile page (deploy/examples/quickstart/profile.yaml).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The longest `?delay=` honoured.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// The switchable state of one demo origin.
#[derive(Debug)]
pub struct DemoState {
    name: Arc<str>,
    health: AtomicU16,
    requests: AtomicU64,
}

impl DemoState {
    /// A healthy origin named `name`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(DemoState {
            name: name.into(),
            health: AtomicU16::new(200),
            requests: AtomicU64::new(0),
        })
    }

    /// Makes `/healthz` answer `status`.
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::Relaxed);
    }

    /// Requests answered so far, `/healthz` and `/demo/health` excluded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The value of query parameter `name`, if present.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn status_param(query: Option<&str>, name: &str) -> Option<StatusCode> {
    query_param(query, name)
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|n| StatusCode::from_u16(n).ok())
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Answers one request as the demo origin `state`: the echo, plus the switches of the
/// module doc.
pub async fn handle<B>(state: Arc<DemoState>, request: http::Request<B>) -> Response<Full<Bytes>> {
    let name = &state.name;
    let health = &state.health;
    let query = request.uri().query();
    let quoted = serde_json::Value::from(&**name).to_string();
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            let status =
                StatusCode::from_u16(health.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
            let healthy = status.is_success();
            return json(status, format!("{{\"backend\":{quoted},\"healthy\":{healthy}}}\n"));
        }
        (&Method::POST, "/demo/health") => {
            let Some(status) = status_param(query, "status") else {
                return json(
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"POST /demo/health?status=NNN (100-599)\"}\n".to_owned(),
                );
            };
            health.store(status.as_u16(), Ordering::Relaxed);
            eprintln!("weir-demo-backend: {name} /healthz now answers {}", status.as_u16());
            return json(
                StatusCode::OK,
                format!("{{\"backend\":{quoted},\"healthz\":{}}}\n", status.as_u16()),
            );
        }
        _ => {}
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(ms) = query_param(query, "delay").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
    }
    let mut response = profile_part(name, request.method(), request.uri().path(), query)
        .unwrap_or_else(|| crate::echo::echo_response(name, &request));
    if let Some(status) = status_param(query, "fail") {
        *response.status_mut() = status;
    }
    response
}

/// The JSON parts of the composed profile page: `GET /users/ID` and `GET /orders?user=ID`.
fn profile_part(
    name: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Full<Bytes>>> {
    if method != Method::GET {
        return None;
    }
    let backend = serde_json::Value::from(name);
    if let Some(id) = path.strip_prefix("/users/").filter(|id| !id.is_empty() && !id.contains('/'))
    {
        let body = serde_json::json!({"id": id, "name": format!("User {id}"), "backend": backend});
        return Some(json(StatusCode::OK, format!("{body}\n")));
    }
    if path == "/orders"
        && let Some(user) = query_param(query, "user")
    {
        let body = serde_json::json!([
            {"id": format!("{user}-1"), "user": user, "total": 42.5},
            {"id": format!("{user}-2"), "user": user, "total": 7.25},
        ]);
        return Some(json(StatusCode::OK, format!("{body}\n")));
    }
    None
}

/// An in-process demo origin on `127.0.0.1:0`; it stops when dropped.
#[derive(Debug)]
pub struct DemoOrigin {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its switches and counters.
    pub state: Arc<DemoState>,
    shutdown: watch::Sender<()>,
}

impl DemoOrigin {
    /// Starts a demo origin named `name` on a free loopback port.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding demo origin")?;
        let addr = listener.local_addr()?;
        let state = DemoState::new(name);
        let (shutdown, rx) = watch::channel(());
        let shared = Arc::clone(&state);
        tokio::spawn(crate::echo::serve_http1(listener, rx, move |request| {
            handle(Arc::clone(&shared), request)
        }));
        Ok(DemoOrigin { addr, state, shutdown })
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        let _ = self.shutdown.send(());
    }
}
