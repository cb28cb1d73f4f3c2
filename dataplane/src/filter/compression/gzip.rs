//! gzip on pooled deflate states.
//!
//! A deflate state is about 270 KiB that zlib zeroes when it is created: for a small JSON
//! answer that was most of the cost of compressing it (callgrind: ~490k instructions per
//! response in `memset` alone, a 3-byte body costing 15x an uncompressed request). Here
//! the state (`flate2::Compress` writing the gzip header and trailer itself, zlib-rs
//! backend) is taken from a small per-thread pool and reset when the response ends, as
//! nginx keeps its zlib allocations per worker. At most [`POOL_PER_THREAD`] states wait
//! per thread (about 1 MiB).

use std::cell::RefCell;
use std::io;

use compression_codecs::EncodeV2;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use flate2::{Compress, Compression, FlushCompress, Status};

use super::body::GZIP_LEVEL;

/// Idle deflate states kept per thread.
pub const POOL_PER_THREAD: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<Compress>> = const { RefCell::new(Vec::new()) };
}

/// A gzip encoder whose deflate state goes back to the pool when dropped.
pub(super) struct PooledGzip {
    compress: Option<Compress>,
    /// Nothing written since the last sync flush (a flush then writes nothing).
    flushed: bool,
}

impl PooledGzip {
    pub(super) fn new() -> Self {
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        let compress = pooled
            .unwrap_or_else(|| Compress::new_gzip(Compression::new(GZIP_LEVEL.unsigned_abs()), 15));
        PooledGzip { compress: Some(compress), flushed: true }
    }

    /// Runs deflate once over `input` into `output`'s free space.
    fn run(
        &mut self,
        input: &[u8],
        output: &mut WriteBuffer<'_>,
        flush: FlushCompress,
    ) -> io::Result<(usize, Status)> {
        let compress = self
            .compress
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already released"))?;
        let (before_in, before_out) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress(input, output.initialize_unwritten(), flush)
            .map_err(io::Error::other)?;
        output.advance((compress.total_out() - before_out) as usize);
        Ok(((compress.total_in() - before_in) as usize, status))
    }
}

impl Drop for PooledGzip {
    fn drop(&mut self) {
        if let Some(mut compress) = self.compress.take() {
            compress.reset();
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < POOL_PER_THREAD {
                    pool.push(compress);
                }
            });
        }
    }
}

impl EncodeV2 for PooledGzip {
    fn encode(
        &mut self,
        input: &mut PartialBuffer<&[u8]>,
        output: &mut WriteBuffer<'_>,
    ) -> io::Result<()> {
        self.flushed = false;
        let (read, status) = self.run(input.unwritten(), output, FlushCompress::None)?;
        input.advance(read);
        match status {
            Status::Ok | Status::BufError => Ok(()),
            Status::StreamEnd => Err(io::Error::other("gzip stream ended before its input")),
        }
    }

    fn flush(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        if self.flushed {
            return Ok(true);
        }
        // A sync flush, then drain what deflate still holds until it writes nothing more.
        self.run(&[], output, FlushCompress::Sync)?;
        loop {
            let before = output.written_len();
            self.run(&[], output, FlushCompress::None)?;
            if output.written_len() == before {
                break;
            }
        }
        self.flushed = !output.has_no_spare_space();
        Ok(self.flushed)
    }

    fn finish(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        self.flushed = false;
        let (_, status) = self.run(&[], output, FlushCompress::Finish)?;
        Ok(status == Status::StreamEnd)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Read;

    use super::*;

    fn gzip(encoder: &mut PooledGzip, data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = WriteBuffer::new_initialized(&mut buf);
        let mut input = PartialBuffer::new(data);
        while !input.unwritten().is_empty() {
            encoder.encode(&mut input, &mut out).unwrap();
        }
        assert!(encoder.flush(&mut out).unwrap());
        while !encoder.finish(&mut out).unwrap() {}
        out.written().to_vec()
    }

    #[test]
    fn pooled_states_make_independent_complete_streams() {
        let first = b"{\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1}".repeat(50);
        let second = b"another body, another stream".repeat(20);
        for _ in 0..3 {
            for data in [&first[..], &second[..], b"x"] {
                // Dropped at the end of each round: the next one reuses its state.
                let mut encoder = PooledGzip::new();
                let compressed = gzip(&mut encoder, data);
                let mut decoded = Vec::new();
                flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
                assert_eq!(decoded, data);
            }
        }
        assert!(POOL.with(|p| p.borrow().len()) >= 1);
    }
}
