//! The lean upstream path's response parsing: a response head (`httparse`), its body
//! framing (RFC 9112 §6.3), then the chunked decoder over the rest, fed in pieces whose
//! size comes from the first input byte.
//!
//! Invariants: nothing panics; a parsed head consumed at most the input; the chunked
//! decoder never yields more data bytes than it was fed, never yields an empty data
//! piece, and decodes the same bytes fed in any pieces to the same result.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use weir_dataplane::upstream::pool::framing::{
    ChunkedDecoder, Decoded, ResponseFraming, parse_response_head, response_framing,
};

/// Decodes `raw` fed `step` bytes at a time: the data, or `None` on an error or when the
/// input ends first.
fn dechunk(raw: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf, 1 + step % 64).ok()? {
            Decoded::Data(bytes) => {
                assert!(!bytes.is_empty(), "an empty data piece");
                data.extend_from_slice(&bytes);
                assert!(data.len() <= fed, "more data than input");
            }
            Decoded::Trailers(_) | Decoded::End => return Some(data),
            Decoded::NeedMore => {
                if fed == raw.len() {
                    return None;
                }
                let n = step.min(raw.len() - fed);
                buf.extend_from_slice(&raw[fed..fed + n]);
                fed += n;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, input)) = input.split_first() else { return };
    let step = usize::from(first).max(1);
    let mut buf = BytesMut::from(input);
    let Ok(Some(head)) = parse_response_head(&mut buf) else { return };
    assert!(buf.len() <= input.len());
    let method = if first & 1 == 0 { Method::GET } else { Method::HEAD };
    if let Ok(ResponseFraming::Chunked) = response_framing(&method, &head) {
        let whole = dechunk(&buf, buf.len().max(1));
        let pieces = dechunk(&buf, step);
        assert_eq!(whole, pieces, "the pieces changed the result");
    }
});
