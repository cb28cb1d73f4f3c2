//! weir's upstream connection pool: HTTP/1.1 connections (`hyper::client::conn::http1`)
//! kept alive per endpoint address and reused. (HTTP/2 upstreams share one multiplexed
//! connection per endpoint instead: [`super::h2`].)
//!
//! A connection is checked out for exactly one request. It goes back to the pool only when
//! its response body has been read to the end ([`PooledBody`]); a body dropped early, an
//! error, or a full pool drops the sender, and hyper then closes the connection. Idle
//! connections are kept newest first (LIFO), at most [`MAX_IDLE_PER_ENDPOINT`] per endpoint,
//! for at most [`POOL_IDLE_TIMEOUT`]. Each connection's driver runs in its own task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::body::UpstreamBody;

/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint; past this, a returned connection closes.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// TCP keep-alive time of upstream connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The sending half of one upstream connection.
pub(crate) type Sender = SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    /// foldhash: SipHash of the address was ~2% of a proxied request's instructions.
    idle: HashMap<SocketAddr, Vec<Idle>, foldhash::fast::RandomState>,
    /// When expired connections of every endpoint were last dropped.
    swept: Option<Instant>,
}

/// Idle upstream connections by endpoint, shared by every snapshot.
#[derive(Default)]
pub struct Pool {
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: usize = slots.idle.values().map(Vec::len).sum();
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

/// Why a new upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish within the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The backend is at its `circuitBreaker.maxConnections`: no new connection is made.
    #[error("connection limit of the backend reached")]
    ConnectionLimit,
    /// The backend is at its `circuitBreaker.maxPendingRequests`: too many requests are
    /// already waiting for a new connection.
    #[error("pending request limit of the backend reached")]
    PendingLimit,
    /// The TLS handshake with the endpoint failed (certificate not trusted, wrong name,
    /// client certificate refused, ALPN not agreed…).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("handshake with {addr}: {source}")]
    Handshake {
        /// The endpoint.
        addr: SocketAddr,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },
}

impl Pool {
    /// An idle connection to `addr` that is ready for a request, if any. Expired, closed
    /// and not-ready connections found on the way are dropped.
    pub(crate) fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = slots.idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if now.duration_since(entry.since) >= POOL_IDLE_TIMEOUT {
                // Newest first: everything below is older still.
                idle.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
            // Closed, or (rarely) still finishing its previous exchange: let it go.
        }
        None
    }

    /// Returns a connection whose exchange finished to the pool of `addr`.
    pub(crate) fn checkin(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.swept.is_none_or(|t| now.duration_since(t) >= POOL_IDLE_TIMEOUT) {
            slots.swept = Some(now);
            slots.idle.retain(|_, idle| {
                idle.retain(|e| {
                    now.duration_since(e.since) < POOL_IDLE_TIMEOUT && !e.sender.is_closed()
                });
                !idle.is_empty()
            });
        }
        let idle = slots.idle.entry(addr).or_default();
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            // Keep the newest: the oldest is the likeliest to be closed by the upstream.
            idle.remove(0);
        }
        idle.push(Idle { sender, since: now });
    }

    /// Idle connections to `addr` (for tests and debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.idle.get(&addr).map_or(0, Vec::len)
    }
}

/// Opens a TCP connection to `addr` (TCP_NODELAY, TCP keep-alive), bounded by
/// `connect_timeout`.
pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(addr)),
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).map_err(|source| ConnectError::Io { addr, source })?;
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%addr, %error, "cannot set TCP keep-alive on upstream connection");
    }
    Ok(stream)
}

/// Opens a new HTTP/1.1 connection to `addr` (see [`tcp_connect`]) and spawns its driver.
/// With `upgrades`, the connection can be taken over after a 101 (`hyper::upgrade::on`
/// on the response); such a connection is never returned to the pool.
pub(crate) async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    upgrades: bool,
) -> Result<Sender, ConnectError> {
    let stream = tcp_connect(addr, connect_timeout).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        });
    }
    Ok(sender)
}

/// A response body from a pooled connection: when it has been read to the end, the
/// connection goes back to the pool; dropped before that, the connection closes.
pub struct PooledBody {
    body: Incoming,
    /// The pool and connection to return, until returned or given up.
    home: Option<(Arc<Pool>, SocketAddr, Sender)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.home.is_some()).finish()
    }
}

impl PooledBody {
    pub(crate) fn new(body: Incoming, pool: Arc<Pool>, addr: SocketAddr, sender: Sender) -> Self {
        PooledBody { body, home: Some((pool, addr, sender)) }
    }

    /// A body whose connection is not pooled (HTTP/2 streams, upgrade requests).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        PooledBody { body, home: None }
    }

    fn release(&mut self) {
        if let Some((pool, addr, sender)) = self.home.take() {
            pool.checkin(addr, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body that was complete without being polled (empty, HEAD, 204, 304).
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
