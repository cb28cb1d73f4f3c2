//! The response rules of `compression`, and [`Encoding`] driven frame by frame (a channel
//! body, polled by hand: `Pending` is deterministic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Channel;

use super::body::Encoding;
use super::*;
use crate::filter::RequestContext;
use crate::proxy::body::BoxError;

const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

fn plugin() -> Compression {
    Compression {
        codings: ALL.into(),
        min_length: 1024,
        content_types: ["text/*", "application/json", "application/*+json"]
            .map(Box::<str>::from)
            .into(),
    }
}

fn ctx(coding: Option<Coding>) -> RequestContext<'static> {
    RequestContext { encoding: coding.map(|coding| Negotiated { coding }), ..Default::default() }
}

/// Some JSON: `n` records, compressible like an API answer.
pub(super) fn json(n: usize) -> Vec<u8> {
    let mut out = String::from("[");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":{i},"sku":"SKU-{:06}","name":"item {}","price":{}.{:02},"tags":["a","b{}"]}}"#,
            i * 7919 % 1_000_000,
            i % 97,
            i % 500,
            i % 100,
            i % 13
        ));
    }
    out.push(']');
    out.into_bytes()
}

/// Decodes as much of `bytes` as it holds; `true` when the stream was complete.
pub(super) fn decode(coding: Coding, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut reader: Box<dyn Read> = match coding {
        Coding::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
        Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(bytes, 4096)),
        Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(bytes).unwrap()),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response
            .headers_mut()
            .append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

fn header<'a>(response: &'a Response<ProxyBody>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn vary(response: &Response<ProxyBody>) -> Vec<&str> {
    response.headers().get_all("vary").iter().map(|v| v.to_str().unwrap()).collect()
}

fn encoded(response: &Response<ProxyBody>) -> bool {
    matches!(response.body(), ProxyBody::Encoded(_))
}

type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

fn poll<B: Body + Unpin>(body: &mut B) -> Polled<B> {
    Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
}

/// Polls until `Pending` or the end, collecting data; the trailers if they came.
fn drain<B>(body: &mut B, into: &mut Vec<u8>) -> (bool, Option<HeaderMap>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    for _ in 0..10_000 {
        match poll(body) {
            Poll::Pending => return (false, None),
            Poll::Ready(None) => return (true, None),
            Poll::Ready(Some(frame)) => match frame.unwrap().into_data() {
                Ok(data) => {
                    assert!(!data.is_empty(), "empty data frame");
                    into.extend_from_slice(&data);
                }
                Err(frame) => return (false, Some(frame.into_trailers().unwrap())),
            },
        }
    }
    panic!("body never settled");
}

#[test]
fn compresses_a_large_json_response() {
    let body = json(100);
    let mut r = response(
        200,
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", &body.len().to_string()),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ],
        body.clone(),
    );
    plugin().response(&mut r, &ctx(Some(Coding::Gzip)));
    assert!(encoded(&r));
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert_eq!(header(&r, "content-length"), None);
    assert_eq!(header(&r, "accept-ranges"), None);
    assert_eq!(header(&r, "etag"), Some("W/\"v1\""));
    assert_eq!(vary(&r), ["Accept-Encoding"]);
    let mut out = Vec::new();
    assert_eq!(drain(r.body_mut(), &mut out), (true, None));
    assert!(out.len() < body.len() / 3, "{} of {}", out.len(), body.len());
    assert_eq!(decode(Coding::Gzip, &out), (body, true));
}

/// (status, headers, body, negotiated, compressed, Vary added)
type SkipCase<'a> = (u16, Vec<(&'a str, &'a str)>, Vec<u8>, Option<Coding>, bool, bool);

