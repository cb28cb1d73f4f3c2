//! [`EncodedBody`]: a response body compressed as it streams.
//!
//! The codecs of `compression-codecs` are driven synchronously from `poll_frame`: each data
//! frame of the inner body goes through the encoder into one reused output buffer, and what
//! is written is split off as a `Bytes` frame. Nothing waits for the whole body:
//!
//! - the output is emitted when the buffer is full, and whenever the inner body is not
//!   ready (`Pending`): then the encoder is flushed first (gzip sync flush, brotli and zstd
//!   flush), so a slow stream reaches the client chunk by chunk, each decodable;
//! - at the end of the inner body the encoder writes its final frame, then the inner
//!   trailers (if any) follow;
//! - an error of the inner body or of the encoder ends the body with that error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use compression_codecs::brotli::params::EncoderParams as BrotliParams;
use compression_codecs::core::Level;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::{BrotliEncoder, EncodeV2, ZstdEncoder};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::Coding;
use crate::proxy::ProxyBody;
use crate::proxy::body::BoxError;

/// gzip level: 5, a third less CPU than zlib's default 6 for 3 % more bytes (the module
/// docs of `compression` have the numbers).
pub const GZIP_LEVEL: i32 = 5;
/// brotli quality: 5, where brotli starts to beat gzip on JSON (4 does not; 11 is for
/// static assets).
pub const BROTLI_QUALITY: i32 = 5;
/// brotli window (`lgwin`): 2^19 = 512 KiB of history, as ngx_brotli's default. Not
/// shrunk for small bodies: at 2^16 and below the brotli crate's quality 5 switches to a
/// hasher that allocated 34 MB and ran 9 times slower on a 64 KiB body.
pub const BROTLI_WINDOW: i32 = 19;
/// zstd level: 3 is zstd's default.
pub const ZSTD_LEVEL: i32 = 3;

/// The output buffer of one response: large enough that a busy stream emits few frames.
const OUT_CAPACITY: usize = 16 * 1024;
/// The smallest output buffer (for bodies known to be small).
const OUT_MIN: usize = 1024;

/// One encoder per response (brotli's state is 5 KiB: boxed, like its tables).
enum Encoder {
    Gzip(super::gzip::PooledGzip),
    Brotli(Box<BrotliEncoder>),
    Zstd(ZstdEncoder),
}

impl Encoder {
    fn new(coding: Coding, length: Option<u64>) -> Self {
        match coding {
            Coding::Gzip => Encoder::Gzip(super::gzip::PooledGzip::new()),
            Coding::Brotli => {
                let mut params = BrotliParams::default()
                    .quality(Level::Precise(BROTLI_QUALITY))
                    .window_size(BROTLI_WINDOW)
                    .text_mode();
                if let Some(n) = length.and_then(|n| usize::try_from(n).ok()) {
                    params = params.size_hint(n);
                }
                Encoder::Brotli(Box::new(BrotliEncoder::new(params)))
            }
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::new(ZSTD_LEVEL)),
        }
    }

    fn codec(&mut self) -> &mut dyn EncodeV2 {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Brotli(e) => &mut **e,
            Encoder::Zstd(e) => e,
        }
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Gzip(_) => "gzip",
            Encoder::Brotli(_) => "br",
            Encoder::Zstd(_) => "zstd",
        })
    }
}

/// The reused output buffer: `buf[..filled]` is compressed output not yet emitted; the
/// rest is initialized space the encoder writes into.
#[derive(Debug)]
struct Output {
    buf: BytesMut,
    filled: usize,
    capacity: usize,
}

impl Output {
    fn new(capacity: usize) -> Self {
        Output { buf: BytesMut::new(), filled: 0, capacity }
    }

