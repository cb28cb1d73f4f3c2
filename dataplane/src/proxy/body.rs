//! Body types of the proxy: what the gateway answers with, and what it sends upstream.
//!
//! Both stream: nothing here buffers a body. [`UpstreamBody`] keeps a request body in a
//! shared slot that is emptied only when the upstream connection first polls it, so after
//! a connect failure (the body was never sent) the same body can go to another endpoint.
//! [`ClientBody`] counts the client's body on its way and cuts it off past a `requestSize`
//! limit.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upgrade::Activity;
use crate::filter::compression::EncodedBody;
use crate::observe::ObservedBody;
use crate::upstream::pool::PooledBody;

/// The error type of the bodies the proxy streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response the gateway sends to its client: a streamed upstream body, a
/// small body the gateway produced itself, or one of those compressed or observed.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from a pooled upstream connection, which goes back to the pool at the end.
    Pooled(PooledBody),
    /// Produced by the gateway (error responses, fixed answers); `None` once sent.
    Full(Option<Bytes>),
    /// Compressed on the way (`compression`).
    Encoded(Box<EncodedBody>),
    /// Counted, and recorded when the response ends (the end-of-request hook).
    Observed(Box<ObservedBody>),
    /// Cut off after `timeouts.idle` without a frame (streaming responses).
    Idle(Box<IdleBody>),
    /// Copied into the response cache while it streams.
    Cached(Box<crate::cache::body::TeeBody>),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Pooled(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Encoded(body) => Pin::new(&mut **body).poll_frame(cx),
            ProxyBody::Observed(body) => Pin::new(&mut **body).poll_frame(cx),
            ProxyBody::Idle(body) => Pin::new(&mut **body).poll_frame(cx),
            ProxyBody::Cached(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Pooled(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Encoded(body) => body.is_end_stream(),
            ProxyBody::Observed(body) => body.is_end_stream(),
            ProxyBody::Idle(body) => body.inner.is_end_stream(),
            ProxyBody::Cached(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Pooled(body) => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Encoded(body) => body.size_hint(),
            ProxyBody::Observed(body) => body.size_hint(),
            ProxyBody::Idle(body) => body.inner.size_hint(),
            ProxyBody::Cached(body) => body.size_hint(),
        }
    }
}

/// A response body that ends with [`BodyIdle`] when no frame (data or trailers) has moved
/// in either direction for `idle`: the route's `timeouts.idle` on streaming exchanges
/// (server-sent events, gRPC streams). The request body's frames count too (see
/// [`ClientBody::new`]), so a client that streams to a quiet server is not cut. The client
/// sees the stream reset (HTTP/2) or the connection closed.
#[derive(Debug)]
pub struct IdleBody {
    inner: ProxyBody,
    idle: std::time::Duration,
    activity: Arc<Activity>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// No frame of a streaming exchange for the route's `timeouts.idle`.
#[derive(Debug, thiserror::Error)]
#[error("no data either way for {0:?} (timeouts.idle)")]
pub struct BodyIdle(pub std::time::Duration);

impl IdleBody {
    /// `inner`, cut off once neither it nor the request body (touching `activity`) moved
    /// for `idle`.
    pub(crate) fn new(
        inner: ProxyBody,
        idle: std::time::Duration,
        activity: Arc<Activity>,
    ) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(activity.idle_deadline(idle)));
        IdleBody { inner, idle, activity, timer }
    }
}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer fired: re-arm it if the request body moved meanwhile.
                let deadline = this.activity.idle_deadline(this.idle);
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle)))));
                }
                this.timer.as_mut().reset(deadline);
            },
            Poll::Ready(Some(Ok(frame))) => {
                this.activity.touch();
                let deadline = this.activity.idle_deadline(this.idle);
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is known about a client's request body while it streams upstream: bytes so far,
/// and whether it went past the `requestSize` limit. Shared with the proxy, which reads it
/// after the upstream exchange.
#[derive(Debug, Default)]
pub struct BodyStats {
    /// Bytes received from the client so far.
    pub bytes: AtomicU64,
    /// The body went past the limit and was cut off.
    pub exceeded: AtomicBool,
}

/// Reading the client's request body failed (a broken chunked encoding, a body shorter
/// than its `Content-Length`, a reset stream): the client's fault, answered 400 when it
/// makes the upstream request fail.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

impl ClientBodyError {
    /// Whether `error` or one of its sources is a [`ClientBodyError`].
    pub fn is_cause_of(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<ClientBodyError>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// The body went past the `requestSize` limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client's request body on its way upstream: counted into [`BodyStats`] when asked,
/// and ended with an error once past `limit` (hyper then aborts the upstream request: the
/// upstream never sees a complete body).
#[derive(Debug)]
pub struct ClientBody {
    /// `None` once cut off (handed to [`drain`]).
    inner: Option<Incoming>,
    /// Counting and the limit, only for requests that need them: the common body stays
    /// the size of `Incoming` (it is moved with the upstream request several times).
    guard: Option<Box<Guard>>,
}

#[derive(Debug)]
struct Guard {
    limit: u64,
    seen: u64,
    stats: Option<Arc<BodyStats>>,
    /// Touched on every frame: the exchange is not idle (`timeouts.idle`, [`IdleBody`]).
    activity: Option<Arc<Activity>>,
}

impl ClientBody {
    /// `inner`, cut off past `limit` bytes (`None`: no limit), counted into `stats`.
    pub fn new(inner: Incoming, limit: Option<u64>, stats: Option<Arc<BodyStats>>) -> Self {
        Self::with_activity(inner, limit, stats, None)
    }

    /// Like [`ClientBody::new`], recording each frame in `activity` (rules with
    /// `timeouts.idle`).
    pub(crate) fn with_activity(
        inner: Incoming,
        limit: Option<u64>,
        stats: Option<Arc<BodyStats>>,
        activity: Option<Arc<Activity>>,
    ) -> Self {
        let guard = (limit.is_some() || stats.is_some() || activity.is_some()).then(|| {
            Box::new(Guard { limit: limit.unwrap_or(u64::MAX), seen: 0, stats, activity })
        });
        ClientBody { inner: Some(inner), guard }
    }
}

/// How much of a request body the gateway reads and discards after answering without it
/// (a 401, 403, 413… to a request whose body is still arriving), and for how long.
pub const DRAIN_BYTES: usize = 4 << 20;
/// See [`DRAIN_BYTES`].
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the rest of a request body in the background, up to [`DRAIN_BYTES`]
/// and [`DRAIN_TIME`], so the answer already sent reaches the client: closing a socket
/// with unread data makes the kernel reset the connection, and the client could lose the
/// answer (nginx's "lingering close"). A connection whose body was drained stays usable.
pub fn drain(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let read = async {
            let mut n = 0usize;
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                n += frame.data_ref().map_or(0, Bytes::len);
                if n > DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, read).await;
    });
}

/// A client's request body not (yet) handed to an upstream: drained when dropped (the
/// gateway answered without it).
#[derive(Debug)]
pub struct PendingBody(pub Option<Incoming>);

impl Drop for PendingBody {
    fn drop(&mut self) {
        if let Some(body) = self.0.take() {
            drain(body);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(activity) = this.guard.as_ref().and_then(|g| g.activity.as_ref()) {
                    activity.touch();
                }
                if let (Some(guard), Some(data)) = (this.guard.as_mut(), frame.data_ref()) {
                    let n = data.len() as u64;
                    guard.seen = guard.seen.saturating_add(n);
                    if let Some(stats) = &guard.stats {
                        stats.bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    if guard.seen > guard.limit {
                        if let Some(stats) = &guard.stats {
                            stats.exceeded.store(true, Ordering::Relaxed);
                        }
                        let limit = guard.limit;
                        if let Some(rest) = this.inner.take() {
                            drain(rest);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A request body that has not been sent yet, shared between attempts.
pub type BodySlot = Arc<Mutex<Option<ClientBody>>>;

/// The body of an upstream request.
#[derive(Debug)]
pub enum UpstreamBody {
    /// No body (the client's request had none); can be sent any number of times.
    Empty,
    /// The client's body, taken out of the slot on first poll.
    Streamed {
        /// Where the body waits until an upstream connection asks for it.
        slot: BodySlot,
        /// The body once taken.
        taken: Option<ClientBody>,
        /// A copy of what was sent, when the body may have to go out again (HTTP/2).
        tape: Option<Tape>,
    },
    /// A copy of a body that was sent whole to an upstream that refused its request
    /// unprocessed (an HTTP/2 stream above a GOAWAY's last stream, or `REFUSED_STREAM`),
    /// sent again.
    Replayed {
        /// The data frames still to send.
        data: std::collections::VecDeque<Bytes>,
        /// The trailers, sent after the data.
        trailers: Option<http::HeaderMap>,
    },
}

impl UpstreamBody {
    /// A body that streams the client's body out of `slot`.
    pub fn streamed(slot: &BodySlot) -> Self {
        UpstreamBody::Streamed { slot: Arc::clone(slot), taken: None, tape: None }
    }

    /// Keeps a copy of the frames this body sends, up to [`TAPE_LIMIT`] bytes of data, so
    /// that the request can be sent again whole ([`Recording::replay`]). `None` for a body
    /// with nothing to record (no body, or already a copy).
    pub(crate) fn record(&mut self) -> Option<Tape> {
        match self {
            UpstreamBody::Streamed { tape, .. } => {
                Some(Arc::clone(tape.get_or_insert_with(Tape::default)))
            }
            UpstreamBody::Empty | UpstreamBody::Replayed { .. } => None,
        }
    }
}

/// How much of a request body an HTTP/2 request keeps a copy of until its response head,
/// to send it again if the upstream refuses the stream unprocessed. The copy shares the
/// received buffers (no bytes are copied); a longer body is not kept and such a request
/// is not sent again once its body started.
pub const TAPE_LIMIT: usize = 64 * 1024;

/// A request body's frames as its upstream connection took them ([`UpstreamBody::record`]).
pub type Tape = Arc<Mutex<Recording>>;

/// What a [`Tape`] holds.
#[derive(Debug, Default)]
pub struct Recording {
    data: Vec<Bytes>,
    len: usize,
    trailers: Option<http::HeaderMap>,
    /// The body ended (its last frame was taken).
    ended: bool,
    /// Nothing is kept (the body went past [`TAPE_LIMIT`], or its request got its
    /// response head: [`Recording::stop`]).
    overflowed: bool,
}

impl Recording {
    /// Lets the copy go and keeps nothing more: the request will not be sent again.
    pub(crate) fn stop(&mut self) {
        self.overflowed = true;
        self.data = Vec::new();
        self.trailers = None;
    }

    fn push(&mut self, frame: &Frame<Bytes>, end: bool) {
        if self.overflowed {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.len = self.len.saturating_add(data.len());
            if self.len > TAPE_LIMIT {
                self.stop();
                return;
            }
            self.data.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
        }
        self.ended |= end;
    }

    /// The whole body again, when it ended within [`TAPE_LIMIT`].
    pub(crate) fn replay(&self) -> Option<UpstreamBody> {
        (self.ended && !self.overflowed).then(|| UpstreamBody::Replayed {
            data: self.data.iter().cloned().collect(),
            trailers: self.trailers.clone(),
        })
    }
}

impl UpstreamBody {
    /// Whether no upstream connection has taken the client's body out of its slot yet
    /// through this body (it can still go to another connection).
    pub(crate) fn is_untaken(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streamed { taken, .. } => taken.is_none(),
            UpstreamBody::Replayed { .. } => false,
        }
    }

    /// The upstream stopped taking the body (its response ended first): the rest of the
    /// client's body is read and discarded in the background ([`drain`]), so that the
    /// answer reaches the client and its connection stays usable.
    pub(crate) fn abandon(self) {
        if let UpstreamBody::Streamed { taken: Some(mut body), .. } = self
            && let Some(rest) = body.inner.take()
        {
            drain(rest);
        }
    }
}

/// Whether the body in `slot` was never polled by an upstream connection, so it can still
/// be sent to another endpoint.
pub fn unsent(slot: &BodySlot) -> bool {
    slot.lock().unwrap_or_else(PoisonError::into_inner).is_some()
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Streamed { slot, taken, tape } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                }
                let Some(body) = taken else {
                    // Another attempt owns the body: this one has nothing to send.
                    return Poll::Ready(None);
                };
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Some(tape) = tape {
                    let mut tape = tape.lock().unwrap_or_else(PoisonError::into_inner);
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => tape.push(frame, body.is_end_stream()),
                        Poll::Ready(None) => tape.ended = true,
                        Poll::Ready(Some(Err(_))) | Poll::Pending => {}
                    }
                }
                polled
            }
            UpstreamBody::Replayed { data, trailers } => match data.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Replayed { data, trailers } => data.is_empty() && trailers.is_none(),
            UpstreamBody::Streamed { slot, taken, .. } => match taken {
                Some(body) => body.is_end_stream(),
                None => slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_none_or(Body::is_end_stream),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Replayed { data, .. } => {
                SizeHint::with_exact(data.iter().map(|d| d.len() as u64).sum())
            }
            UpstreamBody::Streamed { slot, taken, .. } => match taken {
                Some(body) => body.size_hint(),
                None => slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), Body::size_hint),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http_body_util::BodyExt as _;

    use super::*;

    fn trailers() -> http::HeaderMap {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers
    }

    #[tokio::test]
    async fn a_tape_plays_back_a_whole_body_with_its_trailers() {
        let mut tape = Recording::default();
        tape.push(&Frame::data(Bytes::from_static(b"he")), false);
        // Not ended yet: nothing to play back.
        assert!(tape.replay().is_none());
        tape.push(&Frame::data(Bytes::from_static(b"llo")), false);
        tape.push(&Frame::trailers(trailers()), true);
        let body = tape.replay().unwrap();
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers()));
        assert_eq!(collected.to_bytes(), "hello");
        // The tape still holds the body: it plays back again.
        assert_eq!(tape.replay().unwrap().collect().await.unwrap().to_bytes(), "hello");
        // Once the request is answered, the copy goes, and nothing more is kept.
        tape.stop();
        assert!(tape.replay().is_none());
        tape.push(&Frame::data(Bytes::from_static(b"more")), true);
        assert!(tape.data.is_empty() && tape.trailers.is_none());
    }

    #[test]
    fn a_body_past_the_tape_limit_is_not_kept() {
        let mut tape = Recording::default();
        tape.push(&Frame::data(Bytes::from(vec![b'a'; TAPE_LIMIT])), false);
        tape.push(&Frame::data(Bytes::from_static(b"b")), true);
        assert!(tape.replay().is_none());
        assert!(tape.data.is_empty(), "the copy is let go");
        // Exactly at the limit, it is kept.
        let mut tape = Recording::default();
        tape.push(&Frame::data(Bytes::from(vec![b'a'; TAPE_LIMIT])), true);
        assert_eq!(tape.replay().unwrap().size_hint().exact(), Some(TAPE_LIMIT as u64));
    }
}
