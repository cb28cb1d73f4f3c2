//! The rate-limit engine against a real `redis-server` process started on a free loopback
//! port: shared limiting between instances, identical decisions in both stores, Redis
//! killed and restarted, TTLs, URL kinds, the store-error metric.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;
use weir_dataplane::ObjectKey;
use weir_dataplane::ratelimit::*;
use weir_e2e::RedisServer;

/// A generous timeout: a loaded CI machine must not turn a slow answer into a store error.
fn options(time: RedisTime) -> RedisOptions {
    RedisOptions { timeout: Duration::from_secs(2), time, ..RedisOptions::default() }
}

fn spec(
    name: &str,
    algorithm: Algorithm,
    limit: u64,
    window: Duration,
    burst: u64,
    on_error: OnStoreError,
    store: StoreKind,
) -> Arc<RateLimitSpec> {
    Arc::new(
        RateLimitSpec::new(
            ObjectKey::new("default", name),
            algorithm,
            limit,
            window,
            burst,
            KeySource::ClientIp,
            &[],
            store,
            on_error,
        )
        .unwrap(),
    )
}

fn ip(n: u8) -> LimitKey {
    LimitKey::Ip(IpAddr::from([192, 0, 2, n]))
}

async fn registry(url: &str, time: RedisTime) -> RateLimiters {
    RateLimiters::new(Some(RedisStore::connect(url, options(time)).await.unwrap()))
}

