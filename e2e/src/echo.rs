//! An HTTP/1.1 echo origin: answers every request with JSON describing it
//! (`backend`, `method`, `path`, `host`, `headers`). Used in-process by tests and by the
//! `weir-demo-backend` binary behind `make run`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Builds the echo response for `request`, as served by the origin named `backend`:
/// `{"backend", "method", "path" (path and query as received), "host", "headers"}`.
/// Repeated headers are joined with `, `.
pub fn echo_response<B>(backend: &str, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let mut headers = serde_json::Map::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), serde_json::Value::String(value));
            }
        }
    }
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| request.uri().host().map(str::to_owned))
        .unwrap_or_default();
    // Written by hand so the fields keep this order (serde_json maps sort their keys).
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let body = format!(
        "{{\"backend\":{},\"method\":{},\"path\":{},\"host\":{},\"headers\":{}}}\n",
        string(backend),
        string(request.method().as_str()),
        string(path),
        string(&host),
        serde_json::Value::Object(headers),
    );
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Serves the echo origin named `backend` on `listener` (HTTP/1.1, keep-alive) until
/// `shutdown` changes or its sender is dropped.
pub async fn serve_echo(backend: String, listener: TcpListener, shutdown: watch::Receiver<()>) {
    let backend: Arc<str> = Arc::from(backend);
    serve_http1(listener, shutdown, move |request| {
        let response = echo_response(&backend, &request);
        async move { response }
    })
    .await;
}

/// Serves `handler` on `listener` (HTTP/1.1, keep-alive, one task per connection) until
/// `shutdown` changes or its sender is dropped; open connections then finish gracefully.
pub async fn serve_http1<H, F>(listener: TcpListener, mut shutdown: watch::Receiver<()>, handler: H)
where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let handler = handler.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<Incoming>| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// An in-process echo origin on `127.0.0.1:0`; it stops when dropped.
#[derive(Debug)]
pub struct EchoOrigin {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The name it reports as `backend`.
    pub name: String,
    shutdown: watch::Sender<()>,
}

impl EchoOrigin {
    /// Starts an echo origin named `name` on a free loopback port.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding echo origin")?;
        Self::serve_on(name, listener)
    }

    /// Starts an echo origin named `name` on an already bound listener.
    pub fn serve_on(name: &str, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(());
        tokio::spawn(serve_echo(name.to_owned(), listener, rx));
        Ok(EchoOrigin { addr, name: name.to_owned(), shutdown })
    }
}

impl Drop for EchoOrigin {
    fn drop(&mut self) {
        let _ = self.shutdown.send(());
    }
}
