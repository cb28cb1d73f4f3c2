//! The `compression` plugin between a real client, the gateway and an in-process origin:
//! each coding decodes (with decoders independent of the encoder) to the origin's bytes,
//! the skip rules hold end to end, and streams are neither buffered nor held back.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::channel::Sender;
use http_body_util::{BodyExt, Channel};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use weir_dataplane::filter::answer::DirectResponse;
use weir_dataplane::filter::compression::{Coding, Compression};
use weir_dataplane::{Backend, Filter};

/// A JSON answer of a few KiB, compressible like an API's.
fn json_body() -> Vec<u8> {
    let records: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"id":{i},"sku":"SKU-{:06}","name":"item {}","price":{}.{:02},"tags":["a","b{}"]}}"#,
                i * 7919 % 1_000_000,
                i % 97,
                i % 500,
                i % 100,
                i % 13
            )
        })
        .collect();
    format!("[{}]", records.join(",")).into_bytes()
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Decodes as much of `bytes` as it holds; `true` when the stream was complete.
fn decode(coding: &str, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut reader: Box<dyn Read> = match coding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        "br" => Box::new(brotli_decompressor::Decompressor::new(bytes, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(bytes).unwrap()),
        other => panic!("unknown coding {other}"),
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

type Streams = mpsc::UnboundedReceiver<Sender<Bytes, Infallible>>;

fn answer(status: u16, headers: &[(&str, &str)], body: TestBody) -> Response<TestBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

/// The origin: fixed answers by path; `/sse` and `/stream` hand their body's sender to
/// the test, which sends the chunks.
async fn origin() -> (Origin, Streams) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |request: Request<Incoming>| {
        let json = json_body();
        let length = json.len().to_string();
        let ct = ("content-type", "application/json; charset=utf-8");
        let stream = |content_type: &str| {
            let (sender, body) = Channel::<Bytes, Infallible>::new(4);
            tx.send(sender).unwrap();
            answer(200, &[("content-type", content_type)], body.boxed())
        };
        match request.uri().path() {
            "/json" => answer(
                200,
                &[ct, ("content-length", &length), ("etag", "\"v1\""), ("accept-ranges", "bytes")],
                full(json),
            ),
            "/small" => answer(200, &[ct], full(&b"{\"ok\":true}"[..])),
            "/gzipped" => {
                let body = gzipped(&json);
                let length = body.len().to_string();
                answer(
                    200,
                    &[ct, ("content-encoding", "gzip"), ("content-length", &length)],
                    full(body),
                )
            }
            "/no-content" => answer(204, &[ct], empty()),
            "/not-modified" => answer(304, &[ct, ("etag", "\"v1\"")], empty()),
            "/sse" => stream("text/event-stream"),
            "/stream" => stream("application/json"),
            _ => answer(404, &[], empty()),
        }
    });
    (Origin::start_service("o", handler).await, rx)
}

fn compression() -> Filter {
    Filter::Compression(Arc::new(Compression {
        codings: [Coding::Zstd, Coding::Brotli, Coding::Gzip].into(),
        min_length: 1024,
        content_types: ["application/json", "text/*"].map(Box::<str>::from).into(),
    }))
}

async fn gateway(origin: &Origin) -> Gateway {
    let mut proxied = action(&[(0, 1)]);
    proxied.filters = Arc::from(vec![compression()]);
    let mut direct = action(&[(0, 1)]);
    direct.filters = Arc::from(vec![
        Filter::DirectResponse(Arc::new(DirectResponse {
            status: StatusCode::OK,
            body: Bytes::from(json_body()),
            content_type: Some("application/json".parse().unwrap()),
        })),
        compression(),
    ]);
    let snap = snapshot(
        1,
        vec![route("c", &[], vec![rule("c", "/", proxied), rule("c", "/direct", direct)])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    );
    Gateway::start(snap).await
}

async fn fetch(gw: &Gateway, method: Method, path: &str, accept: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(gw.url(path)).header("host", "h");
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).map(|v| v.to_str().unwrap())
}