#[test]
fn skip_rules() {
    let big = || json(100);
    let cl = big().len().to_string();
    let cl = cl.as_str();
    let json_ct = ("content-type", "application/json");
    let cases: Vec<SkipCase<'_>> = vec![
        (200, vec![json_ct, ("content-length", cl)], big(), Some(Coding::Zstd), true, true),
        (200, vec![json_ct], big(), Some(Coding::Brotli), true, true),
        (201, vec![("content-type", "text/html")], big(), Some(Coding::Gzip), true, true),
        (
            404,
            vec![("content-type", "application/problem+json")],
            big(),
            Some(Coding::Gzip),
            true,
            true,
        ),
        // The client accepts nothing we offer: not compressed, but the answer varies.
        (200, vec![json_ct], big(), None, false, true),
        // Smaller than minLength, by Content-Length or by the body's own length.
        (
            200,
            vec![json_ct, ("content-length", "1023")],
            vec![b'x'; 1023],
            Some(Coding::Gzip),
            false,
            true,
        ),
        (200, vec![json_ct], vec![b'x'; 100], Some(Coding::Gzip), false, true),
        (
            200,
            vec![json_ct, ("content-length", "1024")],
            vec![b'x'; 1024],
            Some(Coding::Gzip),
            true,
            true,
        ),
        (200, vec![json_ct, ("content-length", "nope")], big(), Some(Coding::Gzip), false, true),
        (200, vec![json_ct, ("content-length", "0")], vec![], Some(Coding::Gzip), false, true),
        // Already encoded, or not to be transformed: untouched.
        (200, vec![json_ct, ("content-encoding", "gzip")], big(), Some(Coding::Gzip), false, false),
        (
            200,
            vec![json_ct, ("content-encoding", "identity")],
            big(),
            Some(Coding::Gzip),
            true,
            true,
        ),
        (
            200,
            vec![json_ct, ("cache-control", "public, no-transform")],
            big(),
            Some(Coding::Gzip),
            false,
            false,
        ),
        // Not a compressible type.
        (200, vec![("content-type", "image/png")], big(), Some(Coding::Gzip), false, false),
        (200, vec![], big(), Some(Coding::Gzip), false, false),
        (200, vec![("content-type", "text/event-stream")], big(), Some(Coding::Gzip), false, false),
        (200, vec![("content-type", "application/grpc")], big(), Some(Coding::Gzip), false, false),
        // Statuses.
        (204, vec![json_ct], vec![], Some(Coding::Gzip), false, false),
        (304, vec![json_ct], vec![], Some(Coding::Gzip), false, true),
        (
            206,
            vec![json_ct, ("content-range", "bytes 0-99/5000")],
            big(),
            Some(Coding::Gzip),
            false,
            true,
        ),
        (
            200,
            vec![json_ct, ("content-range", "bytes 0-99/5000")],
            big(),
            Some(Coding::Gzip),
            false,
            true,
        ),
    ];
    for (i, (status, headers, body, coding, compressed, varies)) in cases.into_iter().enumerate() {
        let mut r = response(status, &headers, body);
        plugin().response(&mut r, &ctx(coding));
        assert_eq!(encoded(&r), compressed, "case {i}: {headers:?}");
        let given = headers.iter().find(|(n, _)| *n == "content-encoding").map(|(_, v)| *v);
        let want = if compressed { coding.map(Coding::token) } else { given };
        assert_eq!(header(&r, "content-encoding"), want, "case {i}");
        assert_eq!(!vary(&r).is_empty(), varies, "case {i}: {:?}", vary(&r));
        if !compressed {
            let length = headers.iter().find(|(n, _)| *n == "content-length").map(|(_, v)| *v);
            assert_eq!(header(&r, "content-length"), length, "case {i}");
        }
    }
}

#[test]
fn streams_and_grpc_are_skipped_whatever_the_list() {
    let mut everything = plugin();
    everything.content_types = ["*/*", "text/*", "application/*"].map(Box::<str>::from).into();
    for ct in ["text/event-stream", "text/event-stream; charset=utf-8", "application/grpc+proto"] {
        let mut r = response(200, &[("content-type", ct)], json(100));
        everything.response(&mut r, &ctx(Some(Coding::Gzip)));
        assert!(!encoded(&r), "{ct}");
        assert!(vary(&r).is_empty(), "{ct}");
    }
}

#[test]
fn vary_is_added_once_and_etags_weakened_once() {
    let mut r = response(
        200,
        &[("content-type", "text/plain"), ("vary", "Origin"), ("etag", "W/\"weak\"")],
        json(100),
    );
    plugin().response(&mut r, &ctx(Some(Coding::Brotli)));
    plugin().response(&mut r, &ctx(None));
    assert_eq!(vary(&r), ["Origin", "Accept-Encoding"]);
    assert_eq!(header(&r, "etag"), Some("W/\"weak\""));
    assert_eq!(header(&r, "content-encoding"), Some("br"));

    let mut r = response(200, &[("content-type", "text/plain"), ("vary", "*")], json(100));
    plugin().response(&mut r, &ctx(None));
    assert_eq!(vary(&r), ["*"]);
}

#[test]
fn a_coding_not_offered_is_not_used() {
    let mut gzip_only = plugin();
    gzip_only.codings = [Coding::Gzip].into();
    let mut r = response(200, &[("content-type", "text/plain")], json(100));
    gzip_only.response(&mut r, &ctx(Some(Coding::Zstd)));
    assert!(!encoded(&r));
}

#[test]
fn head_requests_negotiate_nothing() {
    let (get, _) =
        Request::get("/").header("accept-encoding", "gzip").body(()).unwrap().into_parts();
    let (head, _) =
        Request::head("/").header("accept-encoding", "gzip").body(()).unwrap().into_parts();
    let (none, _) = Request::get("/").body(()).unwrap().into_parts();
    let mut c = ctx(None);
    plugin().negotiate(&get, &mut c);
    assert_eq!(c.encoding, Some(Negotiated { coding: Coding::Gzip }));
    plugin().negotiate(&head, &mut c);
    assert_eq!(c.encoding, None);
    c.encoding = Some(Negotiated { coding: Coding::Gzip });
    plugin().negotiate(&none, &mut c);
    assert_eq!(c.encoding, None);
}

