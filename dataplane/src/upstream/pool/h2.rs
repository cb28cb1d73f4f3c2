//! HTTP/2 upstream connections: without TLS (h2c, prior knowledge) for backends whose
//! Service port says `appProtocol: kubernetes.io/h2c` or `grpc` (or a BackendPolicy
//! `protocol: H2C`), over TLS with ALPN `h2` for a BackendPolicy with `tls` and
//! `protocol: H2`.
//!
//! One multiplexed connection per endpoint, shared by every concurrent request to it (the
//! `SendRequest` handle is cloned per request; the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! queues requests past its limit). A connection found closed (GOAWAY, reset, failed
//! keep-alive ping) is replaced by a new one on the next request. Concurrent first
//! requests to an endpoint share one connect: the first connects, the others wait for it.
//! A connection unused for `connection.idleTimeout` (default [`IDLE_TIMEOUT`]) is let go
//! (swept when requests come). Connections are keyed by endpoint and transport
//! ([`PoolKey`]): one made for a TLS configuration is never used for another, nor for h2c.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OnceCell;

use super::connect::{self, Reservation};
use super::h1::ConnectError;
use super::{PoolKey, Transport};
use crate::proxy::body::{BodySlot, Tape, UpstreamBody, unsent};

/// HTTP/2 PING interval on upstream connections (a dead peer is noticed within this plus
/// [`KEEP_ALIVE_TIMEOUT`]).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 PING may wait for its answer before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending half of one HTTP/2 upstream connection.
pub(crate) type H2Sender = SendRequest<UpstreamBody>;

/// One endpoint's connection: made once (by the first request that needs it), then shared.
type Cell = Arc<OnceCell<H2Sender>>;

/// Which shared connection a request went out on ([`H2Pool::retire`]).
pub(crate) struct Shared(Cell);

/// How long an endpoint's connection is kept without a request before the pool lets it
/// go (it closes once its last stream ends).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

struct Slot {
    cell: Cell,
    used: Instant,
    /// `connection.idleTimeout` of the backend that last used it.
    idle_timeout: Duration,
}

#[derive(Default)]
struct Slots {
    /// foldhash, as in the HTTP/1.1 pool.
    map: HashMap<PoolKey, Slot, foldhash::fast::RandomState>,
    /// When connections unused for [`IDLE_TIMEOUT`] were last dropped.
    swept: Option<Instant>,
}

/// The HTTP/2 connections of every h2c and h2 endpoint, shared by every snapshot.
#[derive(Default)]
pub struct H2Pool {
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("H2Pool").field("endpoints", &slots.map.len()).finish()
    }
}

impl H2Pool {
    /// A sender on the shared connection to `addr` over `transport`, connecting first when
    /// there is none or it closed. `reused` is true when the connection was made by an
    /// earlier request (a request it could not send may go out again on a new connection).
    /// The [`Shared`] names the connection for [`H2Pool::retire`].
    pub(crate) async fn sender(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        connect_timeout: Duration,
    ) -> Result<(H2Sender, bool, Shared), ConnectError> {
        let key = transport.key(addr);
        let idle_timeout = transport.connection.idle_timeout;
        let cell = {
            let now = Instant::now();
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let sweep_every = idle_timeout.min(IDLE_TIMEOUT);
            if slots.swept.is_none_or(|t| now.duration_since(t) >= sweep_every) {
                slots.swept = Some(now);
                slots.map.retain(|_, slot| {
                    now.duration_since(slot.used) < slot.idle_timeout
                        && !slot.cell.get().is_some_and(H2Sender::is_closed)
                });
            }
            let slot = slots.map.entry(key).or_insert_with(|| Slot {
                cell: Cell::default(),
                used: now,
                idle_timeout,
            });
            if slot.cell.get().is_some_and(H2Sender::is_closed)
                || now.duration_since(slot.used) >= slot.idle_timeout
            {
                slot.cell = Cell::default();
            }
            slot.used = now;
            slot.idle_timeout = idle_timeout;
            Arc::clone(&slot.cell)
        };
        let made = AtomicBool::new(false);
        let sender = cell
            .get_or_try_init(|| async {
                made.store(true, Ordering::Relaxed);
                connect(addr, transport, connect_timeout).await
            })
            .await?;
        // A failed connect leaves the cell empty: the next request tries again.
        Ok((sender.clone(), !made.load(Ordering::Relaxed), Shared(Arc::clone(&cell))))
    }

    /// Stops giving out `connection` to `addr` over `transport` (its upstream sent GOAWAY:
    /// it takes no new streams), so the next request makes a new one. The connection itself
    /// stays until its open streams end.
    pub(crate) fn retire(&self, addr: SocketAddr, transport: &Transport, connection: &Shared) {
        let key = transport.key(addr);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.map.get(&key).is_some_and(|s| Arc::ptr_eq(&s.cell, &connection.0)) {
            slots.map.remove(&key);
        }
    }

    /// Forgets the connection to `addr` over `transport` if it closed (it could not send a
    /// request), so the next request makes a new one.
    pub(crate) fn discard(&self, addr: SocketAddr, transport: &Transport) {
        let key = transport.key(addr);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.map.get(&key).is_some_and(|s| s.cell.get().is_some_and(H2Sender::is_closed)) {
            slots.map.remove(&key);
        }
    }

    /// Endpoints with a live HTTP/2 connection (for tests and debugging).
    pub fn connections(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.map.values().filter(|s| s.cell.get().is_some_and(|s| !s.is_closed())).count()
    }
}

