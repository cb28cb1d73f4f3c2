//! weir's upstream connection pool: HTTP/1.1 connections over the lean path
//! ([`super::lean`]: no driver task, no channel), plain or TLS, kept alive per endpoint and
//! transport ([`PoolKey`]) and reused. (HTTP/2 upstreams share one multiplexed connection
//! per endpoint instead: [`super::h2`]; upgrade requests and health checks use hyper's
//! client over a new connection: [`connect`], [`connect_unpooled`].)
//!
//! A connection is checked out for exactly one request. It goes back to the pool only when
//! its response body has been read to the end ([`PooledBody`]) and it can carry another
//! request; a body dropped early, an error, or a full pool closes it. Idle connections are
//! kept newest first (LIFO), at most `maxIdlePerEndpoint` per endpoint (default
//! [`MAX_IDLE_PER_ENDPOINT`]), for at most `idleTimeout` (default [`POOL_IDLE_TIMEOUT`]);
//! expired ones are dropped at checkout, and those of every endpoint at a checkin once per
//! `min(idleTimeout, POOL_IDLE_TIMEOUT)`. A connection is only ever reused for the
//! transport it was made with: a plain connection never serves a TLS backend, nor a
//! connection made with one TLS configuration another.
//!
//! An idle connection the upstream closes (or sends anything on) is dropped as soon as its
//! event loop sees it, giving back its slot in the backend's connection count
//! (`circuitBreaker.maxConnections`) without waiting for a request; a connection not seen
//! so since its checkin needs no check at checkout. See [`super::idle`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::connect::{self, Reservation};
use super::framing::UpstreamError;
use super::idle::Shared;
use super::lean::{Conn, Home, Stream};
use super::{PoolKey, Transport};
use crate::proxy::body::UpstreamBody;

/// How long an idle pooled upstream connection is kept by default.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint by default; past this, a returned connection closes.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// The sending half of a hyper HTTP/1.1 connection (upgrade requests, health checks).
pub(crate) type Sender = SendRequest<UpstreamBody>;

/// Idle upstream connections by endpoint and transport, shared by every snapshot (see
/// [`super::idle`]).
#[derive(Default)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.count(|_| true)).finish()
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

/// Returns a connection whose exchange finished to its pool (its [`Home`]), kept as its
/// settings say, and watched for the upstream closing it.
fn checkin(mut conn: Box<Conn>) {
    let Some(home) = &conn.home else { return };
    let (key, settings) = (home.key, home.settings);
    if settings.max_idle_per_endpoint == 0 {
        return;
    }
    // No clock read: idle since its exchange started (the request's own reading).
    let now = conn.used();
    if !conn.watch_idle() {
        return;
    }
    let Some(home) = &conn.home else { return };
    let shared = Arc::clone(&home.pool.shared);
    shared.lock().unwrap_or_else(PoisonError::into_inner).checkin(key, conn, now, settings);
}

impl Pool {
    /// The newest open idle connection for `key`, if any. Expired connections, and ones
    /// the upstream closed or sent data on while idle, found on the way are dropped.
    pub(crate) fn checkout(&self, key: &PoolKey, now: Instant) -> Option<Box<Conn>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).checkout(key, now)
    }

    /// The map of its idle connections.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Idle connections under the keys `count_it` says.
    fn count(&self, count_it: impl FnMut(&PoolKey) -> bool) -> usize {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).count_where(count_it)
    }

    /// Idle connections to `addr`, over any transport (for tests and debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.count(|key| key.addr == addr)
    }

    /// Idle connections to `addr` made over `transport` by this thread's per-core worker (or
    /// the shared pool) (for tests and debugging).
    pub fn idle_count_over(&self, addr: SocketAddr, transport: &Transport) -> usize {
        let want = transport.key(addr);
        self.count(|key| *key == want)
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

/// Opens a new connection for the lean HTTP/1.1 path to `addr` over `transport` (TCP,
/// then TLS when it has TLS; see [`super::connect`]), to go back to `home` after its
/// exchanges. The backend's connection caps apply (`transport.connections`); the open slot
/// goes with the connection and is given back when it closes.
pub(crate) async fn connect_lean(
    addr: SocketAddr,
    transport: &Transport,
    connect_timeout: Duration,
    home: Home,
) -> Result<Box<Conn>, ConnectError> {
    let reservation = Reservation::take(transport)?;
    let stream = match &transport.tls {
        None => Stream::Plain(connect::tcp_connect(addr, connect_timeout).await?),
        // Boxed: the TLS handshake's state is large, and the plain path's future stays
        // small.
        Some(tls) => Stream::Tls(Box::new(
            Box::pin(connect::tls_connect(addr, tls, connect_timeout, false)).await?,
        )),
    };
    Ok(Conn::new(stream, reservation.into_slot(), home))
}

/// A response body from an upstream: over a pooled connection of the lean path (read
/// from the connection when polled; when it has been read to the end, the connection goes
/// back to the pool if it can carry another request; dropped before that, the connection
/// closes), or hyper's body of an HTTP/2 stream or an upgrade request.
pub struct PooledBody {
    inner: Inner,
    /// The request's in-flight count and parallel slot, until the body ends.
    outstanding: Option<crate::upstream::registry::Outstanding>,
}

enum Inner {
    Lean(Box<Conn>),
    Hyper(Incoming),
    /// Read to the end over the lean path (the connection went back or was closed).
    Ended,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &matches!(self.inner, Inner::Lean(_))).finish()
    }
}

impl PooledBody {
    /// The body of the response whose head `conn` has just read.
    pub(crate) fn lean(conn: Box<Conn>) -> Self {
        PooledBody { inner: Inner::Lean(conn), outstanding: None }
    }

    /// A body whose connection is not pooled (HTTP/2 streams, upgrade requests).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        PooledBody { inner: Inner::Hyper(body), outstanding: None }
    }

    /// Keeps the request counted in flight (its endpoint's count, its parallel slot) until
    /// the body ends or is dropped.
    pub(crate) fn hold(&mut self, outstanding: crate::upstream::registry::Outstanding) {
        self.outstanding = Some(outstanding);
    }

    /// The lean body ended: the connection goes back to its pool if it can be reused.
    fn release(&mut self) {
        self.outstanding = None;
        if let Inner::Lean(mut conn) = std::mem::replace(&mut self.inner, Inner::Ended) {
            // What is left of a request body the upstream did not wait for is let go.
            conn.abandon_request_body();
            if conn.reusable() {
                checkin(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Lean(conn) => {
                let polled = conn.poll_body_frame(cx);
                match &polled {
                    Poll::Ready(None) => this.release(),
                    Poll::Ready(Some(Ok(_))) if conn.body_done() => this.release(),
                    Poll::Ready(Some(Err(_))) => {
                        this.inner = Inner::Ended;
                        this.outstanding = None;
                    }
                    _ => {}
                }
                polled
            }
            Inner::Hyper(body) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => this.outstanding = None,
                    Poll::Ready(Some(Err(_))) => this.outstanding = None,
                    _ => {}
                }
                polled.map_err(UpstreamError::Hyper)
            }
            Inner::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Lean(conn) => conn.body_done(),
            Inner::Hyper(body) => body.is_end_stream(),
            Inner::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Lean(conn) => match conn.body_remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::Hyper(body) => body.size_hint(),
            Inner::Ended => SizeHint::with_exact(0),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body that was complete without being polled (empty, HEAD, 204, 304).
        if let Inner::Lean(conn) = &self.inner
            && conn.body_done()
        {
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
