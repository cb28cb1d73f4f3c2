//! Unit tests of the rate-limit engine: algorithms under paused tokio time, the local
//! store's sweeping, the registry's lifetime rules, tiers and keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::advance;

use super::algorithm::{self, State};
use super::*;
use crate::snapshot::ObjectKey;

fn spec(algorithm: Algorithm, limit: u64, window: Duration, burst: u64) -> RateLimitSpec {
    spec_named("p", algorithm, limit, window, burst, &[])
}

fn spec_named(
    name: &str,
    algorithm: Algorithm,
    limit: u64,
    window: Duration,
    burst: u64,
    tiers: &[TierSpec],
) -> RateLimitSpec {
    RateLimitSpec::new(
        ObjectKey::new("default", name),
        algorithm,
        limit,
        window,
        burst,
        KeySource::ClientIp,
        tiers,
        StoreKind::Local,
        OnStoreError::Allow,
    )
    .unwrap()
}

fn key(n: u8) -> LimitKey {
    LimitKey::Ip(IpAddr::from([10, 0, 0, n]))
}

async fn run(limiter: &Limiter, n: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(limiter.check(&key(1), None).await.allowed);
    }
    out
}

fn allowed(v: &[bool]) -> usize {
    v.iter().filter(|a| **a).count()
}

#[tokio::test(start_paused = true)]
async fn fixed_window_counts_per_aligned_window_and_bursts_at_the_edge() {
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let limiter =
        registry.limiter(&Arc::new(spec(Algorithm::FixedWindow, 3, Duration::from_secs(10), 0)));
    advance(Duration::from_secs(9)).await; // 1 s before the first window ends
    let first = limiter.check(&key(1), None).await;
    assert!(first.allowed);
    assert_eq!((first.limit, first.remaining), (3, 2));
    assert_eq!(first.reset_secs(), 1);
    assert_eq!(allowed(&run(&limiter, 5).await), 2);
    let refused = limiter.check(&key(1), None).await;
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    // Another key has its own counter.
    assert!(limiter.check(&key(2), None).await.allowed);
    // 1 ms before the edge: still refused; at the edge: a whole new window. 3 + 3 requests
    // passed within about a second: the fixed window's edge burst.
    advance(Duration::from_millis(999)).await;
    assert!(!limiter.check(&key(1), None).await.allowed);
    advance(Duration::from_millis(1)).await;
    assert_eq!(run(&limiter, 4).await, [true, true, true, false]);
}