/// Opens an HTTP/2 connection to `addr` over `transport` (prior knowledge without TLS, ALPN
/// `h2` with TLS), with keep-alive pings, under the backend's connection caps, and spawns
/// its driver.
async fn connect(
    addr: SocketAddr,
    transport: &Transport,
    connect_timeout: Duration,
) -> Result<H2Sender, ConnectError> {
    let reservation = Reservation::take(transport)?;
    match &transport.tls {
        None => {
            let stream = connect::tcp_connect(addr, connect_timeout).await?;
            start(addr, TokioIo::new(stream), reservation).await
        }
        Some(tls) => {
            let stream = connect::tls_connect(addr, tls, connect_timeout, true).await?;
            start(addr, TokioIo::new(stream), reservation).await
        }
    }
}

/// Opens an HTTP/2 connection over `transport` for one request that is not pooled (health
/// checks: outside the backend's connection caps).
pub(crate) async fn connect_unpooled(
    addr: SocketAddr,
    transport: &Transport,
    connect_timeout: Duration,
) -> Result<H2Sender, ConnectError> {
    match &transport.tls {
        None => {
            let stream = connect::tcp_connect(addr, connect_timeout).await?;
            start(addr, TokioIo::new(stream), Reservation::none()).await
        }
        Some(tls) => {
            let stream = connect::tls_connect(addr, tls, connect_timeout, true).await?;
            start(addr, TokioIo::new(stream), Reservation::none()).await
        }
    }
}

/// The HTTP/2 handshake over `io`, then the connection's driver in its own task. The
/// reservation's open slot goes with the stream: given back when the connection closes.
async fn start<I>(
    addr: SocketAddr,
    io: I,
    reservation: Reservation<'_>,
) -> Result<H2Sender, ConnectError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .adaptive_window(true);
    let (sender, conn) = builder
        .handshake(reservation.made(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            connect::log_driver_end(addr, &error);
        }
    });
    Ok(sender)
}

/// Why an upstream did not process an HTTP/2 request it was sent (RFC 9113 §8.7): such a
/// request may go out again, whatever its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its stream is above the last stream of the upstream's GOAWAY: the connection takes
    /// no new streams (nginx's `keepalive_requests`, a server shutting down).
    GoingAway,
    /// The upstream reset its stream with `REFUSED_STREAM` (e.g. too many streams).
    Refused,
}

/// Whether `error`, the failure of a request that was sent, says the upstream did not
/// process it.
pub(crate) fn refusal(error: &hyper::Error) -> Option<Refusal> {
    let h2 = std::error::Error::source(error)?.downcast_ref::<::h2::Error>()?;
    if !h2.is_remote() {
        None
    } else if h2.is_go_away() {
        Some(Refusal::GoingAway)
    } else if h2.is_reset() && h2.reason() == Some(::h2::Reason::REFUSED_STREAM) {
        Some(Refusal::Refused)
    } else {
        None
    }
}

/// Whether hyper dropped the request before its stream opened: it waited for a stream slot
/// (the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`) when its connection ended, so it was
/// never sent. hyper reports that as "dispatch task is gone" without giving the request
/// back; a future hyper wording that does not match only means no resend (the error stays).
pub(crate) fn dropped_unsent(error: &hyper::Error) -> bool {
    error.is_user() && error.to_string() == "dispatch task is gone"
}

/// Whether `error` is the connection closing under a request (no response head came).
pub(crate) fn closed(error: &hyper::Error) -> bool {
    error.is_closed()
        || error.is_canceled()
        || std::error::Error::source(error).is_some_and(|e| e.is::<std::io::Error>())
}

/// What an HTTP/2 request needs to go out again after it was sent: its head, and its body
/// while it can be had again (still in its slot, or sent whole within
/// [`TAPE_LIMIT`](crate::proxy::body::TAPE_LIMIT) and kept on a tape).
pub(crate) struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    body: Kept,
}

impl Drop for Replay {
    /// The request is answered (or failed for good): its body's copy goes now, not when the
    /// body ends (a long gRPC stream would keep it).
    fn drop(&mut self) {
        if let Kept::Streamed { tape: Some(tape), .. } = &self.body {
            tape.lock().unwrap_or_else(PoisonError::into_inner).stop();
        }
    }
}

enum Kept {
    Empty,
    Streamed {
        slot: BodySlot,
        tape: Option<Tape>,
    },
    /// A body that cannot be had again.
    Gone,
}

impl Replay {
    /// Copies `request`'s head and starts keeping a copy of its body.
    pub(crate) fn keep(request: &mut http::Request<UpstreamBody>) -> Self {
        let tape = request.body_mut().record();
        let body = match request.body() {
            UpstreamBody::Empty => Kept::Empty,
            UpstreamBody::Streamed { slot, .. } => Kept::Streamed { slot: Arc::clone(slot), tape },
            UpstreamBody::Replayed { .. } => Kept::Gone,
        };
        Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body,
        }
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &http::Method {
        &self.method
    }

    /// The request once more, unless its body cannot be had again (partly sent, longer
    /// than the tape, or not ended when the request failed).
    pub(crate) fn request(&self) -> Option<http::Request<UpstreamBody>> {
        let body = match &self.body {
            Kept::Empty => UpstreamBody::Empty,
            // Still in its slot: sent from there, onto the same tape (should this attempt
            // take it and be refused in turn).
            Kept::Streamed { slot, tape } if unsent(slot) => {
                UpstreamBody::Streamed { slot: Arc::clone(slot), taken: None, tape: tape.clone() }
            }
            Kept::Streamed { tape: Some(tape), .. } => {
                tape.lock().unwrap_or_else(PoisonError::into_inner).replay()?
            }
            Kept::Streamed { tape: None, .. } | Kept::Gone => return None,
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        Some(request)
    }
}
