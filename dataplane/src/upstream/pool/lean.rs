//! The lean HTTP/1.1 upstream path of pooled connections: no driver task and no channel.
//! A [`Conn`] owns its stream and read buffer; the request's future writes the request
//! head (serialized once, with the first body chunk when it is ready) and reads the
//! response head, and the response body ([`super::PooledBody`]) reads its frames from the
//! connection when polled, in the server connection's task. A request body still being
//! written when the response head arrives (an upstream that answers early, or streams its
//! answer while it reads) goes on being written as the response body is polled. At the
//! end of the response the connection goes back to the pool when it can carry another
//! request; anything else closes it. Framing is in [`super::framing`]; the writing of the
//! request, in [`send`].

mod send;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::PoolKey;
use super::connect::OpenSlot;
use super::framing::{
    ChunkedDecoder, Decoded, RequestFraming, ResponseFraming, ResponseHead, UpstreamError,
    encode_request_head, parse_response_head, request_framing, response_framing,
};
use super::h1::Pool;
use super::idle::{self, IdleWatch};
use crate::proxy::body::UpstreamBody;
use crate::upstream::policy::ConnectionSettings;
use send::{Outgoing, Sending};

/// Bytes read at once when the read buffer has less room than [`MIN_SPARE`].
const READ_SIZE: usize = 16 * 1024;
/// Below this much room, the read buffer grows by [`READ_SIZE`] before a read.
const MIN_SPARE: usize = 2 * 1024;

/// An upstream connection's stream: plain TCP, or TLS over it.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Where a connection goes back to.
pub(crate) struct Home {
    pub(crate) pool: Arc<Pool>,
    pub(crate) key: PoolKey,
    pub(crate) settings: ConnectionSettings,
}

/// How far the response body has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// One pooled upstream HTTP/1.1 connection and the state of its current exchange.
pub(crate) struct Conn {
    io: Stream,
    read: BytesMut,
    /// Where request heads are serialized (its allocation reused once the head is sent).
    scratch: BytesMut,
    /// The backend's open-connection slot, given back when the connection is dropped.
    _slot: Option<OpenSlot>,
    pub(crate) home: Option<Home>,
    // The exchange.
    out: Outgoing,
    body: Option<UpstreamBody>,
    framing: RequestFraming,
    /// Body bytes still owed under `Content-Length`.
    owed: u64,
    sending: Sending,
    write_error: Option<io::Error>,
    method: Method,
    /// A byte of the response has arrived.
    received: bool,
    reading: Reading,
    keep_alive: bool,
    /// When the current (or last) exchange started: idle since then in the pool.
    used: Instant,
    /// Its watch while idle in the pool, and the watch's waker (made at its first
    /// checkin; see [`super::idle`]).
    idle: Option<(Arc<IdleWatch>, Waker)>,
}

impl Conn {
    /// A new connection over `io`, holding the backend's open slot `slot`.
    pub(crate) fn new(io: Stream, slot: Option<OpenSlot>, home: Home) -> Box<Conn> {
        Box::new(Conn {
            io,
            read: BytesMut::new(),
            scratch: BytesMut::new(),
            _slot: slot,
            home: Some(home),
            out: Outgoing::default(),
            body: None,
            framing: RequestFraming::Empty,
            owed: 0,
            sending: Sending::Done,
            write_error: None,
            method: Method::GET,
            received: false,
            reading: Reading::Done,
            keep_alive: false,
            used: Instant::now(),
            idle: None,
        })
    }

    /// Going idle in its home pool: whether it is still usable (see [`Conn::check_idle`]),
    /// its watch's waker then registered with the event loop to hear of the upstream
    /// closing it (the watch is made at its first checkin).
    pub(crate) fn watch_idle(&mut self) -> bool {
        if self.idle.is_none() {
            let Some(home) = &self.home else { return false };
            self.idle = Some(IdleWatch::new(home.pool.shared(), home.key));
        }
        self.check_idle()
    }

