//! `compression`: gzip, br or zstd by `Accept-Encoding`, streamed.
//!
//! ```text
//! request:  Accept-Encoding ──negotiate──▶ ctx.encoding (HEAD: none)
//! response: status, Content-Type, Content-Encoding, Cache-Control ──▶ Vary: Accept-Encoding
//!           + ctx.encoding, Content-Length ≥ minLength ──▶ Content-Encoding, weak ETag,
//!           body wrapped in ProxyBody::Encoded (compressed as it streams)
//! ```
//!
//! The coding is negotiated before the chain runs (see `filter::prepare`), so the gateway's
//! own answers (`directResponse`, errors) are compressed like upstream responses.
//!
//! Levels (constants in `body`): gzip 5, brotli 5 (window 512 KiB), zstd 3. On a 64 KiB
//! JSON body through this filter (`cargo run --release -p weir-dataplane --example
//! compression`, a loaded 2-core machine, so times are upper bounds):
//!
//! | coding | size of input | time per MiB | level next door                      |
//! |--------|---------------|--------------|--------------------------------------|
//! | gzip 5 | 19.1 %        | 16 ms        | gzip 6: 18.6 %, ~45 % more time      |
//! | br 5   | 17.7 %        | 47 ms        | br 4: 19.9 %, larger than gzip 5     |
//! | zstd 3 | 19.8 %        | 6 ms         | zstd 6: 18.3 %, 4 times the time     |
//!
//! gzip takes its deflate state from a per-thread pool (`gzip`: at most 4 idle states of
//! ~270 KiB per thread, reset after each response); brotli (1.2-2.1 MB of heap) and zstd
//! (a C context) are created per response.

mod body;
mod gzip;
mod media;
mod negotiate;
#[cfg(test)]
mod tests;

use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body::Body as _;

pub use body::{BROTLI_QUALITY, BROTLI_WINDOW, EncodedBody, GZIP_LEVEL, ZSTD_LEVEL};

use super::RequestContext;
use crate::proxy::ProxyBody;

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

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
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

/// Statuses whose response has no body to compress (`HEAD` is handled at negotiation).
fn bodiless(status: StatusCode) -> bool {
    status.is_informational() || status == StatusCode::NO_CONTENT
}

impl Compression {
    /// The request phase: picks the coding from `Accept-Encoding` (highest q-value, ties
    /// in the order of [`Compression::codings`]) into `ctx.encoding`. A `HEAD` request,
    /// a missing or empty header, or one that accepts none of the codings: no coding.
    /// Idempotent; no allocation.
    pub fn negotiate(&self, request: &http::request::Parts, ctx: &mut RequestContext<'_>) {
        ctx.encoding = if request.method == Method::HEAD {
            None
        } else {
            negotiate::choose(&request.headers, &self.codings).map(|coding| Negotiated { coding })
        };
    }

    /// The response phase: compresses the body when the negotiated coding, the status, the
    /// content type and the length allow it.
    ///
    /// A response of a compressible type that is not already encoded and allows
    /// transformation gets `Vary: Accept-Encoding` whether or not it is compressed for this
    /// client (a cache must not serve one client's answer to another). It is compressed
    /// when, in addition, a coding was negotiated, the status is not 206 or 304, there is
    /// no `Content-Range`, and the length is unknown or at least `minLength`.
    pub fn response(&self, response: &mut Response<ProxyBody>, ctx: &RequestContext<'_>) {
        let status = response.status();
        if bodiless(status) {
            return;
        }
        let headers = response.headers();
        if !media::media_type(headers).is_some_and(|t| media::compressible(&self.content_types, t))
            || media::already_encoded(headers)
            || media::no_transform(headers)
        {
            return;
        }
        super::cors::add_vary(response.headers_mut(), "accept-encoding");
        let Some(Negotiated { coding }) = ctx.encoding else { return };
        let headers = response.headers();
        if status == StatusCode::PARTIAL_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || headers.contains_key(CONTENT_RANGE)
            || !self.codings.contains(&coding)
            || response.body().is_end_stream()
        {
            return;
        }
        let Ok(length) = media::content_length(headers) else { return };
        let length = length.or_else(|| response.body().size_hint().exact());
        if length.is_some_and(|n| n < self.min_length.max(1)) {
            return;
        }
        let headers = response.headers_mut();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        headers.remove(CONTENT_LENGTH);
        headers.remove(ACCEPT_RANGES);
        if let Some(weak) = headers.get(ETAG).and_then(weaken) {
            headers.insert(ETAG, weak);
        }
        let body = std::mem::replace(response.body_mut(), ProxyBody::empty());
        *response.body_mut() = ProxyBody::Encoded(Box::new(EncodedBody::new(body, coding, length)));
    }
}

/// `"x"` → `W/"x"`: the compressed bytes differ from the ones the strong validator names
/// (RFC 9110 §8.8.1). A weak or malformed ETag is left as it is.
fn weaken(etag: &HeaderValue) -> Option<HeaderValue> {
    let bytes = etag.as_bytes();
    if !bytes.starts_with(b"\"") {
        return None;
    }
    let mut weak = Vec::with_capacity(bytes.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(bytes);
    HeaderValue::from_bytes(&weak).ok()
}
