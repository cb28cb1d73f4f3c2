//! Helpers for weir's black-box tests: echo origins, free ports, temporary config
//! directories, a tiny HTTP client, and the real `weir` binary run as a child process.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, http_get};
//! let origin = EchoOrigin::start("orders").await?;
//! let dir = ConfigDir::new("demo")?;
//! dir.write("orders.yaml", &weir_e2e::service_yaml("orders", origin.addr.port()))?;
//! let weir = WeirProcess::start(dir.path()).await?;
//! let reply = http_get(weir.http_addr, "localhost", "/").await?;
//! assert_eq!(reply.status, 200);
//! # Ok(()) }
//! ```
//!
//! [`apiserver::ApiServer`] is an in-memory Kubernetes API server double that `kube::Client`
//! talks to over HTTP, for controller integration tests and Kubernetes-mode e2e tests.

pub mod apiserver;
pub mod demo;
pub mod echo;
pub mod kubectl;
pub mod process;
pub mod raw_h2;
pub mod redis;
pub mod reload;
pub mod status;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use demo::DemoOrigin;
pub use echo::{EchoOrigin, echo_response, serve_echo, serve_http1};
pub use process::{WeirProcess, binary, run_weir, weir_binary, workspace_root};
pub use redis::RedisServer;
pub use status::{FoundCondition, condition, conditions_of};

/// Reserves a free loopback port by binding `127.0.0.1:0` and releasing it. Another process
/// may grab it before it is used again; callers that bind it retry on failure.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A loopback address with a free port.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A response read whole by [`http_get`] / [`http_request`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {}", self.text()))
    }
}

/// Sends `GET path` to `addr` with the given `Host` header and reads the whole response.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
    http_request(addr, "GET", host, path, &[]).await
}

/// Sends a bodiless request to `addr` with a `Host` header and extra headers, and reads the
/// whole response. Each call uses a fresh connection; it gives up after 10 seconds.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(http::header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Empty::new()).context("building request")?;
    let fut = async {
        let response = client.request(request).await.context("sending request")?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("reading body")?.to_bytes();
        anyhow::Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("{method} http://{addr}{path} timed out"))?
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`. Returns the last
/// error or `None` description on timeout.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let step = Duration::from_millis(50);
    let rounds = (limit.as_millis() / step.as_millis()).max(1);
    let mut last = String::from("never checked");
    for _ in 0..rounds {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => last = "condition not met".to_owned(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(step).await;
    }
    anyhow::bail!("timed out after {limit:?} waiting for {what}: {last}")
}

/// A temporary directory for configuration files, removed on drop.
#[derive(Debug)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    /// Creates a fresh, empty directory under the system temp dir.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir()
            .join(format!("weir-e2e-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ConfigDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes (or replaces) a file in the directory, atomically: the content goes to a
    /// hidden temporary file first, then is renamed into place, so a watcher never sees a
    /// half-written file.
    pub fn write(&self, name: &str, content: &str) -> anyhow::Result<PathBuf> {
        let target = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming to {}", target.display()))?;
        Ok(target)
    }

    /// Removes a file from the directory.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let target = self.path.join(name);
        std::fs::remove_file(&target).with_context(|| format!("removing {}", target.display()))
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// YAML for a Service without selector (port 80) and an EndpointSlice that points it at
/// `127.0.0.1:<port>`, both in `default`.
pub fn service_yaml(name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - name: http
      port: 80
      targetPort: {port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
  - name: http
    port: {port}
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
"#
    )
}

/// YAML for a Service whose port 80 says `appProtocol: app_protocol` (e.g.
/// `kubernetes.io/h2c`, `kubernetes.io/ws`), with an EndpointSlice that points it at
/// `127.0.0.1:<port>`, both in `default`.
pub fn app_service_yaml(name: &str, port: u16, app_protocol: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: main, port: 80, targetPort: {port}, appProtocol: {app_protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: main, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    )
}

/// YAML for a Route with one rule sending `Prefix prefix` to Service `service` port 80.
pub fn prefix_route_yaml(name: &str, prefix: &str, service: &str) -> String {
    format!(
        r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: {name}
spec:
  rules:
    - name: {name}
      matches:
        - path: {{type: Prefix, value: "{prefix}"}}
      backends:
        - {{service: {service}, port: 80}}
"#
    )
}

/// One client HTTP/1.1 keep-alive connection, used to prove that a reload does not close
/// client connections: every request goes over the same TCP connection, and fails if the
/// server closed it.
pub struct KeepAliveConn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for KeepAliveConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAliveConn").field("addr", &self.addr).finish()
    }
}

impl KeepAliveConn {
    /// Opens the connection.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(KeepAliveConn { sender, addr })
    }

    /// Sends `GET path` with a `Host` header on this connection and reads the response.
    /// Fails (instead of reconnecting) when the connection was closed.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        let request = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, host)
            .body(Empty::new())
            .context("building request")?;
        let fut = async {
            self.sender.ready().await.context("connection closed")?;
            let response = self.sender.send_request(request).await.context("sending")?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.context("reading body")?.to_bytes();
            anyhow::Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .with_context(|| format!("GET http://{}{path} timed out", self.addr))?
    }
}

/// `curl` against the HTTPS listener for `host`, resolving it to loopback; returns
/// (`"<status> <http_version>"` or `"error: ..."`, body). `extra` is passed to curl as is.
pub fn curl_https(
    https: SocketAddr,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", https.port())])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", https.port()))
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return (format!("error: running curl: {e}"), String::new()),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return (format!("error: {}", String::from_utf8_lossy(&out.stderr).trim()), stdout);
    }
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (tail.to_owned(), body.to_owned())
}
