//! weir's upstream connection pool: HTTP/1.1 connections (`hyper::client::conn::http1`)
//! kept alive per endpoint address and reused, driven by the requests that use them.
//!
//! No connection has a task of its own. A connection ([`Conn`]: hyper's `SendRequest`
//! and its `Connection` state machine) is checked out for exactly one request, and that
//! request's future polls the `Connection` while it waits for the response head
//! ([`exchange`]); the response body ([`PooledBody`]) polls it while the body streams. So
//! a proxied request runs in the client connection's task alone: no second task, no
//! cross-task wake-ups. The connection goes back to the pool only when its response body
//! has been read to the end; a body dropped early, an error, or a full pool drops the
//! `Connection`, which closes the socket, so a connection in an unknown state is never
//! reused.
//!
//! Idle connections are not polled by anyone: a close by the upstream is noticed when
//! the connection is checked out (it is polled once, without a waker, before use) or by
//! the periodic sweep on check-in. A request that a reused connection could not send (it
//! closed while idle) is sent again by the caller over another connection. Idle
//! connections are kept newest first (LIFO), at most [`MAX_IDLE_PER_ENDPOINT`] per
//! endpoint, for at most [`POOL_IDLE_TIMEOUT`].

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;

/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint; past this, a returned connection closes.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// How often check-in looks over every idle connection for expired and closed ones.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// TCP keep-alive time of upstream connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// One upstream HTTP/1.1 connection: the handle requests are sent through and the
/// connection state machine that must be polled for anything to happen on the socket.
pub(crate) struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// Boxed: hyper's state machine with its buffers is ~800 bytes, moved with every
    /// response otherwise.
    conn: Box<Connection<TokioIo<TcpStream>, UpstreamBody>>,
}

impl Conn {
    /// Polls the connection state machine once without a waker (the caller polls it again
    /// with its own before waiting on it); `false` when the connection has ended.
    fn poll_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut *self.conn).poll(&mut cx).is_pending()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    /// foldhash: SipHash of the address was ~2% of a proxied request's instructions.
    idle: HashMap<SocketAddr, Vec<Idle>, foldhash::fast::RandomState>,
    /// When expired and closed connections of every endpoint were last dropped.
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
    pub(crate) fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        loop {
            let entry = {
                let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
                let idle = slots.idle.get_mut(&addr)?;
                let entry = idle.pop()?;
                if entry.since.elapsed() >= POOL_IDLE_TIMEOUT {
                    // Newest first: everything below is older still.
                    idle.clear();
                    return None;
                }
                entry
            };
            // Outside the lock: polling reads a pending close (or finishes the end of the
            // previous exchange) and makes a live connection ask for its next request.
            let mut conn = entry.conn;
            if conn.poll_alive() && conn.sender.is_ready() {
                return Some(conn);
            }
            // Closed, or (rarely) still finishing its previous exchange: let it go.
        }
    }

    /// Returns a connection whose exchange finished to the pool of `addr`.
    pub(crate) fn checkin(&self, addr: SocketAddr, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.swept.is_none_or(|t| now.duration_since(t) >= SWEEP_INTERVAL) {
            slots.swept = Some(now);
            slots.idle.retain(|_, idle| {
                idle.retain_mut(|e| {
                    now.duration_since(e.since) < POOL_IDLE_TIMEOUT && e.conn.poll_alive()
                });
                !idle.is_empty()
            });
        }
        let idle = slots.idle.entry(addr).or_default();
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            // Keep the newest: the oldest is the likeliest to be closed by the upstream.
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
    }

    /// Idle connections to `addr` (for tests and debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.idle.get(&addr).map_or(0, Vec::len)
    }
}

/// Opens a new HTTP/1.1 connection to `addr` (TCP_NODELAY, TCP keep-alive), the TCP
/// connect bounded by `connect_timeout`. Nothing drives it until a request does.
pub(crate) async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<Conn, ConnectError> {
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
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    Ok(Conn { sender, conn: Box::new(conn) })
}

/// What [`exchange`] gives back: the response head, with the connection to drive while
/// its body streams (`None` when the connection already ended, e.g. `Connection: close`
/// with a complete body); or the error, with the request when none of it was sent.
pub(crate) type Exchanged =
    Result<(Response<Incoming>, Option<Conn>), TrySendError<Request<UpstreamBody>>>;

/// Sends `request` over `conn` and waits for the response head, driving the connection
/// from this future.
pub(crate) async fn exchange(conn: Conn, request: Request<UpstreamBody>) -> Exchanged {
    let Conn { mut sender, conn } = conn;
    let mut conn = Some(conn);
    let mut response = pin!(sender.try_send_request(request));
    let result = poll_fn(|cx| {
        if let Some(c) = conn.as_mut()
            && let Poll::Ready(outcome) = Pin::new(&mut **c).poll(cx)
        {
            if let Err(error) = outcome {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
            // Dropping the connection settles the response: with the request when it was
            // never written, else with an error.
            conn = None;
        }
        // While this future owns the connection, only polling (or dropping) it above can
        // settle the response, so the response needs no waker of its own: a real one would
        // be woken by our own poll and schedule this task once more for nothing.
        if conn.is_some() {
            response.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        } else {
            response.as_mut().poll(cx)
        }
    })
    .await;
    result.map(|response| (response, conn.map(|conn| Conn { sender, conn })))
}

/// A response body from a pooled connection, which it drives while streaming: when it
/// has been read to the end, the connection goes back to the pool; dropped before that,
/// the connection closes.
pub struct PooledBody {
    body: Incoming,
    /// The connection, until returned to the pool, ended, or given up.
    conn: Option<Conn>,
    /// Where the connection goes back.
    home: (Arc<Pool>, SocketAddr),
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.conn.is_some()).finish()
    }
}

impl PooledBody {
    pub(crate) fn new(
        body: Incoming,
        conn: Option<Conn>,
        pool: Arc<Pool>,
        addr: SocketAddr,
    ) -> Self {
        PooledBody { body, conn, home: (pool, addr) }
    }

    /// Polls the body's channel: without a waker while the connection is ours (see
    /// `poll_frame`), with `cx` once it ended.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.conn.is_some() {
            Pin::new(&mut self.body).poll_frame(&mut Context::from_waker(Waker::noop()))
        } else {
            Pin::new(&mut self.body).poll_frame(cx)
        }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.0.checkin(self.home.1, conn);
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
        // While the connection is ours, only polling it feeds the body's channel, so the
        // body needs no waker of its own (a real one would be woken by our own poll, for
        // nothing): the connection's wakers cover it. Usually the connection read the
        // whole body with the head, so look at the channel first.
        let mut polled = this.poll_body(cx);
        if polled.is_pending() {
            if let Some(conn) = this.conn.as_mut()
                && let Poll::Ready(outcome) = Pin::new(&mut *conn.conn).poll(cx)
            {
                if let Err(error) = outcome {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
                // Ended: what it read is in the channel, then the end or an error.
                this.conn = None;
            }
            polled = this.poll_body(cx);
        }
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
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