#[tokio::test(start_paused = true)]
async fn sliding_window_weights_the_previous_window() {
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let w = Duration::from_secs(60);
    let limiter = registry.limiter(&Arc::new(spec(Algorithm::SlidingWindow, 10, w, 0)));
    advance(Duration::from_secs(50)).await;
    assert_eq!(allowed(&run(&limiter, 12).await), 10);
    // At the window edge the previous window still weighs fully: no edge burst.
    advance(Duration::from_secs(10)).await;
    let at_edge = limiter.check(&key(1), None).await;
    assert!(!at_edge.allowed);
    assert_eq!(at_edge.retry_after, Some(Duration::from_millis(1)));
    advance(Duration::from_millis(1)).await;
    assert_eq!(run(&limiter, 2).await, [true, false]);
    // 6 s in, floor(10 x 54/60) = 9 of the previous window remain: 9 + 1 < 10 is false...
    advance(Duration::from_millis(5_999)).await;
    assert!(!limiter.check(&key(1), None).await.allowed);
    // ...until just past 6 s (floor(10 x 53.999/60) = 8).
    advance(Duration::from_millis(1)).await;
    assert_eq!(run(&limiter, 2).await, [true, false]);
    // Two quiet windows later the key is fresh.
    advance(Duration::from_secs(120)).await;
    assert_eq!(allowed(&run(&limiter, 11).await), 10);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_bursts_to_capacity_and_refills_at_the_rate() {
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let limiter =
        registry.limiter(&Arc::new(spec(Algorithm::TokenBucket, 10, Duration::from_secs(10), 5)));
    let first = limiter.check(&key(1), None).await;
    assert_eq!((first.limit, first.remaining), (15, 14));
    assert_eq!(first.reset, Duration::from_secs(1)); // one token short of full
    assert_eq!(allowed(&run(&limiter, 20).await), 14);
    let refused = limiter.check(&key(1), None).await;
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    advance(Duration::from_millis(999)).await;
    assert!(!limiter.check(&key(1), None).await.allowed);
    advance(Duration::from_millis(1)).await;
    assert_eq!(run(&limiter, 2).await, [true, false]);
    // Half a token refilled: the wait says exactly how long the other half takes.
    advance(Duration::from_millis(500)).await;
    assert_eq!(limiter.check(&key(1), None).await.retry_after, Some(Duration::from_millis(500)));
    // Long idle: capped at capacity, not more.
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(allowed(&run(&limiter, 30).await), 15);
}

/// For every algorithm and a long pseudo-random request pattern: a refused request's
/// `retry_after` is exact (1 ms earlier is still refused, at `retry_after` it is admitted),
/// and `remaining` counts exactly the requests that would pass right now.
#[test]
fn retry_after_and_remaining_are_exact() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        for (limit, window_ms, burst) in
            [(1, 1_000, 0), (5, 1_000, 2), (7, 60_000, 3), (100, 250, 10)]
        {
            let l = Limit::new(algorithm, limit, Duration::from_millis(window_ms), burst).unwrap();
            let mut state: Option<State> = None;
            let mut now = 1_000_000u64;
            for _ in 0..2_000 {
                now += rand(window_ms / 2 + 1);
                let step = algorithm::step(&l, state, now);
                let q = algorithm::quota(&l, &step);
                // `remaining` more requests pass now, and not one more.
                let mut probe = Some(step.state);
                for i in 0..=q.remaining {
                    let s = algorithm::step(&l, probe, now);
                    assert_eq!(
                        s.allowed,
                        i < q.remaining,
                        "{algorithm} {limit}/{window_ms} remaining"
                    );
                    probe = Some(s.state);
                }
                if !step.allowed {
                    assert!(q.wait_ms > 0, "{algorithm}: refused with no wait");
                    let early = algorithm::step(&l, Some(step.state), now + q.wait_ms - 1);
                    assert!(
                        !early.allowed,
                        "{algorithm} {limit}/{window_ms}: admitted before retry_after"
                    );
                    let on_time = algorithm::step(&l, Some(step.state), now + q.wait_ms);
                    assert!(
                        on_time.allowed,
                        "{algorithm} {limit}/{window_ms}: refused at retry_after"
                    );
                }
                // Forgetting an expired state changes nothing.
                let exp = algorithm::expires_at(&l, &step.state);
                assert!(exp > now);
                assert_eq!(
                    algorithm::step(&l, Some(step.state), exp),
                    algorithm::step(&l, None, exp)
                );
                state = Some(step.state);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_clock_aligns_windows_with_unix_time_and_is_monotonic() {
    let clock = Clock::monotonic();
    let unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let start = clock.now_ms();
    assert!(start.abs_diff(unix_ms) < 60_000, "{start} vs {unix_ms}");
    advance(Duration::from_secs(61)).await;
    assert_eq!(clock.now_ms(), start + 61_000);
}

#[test]
fn limits_are_validated() {
    let s = Duration::from_secs(1);
    assert_eq!(Limit::new(Algorithm::FixedWindow, 0, s, 0), Err(LimitError::ZeroLimit));
    assert_eq!(
        Limit::new(Algorithm::FixedWindow, 1, Duration::ZERO, 0),
        Err(LimitError::ZeroWindow)
    );
    let day = Duration::from_secs(86_400);
    assert_eq!(Limit::new(Algorithm::TokenBucket, 1 << 40, day, 0), Err(LimitError::TooLarge));
    assert!(Limit::new(Algorithm::SlidingWindow, 1_000_000, day, 0).is_ok());
    // Burst only counts for the token bucket.
    assert_eq!(Limit::new(Algorithm::FixedWindow, 5, s, 9).unwrap().quota(), 5);
    assert_eq!(Limit::new(Algorithm::TokenBucket, 5, s, 9).unwrap().quota(), 14);
}

#[tokio::test(start_paused = true)]
async fn tiers_pick_their_own_limit_and_counters() {
    let tiers = [
        TierSpec { tier: "pro".into(), limit: 5, window: Duration::from_secs(60) },
        TierSpec { tier: "free".into(), limit: 1, window: Duration::from_secs(60) },
    ];
    let s = Arc::new(spec_named(
        "tiered",
        Algorithm::FixedWindow,
        2,
        Duration::from_secs(60),
        0,
        &tiers,
    ));
    assert_eq!(s.limit_for(Some("pro")).limit(), 5);
    assert_eq!(s.limit_for(Some("free")).limit(), 1);
    assert_eq!(s.limit_for(Some("gold")).limit(), 2);
    assert_eq!(s.limit_for(None).limit(), 2);
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let limiter = registry.limiter(&s);
    let mut pro = 0;
    for _ in 0..8 {
        pro += usize::from(limiter.check(&key(1), Some("pro")).await.allowed);
    }
    assert_eq!(pro, 5);
    assert_eq!(limiter.check(&key(1), Some("pro")).await.limit, 5);
    assert!(limiter.check(&key(1), Some("free")).await.allowed);
    assert!(!limiter.check(&key(1), Some("free")).await.allowed);
    assert_eq!(allowed(&run(&limiter, 3).await), 2); // anonymous: base limit
    let dup = RateLimitSpec::new(
        ObjectKey::new("default", "dup"),
        Algorithm::FixedWindow,
        1,
        Duration::from_secs(1),
        0,
        KeySource::Route,
        &[tiers[0].clone(), tiers[0].clone()],
        StoreKind::Local,
        OnStoreError::Allow,
    );
    assert!(matches!(dup, Err(SpecError::DuplicateTier { index: 1, .. })));
}

#[tokio::test(start_paused = true)]
async fn counters_survive_an_unchanged_reload_and_go_with_their_plugin() {
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let w = Duration::from_secs(60);
    let a1 = RateLimit::new(spec_named("a", Algorithm::FixedWindow, 3, w, 0, &[]));
    let b1 = RateLimit::new(spec_named("b", Algorithm::FixedWindow, 3, w, 0, &[]));
    registry.publish([&a1, &b1]);
    assert_eq!(registry.len(), 2);
    let limiter = registry.bind(&a1);
    assert_eq!(allowed(&run(limiter, 2).await), 2);
    // Reload: compile() builds new objects with the same config; b is gone.
    let a2 = RateLimit::new(spec_named("a", Algorithm::FixedWindow, 3, w, 0, &[]));
    registry.publish([&a2]);
    assert_eq!(registry.len(), 1);
    assert!(Arc::ptr_eq(registry.bind(&a1), registry.bind(&a2)));
    assert_eq!(run(registry.bind(&a2), 2).await, [true, false]);
    // A changed limit is a new limiter with fresh counters; the old one is dropped.
    let a3 = RateLimit::new(spec_named("a", Algorithm::FixedWindow, 4, w, 0, &[]));
    assert_ne!(a2.spec().id(), a3.spec().id());
    registry.publish([&a3]);
    assert_eq!(registry.len(), 1);
    assert_eq!(allowed(&run(registry.bind(&a3), 5).await), 4);
    // The plugin goes away: nothing is kept.
    registry.publish([]);
    assert!(registry.is_empty());
    // The id is stable across processes (it names Redis keys): pin it.
    assert_eq!(
        a2.spec().id().to_string(),
        format!("default/a#{:016x}", a2.spec().id().config_hash)
    );
    assert_eq!(a2.spec().id(), spec_named("a", Algorithm::FixedWindow, 3, w, 0, &[]).id(),);
}

#[tokio::test(start_paused = true)]
async fn decisions_are_counted_per_plugin_across_config_changes_and_go_with_it() {
    let registry = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let metrics = registry.metrics().clone();
    let mut prom = prometheus_client::registry::Registry::default();
    registry.register_metrics(&mut prom);
    let w = Duration::from_secs(60);
    let a = ObjectKey::new("default", "a");
    let a1 = RateLimit::new(spec_named("a", Algorithm::FixedWindow, 2, w, 0, &[]));
    registry.publish([&a1]);
    assert_eq!(run(registry.bind(&a1), 3).await, [true, true, false]);
    assert_eq!(metrics.decisions_of(&a, "allowed"), Some(2));
    assert_eq!(metrics.decisions_of(&a, "limited"), Some(1));
    assert_eq!(metrics.decisions_of(&a, "error_allowed"), Some(0));
    // A changed config is a new limiter (fresh quota), the same series.
    let a2 = RateLimit::new(spec_named("a", Algorithm::FixedWindow, 5, w, 0, &[]));
    registry.publish([&a2]);
    drop(a1);
    assert_eq!(run(registry.bind(&a2), 1).await, [true]);
    assert_eq!(metrics.decisions_of(&a, "allowed"), Some(3));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    assert!(
        text.contains("weir_ratelimit_decisions_total{plugin=\"default/a\",result=\"allowed\"} 3"),
        "{text}"
    );
    // The plugin goes (and the last snapshot holding it): its series go.
    registry.publish([]);
    drop(a2);
    assert_eq!(metrics.decisions_of(&a, "allowed"), None);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    assert!(!text.contains("default/a"), "{text}");
}

#[test]
fn local_store_sweeps_expired_keys_and_caps_live_ones() {
    let limit = Limit::new(Algorithm::FixedWindow, 2, Duration::from_secs(1), 0).unwrap();
    let store = LocalStore::new(Box::new([limit]), 100);
    for n in 0..50u8 {
        assert!(store.step(0, &key(n), 10).allowed);
    }
    assert_eq!(store.len(), 50);
    // The first sweep ran at t=10 and the next is due a second later: in the next window,
    // it drops the 50 stale keys.
    assert!(store.step(0, &key(200), 1_000).allowed);
    assert_eq!(store.len(), 51);
    assert!(store.step(0, &key(201), 1_010).allowed);
    assert_eq!(store.len(), 2);
    // A flood of distinct live keys stops at the cap, and is still decided.
    for n in 0..=255u8 {
        assert!(store.step(0, &LimitKey::Header(vec![n].into()), 1_500).allowed);
    }
    assert_eq!(store.len(), 100);
    // Existing keys keep counting.
    assert!(store.step(0, &key(200), 1_600).allowed);
    assert!(!store.step(0, &key(200), 1_700).allowed);
}

use super::local::LocalStore;

fn peer(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 40_000))
}

fn xff(values: &[&'static str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("x-forwarded-for", HeaderValue::from_static(v));
    }
    h
}

#[test]
fn client_ip_trusts_forwarded_for_only_from_trusted_proxies() {
    let trusted = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7"]).unwrap();
    let ip = |p: [u8; 4], h: &[&'static str], t: &TrustedProxies| {
        let headers = xff(h);
        client_ip(peer(p), headers.get_all("x-forwarded-for").iter(), t)
    };
    let v4 = |a: [u8; 4]| IpAddr::from(a);
    // Untrusted peer: its X-Forwarded-For is ignored.
    assert_eq!(ip([203, 0, 113, 5], &["1.1.1.1"], &trusted), v4([203, 0, 113, 5]));
    // Trusted peer: the right-most untrusted entry, not the client-written left part.
    assert_eq!(
        ip([10, 1, 1, 1], &["6.6.6.6, 198.51.100.9, 10.2.2.2"], &trusted),
        v4([198, 51, 100, 9])
    );
    // Several headers are one list, in order.
    assert_eq!(
        ip([192, 0, 2, 7], &["6.6.6.6", "198.51.100.9", "10.9.9.9"], &trusted),
        v4([198, 51, 100, 9])
    );
    // Garbage stops the walk at the last trusted hop.
    assert_eq!(ip([10, 1, 1, 1], &["6.6.6.6, not-an-ip"], &trusted), v4([10, 1, 1, 1]));
    // Ports and brackets are accepted; all-trusted chains give the left-most.
    assert_eq!(
        ip([10, 1, 1, 1], &["[2001:db8::1]:443"], &trusted),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(ip([10, 1, 1, 1], &["10.3.3.3, 10.4.4.4"], &trusted), v4([10, 3, 3, 3]));
    // No trusted proxies: the peer, always; IPv4-mapped peers read as IPv4.
    assert_eq!(ip([10, 1, 1, 1], &["1.1.1.1"], &TrustedProxies::default()), v4([10, 1, 1, 1]));
    let mapped: SocketAddr = "[::ffff:10.1.1.1]:80".parse().unwrap();
    let headers = xff(&["1.1.1.1"]);
    assert_eq!(
        client_ip(mapped, headers.get_all("x-forwarded-for").iter(), &trusted),
        v4([1, 1, 1, 1])
    );
    assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
}

#[test]
fn keys_fall_back_to_the_client_ip() {
    let trusted = TrustedProxies::default();
    let p = peer([203, 0, 113, 5]);
    let ip = LimitKey::Ip(IpAddr::from([203, 0, 113, 5]));
    let mut headers = HeaderMap::new();
    let name: Arc<str> = "mobile-app".into();
    assert_eq!(KeySource::Route.key(p, &headers, Some(&name), &trusted), LimitKey::Route);
    assert_eq!(KeySource::ClientIp.key(p, &headers, Some(&name), &trusted), ip);
    assert_eq!(
        KeySource::Consumer.key(p, &headers, Some(&name), &trusted),
        LimitKey::Consumer(name.clone())
    );
    assert_eq!(KeySource::Consumer.key(p, &headers, None, &trusted), ip);
    let by_header = KeySource::Header(HeaderName::from_static("x-api-key"));
    assert_eq!(by_header.key(p, &headers, None, &trusted), ip);
    headers.insert("x-api-key", HeaderValue::from_static(""));
    assert_eq!(by_header.key(p, &headers, None, &trusted), ip);
    headers.insert("x-api-key", HeaderValue::from_static("k1"));
    assert_eq!(by_header.key(p, &headers, None, &trusted), LimitKey::Header("k1".into()));
    // Redis key suffixes of different kinds never collide.
    let suffixes: HashSet<Vec<u8>> = [
        LimitKey::Route,
        LimitKey::Ip(IpAddr::from([1, 2, 3, 4])),
        LimitKey::Consumer("1.2.3.4".into()),
        LimitKey::Header("1.2.3.4".into()),
    ]
    .iter()
    .map(LimitKey::redis_suffix)
    .collect();
    assert_eq!(suffixes.len(), 4);
}

/// The synchronous local path (what the filter chain calls first) and the async one decide
/// alike on the same counters, ignore `X-Forwarded-For` without trusted proxies, and
/// believe it from a trusted one.
#[tokio::test(start_paused = true)]
async fn the_local_fast_path_shares_counters_with_the_async_path() {
    let limiters = RateLimiters::new(None).with_clock(Clock::monotonic_at(0));
    let rate_limit = RateLimit::new(spec(Algorithm::FixedWindow, 3, Duration::from_secs(60), 0));
    let limiter = limiters.bind(&rate_limit);
    let none = TrustedProxies::default();
    let p = peer([192, 0, 2, 1]);
    let forged = xff(&["198.51.100.9"]);
    let local = |h: &HeaderMap, t: &TrustedProxies| {
        limiter.check_request_local(p, h, None, None, t).expect("a local limiter")
    };
    assert_eq!(local(&forged, &none).remaining, 2);
    let d = limiter.check_request(p, &HeaderMap::new(), None, None, &none).await;
    assert_eq!((d.allowed, d.remaining), (true, 1));
    assert_eq!(local(&HeaderMap::new(), &none).remaining, 0);
    let refused = local(&forged, &none);
    assert!(!refused.allowed, "the forged header did not escape the peer's counter");
    assert_eq!(refused, limiter.check_request(p, &forged, None, None, &none).await);
    // From a trusted proxy the forwarded client has its own counter.
    let trusted = TrustedProxies::parse(["192.0.2.0/24"]).unwrap();
    let d = local(&forged, &trusted);
    assert_eq!((d.allowed, d.remaining), (true, 2));
}
