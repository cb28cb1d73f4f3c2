//! HTTP/1.1 framing of the lean upstream path ([`super::lean`]), kept free of I/O so that
//! it can be tested and fuzzed on its own: the request head serialized once into one
//! buffer, the response head parsed with `httparse` straight from the read buffer, the
//! response body's framing decided once (RFC 9112 §6.3) and the chunked decoder.
//!
//! Strict where the upstream could smuggle a second response into a pooled connection:
//! `Content-Length` together with `Transfer-Encoding`, differing or invalid
//! `Content-Length` values, invalid chunk sizes, a missing CRLF after chunk data, oversized
//! heads and obsolete line folding are all errors ([`UpstreamError`]); the connection is
//! then closed, never pooled.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

/// Largest response head accepted, status line and headers (hyper's client limit, kept so
/// that the lean path accepts what hyper accepted).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Most response headers accepted (hyper's client limit).
pub const MAX_HEADERS: usize = 100;
/// Largest trailer section of a chunked response.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most chunk-extension bytes accepted over one chunked body (hyper's limit): extensions
/// are skipped, but a body made of them is refused.
pub const MAX_CHUNK_EXTENSION_BYTES: u64 = 16 * 1024;

/// Why an exchange over the lean upstream path failed, or an HTTP/2 or upgrade exchange
/// (hyper's error, unchanged).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// An exchange over hyper's client (HTTP/2, upgrades).
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The connection closed before any byte of the response.
    #[error("upstream closed the connection before the response")]
    ClosedBeforeResponse,
    /// The connection closed within the response head.
    #[error("upstream closed the connection within the response head")]
    ClosedInHead,
    /// The connection closed before the end of a `Content-Length` or chunked body.
    #[error("upstream closed the connection before the end of the response body")]
    ClosedInBody,
    /// Reading from the upstream failed.
    #[error("reading from the upstream: {0}")]
    Read(#[source] std::io::Error),
    /// Writing the request to the upstream failed.
    #[error("writing the request to the upstream: {0}")]
    Write(#[source] std::io::Error),
    /// The request body failed (the client's body broke, or went past its limit).
    #[error("request body: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request body was longer or shorter than its `Content-Length`.
    #[error("request body does not match its Content-Length")]
    RequestBodyLength,
    /// The response head is not valid HTTP/1.x.
    #[error("invalid response head: {0}")]
    InvalidHead(httparse::Error),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The response has more than [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} response headers")]
    TooManyHeaders,
    /// A status code outside 100-999.
    #[error("invalid response status code")]
    InvalidStatus,
    /// Both framings at once: a request smuggling vector, refused.
    #[error("Content-Length and Transfer-Encoding both present")]
    LengthAndTransferEncoding,
    /// `Content-Length` values that differ or are not numbers.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 response.
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    /// A chunk size that is not hexadecimal, or too large.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size line or chunk data not ended by CRLF.
    #[error("invalid chunk: missing CRLF")]
    InvalidChunkCrlf,
    /// More than [`MAX_CHUNK_EXTENSION_BYTES`] of chunk extensions.
    #[error("chunk extensions larger than {MAX_CHUNK_EXTENSION_BYTES} bytes")]
    ChunkExtensionsTooLarge,
    /// The trailer section is invalid or larger than [`MAX_TRAILER_BYTES`].
    #[error("invalid response trailers")]
    InvalidTrailers,
    /// Bytes after the end of a response, before the next request.
    #[error("upstream sent data after the response")]
    UnexpectedData,
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
}

/// Decides the request body's framing as hyper's HTTP/1 client does, adjusting `headers`
/// the same way: a body known to be empty sends nothing (and loses any
/// `Transfer-Encoding`); a `Transfer-Encoding` given is kept (with `chunked` added last)
/// and wins over `Content-Length`; a `Content-Length` given is trusted; else an exact size
/// hint becomes `Content-Length`; else GET, HEAD and CONNECT send no body, others chunked.
/// HTTP/1.0 never chunks.
pub fn request_framing(
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
    end_stream: bool,
    exact: Option<u64>,
) -> RequestFraming {
    if end_stream {
        headers.remove(TRANSFER_ENCODING);
        return RequestFraming::Empty;
    }
    let existing = content_length(headers.get_all(CONTENT_LENGTH).iter()).ok().flatten();
    if version == Version::HTTP_10 {
        headers.remove(TRANSFER_ENCODING);
        return match (existing, exact) {
            (Some(n), _) => RequestFraming::Length(n),
            (None, Some(n)) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
                RequestFraming::Length(n)
            }
            (None, None) => RequestFraming::Empty,
        };
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if !is_chunked(headers.get_all(TRANSFER_ENCODING).iter()) {
            // hyper adds `chunked` to the last value.
            if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
                let mut value = last.as_bytes().to_vec();
                value.extend_from_slice(b", chunked");
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    let mut all: Vec<HeaderValue> =
                        headers.get_all(TRANSFER_ENCODING).iter().cloned().collect();
                    all.pop();
                    all.push(value);
                    headers.remove(TRANSFER_ENCODING);
                    for v in all {
                        headers.append(TRANSFER_ENCODING, v);
                    }
                }
            }
        }
        if existing.is_some() {
            headers.remove(CONTENT_LENGTH);
        }
        return RequestFraming::Chunked;
    }
    if let Some(n) = existing {
        return RequestFraming::Length(n);
    }
    if let Some(n) = exact {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        return RequestFraming::Length(n);
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        return RequestFraming::Empty;
    }
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    RequestFraming::Chunked
}