    /// Whether an idle connection still looks usable: the upstream has not closed it nor
    /// sent anything since (one read attempt with its watch's waker, which stays
    /// registered when there is nothing to read; no system call while the socket is not
    /// readable).
    pub(crate) fn check_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let Conn { io, read, idle, .. } = self;
        let waker = match idle {
            Some((watch, waker)) => {
                watch.reset();
                &*waker
            }
            None => Waker::noop(),
        };
        let mut cx = Context::from_waker(waker);
        idle::checking(|| matches!(fill(io, read, &mut cx), Poll::Pending))
    }

    /// Whether its watch was woken since it was last checked (never watched: yes).
    pub(crate) fn idle_woken(&self) -> bool {
        self.idle.as_ref().is_none_or(|(watch, _)| watch.woken())
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        fill(&mut self.io, &mut self.read, cx)
    }

    /// Serializes the request head (framing headers added as hyper's client adds them),
    /// keeping `headers` for a retry elsewhere; returns the head and the body's framing.
    pub(crate) fn encode(
        &mut self,
        parts: &mut http::request::Parts,
        body: &UpstreamBody,
    ) -> (Bytes, RequestFraming) {
        let framing = request_framing(
            &parts.method,
            parts.version,
            &mut parts.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        encode_request_head(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            &mut self.scratch,
        );
        (self.scratch.split().freeze(), framing)
    }

    /// Starts an exchange: `head` then `body` framed as `framing`.
    pub(crate) fn begin(
        &mut self,
        head: Bytes,
        method: Method,
        body: Option<UpstreamBody>,
        framing: RequestFraming,
        now: Instant,
    ) {
        self.used = now;
        self.out = Outgoing { head, data: Bytes::new(), tail: b"" };
        self.framing = framing;
        self.owed = match framing {
            RequestFraming::Length(n) => n,
            _ => 0,
        };
        self.body = if framing == RequestFraming::Empty { None } else { body };
        self.sending = if self.body.is_some() { Sending::Body } else { Sending::Last };
        self.write_error = None;
        self.method = method;
        self.received = false;
        self.reading = Reading::Done;
        self.keep_alive = false;
    }

    /// The request's body when the exchange failed before any of it was taken (it can go
    /// to another connection), with whether it had one.
    pub(crate) fn replayable_body(&mut self) -> Option<Option<UpstreamBody>> {
        if self.framing == RequestFraming::Empty {
            return Some(None);
        }
        match &self.body {
            Some(body) if body.is_untaken() => Some(self.body.take()),
            _ => None,
        }
    }

    /// When the exchange that returned it to the pool started.
    pub(crate) fn used(&self) -> Instant {
        self.used
    }

    /// Whether a response byte has arrived.
    pub(crate) fn received(&self) -> bool {
        self.received
    }

    /// Drives the exchange until the final response head: the request is written while
    /// the head is awaited (an upstream may answer before reading the whole body).
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<()>, UpstreamError>> {
        if matches!(self.sending, Sending::Body | Sending::Last) {
            match self.poll_send(cx) {
                Poll::Ready(Err(UpstreamError::Write(e))) => self.stop_sending(e),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            if !self.read.is_empty()
                && let Some(head) = parse_response_head(&mut self.read)?
            {
                if head.status.is_informational() && head.status.as_u16() != 101 {
                    // 100 Continue and other interim responses are skipped (hyper).
                    continue;
                }
                return Poll::Ready(self.start_body(head));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.received => return Poll::Ready(Err(UpstreamError::ClosedInHead)),
                Ok(0) => {
                    return Poll::Ready(Err(match self.write_error.take() {
                        Some(e) => UpstreamError::Write(e),
                        None => UpstreamError::ClosedBeforeResponse,
                    }));
                }
                Ok(_) => self.received = true,
                Err(e) => {
                    return Poll::Ready(Err(match self.write_error.take() {
                        Some(w) if !self.received => UpstreamError::Write(w),
                        _ => UpstreamError::Read(e),
                    }));
                }
            }
        }
    }

    /// The final head is in: the body's framing, and the response without its body.
    fn start_body(&mut self, head: ResponseHead) -> Result<Response<()>, UpstreamError> {
        let framing = response_framing(&self.method, &head)?;
        self.reading = match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => Reading::Done,
            ResponseFraming::Length(n) => Reading::Length(n),
            ResponseFraming::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            ResponseFraming::Close => Reading::Close,
        };
        self.keep_alive = head.keep_alive
            && framing != ResponseFraming::Close
            && head.status.as_u16() != 101
            && !(self.method == Method::CONNECT && head.status.is_success());
        let ResponseHead { status, version, headers, reason, .. } = head;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if let Some(reason) = reason {
            response.extensions_mut().insert(reason);
        }
        Ok(response)
    }

    /// Whether the response body has been read to its end.
    pub(crate) fn body_done(&self) -> bool {
        self.reading == Reading::Done
    }

    /// Bytes of the body still to come, when known.
    pub(crate) fn body_remaining(&self) -> Option<u64> {
        match self.reading {
            Reading::Length(n) => Some(n),
            Reading::Done => Some(0),
            Reading::Chunked(_) | Reading::Close => None,
        }
    }

    /// The next frame of the response body (the request body goes on being written).
    pub(crate) fn poll_body_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if matches!(self.sending, Sending::Body | Sending::Last) {
            match self.poll_send(cx) {
                Poll::Ready(Err(UpstreamError::Write(e))) => self.stop_sending(e),
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            match &mut self.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) => {
                    if !self.read.is_empty() {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(self.read.len());
                        *left -= n as u64;
                        if *left == 0 {
                            self.reading = Reading::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(self.read.split_to(n).freeze()))));
                    }
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut self.read, usize::MAX) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        self.reading = Reading::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        self.reading = Reading::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                Reading::Close => {
                    if !self.read.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(self.read.split().freeze()))));
                    }
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.reading == Reading::Close => {
                    self.reading = Reading::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(UpstreamError::ClosedInBody))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(UpstreamError::Read(e)))),
            }
        }
    }

    /// At the end of the response: whether the connection can carry another request
    /// (keep-alive, the request written in full, nothing more received).
    pub(crate) fn reusable(&self) -> bool {
        self.keep_alive
            && self.reading == Reading::Done
            && self.sending == Sending::Done
            && self.read.is_empty()
    }
}

/// Reads what `io` has into `read` (growing it by [`READ_SIZE`] below [`MIN_SPARE`] of room).
fn fill(io: &mut Stream, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < MIN_SPARE {
        read.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}