    /// Runs `f` on the free space and keeps what it wrote. An emptied buffer that has
    /// less than half its capacity left is topped up first: when the frames split off it
    /// are gone, that reuses the same allocation, else it takes a new one.
    fn write<R>(&mut self, f: impl FnOnce(&mut WriteBuffer<'_>) -> R) -> R {
        if self.filled == 0 && self.buf.len() < self.capacity / 2 {
            self.buf.resize(self.capacity, 0);
        }
        let mut out = WriteBuffer::new_initialized(&mut self.buf[self.filled..]);
        let result = f(&mut out);
        self.filled += out.written_len();
        result
    }

    /// No space left until [`Output::take`] (an empty buffer is topped up on write).
    fn is_full(&self) -> bool {
        self.filled > 0 && self.filled == self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The output so far, as a frame.
    fn take(&mut self) -> Frame<Bytes> {
        let bytes = self.buf.split_to(self.filled).freeze();
        self.filled = 0;
        Frame::data(bytes)
    }
}

/// A codec that neither takes input nor writes output several calls in a row is broken:
/// an error rather than a busy loop.
fn stalled(idle: u32) -> io::Result<()> {
    if idle > 8 { Err(io::Error::other("the encoder makes no progress")) } else { Ok(()) }
}

/// Where the body is.
#[derive(Debug)]
enum State {
    /// Reading the inner body. `flushing`: a flush was started and must complete before
    /// the encoder takes more input.
    Reading { flushing: bool },
    /// The inner body ended: the encoder writes its last bytes.
    Finishing,
    /// Everything is written; the inner trailers, if any, remain.
    Done,
}

/// A body compressed on the way.
#[derive(Debug)]
pub struct EncodedBody(Encoding<ProxyBody>);

impl EncodedBody {
    /// `inner`, compressed with `coding`. `length` is the uncompressed length when known
    /// (it sizes the buffers).
    pub fn new(inner: ProxyBody, coding: Coding, length: Option<u64>) -> Self {
        EncodedBody(Encoding::new(inner, coding, length))
    }
}

impl Body for EncodedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The compressing body over any inner body (the proxy's, or a test's).
#[derive(Debug)]
pub(super) struct Encoding<B> {
    inner: B,
    encoder: Encoder,
    /// The part of the inner body's last data frame not yet consumed by the encoder.
    input: Bytes,
    /// Input went into the encoder since the last flush.
    unflushed: bool,
    output: Output,
    state: State,
    trailers: Option<HeaderMap>,
}

impl<B> Encoding<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    pub(super) fn new(inner: B, coding: Coding, length: Option<u64>) -> Self {
        let length = length.or_else(|| inner.size_hint().upper());
        let capacity = length.map_or(OUT_CAPACITY, |n| {
            usize::try_from(n)
                .unwrap_or(OUT_CAPACITY)
                .saturating_add(64)
                .clamp(OUT_MIN, OUT_CAPACITY)
        });
        Encoding {
            inner,
            encoder: Encoder::new(coding, length),
            input: Bytes::new(),
            unflushed: false,
            output: Output::new(capacity),
            state: State::Reading { flushing: false },
            trailers: None,
        }
    }

    /// Feeds the pending input to the encoder until it is consumed or the output is full.
    fn encode(&mut self) -> io::Result<()> {
        let (encoder, input) = (&mut self.encoder, &mut self.input);
        let mut idle = 0;
        while !input.is_empty() && !self.output.is_full() {
            let before = self.output.filled;
            let consumed = self.output.write(|out| {
                let mut partial = PartialBuffer::new(&input[..]);
                encoder.codec().encode(&mut partial, out).map(|()| partial.written_len())
            })?;
            input.advance(consumed);
            self.unflushed = true;
            idle = if consumed == 0 && self.output.filled == before { idle + 1 } else { 0 };
            stalled(idle)?;
        }
        Ok(())
    }

    /// Flushes (`finish == false`) or finishes the encoder into the output; `true` once
    /// complete, `false` when the output filled up first.
    fn drain(&mut self, finish: bool) -> io::Result<bool> {
        let encoder = &mut self.encoder;
        let mut idle = 0;
        loop {
            let before = self.output.filled;
            let done = self.output.write(|out| {
                let codec = encoder.codec();
                if finish { codec.finish(out) } else { codec.flush(out) }
            })?;
            if done {
                return Ok(true);
            }
            if self.output.is_full() {
                return Ok(false);
            }
            idle = if self.output.filled == before { idle + 1 } else { 0 };
            stalled(idle)?;
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.state {
                State::Done => {
                    if !self.output.is_empty() {
                        return Poll::Ready(Some(Ok(self.output.take())));
                    }
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                State::Finishing => {
                    if self.drain(true)? {
                        self.state = State::Done;
                    } else {
                        return Poll::Ready(Some(Ok(self.output.take())));
                    }
                }
                State::Reading { flushing: true } => {
                    if self.drain(false)? {
                        self.unflushed = false;
                        self.state = State::Reading { flushing: false };
                    }
                    // Flushed output goes out now: the inner body was not ready.
                    if !self.output.is_empty() {
                        return Poll::Ready(Some(Ok(self.output.take())));
                    }
                }
                State::Reading { flushing: false } => {
                    if !self.input.is_empty() {
                        self.encode()?;
                        if self.output.is_full() {
                            return Poll::Ready(Some(Ok(self.output.take())));
                        }
                        continue;
                    }
                    match Pin::new(&mut self.inner).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => self.input = data,
                            Err(frame) => {
                                // Trailers end the body.
                                self.trailers = frame.into_trailers().ok();
                                self.state = State::Finishing;
                            }
                        },
                        Poll::Ready(None) => self.state = State::Finishing,
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                        Poll::Pending if self.unflushed => {
                            self.state = State::Reading { flushing: true };
                        }
                        Poll::Pending if !self.output.is_empty() => {
                            return Poll::Ready(Some(Ok(self.output.take())));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

impl<B> Body for Encoding<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.step(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            // An error ends the body: nothing more is read or written.
            this.state = State::Done;
            this.output.filled = 0;
            this.trailers = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.output.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
