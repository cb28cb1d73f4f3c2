//! Body types of the proxy: what the gateway answers with, and what it sends upstream.
//!
//! Both stream: nothing here buffers a body. [`UpstreamBody`] keeps a request body in a
//! shared slot that is emptied only when the upstream connection first polls it, so after
//! a connect failure (the body was never sent) the same body can go to another endpoint.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::PooledBody;

/// The body of a response the gateway sends to its client: a streamed upstream body, or
/// a small body the gateway produced itself.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from a pooled upstream connection, which goes back to the pool at the end.
    Pooled(PooledBody),
    /// Produced by the gateway (error responses); `None` once sent.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Pooled(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Pooled(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Pooled(body) => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// A request body that has not been sent yet, shared between attempts.
pub type BodySlot = Arc<Mutex<Option<Incoming>>>;

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
        taken: Option<Incoming>,
    },
}

impl UpstreamBody {
    /// A body that streams the client's body out of `slot`.
    pub fn streamed(slot: &BodySlot) -> Self {
        UpstreamBody::Streamed { slot: Arc::clone(slot), taken: None }
    }
}

/// Whether the body in `slot` was never polled by an upstream connection, so it can still
/// be sent to another endpoint.
pub fn unsent(slot: &BodySlot) -> bool {
    slot.lock().unwrap_or_else(PoisonError::into_inner).is_some()
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Streamed { slot, taken } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                }
                match taken {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    // Another attempt owns the body: this one has nothing to send.
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streamed { slot, taken } => match taken {
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
            UpstreamBody::Streamed { slot, taken } => match taken {
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