/// Runs `n` requests alternating between two limiters, concurrently, and counts admissions.
async fn admitted_between(a: &Limiter, b: &Limiter, key: &LimitKey, n: usize) -> usize {
    let checks = (0..n).map(|i| {
        let limiter = if i % 2 == 0 { a } else { b };
        limiter.check(key, None)
    });
    let decisions = futures_util::future::join_all(checks).await;
    assert!(decisions.iter().all(|d| d.source == DecisionSource::Store), "{decisions:?}");
    decisions.iter().filter(|d| d.allowed).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_allow_exactly_the_limit_between_them() {
    let redis = RedisServer::start().unwrap();
    // Server time (production): a token bucket of 10 per hour refills one token per 6 min,
    // so the count is exact however slow this machine is.
    let (one, two) = (
        registry(&redis.url(), RedisTime::Server).await,
        registry(&redis.url(), RedisTime::Server).await,
    );
    let s = spec(
        "shared",
        Algorithm::TokenBucket,
        10,
        Duration::from_secs(3_600),
        0,
        OnStoreError::Deny,
        StoreKind::Redis,
    );
    let (a, b) = (one.limiter(&s), two.limiter(&s));
    assert_eq!(admitted_between(&a, &b, &ip(1), 40).await, 10);
    assert_eq!(admitted_between(&a, &b, &ip(2), 7).await, 7);
    let last = a.check(&ip(2), None).await;
    assert_eq!((last.allowed, last.limit, last.remaining), (true, 10, 2));
    // The window algorithms, on one shared caller clock frozen mid-window.
    let (clock, _) = Clock::manual(1_000_000_000_500);
    let one = registry(&redis.url(), RedisTime::Caller).await.with_clock(clock.clone());
    let two = registry(&redis.url(), RedisTime::Caller).await.with_clock(clock);
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
        let s = spec(
            "windows",
            algorithm,
            25,
            Duration::from_secs(60),
            0,
            OnStoreError::Deny,
            StoreKind::Redis,
        );
        let (a, b) = (one.limiter(&s), two.limiter(&s));
        assert_eq!(admitted_between(&a, &b, &ip(1), 60).await, 25, "{algorithm}");
    }
    // Redis forgetting the script (SCRIPT FLUSH, a restart) costs one reload, no error.
    assert_eq!(redis.cli(&["script", "flush"]).unwrap().trim(), "OK");
    let s = spec(
        "windows",
        Algorithm::FixedWindow,
        25,
        Duration::from_secs(60),
        0,
        OnStoreError::Deny,
        StoreKind::Redis,
    );
    let after_flush = one.limiter(&s).check(&ip(1), None).await;
    assert_eq!((after_flush.allowed, after_flush.source), (false, DecisionSource::Store));
    assert_eq!(one.metrics().store_errors() + two.metrics().store_errors(), 0);
    // Every key has a TTL, and a limiter's keys share one Cluster hash tag.
    let keys = redis.cli(&["--scan", "--pattern", "weir:rl:*"]).unwrap();
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("weir:rl:{default/"), "{key}");
        let ttl: i64 = redis.cli(&["pttl", key]).unwrap().trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    for r in [&one, &two] {
        r.redis().unwrap().quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_redis_stores_decide_identically() {
    let redis = RedisServer::start().unwrap();
    let (clock, time) = Clock::manual(1_700_000_000_000);
    let shared = registry(&redis.url(), RedisTime::Caller).await.with_clock(clock.clone());
    let local = RateLimiters::new(None).with_clock(clock);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let cases = [
        (Algorithm::FixedWindow, 5, 1_000, 0),
        (Algorithm::SlidingWindow, 5, 1_000, 0),
        (Algorithm::SlidingWindow, 50, 60_000, 0),
        (Algorithm::TokenBucket, 5, 1_000, 3),
        (Algorithm::TokenBucket, 100, 60_000, 20),
    ];
    let mut refused = 0;
    for (i, (algorithm, limit, window_ms, burst)) in cases.into_iter().enumerate() {
        let name = format!("same-{i}");
        let window = Duration::from_millis(window_ms);
        let r = shared.limiter(&spec(
            &name,
            algorithm,
            limit,
            window,
            burst,
            OnStoreError::Deny,
            StoreKind::Redis,
        ));
        let l = local.limiter(&spec(
            &name,
            algorithm,
            limit,
            window,
            burst,
            OnStoreError::Deny,
            StoreKind::Local,
        ));
        for step in 0..400 {
            // Bursts at one instant, small steps, and gaps up to 1.5 windows (edges included).
            match rand(10) {
                0 => time.fetch_add(rand(window_ms * 3 / 2 + 1), Ordering::Relaxed),
                1..=3 => time.fetch_add(rand(window_ms / 20 + 1), Ordering::Relaxed),
                _ => 0,
            };
            let key = ip(rand(3) as u8);
            let (from_redis, from_local) = (r.check(&key, None).await, l.check(&key, None).await);
            assert_eq!(from_redis.source, DecisionSource::Store);
            assert_eq!(from_redis, from_local, "{algorithm} {limit}/{window_ms}ms step {step}");
            refused += usize::from(!from_local.allowed);
        }
    }
    assert!(refused > 100, "the sequence must exercise refusals ({refused})");
    shared.redis().unwrap().quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_applies_on_store_error_and_redis_back_resumes_sharing() {
    let mut redis = RedisServer::start().unwrap();
    let (one, two) = (
        registry(&redis.url(), RedisTime::Server).await,
        registry(&redis.url(), RedisTime::Server).await,
    );
    let hour = Duration::from_secs(3_600);
    let open =
        spec("open", Algorithm::TokenBucket, 3, hour, 0, OnStoreError::Allow, StoreKind::Redis);
    let closed =
        spec("closed", Algorithm::TokenBucket, 3, hour, 0, OnStoreError::Deny, StoreKind::Redis);
    let (open1, closed1) = (one.limiter(&open), one.limiter(&closed));
    assert_eq!(admitted_between(&open1, &two.limiter(&open), &ip(1), 2).await, 2);
    assert!(closed1.check(&ip(1), None).await.allowed);
    let mut metrics = Registry::default();
    one.register_metrics(&mut metrics);

    redis.kill();
    // Every call comes back (bounded by the store timeout) with the configured behaviour.
    let down = tokio::time::timeout(Duration::from_secs(30), async {
        let mut guard = Vec::new();
        for _ in 0..5 {
            guard.push(open1.check(&ip(1), None).await);
        }
        let refused = closed1.check(&ip(1), None).await;
        (guard, refused)
    })
    .await
    .expect("decisions must not hang while Redis is down");
    let (guard, refused) = down;
    // Fail open is guarded by a local limiter with the same limit: 3 of 5, not unlimited.
    assert!(guard.iter().all(|d| d.source == DecisionSource::FailOpen), "{guard:?}");
    assert_eq!(guard.iter().filter(|d| d.allowed).count(), 3);
    assert_eq!((refused.allowed, refused.source), (false, DecisionSource::FailClosed));
    assert_eq!(refused.retry_after_secs(), Some(1));
    assert!(one.metrics().store_errors() >= 6);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).unwrap();
    assert!(text.contains("weir_ratelimit_store_errors_total"), "{text}");

    // Same port, empty Redis (and no script cached): picked up without a restart.
    redis.restart().unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = closed1.check(&ip(9), None).await;
            if d.source == DecisionSource::Store {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("Redis coming back must be picked up");
    assert!(back.allowed);
    let two_open = two.limiter(&open);
    let two_back = tokio::time::timeout(Duration::from_secs(30), async {
        while two_open.check(&ip(8), None).await.source != DecisionSource::Store {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(two_back.is_ok(), "the second instance reconnects too");
    // Shared limiting resumes (the restarted Redis starts empty). A key not used while
    // Redis was down: a check that timed out then may still reach the restarted Redis
    // (the client sends what it had queued once it reconnects) and take a token there,
    // which made this count 2 for `ip(1)` in one CI run.
    assert_eq!(admitted_between(&open1, &two_open, &ip(2), 10).await, 3);
    for r in [&one, &two] {
        r.redis().unwrap().quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_of_every_kind_are_accepted_and_bad_ones_rejected() {
    let quick = RedisOptions { connect_wait: Duration::from_millis(50), ..RedisOptions::default() };
    // Nothing listens on port 1: the stores are built and keep retrying in the background.
    for url in [
        "redis://127.0.0.1:1",
        "rediss://127.0.0.1:1",
        "redis-sentinel://127.0.0.1:1/0?sentinelServiceName=mymaster",
        "redis-cluster://127.0.0.1:1?node=127.0.0.1:2",
    ] {
        let store =
            RedisStore::connect(url, quick.clone()).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!store.is_connected());
        store.quit().await;
    }
    let bad = RedisStore::connect("http://127.0.0.1:1", quick).await;
    assert!(matches!(bad, Err(RedisStoreError::Scheme(_))), "{bad:?}");
    let bad = RedisStore::connect("redis://127.0.0.1:notaport", RedisOptions::default()).await;
    assert!(matches!(bad, Err(RedisStoreError::Config(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_bounded_by_the_timeout() {
    let redis = RedisServer::start().unwrap();
    let shared = registry(&redis.url(), RedisTime::Server).await;
    let hour = Duration::from_secs(3_600);
    let open = shared.limiter(&spec(
        "slow-open",
        Algorithm::SlidingWindow,
        2,
        hour,
        0,
        OnStoreError::Allow,
        StoreKind::Redis,
    ));
    let closed = shared.limiter(&spec(
        "slow-closed",
        Algorithm::FixedWindow,
        2,
        hour,
        0,
        OnStoreError::Deny,
        StoreKind::Redis,
    ));
    assert_eq!(open.check(&ip(1), None).await.source, DecisionSource::Store);
    // A stopped process keeps its connections open but never answers: only the timeout
    // ends the call. (Were it not bounded, the answer would come after CONT, from the store.)
    redis.signal("STOP").unwrap();
    let stalled = async {
        let a = open.check(&ip(1), None).await;
        let b = closed.check(&ip(1), None).await;
        (a, b)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), stalled).await;
    redis.signal("CONT").unwrap();
    let (a, b) = outcome.expect("a stalled Redis must not hang a decision");
    assert_eq!((a.allowed, a.source), (true, DecisionSource::FailOpen));
    assert_eq!((b.allowed, b.source), (false, DecisionSource::FailClosed));
    assert_eq!(shared.metrics().store_errors(), 2);
    // Answering again, it is used again.
    let resumed = tokio::time::timeout(Duration::from_secs(30), async {
        while closed.check(&ip(2), None).await.source != DecisionSource::Store {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(resumed.is_ok());
    shared.redis().unwrap().quit().await;
}