/// Appends the request head to `out`: request line (the URI as hyper writes it: scheme and
/// authority when present, path, query), headers in map order, blank line.
pub fn encode_request_head(
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
    out: &mut BytesMut,
) {
    let mut size = 32 + uri.path().len() + uri.query().map_or(0, str::len);
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    out.reserve(size);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    if let Some(scheme) = uri.scheme() {
        out.extend_from_slice(scheme.as_str().as_bytes());
        out.extend_from_slice(b"://");
    }
    if let Some(authority) = uri.authority() {
        out.extend_from_slice(authority.as_str().as_bytes());
    }
    out.extend_from_slice(uri.path().as_bytes());
    if let Some(query) = uri.query() {
        out.extend_from_slice(b"?");
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the last of the `Transfer-Encoding` values is `chunked`.
fn is_chunked<'a>(mut values: impl DoubleEndedIterator<Item = &'a HeaderValue>) -> bool {
    values
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// The one length of `Content-Length` values (comma lists and repeats of one value are
/// accepted, RFC 9110 §8.6), `None` without any; an error when they differ or one is
/// not a number.
fn content_length<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<u64>, UpstreamError> {
    let mut length: Option<u64> = None;
    for value in values {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(UpstreamError::InvalidContentLength);
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match length {
                Some(seen) if seen != n => return Err(UpstreamError::InvalidContentLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// A parsed response head, its bytes consumed from the read buffer.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Headers in the order received.
    pub headers: HeaderMap,
    /// The reason phrase when it is not the status code's canonical one (hyper keeps it in
    /// the response's extensions, and its server writes it back).
    pub reason: Option<hyper::ext::ReasonPhrase>,
    /// The connection may carry another request after this response (HTTP/1.1 without
    /// `Connection: close`).
    pub keep_alive: bool,
}

/// The least room of a parsed response's header map (see [`parse_response_head`]).
const REUSED_MAP_HEADERS: usize = 12;

/// Parses one response head at the start of `buf`: `Ok(None)` while it is incomplete (an
/// error past [`MAX_HEAD_BYTES`]); on success its bytes are split off `buf` (the header
/// values share them, no copy).
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, UpstreamError> {
    // Uninitialized slots: initializing 100 headers costs more than parsing a small head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(UpstreamError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::TooManyHeaders),
        Err(e) => return Err(UpstreamError::InvalidHead(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(UpstreamError::HeadTooLarge);
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::InvalidStatus)?;
    let version = if response.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let reason = response
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    // Where each name and value lies in `buf`, so that they can be taken out of the frozen
    // head once the parser's borrow ends (values share its bytes, no copy).
    let base = buf.as_ptr() as usize;
    let count = response.headers.len();
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (span, header) in spans.iter_mut().zip(response.headers.iter()) {
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let (name, value) = (header.name.as_bytes(), header.value);
        *span = (at(name), at(name) + name.len() as u32, at(value), at(value) + value.len() as u32);
    }
    let head = buf.split_to(len).freeze();
    // hyper keeps the response's (emptied) map to parse the connection's next request
    // into, and the gateway then adds its five headers to that request (identity, the
    // `x-forwarded-*` set): with room for 12, a small request's map does not grow (one
    // with many headers still grows once, as before).
    let mut map = HeaderMap::with_capacity(count.max(REUSED_MAP_HEADERS));
    let mut keep_alive = version == Version::HTTP_11;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| UpstreamError::InvalidHead(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| UpstreamError::InvalidHead(httparse::Error::HeaderValue))?;
        if name == CONNECTION && connection_has(&value, "close") {
            keep_alive = false;
        }
        map.append(name, value);
    }
    Ok(Some(ResponseHead { status, version, headers: map, reason, keep_alive }))
}

/// Whether a `Connection` value lists `token`.
fn connection_has(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD, 1xx, 204, 304, or a 2xx to CONNECT.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes the connection (never reusable).
    Close,
}

/// The body framing of a final response to a request with `method`. Refuses what could
/// desynchronize a pooled connection: both `Content-Length` and `Transfer-Encoding`,
/// differing or invalid `Content-Length`s, `Transfer-Encoding` in HTTP/1.0.
pub fn response_framing(
    method: &Method,
    head: &ResponseHead,
) -> Result<ResponseFraming, UpstreamError> {
    let code = head.status.as_u16();
    if head.status.is_informational() || code == 204 || code == 304 || *method == Method::HEAD {
        return Ok(ResponseFraming::Empty);
    }
    if *method == Method::CONNECT && head.status.is_success() {
        return Ok(ResponseFraming::Empty);
    }
    let te = head.headers.contains_key(TRANSFER_ENCODING);
    let cl = head.headers.contains_key(CONTENT_LENGTH);
    if te {
        if cl {
            return Err(UpstreamError::LengthAndTransferEncoding);
        }
        if head.version == Version::HTTP_10 {
            return Err(UpstreamError::TransferEncodingInHttp10);
        }
        return Ok(if is_chunked(head.headers.get_all(TRANSFER_ENCODING).iter()) {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::Close
        });
    }
    match content_length(head.headers.get_all(CONTENT_LENGTH).iter())? {
        Some(n) => Ok(ResponseFraming::Length(n)),
        None => Ok(ResponseFraming::Close),
    }
}

/// What the chunked decoder produced from the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section (the body is complete).
    Trailers(HeaderMap),
    /// The body is complete (no trailers).
    End,
    /// More bytes are needed.
    NeedMore,
}

/// The chunked body decoder: a state machine over the read buffer, consuming what it
/// decodes, so that it never holds bytes of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Extension bytes seen so far in the body.
    extensions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size: its value so far and whether a digit was seen.
    Size(u64, bool),
    /// Whitespace after the size.
    SizeWs(u64),
    /// A chunk extension, skipped up to CR.
    Extension(u64),
    /// The LF ending the size line.
    SizeLf(u64),
    /// This many data bytes left in the chunk.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk: trailers, or the final CRLF.
    Trailers,
    /// Done.
    End,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: ChunkState::Size(0, false), extensions: 0 }
    }
}

impl ChunkedDecoder {
    /// Whether the whole body (and its trailers) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::End
    }

    /// Decodes the next piece of the body out of `buf`; at most `max` data bytes at once.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, UpstreamError> {
        loop {
            match self.state {
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()).min(max);
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state =
                        if left == 0 { ChunkState::DataCr } else { ChunkState::Data(left) };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::Trailers => return self.trailers(buf),
                ChunkState::End => return Ok(Decoded::End),
                _ => {}
            }
            let Some(&byte) = buf.first() else { return Ok(Decoded::NeedMore) };
            self.state = match self.state {
                ChunkState::Size(size, digits) => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from(hex(byte));
                        if size > (u64::MAX >> 4) {
                            return Err(UpstreamError::InvalidChunkSize);
                        }
                        ChunkState::Size(size << 4 | digit, true)
                    }
                    _ if !digits => return Err(UpstreamError::InvalidChunkSize),
                    b'\n' => return Err(UpstreamError::InvalidChunkCrlf),
                    b' ' | b'\t' => ChunkState::SizeWs(size),
                    b';' => ChunkState::Extension(size),
                    b'\r' => ChunkState::SizeLf(size),
                    _ => return Err(UpstreamError::InvalidChunkSize),
                },
                ChunkState::SizeWs(size) => match byte {
                    b'\n' => return Err(UpstreamError::InvalidChunkCrlf),
                    b' ' | b'\t' => ChunkState::SizeWs(size),
                    b';' => ChunkState::Extension(size),
                    b'\r' => ChunkState::SizeLf(size),
                    _ => return Err(UpstreamError::InvalidChunkSize),
                },
                ChunkState::Extension(size) => {
                    self.extensions += 1;
                    if self.extensions > MAX_CHUNK_EXTENSION_BYTES {
                        return Err(UpstreamError::ChunkExtensionsTooLarge);
                    }
                    match byte {
                        b'\r' => ChunkState::SizeLf(size),
                        b'\n' => return Err(UpstreamError::InvalidChunkCrlf),
                        _ => ChunkState::Extension(size),
                    }
                }
                ChunkState::SizeLf(size) => match byte {
                    b'\n' if size == 0 => ChunkState::Trailers,
                    b'\n' => ChunkState::Data(size),
                    _ => return Err(UpstreamError::InvalidChunkCrlf),
                },
                ChunkState::DataCr => match byte {
                    b'\r' => ChunkState::DataLf,
                    _ => return Err(UpstreamError::InvalidChunkCrlf),
                },
                ChunkState::DataLf => match byte {
                    b'\n' => ChunkState::Size(0, false),
                    _ => return Err(UpstreamError::InvalidChunkCrlf),
                },
                ChunkState::Data(_) | ChunkState::Trailers | ChunkState::End => self.state,
            };
            buf.advance(1);
        }
    }

    /// The trailer section: a bare CRLF, or header lines up to an empty line.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        if buf.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = ChunkState::End;
            return Ok(Decoded::End);
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > MAX_TRAILER_BYTES {
                return Err(UpstreamError::InvalidTrailers);
            }
            return Ok(Decoded::NeedMore);
        };
        let len = end + 4;
        if len > MAX_TRAILER_BYTES {
            return Err(UpstreamError::InvalidTrailers);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let map = match httparse::parse_headers(&buf[..len], &mut headers) {
            Ok(httparse::Status::Complete((n, parsed))) if n == len => {
                let mut map = HeaderMap::with_capacity(parsed.len());
                for h in parsed {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| UpstreamError::InvalidTrailers)?;
                    let value = HeaderValue::from_bytes(h.value)
                        .map_err(|_| UpstreamError::InvalidTrailers)?;
                    map.append(name, value);
                }
                map
            }
            _ => return Err(UpstreamError::InvalidTrailers),
        };
        buf.advance(len);
        self.state = ChunkState::End;
        Ok(Decoded::Trailers(map))
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
