//! Rate-limit micro benchmarks: key building, a local check (one hot key; 100k rotating
//! keys; with the response headers), and a Redis check against a real `redis-server` on a
//! free loopback port (skipped when the binary is missing). CPU per request at gateway
//! level (against no limiter, side by side with nginx) belongs to `make bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use weir_dataplane::ObjectKey;
use weir_dataplane::ratelimit::*;

fn spec(algorithm: Algorithm, store: StoreKind) -> Arc<RateLimitSpec> {
    Arc::new(
        RateLimitSpec::new(
            ObjectKey::new("bench", "limit"),
            algorithm,
            // High enough that the hot key keeps being admitted for the whole run.
            1 << 30,
            Duration::from_secs(60),
            0,
            KeySource::ClientIp,
            &[],
            store,
            OnStoreError::Allow,
        )
        .unwrap(),
    )
}

fn keys(c: &mut Criterion) {
    let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7, 10.1.2.3"));
    let peer = SocketAddr::from(([10, 0, 0, 1], 5000));
    c.bench_function("ratelimit/key/client_ip_via_trusted_xff", |b| {
        b.iter(|| KeySource::ClientIp.key(black_box(peer), black_box(&headers), None, &trusted))
    });
}

fn local(c: &mut Criterion) {
    let registry = RateLimiters::new(None);
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let limiter = registry.limiter(&spec(algorithm, StoreKind::Local));
        let key = LimitKey::Ip(IpAddr::from([192, 0, 2, 1]));
        c.bench_function(&format!("ratelimit/local/{algorithm}/hot_key"), |b| {
            b.iter(|| limiter.check(black_box(&key), None).now_or_never().unwrap())
        });
    }
    let limiter = registry.limiter(&spec(Algorithm::SlidingWindow, StoreKind::Local));
    let keys: Vec<LimitKey> = (0..100_000u32)
        .map(|i| LimitKey::Ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
        .collect();
    let mut i = 0;
    c.bench_function("ratelimit/local/SlidingWindow/100k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.check(black_box(&keys[i]), None).now_or_never().unwrap()
        })
    });
    let key = LimitKey::Ip(IpAddr::from([192, 0, 2, 1]));
    let mut response = HeaderMap::new();
    c.bench_function("ratelimit/local/SlidingWindow/hot_key_with_headers", |b| {
        b.iter(|| {
            let d = limiter.check(black_box(&key), None).now_or_never().unwrap();
            d.write_headers(&mut response);
        })
    });
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(c: &mut Criterion) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Ok(child) = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    else {
        eprintln!("redis-server not found: skipping the Redis benchmark");
        return;
    };
    let _guard = Redis(child);
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server did not start");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A generous timeout: on a loaded machine a slow round trip must still be measured.
    let options = RedisOptions { timeout: Duration::from_secs(2), ..RedisOptions::default() };
    let store =
        rt.block_on(RedisStore::connect(&format!("redis://127.0.0.1:{port}"), options)).unwrap();
    let registry = RateLimiters::new(Some(store));
    let limiter = registry.limiter(&spec(Algorithm::SlidingWindow, StoreKind::Redis));
    let key = LimitKey::Ip(IpAddr::from([192, 0, 2, 1]));
    c.bench_function("ratelimit/redis/SlidingWindow/round_trip", |b| {
        b.iter(|| rt.block_on(limiter.check(black_box(&key), None)))
    });
    let errors = registry.metrics().store_errors();
    assert_eq!(errors, 0, "{errors} Redis calls failed: the figure above is not a round trip");
    rt.block_on(registry.redis().unwrap().quit());
}

criterion_group!(benches, keys, local, redis);
criterion_main!(benches);
