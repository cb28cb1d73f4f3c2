//! `compression`: gzip, br or zstd by `Accept-Encoding`. (Interface; the codecs land in the
//! next commit.)

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use super::RequestContext;
use crate::proxy::ProxyBody;
use crate::proxy::body::BoxError;

/// A content coding weir can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// The coding chosen for one response from the request's `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The coding.
    pub coding: Coding,
}

/// A compiled `compression` plugin.
#[derive(Debug, Clone)]
pub struct Compression {
    /// Codings offered, in preference order.
    pub codings: Box<[Coding]>,
    /// Responses with a smaller `Content-Length` are sent as they are.
    pub min_length: u64,
    /// Media types compressed (`text/*` style patterns, lower-case).
    pub content_types: Box<[Box<str>]>,
}

impl Compression {
    /// The request phase: picks the coding from `Accept-Encoding`.
    pub fn negotiate(&self, _request: &http::request::Parts, _ctx: &mut RequestContext<'_>) {}

    /// The response phase: compresses the body when the negotiated coding, the status, the
    /// content type and the length allow it.
    pub fn response(&self, _response: &mut Response<ProxyBody>, _ctx: &RequestContext<'_>) {}
}

/// A body compressed on the way.
#[derive(Debug)]
pub struct EncodedBody {
    inner: ProxyBody,
}

impl Body for EncodedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
