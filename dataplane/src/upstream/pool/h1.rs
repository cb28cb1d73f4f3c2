//! weir's upstream connection pool: HTTP/1.1 connections (`hyper::client::conn::http1`),
//! plain or TLS, kept alive per endpoint and transport ([`PoolKey`]) and reused. (HTTP/2
//! upstreams share one multiplexed connection per endpoint instead: [`super::h2`].)
//!
//! A connection is checked out for exactly one request. It goes back to the pool only when
//! its response body has been read to the end ([`PooledBody`]); a body dropped early, an
//! error, or a full pool drops the sender, and hyper then closes the connection. Idle
//! connections are kept newest first (LIFO), at most `maxIdlePerEndpoint` per endpoint
//! (default [`MAX_IDLE_PER_ENDPOINT`]), for at most `idleTimeout` (default
//! [`POOL_IDLE_TIMEOUT`]). A connection is only ever reused for the transport it was made
//! with: a plain connection never serves a TLS backend, nor a connection made with one TLS
//! configuration another. Each connection's driver runs in its own task.

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

use super::connect::{self, Reservation};
use super::{PoolKey, Transport};
use crate::proxy::body::UpstreamBody;
use crate::upstream::policy::ConnectionSettings;

/// How long an idle pooled upstream connection is kept by default.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint by default; past this, a returned connection closes.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// How long a pooled connection that is not ready yet is waited for before it is let go.
/// Its driver task normally makes it ready within microseconds of the end of the previous
/// response; one still sending the previous request's body (the upstream answered early)
/// may never be.
pub const READY_WAIT: Duration = Duration::from_millis(100);

/// Waits (at most [`READY_WAIT`]) until a pooled connection can take a request: false
/// when it closed or did not become ready in time.
pub(crate) async fn ready_soon(sender: &mut Sender) -> bool {
    matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(())))
}

/// The sending half of one upstream connection.
pub(crate) type Sender = SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    /// foldhash: SipHash of the address was ~2% of a proxied request's instructions.
    idle: HashMap<PoolKey, Entry, foldhash::fast::RandomState>,
    /// When expired connections of every endpoint were last dropped.
    swept: Option<Instant>,
}

/// The idle connections of one endpoint and transport.
struct Entry {
    /// Oldest first.
    conns: Vec<Idle>,
    /// How long they are kept (`connection.idleTimeout` of the last backend that returned
    /// one).
    idle_timeout: Duration,
}

/// Idle upstream connections by endpoint and transport, shared by every snapshot.
#[derive(Default)]
pub struct Pool {
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: usize = slots.idle.values().map(|e| e.conns.len()).sum();
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
    /// The newest open idle connection for `key`, if any. Expired and closed connections
    /// found on the way are dropped. It may not be ready yet: a connection returned at the
    /// end of its response body becomes ready when its driver task has run
    /// ([`ready_soon`]).
    pub(crate) fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = slots.idle.get_mut(key)?;
        let now = Instant::now();
        while let Some(idle) = entry.conns.pop() {
            if now.duration_since(idle.since) >= entry.idle_timeout {
                // Newest first: everything below is older still.
                entry.conns.clear();
                return None;
            }
            if !idle.sender.is_closed() {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Returns a connection whose exchange finished to the pool of `key`, kept as
    /// `settings` say.
    pub(crate) fn checkin(&self, key: PoolKey, sender: Sender, settings: ConnectionSettings) {
        if sender.is_closed() || settings.max_idle_per_endpoint == 0 {
            return;
        }
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let sweep_every = settings.idle_timeout.min(POOL_IDLE_TIMEOUT);
        if slots.swept.is_none_or(|t| now.duration_since(t) >= sweep_every) {
            slots.swept = Some(now);
            slots.idle.retain(|_, entry| {
                let timeout = entry.idle_timeout;
                entry
                    .conns
                    .retain(|e| now.duration_since(e.since) < timeout && !e.sender.is_closed());
                !entry.conns.is_empty()
            });
        }
        let entry = slots
            .idle
            .entry(key)
            .or_insert_with(|| Entry { conns: Vec::new(), idle_timeout: settings.idle_timeout });
        entry.idle_timeout = settings.idle_timeout;
        if entry.conns.len() >= settings.max_idle_per_endpoint {
            // Keep the newest: the oldest is the likeliest to be closed by the upstream.
            let excess = entry.conns.len() + 1 - settings.max_idle_per_endpoint;
            entry.conns.drain(..excess);
        }
        entry.conns.push(Idle { sender, since: now });
    }

    /// Idle connections to `addr`, over any transport (for tests and debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.idle.iter().filter(|(k, _)| k.addr == addr).map(|(_, e)| e.conns.len()).sum()
    }

    /// Idle connections to `addr` made over `transport` (for tests and debugging).
    pub fn idle_count_over(&self, addr: SocketAddr, transport: &Transport) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.idle.get(&transport.key(addr)).map_or(0, |e| e.conns.len())
    }
}