fn varies(answer: &Answer) -> bool {
    answer.headers.get_all("vary").iter().any(|v| v.to_str().unwrap() == "Accept-Encoding")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_compressed_with_each_coding() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=1, br;q=0.9", "gzip"),
        ("*", "zstd"),
    ] {
        let answer = fetch(&gw, Method::GET, "/json", Some(accept)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(header(&answer, "content-encoding"), Some(coding), "{accept}");
        assert_eq!(header(&answer, "content-length"), None, "{accept}");
        assert_eq!(header(&answer, "accept-ranges"), None, "{accept}");
        assert_eq!(header(&answer, "etag"), Some("W/\"v1\""), "{accept}");
        assert!(varies(&answer), "{accept}: {:?}", answer.headers);
        assert!(answer.body.len() < json_body().len() / 3, "{accept}: {}", answer.body.len());
        assert_eq!(decode(coding, &answer.body), (json_body(), true), "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acceptable_means_the_original_bytes() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    for accept in [Some("identity;q=0"), Some("identity"), Some(""), Some("gzip;q=0"), None] {
        let answer = fetch(&gw, Method::GET, "/json", accept).await;
        assert_eq!(header(&answer, "content-encoding"), None, "{accept:?}");
        assert_eq!(header(&answer, "etag"), Some("\"v1\""), "{accept:?}");
        assert_eq!(answer.body, json_body(), "{accept:?}");
        assert!(varies(&answer), "{accept:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_under_min_length_is_sent_as_is_with_vary() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    let answer = fetch(&gw, Method::GET, "/small", Some("gzip, br, zstd")).await;
    assert_eq!(header(&answer, "content-encoding"), None);
    assert_eq!(&answer.body[..], b"{\"ok\":true}");
    assert!(varies(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_answer_is_untouched() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    let answer = fetch(&gw, Method::GET, "/gzipped", Some("br, zstd, gzip")).await;
    let original = gzipped(&json_body());
    assert_eq!(header(&answer, "content-encoding"), Some("gzip"));
    assert_eq!(header(&answer, "content-length"), Some(original.len().to_string().as_str()));
    assert_eq!(answer.body, original);
    assert_eq!(decode("gzip", &answer.body), (json_body(), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_are_untouched() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    let head = fetch(&gw, Method::HEAD, "/json", Some("gzip")).await;
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "content-encoding"), None);
    assert_eq!(header(&head, "content-length"), Some(json_body().len().to_string().as_str()));
    assert_eq!(header(&head, "etag"), Some("\"v1\""));
    assert!(head.body.is_empty());
    let no_content = fetch(&gw, Method::GET, "/no-content", Some("gzip")).await;
    assert_eq!(no_content.status, 204);
    assert_eq!(header(&no_content, "content-encoding"), None);
    assert!(no_content.body.is_empty());
    let not_modified = fetch(&gw, Method::GET, "/not-modified", Some("gzip")).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(header(&not_modified, "content-encoding"), None);
    assert_eq!(header(&not_modified, "etag"), Some("\"v1\""));
    assert!(not_modified.body.is_empty());
}

/// The next data frame of `body`, failing after 10 s.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no frame within 10 s: the gateway holds the stream back")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// Requests `path` and waits (bounded) for the origin's stream sender.
async fn open_stream(
    gw: &Gateway,
    streams: &mut Streams,
    path: &str,
    accept: &str,
) -> (Response<Incoming>, Sender<Bytes, Infallible>) {
    let request = Request::get(gw.url(path))
        .header("host", "h")
        .header("accept-encoding", accept)
        .body(empty())
        .unwrap();
    let client = client();
    let response = tokio::spawn(async move { client.request(request).await });
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await
        .expect("the origin saw no request")
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no response headers")
        .unwrap()
        .unwrap();
    (response, sender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_pass_unbuffered_and_uncompressed() {
    let (origin, mut streams) = origin().await;
    let gw = gateway(&origin).await;
    let (response, mut sender) = open_stream(&gw, &mut streams, "/sse", "gzip, br").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let mut body = response.into_body();
    for i in 0..3 {
        let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
        sender.send_data(Bytes::from(event.clone())).await.unwrap();
        // This event must arrive before the origin sends the next one.
        let mut got = Vec::new();
        while got.len() < event.len() {
            got.extend_from_slice(&next_data(&mut body).await.expect("stream ended early"));
        }
        assert_eq!(got, event.as_bytes());
    }
    drop(sender);
    assert!(next_data(&mut body).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_compressed_and_flushed_chunk_by_chunk() {
    let (origin, mut streams) = origin().await;
    let gw = gateway(&origin).await;
    for coding in ["gzip", "br", "zstd"] {
        let (response, mut sender) = open_stream(&gw, &mut streams, "/stream", coding).await;
        assert_eq!(response.headers()["content-encoding"], coding);
        assert!(response.headers().get("content-length").is_none());
        let mut body = response.into_body();
        let (mut sent, mut wire) = (Vec::new(), Vec::new());
        for i in 0..4 {
            let chunk = format!(
                "{{\"chunk\":{i},\"items\":{}}}\n",
                String::from_utf8(json_body()).unwrap()
            );
            sent.extend_from_slice(chunk.as_bytes());
            sender.send_data(Bytes::from(chunk)).await.unwrap();
            // Everything sent so far decodes from what reached the client, before the
            // origin sends more: the gateway flushed when the origin went quiet.
            while decode(coding, &wire).0.len() < sent.len() {
                wire.extend_from_slice(&next_data(&mut body).await.expect("stream ended early"));
            }
            assert_eq!(decode(coding, &wire), (sent.clone(), false), "{coding} chunk {i}");
        }
        drop(sender);
        while let Some(data) = next_data(&mut body).await {
            wire.extend_from_slice(&data);
        }
        assert_eq!(decode(coding, &wire), (sent, true), "{coding}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_answers_are_compressed() {
    let (origin, _streams) = origin().await;
    let gw = gateway(&origin).await;
    for coding in ["br", "gzip", "zstd"] {
        let answer = fetch(&gw, Method::GET, "/direct", Some(coding)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(header(&answer, "content-encoding"), Some(coding));
        assert!(varies(&answer));
        assert_eq!(decode(coding, &answer.body), (json_body(), true), "{coding}");
    }
    let plain = fetch(&gw, Method::GET, "/direct", None).await;
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(plain.body, json_body());
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}