type TestChannel = Channel<Bytes, BoxError>;

fn channel(
    coding: Coding,
) -> (http_body_util::channel::Sender<Bytes, BoxError>, Encoding<TestChannel>) {
    let (tx, rx) = TestChannel::new(16);
    (tx, Encoding::new(rx, coding, None))
}

#[test]
fn each_chunk_is_flushed_when_the_inner_body_waits() {
    for coding in ALL {
        let (mut tx, mut body) = channel(coding);
        let mut wire = Vec::new();
        assert_eq!(drain(&mut body, &mut wire), (false, None), "{coding:?}");
        assert!(wire.is_empty(), "{coding:?}: output before any input");
        let mut sent = Vec::new();
        for i in 0..5 {
            let chunk = format!("{{\"event\":{i},\"data\":\"{}\"}}\n", "x".repeat(i * 10));
            sent.extend_from_slice(chunk.as_bytes());
            tx.try_send(Frame::data(Bytes::from(chunk))).unwrap();
            let before = wire.len();
            assert_eq!(drain(&mut body, &mut wire), (false, None), "{coding:?}");
            assert!(wire.len() > before, "{coding:?}: chunk {i} held back");
            // What reached the wire decodes to everything sent so far.
            assert_eq!(decode(coding, &wire).0, sent, "{coding:?} chunk {i}");
            // Waiting again with nothing new emits nothing (no empty flush blocks).
            let idle = wire.len();
            assert_eq!(drain(&mut body, &mut wire), (false, None));
            assert_eq!(wire.len(), idle, "{coding:?}");
        }
        drop(tx);
        assert_eq!(drain(&mut body, &mut wire), (true, None), "{coding:?}");
        assert!(body.is_end_stream());
        assert_eq!(decode(coding, &wire), (sent, true), "{coding:?}");
    }
}

#[test]
fn large_input_is_emitted_in_bounded_frames() {
    // Poorly compressible bytes (an LCG), 1 MiB in 64 KiB chunks, sent at once.
    let mut x: u32 = 1;
    let payload: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    for coding in ALL {
        let (mut tx, rx) = TestChannel::new(32);
        let mut body = Encoding::new(rx, coding, None);
        for chunk in payload.chunks(64 * 1024) {
            tx.try_send(Frame::data(Bytes::copy_from_slice(chunk))).unwrap();
        }
        drop(tx);
        let mut wire = Vec::new();
        let mut frames = 0;
        loop {
            match poll(&mut body) {
                Poll::Ready(Some(frame)) => {
                    let data = frame.unwrap().into_data().unwrap();
                    assert!(!data.is_empty() && data.len() <= 16 * 1024, "{}", data.len());
                    wire.extend_from_slice(&data);
                    frames += 1;
                }
                Poll::Ready(None) => break,
                Poll::Pending => panic!("{coding:?}: pending with all input there"),
            }
            assert!(frames < 10_000);
        }
        assert!(frames > 10, "{coding:?}: {frames} frames");
        assert_eq!(decode(coding, &wire), (payload.clone(), true), "{coding:?}");
    }
}

#[test]
fn trailers_follow_the_final_frame() {
    for coding in ALL {
        let (mut tx, mut body) = channel(coding);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        tx.try_send(Frame::data(Bytes::from(json(20)))).unwrap();
        tx.try_send(Frame::trailers(trailers.clone())).unwrap();
        let mut wire = Vec::new();
        assert_eq!(drain(&mut body, &mut wire), (false, Some(trailers)), "{coding:?}");
        assert_eq!(decode(coding, &wire), (json(20), true), "{coding:?}");
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }
}

#[test]
fn an_empty_body_is_a_valid_empty_stream() {
    for coding in ALL {
        let (tx, mut body) = channel(coding);
        drop(tx);
        let mut wire = Vec::new();
        assert_eq!(drain(&mut body, &mut wire), (true, None));
        assert_eq!(decode(coding, &wire), (Vec::new(), true), "{coding:?}");
    }
}

#[test]
fn inner_errors_end_the_body() {
    let (mut tx, mut body) = channel(Coding::Gzip);
    tx.try_send(Frame::data(Bytes::from_static(b"{\"a\":1}"))).unwrap();
    let mut wire = Vec::new();
    assert_eq!(drain(&mut body, &mut wire), (false, None));
    tx.abort("upstream reset".into());
    let Poll::Ready(Some(Err(e))) = poll(&mut body) else { panic!("error not propagated") };
    assert_eq!(e.to_string(), "upstream reset");
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
    assert!(body.is_end_stream());
}

#[test]
fn the_public_body_wraps_a_gateway_body() {
    for coding in ALL {
        let mut body = EncodedBody::new(ProxyBody::full(Bytes::from(json(300))), coding, None);
        let mut wire = Vec::new();
        assert_eq!(drain(&mut body, &mut wire), (true, None));
        assert_eq!(decode(coding, &wire), (json(300), true), "{coding:?}");
    }
}
