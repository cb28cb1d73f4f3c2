//! A sanity measurement of the `compression` plugin (no criterion, no assertions):
//! `cargo run --release -p weir-dataplane --example compression`.
//!
//! Compresses a 64 KiB JSON body with each coding through the real response phase
//! (`Compression::response` and the streaming `EncodedBody`), then sweeps the levels of
//! each codec on the same input, printing compressed size, time per MiB of input, and the
//! Rust-heap bytes one response allocates (zstd allocates in C: not counted).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap::Cap;
use compression_codecs::brotli::params::EncoderParams;
use compression_codecs::core::Level;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::{BrotliEncoder, EncodeV2, GzipEncoder, ZstdEncoder};
use http::Response;
use http_body::Body;
use weir_dataplane::filter::RequestContext;
use weir_dataplane::filter::compression::{Coding, Compression, Negotiated};
use weir_dataplane::proxy::ProxyBody;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const SIZE: usize = 64 * 1024;

/// About 64 KiB of API-like JSON (records with ids, SKUs, names, prices, tags, dates).
fn json() -> Vec<u8> {
    let mut out = String::from("[");
    let mut x: u64 = 42;
    let mut rand = move || {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    let mut i = 0;
    while out.len() < SIZE - 200 {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":{},"sku":"SKU-{:08X}","name":"{} {}","price":{}.{:02},"stock":{},"tags":["{}","{}"],"updated":"2025-{:02}-{:02}T{:02}:{:02}:00Z","active":{}}}"#,
            1000 + i,
            rand(),
            words[(rand() % 8) as usize],
            words[(rand() % 8) as usize],
            rand() % 1000,
            rand() % 100,
            rand() % 500,
            words[(rand() % 8) as usize],
            words[(rand() % 8) as usize],
            1 + rand() % 12,
            1 + rand() % 28,
            rand() % 24,
            rand() % 60,
            rand() % 2 == 0,
        ));
        i += 1;
    }
    out.push(']');
    out.into_bytes()
}

/// Runs `f` repeatedly for about half a second (at most 5,000 times); returns the
/// output size, the mean time per run, and the heap bytes one run allocates.
fn measure(mut f: impl FnMut() -> usize) -> (usize, Duration, usize) {
    let before = ALLOC.total_allocated();
    let size = f();
    let allocated = ALLOC.total_allocated() - before;
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < Duration::from_millis(500) && runs < 5_000 {
        black_box(f());
        runs += 1;
    }
    (size, start.elapsed() / runs.max(1), allocated)
}

/// One response through the plugin's response phase, drained like hyper would.
fn through_plugin(plugin: &Compression, coding: Coding, input: &Bytes) -> usize {
    let mut response = Response::new(ProxyBody::full(input.clone()));
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    let ctx = RequestContext { encoding: Some(Negotiated { coding }), ..Default::default() };
    plugin.response(&mut response, &ctx);
    assert_eq!(response.headers()["content-encoding"], coding.token());
    let mut body = response.into_body();
    let mut cx = Context::from_waker(Waker::noop());
    let mut total = 0;
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        total += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    total
}

/// `input` through `encoder` in one go, straight from the codec crate.
fn through_codec(mut encoder: Box<dyn EncodeV2>, input: &[u8], out: &mut [u8]) -> usize {
    let mut output = WriteBuffer::new_initialized(out);
    let mut partial = PartialBuffer::new(input);
    while !partial.unwritten().is_empty() {
        encoder.encode(&mut partial, &mut output).unwrap();
    }
    while !encoder.finish(&mut output).unwrap() {}
    output.written_len()
}

/// Builds an encoder at a level.
type MakeEncoder = fn(i32) -> Box<dyn EncodeV2>;

fn per_mib(time: Duration, bytes: usize) -> f64 {
    time.as_secs_f64() * 1000.0 * (1 << 20) as f64 / bytes as f64
}

fn main() {
    let input = Bytes::from(json());
    let n = input.len();
    println!("input: {n} bytes of JSON\n");
    println!(
        "through the plugin (gzip {}, br {} window 2^{}, zstd {}):",
        weir_dataplane::filter::compression::GZIP_LEVEL,
        weir_dataplane::filter::compression::BROTLI_QUALITY,
        weir_dataplane::filter::compression::BROTLI_WINDOW,
        weir_dataplane::filter::compression::ZSTD_LEVEL
    );
    let plugin = Compression {
        codings: [Coding::Zstd, Coding::Brotli, Coding::Gzip].into(),
        min_length: 1024,
        content_types: [Box::from("application/json")].into(),
    };
    for body in [input.clone(), input.slice(..4096)] {
        let n = body.len();
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let (size, time, heap) = measure(|| through_plugin(&plugin, coding, &body));
            println!(
                "  {n:>6} B {:<4} → {size:>6} B ({:>5.1} %)  {:>6.2} ms/MiB  {:>5.0} MiB/s  {:>7.1} µs  alloc {heap:>7} B",
                coding.token(),
                100.0 * size as f64 / n as f64,
                per_mib(time, n),
                n as f64 / time.as_secs_f64() / (1 << 20) as f64,
                time.as_secs_f64() * 1e6,
            );
        }
    }
    println!("\nlevel sweep (codec alone):");
    let mut out = vec![0u8; n + 4096];
    let sweeps: [(&str, &[i32], MakeEncoder); 4] = [
        ("gzip", &[1, 4, 5, 6, 9], |l| Box::new(GzipEncoder::new(Level::Precise(l).into()))),
        ("br/19", &[1, 3, 4, 5, 6, 11], |l| {
            Box::new(BrotliEncoder::new(
                EncoderParams::default().quality(Level::Precise(l)).window_size(19).text_mode(),
            ))
        }),
        // Why the window is not shrunk for small bodies.
        ("br/16", &[4, 5], |l| {
            Box::new(BrotliEncoder::new(
                EncoderParams::default().quality(Level::Precise(l)).window_size(16).text_mode(),
            ))
        }),
        ("zstd", &[1, 3, 6, 9, 19], |l| Box::new(ZstdEncoder::new(l))),
    ];
    for (name, levels, make) in sweeps {
        for &level in levels {
            let (size, time, heap) = measure(|| through_codec(make(level), &input, &mut out));
            println!(
                "  {name:<5} {level:>2}  {size:>6} bytes ({:>5.1} %)  {:>7.2} ms/MiB  alloc {:>8} B",
                100.0 * size as f64 / n as f64,
                per_mib(time, n),
                heap,
            );
        }
    }
}
