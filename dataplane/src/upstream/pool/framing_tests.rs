//! The framing rules on their own: request heads as hyper's client writes them, response
//! heads and body framing (RFC 9112 §6.3), the chunked decoder, and smuggling-style
//! inputs refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

fn head(raw: &str) -> Result<Option<ResponseHead>, UpstreamError> {
    parse_response_head(&mut BytesMut::from(raw))
}

fn framing_of(method: &Method, raw: &str) -> Result<ResponseFraming, UpstreamError> {
    let parsed = head(raw)?.expect("complete head");
    response_framing(method, &parsed)
}

fn err(result: Result<ResponseFraming, UpstreamError>) -> String {
    match result {
        Ok(framing) => panic!("accepted as {framing:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_response_head_is_parsed_and_split_off_the_buffer() {
    let mut buf =
        BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello");
    let parsed = parse_response_head(&mut buf).unwrap().unwrap();
    assert_eq!(parsed.status, StatusCode::OK);
    assert_eq!(parsed.version, Version::HTTP_11);
    assert!(parsed.keep_alive);
    assert!(parsed.reason.is_none(), "canonical reason not kept");
    let values: Vec<_> = parsed.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn a_partial_head_waits_and_a_custom_reason_is_kept() {
    assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
    let parsed = head("HTTP/1.1 200 Fine\r\n\r\n").unwrap().unwrap();
    assert_eq!(parsed.reason.unwrap().as_bytes(), b"Fine");
}

#[test]
fn connection_close_and_http_1_0_are_not_kept_alive() {
    assert!(
        !head("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap()
            .keep_alive
    );
    assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().keep_alive);
    assert!(head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
}

#[test]
fn body_framing_follows_rfc_9112() {
    let get = Method::GET;
    assert_eq!(
        framing_of(&get, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap(),
        ResponseFraming::Length(12)
    );
    assert_eq!(
        framing_of(&get, "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n")
            .unwrap(),
        ResponseFraming::Length(7)
    );
    assert_eq!(
        framing_of(&get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap(),
        ResponseFraming::Chunked
    );
    assert_eq!(
        framing_of(&get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap(),
        ResponseFraming::Close
    );
    assert_eq!(framing_of(&get, "HTTP/1.1 200 OK\r\n\r\n").unwrap(), ResponseFraming::Close);
    // No body whatever the headers say.
    assert_eq!(
        framing_of(&Method::HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap(),
        ResponseFraming::Empty
    );
    assert_eq!(
        framing_of(&get, "HTTP/1.1 204 No Content\r\nContent-Length: 12\r\n\r\n").unwrap(),
        ResponseFraming::Empty
    );
    assert_eq!(
        framing_of(&get, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap(),
        ResponseFraming::Empty
    );
}

#[test]
fn smuggling_style_framing_is_refused() {
    let get = Method::GET;
    assert_eq!(
        err(framing_of(
            &get,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )),
        "Content-Length and Transfer-Encoding both present"
    );
    assert_eq!(
        err(framing_of(&get, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")),
        "invalid Content-Length"
    );
    assert_eq!(
        err(framing_of(&get, "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n")),
        "invalid Content-Length"
    );
    for bad in ["-1", "+5", "0x10", "5 5", "", "99999999999999999999"] {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(err(framing_of(&get, &raw)), "invalid Content-Length", "{bad:?}");
    }
    assert_eq!(
        err(framing_of(&get, "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")),
        "Transfer-Encoding in an HTTP/1.0 response"
    );
}

#[test]
fn invalid_heads_are_refused_precisely() {
    let e = head("HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\n\r\n").unwrap_err();
    assert!(e.to_string().starts_with("invalid response head"), "{e}");
    let e = head("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n").unwrap_err();
    assert!(e.to_string().starts_with("invalid response head"), "{e}");
    assert!(head("HTTP/2 200 OK\r\n\r\n").is_err());
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let e = head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err();
    assert_eq!(e.to_string(), "more than 100 response headers");
    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD_BYTES));
    let e = head(&huge).unwrap_err();
    assert_eq!(e.to_string(), format!("response head larger than {MAX_HEAD_BYTES} bytes"));
}

/// Decodes all of `raw` fed in pieces of `step` bytes: the data and the trailers.
fn dechunk(raw: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), UpstreamError> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf, usize::MAX)? {
            Decoded::Data(bytes) => data.extend_from_slice(&bytes),
            Decoded::Trailers(t) => return Ok((data, Some(t))),
            Decoded::End => return Ok((data, None)),
            Decoded::NeedMore => {
                if fed == raw.len() {
                    return Err(UpstreamError::ClosedInBody);
                }
                let n = step.min(raw.len() - fed);
                buf.extend_from_slice(&raw[fed..fed + n]);
                fed += n;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_in_any_pieces_with_trailers() {
    let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\nA \r\n0123456789\r\n0\r\nx-sum: 42\r\n\r\n";
    for step in [1, 2, 3, 7, raw.len()] {
        let (data, trailers) = dechunk(raw, step).unwrap();
        assert_eq!(data, b"hello world0123456789");
        assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "42");
    }
    let (data, trailers) = dechunk(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
    assert_eq!(data, b"abc");
    assert!(trailers.is_none());
}

#[test]
fn invalid_chunks_are_refused() {
    let cases: [(&[u8], &str); 8] = [
        (b"0x10\r\n", "invalid chunk size"),
        (b"-1\r\n", "invalid chunk size"),
        (b"\r\n", "invalid chunk size"),
        (b"g\r\n", "invalid chunk size"),
        (b"1ffffffffffffffff\r\n", "invalid chunk size"),
        (b"3\r\nabcX\r\n", "invalid chunk: missing CRLF"),
        (b"3\nabc\r\n", "invalid chunk: missing CRLF"),
        (b"3;a\nb\r\nabc\r\n", "invalid chunk: missing CRLF"),
    ];
    for (raw, want) in cases {
        let e = dechunk(raw, 1).unwrap_err();
        assert_eq!(e.to_string(), want, "{:?}", String::from_utf8_lossy(raw));
    }
    let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(20_000));
    assert_eq!(
        dechunk(long_ext.as_bytes(), 4096).unwrap_err().to_string(),
        "chunk extensions larger than 16384 bytes"
    );
    let e = dechunk(format!("0\r\nx: {}\r\n\r\n", "a".repeat(MAX_TRAILER_BYTES)).as_bytes(), 4096)
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid response trailers");
}

#[test]
fn request_framing_matches_hypers_client() {
    let mut h = HeaderMap::new();
    assert_eq!(
        request_framing(&Method::GET, Version::HTTP_11, &mut h, true, Some(0)),
        RequestFraming::Empty
    );
    assert!(h.is_empty(), "no Content-Length added for an empty body");
    assert_eq!(
        request_framing(&Method::POST, Version::HTTP_11, &mut h, false, Some(5)),
        RequestFraming::Length(5)
    );
    assert_eq!(h[CONTENT_LENGTH], "5");
    let mut h = HeaderMap::new();
    assert_eq!(
        request_framing(&Method::POST, Version::HTTP_11, &mut h, false, None),
        RequestFraming::Chunked
    );
    assert_eq!(h[TRANSFER_ENCODING], "chunked");
    let mut h = HeaderMap::new();
    assert_eq!(
        request_framing(&Method::GET, Version::HTTP_11, &mut h, false, None),
        RequestFraming::Empty
    );
    assert!(h.is_empty(), "GET with a body of unknown length sends none, as hyper does");
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, "9".parse().unwrap());
    assert_eq!(
        request_framing(&Method::PUT, Version::HTTP_11, &mut h, false, None),
        RequestFraming::Length(9)
    );
}

#[test]
fn the_request_head_is_written_as_hyper_writes_it() {
    let mut headers = HeaderMap::new();
    headers.insert("host", "orders.internal".parse().unwrap());
    headers.append("x-a", "1".parse().unwrap());
    headers.append("x-a", "2".parse().unwrap());
    let mut out = BytesMut::new();
    let uri: http::Uri = "/a/b?c=d".parse().unwrap();
    encode_request_head(&Method::POST, &uri, Version::HTTP_11, &headers, &mut out);
    assert_eq!(
        &out[..],
        b"POST /a/b?c=d HTTP/1.1\r\nhost: orders.internal\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
    );
    let mut out = BytesMut::new();
    let uri: http::Uri = "http://auth.internal:8080/check".parse().unwrap();
    encode_request_head(&Method::GET, &uri, Version::HTTP_10, &HeaderMap::new(), &mut out);
    assert_eq!(&out[..], b"GET http://auth.internal:8080/check HTTP/1.0\r\n\r\n");
}

/// A small response's header map has room for the connection's next request and the
/// headers the gateway adds to it (hyper parses that request into this map, emptied).
#[test]
fn a_parsed_response_map_has_room_for_the_next_request() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..]);
    let head = parse_response_head(&mut buf).unwrap().unwrap();
    assert_eq!(head.headers.len(), 1);
    assert!(head.headers.capacity() >= REUSED_MAP_HEADERS, "{}", head.headers.capacity());
}
