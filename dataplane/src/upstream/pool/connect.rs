//! The connectors under the pools: a TCP connect (TCP_NODELAY, keep-alive), then, when the
//! backend's [`Transport`] has TLS, the rustls handshake (SNI and name verification from
//! the policy's `tls`), both within the one connect timeout; and the backend's connection
//! caps ([`ConnectionCount`]), taken before a new connection is made and given back when
//! it is made (pending) or when its stream is dropped (open: the connection closed, also
//! after a WebSocket upgrade took it over).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ConnectError, ConnectionCount, Transport};
use crate::upstream::tls::{ALPN_H2, UpstreamTls};

/// TCP keep-alive time of upstream connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

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

/// Opens a TLS connection to `addr`: the TCP connect and the handshake together within
/// `connect_timeout`. With `h2`, the server must have chosen HTTP/2 by ALPN.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
    tls: &UpstreamTls,
    connect_timeout: Duration,
    h2: bool,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let deadline = Instant::now() + connect_timeout;
    let tcp = tcp_connect(addr, connect_timeout).await?;
    let connector = TlsConnector::from(Arc::clone(tls.config()));
    let handshake = connector.connect(tls.server_name().clone(), tcp);
    let stream = match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => {
            let source = io::Error::new(io::ErrorKind::TimedOut, "timed out");
            return Err(ConnectError::Tls { addr, source });
        }
        Ok(Err(source)) => return Err(ConnectError::Tls { addr, source }),
        Ok(Ok(stream)) => stream,
    };
    if h2 {
        let chosen = stream.get_ref().1.alpn_protocol();
        if chosen != Some(ALPN_H2) {
            let chosen = chosen
                .map_or_else(|| "none".to_owned(), |p| format!("{:?}", String::from_utf8_lossy(p)));
            let source = io::Error::other(format!(
                "the server did not choose HTTP/2 by ALPN (offered \"h2\", chosen: {chosen})"
            ));
            return Err(ConnectError::Tls { addr, source });
        }
    }
    Ok(stream)
}

/// Logs the end of an upstream connection's driver: a TLS failure after the handshake (the
/// server refused the client certificate, a fatal alert…) at warn level with its reason,
/// since the request it breaks may only see "connection error"; anything else at debug.
pub(crate) fn log_driver_end(addr: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    match tls_failure(error) {
        Some(reason) => {
            tracing::warn!(%addr, %reason, "upstream TLS connection failed");
        }
        None => tracing::debug!(%addr, %error, "upstream connection ended with an error"),
    }
}

/// Logs a TLS failure under a failed exchange of the lean path (the server refused the
/// client certificate, a fatal alert…) at warn level with its reason, since the request
/// may only see "connection closed"; other failures are the request's to report.
pub(crate) fn log_tls_failure(addr: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    if let Some(reason) = tls_failure(error) {
        tracing::warn!(%addr, %reason, "upstream TLS connection failed");
    }
}

/// The rustls error under `error`, if any.
fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = e.source();
    }
    None
}

/// A new connection's hold on its backend's [`ConnectionCount`]: a pending slot while it is
/// being made, an open slot for its life.
pub(crate) struct Reservation<'a> {
    pending: Option<&'a ConnectionCount>,
    slot: Option<OpenSlot>,
}

impl<'a> Reservation<'a> {
    /// No hold: a connection outside the caps (health checks).
    pub(crate) fn none() -> Self {
        Reservation { pending: None, slot: None }
    }

    /// Takes a pending slot, then an open slot, of `transport`'s count (nothing when it has
    /// none), or fails at once at a cap.
    pub(crate) fn take(transport: &'a Transport) -> Result<Self, ConnectError> {
        let Some(count) = &transport.connections else {
            return Ok(Reservation { pending: None, slot: None });
        };
        if !count.try_begin_pending() {
            return Err(ConnectError::PendingLimit);
        }
        // From here on, dropping `reservation` gives the pending slot back.
        let mut reservation = Reservation { pending: Some(count), slot: None };
        if !count.try_acquire() {
            return Err(ConnectError::ConnectionLimit);
        }
        reservation.slot = Some(OpenSlot(Arc::clone(count)));
        Ok(reservation)
    }

    /// The connection is made: the pending slot is given back, and the open slot goes
    /// with the connection's stream.
    pub(crate) fn made<I>(mut self, io: I) -> Counted<I> {
        Counted { io, _slot: self.slot.take() }
    }
}

impl Reservation<'_> {
    /// The connection is made (lean path): the pending slot is given back, and the open
    /// slot is returned to go with the connection.
    pub(crate) fn into_slot(mut self) -> Option<OpenSlot> {
        self.slot.take()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.pending.take() {
            count.end_pending();
        }
    }
}

/// An open connection's slot in its backend's [`ConnectionCount`], given back when dropped
/// (the connection's stream is dropped, or the connection could not be made).
pub(crate) struct OpenSlot(Arc<ConnectionCount>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A connection's stream and its slot in the backend's [`ConnectionCount`] (none when the
/// backend counts nothing): the slot is given back when the stream is dropped, whoever
/// holds it then (the connection's driver, or an upgraded connection).
pub(crate) struct Counted<I> {
    io: I,
    _slot: Option<OpenSlot>,
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<I> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<I> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
