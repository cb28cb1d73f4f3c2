//! The listeners: TCP accept loops for plain HTTP ([`PlainListener`]: HTTP/1.1 and h2c) and
//! HTTPS ([`TlsListener`]: TLS 1.2/1.3 with the certificate chosen by SNI from the live
//! snapshot, then HTTP/2 when ALPN says `h2`, else HTTP/1.1), with the connection
//! hardening of [`ListenerOptions`] and a graceful drain on shutdown.
//!
//! # Hardening
//! - `--max-connections`: one cap over both listeners. Over it, a new connection is
//!   accepted and closed at once and counted in `weir_connections_refused_total` (what
//!   Envoy does with its connection limits). Not accepting at all (nginx, HAProxy) would
//!   leave clients waiting in the kernel's backlog until their own timeout, with nothing
//!   to see in the metrics; a refused client can retry another replica at once.
//!   Upgraded (WebSocket) connections hold their place until they close.
//! - `--header-read-timeout` (10 s): the TLS handshake, the first request head of a
//!   connection, and a request head whose first bytes arrived on a keep-alive connection
//!   must complete within it (slowloris); then the connection is closed.
//! - `--idle-timeout` (60 s): a connection with no request in flight and no byte written
//!   to the client for that long is closed gracefully (HTTP/1: at once; HTTP/2: GOAWAY).
//!   A connection that still makes no progress for as long again is dropped: a client
//!   that stops reading cannot hold its connection forever. See [`conn`] for why this is
//!   weir's watchdog rather than hyper's timer.
//! - Header sizes: HTTP/1 request heads are read into a buffer of at most
//!   [`MAX_HEADER_BYTES`] (past it: 431), HTTP/2 advertises and enforces
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` of [`MAX_HEADER_BYTES`].
//! - A client that stops reading: HTTP/1 buffers at most [`MAX_HEADER_BYTES`] of response
//!   per connection before it stops polling the body (the upstream connection then stops
//!   being read too); HTTP/2 at most [`H2_MAX_SEND_BUF`] per stream, and at most
//!   [`H2_MAX_CONCURRENT_STREAMS`] streams.
//! - Malformed requests: hyper answers its own parse errors (bad request line, bad header,
//!   bad `Content-Length`/`Transfer-Encoding` framing) with 400 and closes; a broken
//!   chunked body found while it streams upstream is answered 400 by the proxy.
//!
//! # HTTP/2 protections (hyper 1.x over h2 0.4.20)
//! - Rapid reset (CVE-2023-44487): h2 caps streams reset by the client before the server
//!   accepted them (`max_pending_accept_reset_streams`, 20 by default, set explicitly) and
//!   answers a connection over it with GOAWAY `ENHANCE_YOUR_CALM`.
//! - "MadeYouReset" (CVE-2025-8671, streams the server resets because of client errors):
//!   `max_local_error_reset_streams`, 1024 per connection, set explicitly.
//! - CONTINUATION flood (2024): h2 ≥ 0.4.4 bounds the number of CONTINUATION frames by the
//!   header list size and drops the connection when a header block goes past a multiple
//!   of `max_header_list_size`; it never buffers an unbounded header block.
//! - PING and SETTINGS floods: h2 keeps at most one pending PONG and one pending SETTINGS
//!   ack, and does not read further frames until they are written, so a flood is slowed
//!   to the client's own reading speed and holds no memory.
//! - Stream floods: `max_concurrent_streams` 250 (hyper's default is 200, Envoy's 100,
//!   nginx's 128); receive windows (1 MiB per stream and per connection) bound what a
//!   client can make the server buffer.
//! - Keep-alive PINGs from the server are off: they would keep idle connections busy
//!   forever; the idle watchdog closes idle connections and detects dead peers (a dead
//!   peer makes no progress).

mod conn;
mod metrics;
mod reuseport;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

pub use metrics::ListenerMetrics;
pub use reuseport::bind_reuseport;

use crate::proxy::{self, Peer};
use crate::server::{DRAIN_TIMEOUT, DataPlane};
use conn::{Activity, CountedIo, Held, Verdict, Watchdog};

/// The largest request head (HTTP/1) or header list (HTTP/2) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// HTTP/2: the most streams a client may have open on one connection.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 250;
/// HTTP/2: the most response bytes buffered per stream for a client that does not read.
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// HTTP/2: streams the client may reset before the server accepts them (rapid reset).
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// HTTP/2: streams the server may reset because of client errors (MadeYouReset).
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// How the listeners treat client connections (`weir run` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// `--max-connections`: open client connections over both listeners; `None` = no cap.
    pub max_connections: Option<usize>,
    /// `--header-read-timeout`: the TLS handshake, the first request head, and a request
    /// head whose first bytes arrived must complete within it.
    pub header_read_timeout: Duration,
    /// `--idle-timeout`: a connection with no request and no progress for this long is
    /// closed; `None` = never.
    pub idle_timeout: Option<Duration>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// What both listeners share: the data plane, the options, the connection cap and the
/// configured hyper builder.
#[derive(Debug)]
pub struct Edge {
    dataplane: Arc<DataPlane>,
    options: ListenerOptions,
    permits: Option<Arc<Semaphore>>,
    builder: auto::Builder<TokioExecutor>,
}

impl Edge {
    /// The listeners' shared state for `dataplane` with `options`.
    pub fn new(dataplane: Arc<DataPlane>, options: ListenerOptions) -> Arc<Self> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The header read timeout and the idle timeout are the watchdog's (see `conn`);
        // hyper's own would also close keep-alive connections after the header timeout.
        builder.http1().header_read_timeout(None).max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(None);
        let permits = options
            .max_connections
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
        Arc::new(Edge { dataplane, options, permits, builder })
    }

    /// The data plane served.
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    /// The options in force.
    pub fn options(&self) -> &ListenerOptions {
        &self.options
    }
}

/// The plain-HTTP listener: HTTP/1.1 (keep-alive) and h2c (prior knowledge).
#[derive(Debug)]
pub struct PlainListener {
    tcp: TcpListener,
}

/// The HTTPS listener: TLS with the certificate selected by SNI from the live snapshot.
#[derive(Debug)]
pub struct TlsListener {
    tcp: TcpListener,
}

impl PlainListener {
    /// A plain listener on a bound socket.
    pub fn new(tcp: TcpListener) -> Self {
        PlainListener { tcp }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and drains its connections
    /// (idle ones are closed, busy ones finish their request) for at most
    /// [`DRAIN_TIMEOUT`]. Connection errors are logged at debug level and never stop it.
    pub async fn serve(self, edge: Arc<Edge>, shutdown: impl Future<Output = ()>) {
        accept_loop(self.tcp, edge, Kind::Plain, shutdown).await;
    }
}

impl TlsListener {
    /// A TLS listener on a bound socket.
    pub fn new(tcp: TcpListener) -> Self {
        TlsListener { tcp }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Like [`PlainListener::serve`], with a TLS handshake (bounded by the header read
    /// timeout) before HTTP. A failed handshake counts in `weir_tls_handshake_errors_total`.
    pub async fn serve(self, edge: Arc<Edge>, shutdown: impl Future<Output = ()>) {
        accept_loop(self.tcp, edge, Kind::Tls, shutdown).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Tls,
}

async fn accept_loop(
    tcp: TcpListener,
    edge: Arc<Edge>,
    kind: Kind,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = &edge.dataplane.listeners;
    let (gauge, refused) = match kind {
        Kind::Plain => (&metrics.http_connections, &metrics.http_refused),
        Kind::Tls => (&metrics.https_connections, &metrics.https_refused),
    };
    // Every connection task holds a receiver: the drain waits until all are gone.
    let (drain, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // e.g. too many open files: back off a little instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match &edge.permits {
            None => None,
            Some(permits) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    refused.inc();
                    tracing::debug!(%peer, "over --max-connections, closing");
                    drop(stream);
                    continue;
                }
            },
        };
        let held = Held::new(gauge, permit);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "set TCP_NODELAY failed");
        }
        let edge = Arc::clone(&edge);
        let stop = drain.subscribe();
        match kind {
            Kind::Plain => {
                let activity = Arc::new(Activity::default());
                let io = CountedIo::new(stream, Arc::clone(&activity), held, false);
                tokio::spawn(serve_connection(edge, io, Peer::new(peer), activity, stop));
            }
            Kind::Tls => {
                tokio::spawn(async move {
                    let timeout = edge.options.header_read_timeout;
                    let handshake = tls::handshake(stream, &edge.dataplane);
                    let accepted = match tokio::time::timeout(timeout, handshake).await {
                        Ok(Ok(accepted)) => accepted,
                        Ok(Err(error)) => {
                            edge.dataplane.listeners.tls_handshake_errors.inc();
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            edge.dataplane.listeners.tls_handshake_errors.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let activity = Arc::new(Activity::default());
                    if accepted.h2 {
                        activity.set_h2();
                    }
                    let io = CountedIo::new(accepted.stream, Arc::clone(&activity), held, true);
                    let peer = Peer::with_tls(peer, accepted.info);
                    serve_connection(edge, io, peer, activity, stop).await;
                });
            }
        }
    }
    drop(tcp);
    let _ = drain.send(true);
    tracing::debug!(connections = drain.receiver_count(), "draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, drain.closed()).await.is_err() {
        tracing::warn!("connections still busy after the drain timeout; closing them");
    }
}

/// Serves HTTP on one connection until it ends, the watchdog closes it, or the drain does.
async fn serve_connection<T>(
    edge: Arc<Edge>,
    io: CountedIo<T>,
    peer: Peer,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    // One shared value per connection (one reference count per request).
    let shared = Arc::new((Arc::clone(&edge.dataplane), peer, Arc::clone(&activity)));
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move {
            let _busy = shared.2.begin();
            Ok::<_, Infallible>(proxy::handle(&shared.0, request, &shared.1).await)
        }
    });
    let connection =
        edge.builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    tokio::pin!(connection);
    let options = &edge.options;
    let mut watchdog =
        Watchdog::new(options.header_read_timeout, options.idle_timeout, Instant::now());
    let period = watchdog.period();
    let tick = tokio::time::sleep(period);
    tokio::pin!(tick);
    let mut draining = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            changed = stop.changed(), if !draining => {
                // The listener stopped (or is gone): close gracefully.
                draining = true;
                let _ = changed;
                watchdog.closing(Instant::now(), DRAIN_TIMEOUT);
                connection.as_mut().graceful_shutdown();
            }
            () = &mut tick => {
                let now = Instant::now();
                match watchdog.tick(&activity, now) {
                    Verdict::Continue => {}
                    Verdict::Stalled => {
                        tracing::debug!(peer = %addr, "connection made no progress while closing; dropped");
                        return;
                    }
                    verdict => {
                        tracing::debug!(peer = %addr, ?verdict, "closing connection");
                        connection.as_mut().graceful_shutdown();
                    }
                }
                tick.as_mut().reset(now + period);
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %addr, %error, "connection error");
    }
}
