//! The writing half of a lean connection's exchange ([`super::Conn`]): the request head
//! and body, framed as decided once (`Content-Length`, chunked, none), written with one
//! `writev` per step while the response head and body are read, and what is left of the
//! body let go when the response ends first.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Body;
use tokio::io::AsyncWrite;

use super::Conn;
use crate::upstream::pool::framing::{RequestFraming, UpstreamError};

/// Bytes waiting to be written: a head (the request head, or a chunk's size line), data,
/// and a fixed tail (CRLF after a chunk, the last chunk), written with one `writev`.
#[derive(Default)]
pub(super) struct Outgoing {
    pub(super) head: Bytes,
    pub(super) data: Bytes,
    pub(super) tail: &'static [u8],
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Only a head waits: a body frame can be added to the same write.
    fn takes_data(&self) -> bool {
        self.data.is_empty() && self.tail.is_empty()
    }

    /// Drops what `n` written bytes covered; a buffer written in full is let go at once
    /// (the head's allocation is then reused for the next head).
    fn advance(&mut self, mut n: usize) {
        let h = n.min(self.head.len());
        if h == self.head.len() {
            self.head = Bytes::new();
        } else {
            self.head.advance(h);
        }
        n -= h;
        let d = n.min(self.data.len());
        if d == self.data.len() {
            self.data = Bytes::new();
        } else {
            self.data.advance(d);
        }
        n -= d;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }
}

/// How far the request has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// Frames still to come from the body.
    Body,
    /// Everything queued; writing and flushing it.
    Last,
    /// Written and flushed.
    Done,
    /// Writing failed, or was given up (the response ended first).
    Stopped,
}

impl Conn {
    /// Writes what can be written of the request now; `Ready(Ok)` once it has all been
    /// written and flushed.
    pub(super) fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        loop {
            let mut body_pending = false;
            if self.sending == Sending::Body && self.out.takes_data() {
                match self.poll_body(cx) {
                    Poll::Pending => body_pending = true,
                    Poll::Ready(result) => result?,
                }
            }
            while !self.out.is_empty() {
                let slices = [
                    IoSlice::new(&self.out.head),
                    IoSlice::new(&self.out.data),
                    IoSlice::new(self.out.tail),
                ];
                let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))
                    .map_err(UpstreamError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(UpstreamError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.out.advance(n);
            }
            match self.sending {
                Sending::Body if !body_pending => continue,
                Sending::Body => {
                    ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(UpstreamError::Write)?;
                    return Poll::Pending;
                }
                _ => {
                    ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(UpstreamError::Write)?;
                    self.sending = Sending::Done;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Takes the next body frame into `out`.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        let Some(body) = self.body.as_mut() else {
            self.finish_body()?;
            return Poll::Ready(Ok(()));
        };
        loop {
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => {
                    self.finish_body()?;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(UpstreamError::RequestBody(e))),
                Some(Ok(frame)) => {
                    // Trailers are dropped, as hyper drops them without a `Trailer`
                    // header (a hop-by-hop header the proxy removes).
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    let n = data.len() as u64;
                    match self.framing {
                        RequestFraming::Length(_) => {
                            if n > self.owed {
                                return Poll::Ready(Err(UpstreamError::RequestBodyLength));
                            }
                            self.owed -= n;
                            self.out.data = data;
                            if self.owed == 0 {
                                // hyper stops at the length, without waiting for the end.
                                self.body = None;
                                self.sending = Sending::Last;
                            }
                        }
                        RequestFraming::Chunked | RequestFraming::Empty => {
                            let mut line = [0u8; 18];
                            let len = chunk_size_line(n, &mut line);
                            // After what is left of the request head, if any (the first
                            // chunk goes out in the same write).
                            let mut head = std::mem::take(&mut self.scratch);
                            head.extend_from_slice(&self.out.head);
                            head.extend_from_slice(&line[..len]);
                            self.out.head = head.split().freeze();
                            self.scratch = head;
                            self.out.data = data;
                            self.out.tail = b"\r\n";
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// The body ended: the last chunk, or a check that the length was met.
    fn finish_body(&mut self) -> Result<(), UpstreamError> {
        self.body = None;
        self.sending = Sending::Last;
        match self.framing {
            RequestFraming::Chunked => self.out.tail = b"0\r\n\r\n",
            RequestFraming::Length(_) if self.owed != 0 => {
                return Err(UpstreamError::RequestBodyLength);
            }
            _ => {}
        }
        Ok(())
    }

    /// Writing failed: no more writing; the error is kept for when no response comes.
    pub(super) fn stop_sending(&mut self, error: io::Error) {
        self.sending = Sending::Stopped;
        self.write_error = Some(error);
    }

    /// The response ended before the request body was written: the rest of the client's
    /// body is read and discarded in the background (the client keeps its connection).
    pub(crate) fn abandon_request_body(&mut self) {
        if let Some(body) = self.body.take() {
            body.abandon();
        }
        if matches!(self.sending, Sending::Body | Sending::Last) {
            self.sending = Sending::Stopped;
        }
    }
}

/// Writes `n` as a chunk size line (`{n:x}\r\n`) into `out`; returns its length.
fn chunk_size_line(n: u64, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in out.iter_mut().take(digits).enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[((n >> shift) & 0xf) as usize];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::chunk_size_line;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (n, want) in [(1u64, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (0x1234ab, "1234ab\r\n")]
        {
            let mut line = [0u8; 18];
            let len = chunk_size_line(n, &mut line);
            assert_eq!(std::str::from_utf8(&line[..len]).unwrap(), want);
        }
        let mut line = [0u8; 18];
        let len = chunk_size_line(u64::MAX, &mut line);
        assert_eq!(&line[..len], b"ffffffffffffffff\r\n");
    }
}
