//! Helpers of the upstream-layer integration tests (`upstream_health.rs`,
//! `upstream_breaker.rs`): origins whose answers and `/healthz` status the test flips,
//! that count what they receive and can hold requests; policies; a gateway over one
//! backend.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_dataplane::upstream::BackendPolicy;
use weir_dataplane::upstream::policy::{
    ActiveCheck, CheckKind, CircuitBreaker, Fallback, OutlierDetection,
};
use weir_dataplane::{Backend, Snapshot};

use crate::common::{action, key, route, rule, snapshot};

/// The host the test route answers.
pub const HOST: &str = "app.test";

/// An HTTP/1.1 origin on 127.0.0.1. `/healthz` answers `health` (counted in
/// `checks_passed`/`checks_failed` by that status); every other request is traffic:
/// counted in `traffic`, held while the gate is closed, then answered with `status` and
/// `{"name": …}`.
pub struct FlipOrigin {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Status of traffic answers.
    pub status: Arc<AtomicU16>,
    /// Status of `/healthz` answers.
    pub health: Arc<AtomicU16>,
    /// Traffic requests received (counted on arrival).
    pub traffic: Arc<AtomicUsize>,
    /// Traffic requests answered.
    pub answered: Arc<AtomicUsize>,
    /// `/healthz` requests answered 200 / otherwise (counted on arrival).
    pub checks_passed: Arc<AtomicUsize>,
    pub checks_failed: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for FlipOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    name: &'static str,
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    traffic: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    checks_passed: Arc<AtomicUsize>,
    checks_failed: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
}

async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/healthz" {
        let status = shared.health.load(Ordering::SeqCst);
        if status == 200 {
            shared.checks_passed.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.checks_failed.fetch_add(1, Ordering::SeqCst);
        }
        let mut response = Response::new(Full::new(Bytes::from_static(b"health")));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        return response;
    }
    shared.traffic.fetch_add(1, Ordering::SeqCst);
    let mut gate = shared.gate.clone();
    let _ = gate.wait_for(|open| *open).await;
    let _ = request.into_body().collect().await;
    let status = StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap();
    let body = serde_json::json!({ "name": shared.name }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    shared.answered.fetch_add(1, Ordering::SeqCst);
    response
}

impl FlipOrigin {
    /// Starts an origin answering 200 to everything, gate open.
    pub async fn start(name: &'static str) -> FlipOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, gate_rx) = watch::channel(true);
        let shared = Arc::new(Shared {
            name,
            status: Arc::new(AtomicU16::new(200)),
            health: Arc::new(AtomicU16::new(200)),
            traffic: Arc::default(),
            answered: Arc::default(),
            checks_passed: Arc::default(),
            checks_failed: Arc::default(),
            gate: gate_rx,
        });
        FlipOrigin {
            name,
            addr,
            status: Arc::clone(&shared.status),
            health: Arc::clone(&shared.health),
            traffic: Arc::clone(&shared.traffic),
            answered: Arc::clone(&shared.answered),
            checks_passed: Arc::clone(&shared.checks_passed),
            checks_failed: Arc::clone(&shared.checks_failed),
            gate,
            task: tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(answer(shared, request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }),
        }
    }

    /// Traffic requests received.
    pub fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }

    /// Failed `/healthz` checks received.
    pub fn failed_checks(&self) -> usize {
        self.checks_failed.load(Ordering::SeqCst)
    }

    /// Passed `/healthz` checks received.
    pub fn passed_checks(&self) -> usize {
        self.checks_passed.load(Ordering::SeqCst)
    }

    /// Traffic answers with this status from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// `/healthz` answers with this status from now on.
    pub fn health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Holds traffic requests (received and counted, not answered) until [`Self::open`].
    pub fn close(&self) {
        self.gate.send_replace(false);
    }

    /// Answers held and future traffic requests.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// A snapshot with one route (`HOST`, `/`) to one backend over `origins` under `policy`.
pub fn one_backend(version: u64, origins: &[&FlipOrigin], policy: BackendPolicy) -> Snapshot {
    let endpoints = origins.iter().map(|o| o.addr).collect();
    let backend = Backend::new(key("svc"), endpoints).with_policy(Arc::new(policy));
    snapshot(
        version,
        vec![route("r", &[HOST], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![backend],
    )
}

/// Outlier detection after `consecutive_5xx` 5xx answers, for `base`.
pub fn passive(consecutive_5xx: u32, base: Duration) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        base_ejection_time: base,
        max_ejection_percent: 50,
    }
}

/// HTTP checks of `/healthz` expecting 200.
pub fn active(interval: Duration, healthy: u32, unhealthy: u32) -> Arc<ActiveCheck> {
    Arc::new(ActiveCheck {
        kind: CheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expected_statuses: Box::new([StatusCode::OK]),
        },
        interval,
        timeout: Duration::from_millis(500),
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
    })
}

/// The fallback body of [`breaker`].
pub const FALLBACK_BODY: &str = r#"{"error":"svc unavailable"}"#;

/// A breaker: `failures` within 10 s open it for `open_for`; `successes` probes close it;
/// the fallback is 503 with [`FALLBACK_BODY`].
pub fn breaker(failures: u32, open_for: Duration, successes: u32) -> CircuitBreaker {
    CircuitBreaker {
        failure_threshold: failures,
        window: Duration::from_secs(10),
        open_for,
        success_threshold: successes,
        max_connections: None,
        max_pending_requests: None,
        max_parallel_requests: None,
        fallback: Fallback {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Some(Bytes::from_static(FALLBACK_BODY.as_bytes())),
            content_type: HeaderValue::from_static("application/json"),
        },
    }
}

/// Polls `f` every 10 ms for at most `limit`; panics with `what` if it never holds.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let rounds = limit.as_millis() / 10 + 1;
    for _ in 0..rounds {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {limit:?}");
}