/// Opens a new HTTP/1.1 connection to `addr` over `transport` (TCP, then TLS when it has
/// TLS; see [`super::connect`]) and spawns its driver. The backend's connection caps apply
/// (`transport.connections`). With `upgrades`, the connection can be taken over after a
/// 101 (`hyper::upgrade::on` on the response); such a connection is never returned to the
/// pool.
pub(crate) async fn connect(
    addr: SocketAddr,
    transport: &Transport,
    connect_timeout: Duration,
    upgrades: bool,
) -> Result<Sender, ConnectError> {
    let reservation = Reservation::take(transport)?;
    match &transport.tls {
        None => {
            let stream = connect::tcp_connect(addr, connect_timeout).await?;
            start(addr, TokioIo::new(stream), upgrades, reservation).await
        }
        // Boxed: the TLS handshake's state is large, and the plain path's future stays
        // as small as before.
        Some(tls) => {
            Box::pin(async {
                let stream = connect::tls_connect(addr, tls, connect_timeout, false).await?;
                start(addr, TokioIo::new(stream), upgrades, reservation).await
            })
            .await
        }
    }
}

/// Opens a new HTTP/1.1 connection over `transport` for one request that is not pooled
/// (health checks: outside the backend's connection caps).
pub(crate) async fn connect_unpooled(
    addr: SocketAddr,
    transport: &Transport,
    connect_timeout: Duration,
) -> Result<Sender, ConnectError> {
    let unreserved = Reservation::none();
    match &transport.tls {
        None => {
            let stream = connect::tcp_connect(addr, connect_timeout).await?;
            start(addr, TokioIo::new(stream), false, unreserved).await
        }
        Some(tls) => {
            let stream = connect::tls_connect(addr, tls, connect_timeout, false).await?;
            start(addr, TokioIo::new(stream), false, unreserved).await
        }
    }
}

/// The HTTP/1.1 handshake over `io`, then the connection's driver in its own task. The
/// reservation's open slot goes with the stream: given back when the connection closes
/// (after an upgrade, when the upgraded connection does).
async fn start<I>(
    addr: SocketAddr,
    io: I,
    upgrades: bool,
    reservation: Reservation<'_>,
) -> Result<Sender, ConnectError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(reservation.made(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                connect::log_driver_end(addr, &error);
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                connect::log_driver_end(addr, &error);
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
    home: Option<Home>,
    /// The request's in-flight count and parallel slot, until the body ends.
    outstanding: Option<crate::upstream::registry::Outstanding>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.home.is_some()).finish()
    }
}

/// Where a pooled connection goes back to, and how it is kept there.
struct Home {
    pool: Arc<Pool>,
    key: PoolKey,
    sender: Sender,
    settings: CompactSettings,
}

/// [`ConnectionSettings`] in 8 bytes instead of 24: with the outstanding-request guard,
/// `Response<ProxyBody>` stays within 256 bytes, which hyper moves several times per
/// request (a larger one costs about 50 more instructions per move, measured with
/// callgrind).
#[derive(Clone, Copy)]
struct CompactSettings {
    max_idle: u32,
    idle_timeout_ms: u32,
}

impl CompactSettings {
    fn new(settings: ConnectionSettings) -> Self {
        CompactSettings {
            max_idle: u32::try_from(settings.max_idle_per_endpoint).unwrap_or(u32::MAX),
            idle_timeout_ms: u32::try_from(settings.idle_timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn settings(self) -> ConnectionSettings {
        ConnectionSettings {
            max_idle_per_endpoint: self.max_idle as usize,
            idle_timeout: Duration::from_millis(u64::from(self.idle_timeout_ms)),
        }
    }
}

impl PooledBody {
    pub(crate) fn new(
        body: Incoming,
        pool: Arc<Pool>,
        key: PoolKey,
        sender: Sender,
        settings: ConnectionSettings,
    ) -> Self {
        let settings = CompactSettings::new(settings);
        PooledBody { body, home: Some(Home { pool, key, sender, settings }), outstanding: None }
    }

    /// A body whose connection is not pooled (HTTP/2 streams, upgrade requests).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        PooledBody { body, home: None, outstanding: None }
    }

    /// Keeps the request counted in flight (its endpoint's count, its parallel slot) until
    /// the body ends or is dropped.
    pub(crate) fn hold(&mut self, outstanding: crate::upstream::registry::Outstanding) {
        self.outstanding = Some(outstanding);
    }

    fn release(&mut self) {
        self.outstanding = None;
        if let Some(home) = self.home.take() {
            home.pool.checkin(home.key, home.sender, home.settings.settings());
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
            Poll::Ready(Some(Err(_))) => {
                this.home = None;
                this.outstanding = None;
            }
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

/// Response sizes on the hot path: hyper moves `Response<ProxyBody>` several times per
/// request, and past 256 bytes each move takes glibc's longer memcpy path (about 50
/// instructions more per move; the one-route figure of docs/performance.md).
#[cfg(all(test, target_pointer_width = "64"))]
mod size_tests {
    #[test]
    fn a_proxied_response_stays_within_256_bytes() {
        let size = std::mem::size_of::<http::Response<crate::proxy::ProxyBody>>();
        assert!(size <= 256, "Response<ProxyBody> is {size} bytes");
    }
}
