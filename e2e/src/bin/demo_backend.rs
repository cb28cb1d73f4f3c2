//! `weir-demo-backend NAME=ADDR [NAME=ADDR ...]`: small HTTP/1.1 echo servers for
//! `make run`. Each answers every request with JSON naming itself and describing the request
//! (`backend`, `method`, `path`, `host`, `headers`). Stops on SIGINT or SIGTERM.
//!
//! Switches, to show what the gateway does when a backend misbehaves:
//! - `?fail=NNN` on any request: answer with status NNN (100–599) instead of 200, same body.
//! - `?delay=MS` on any request: wait MS milliseconds (at most 10 000) before answering.
//! - `GET /healthz`: 200 `{"backend":…,"healthy":true}`, or the status set with
//!   `POST /demo/health?status=NNN` (sent to the backend's own address, not through weir);
//!   `POST /demo/health?status=200` makes it healthy again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

const USAGE: &str = "usage: weir-demo-backend NAME=ADDR [NAME=ADDR ...]  \
                     (e.g. orders-v1=127.0.0.1:9001)";

/// The longest `?delay=` honoured.
const MAX_DELAY: Duration = Duration::from_secs(10);

fn parse_args() -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut out = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let (name, addr) = arg.split_once('=').with_context(|| format!("`{arg}`: {USAGE}"))?;
        anyhow::ensure!(!name.is_empty(), "`{arg}`: empty NAME; {USAGE}");
        let addr: SocketAddr = addr.parse().with_context(|| format!("`{arg}`: bad address"))?;
        out.push((name.to_owned(), addr));
    }
    anyhow::ensure!(!out.is_empty(), "{USAGE}");
    Ok(out)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
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

/// One demo backend: the echo, plus the switches of the module doc.
async fn handle(
    name: Arc<str>,
    health: Arc<AtomicU16>,
    request: http::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let query = request.uri().query();
    let quoted = serde_json::Value::from(&*name).to_string();
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            let status = StatusCode::from_u16(health.load(Ordering::Relaxed))
                .unwrap_or(StatusCode::OK);
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
    if let Some(ms) = query_param(query, "delay").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
    }
    let mut response = weir_e2e::echo_response(&name, &request);
    if let Some(status) = status_param(query, "fail") {
        *response.status_mut() = status;
    }
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let backends = parse_args()?;
    let (tx, rx) = watch::channel(());
    let mut tasks = Vec::new();
    for (name, addr) in backends {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        eprintln!("weir-demo-backend: {name} listening on http://{addr}");
        let name: Arc<str> = name.into();
        let health = Arc::new(AtomicU16::new(200));
        let handler = move |request| handle(Arc::clone(&name), Arc::clone(&health), request);
        tasks.push(tokio::spawn(weir_e2e::serve_http1(listener, rx.clone(), handler)));
    }
    shutdown_signal().await?;
    let _ = tx.send(());
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
