//! e2e: the `cache` Plugin with the real `weir` binary in standalone mode, a real hyper
//! origin that counts what reaches it, and a real `redis-server` for `store: Redis`.
//!
//! Consumers never share entries; `Set-Cookie` and `private` answers are never served from
//! the cache; `varyHeaders` keep languages apart; `max-age` below `ttl` expires first;
//! concurrent misses make one upstream request; a 500 is not stored; a stale entry is
//! answered without waiting for a slow refresh; HEAD and conditional requests are answered
//! from the entry; a body over `maxBodySize` passes through intact; the admin purge; the
//! metrics; and two gateways sharing entries through Redis, which then dies.
//!
//! No assertion is about elapsed time: freshness is waited out with bounded sleeps, and
//! "answered without waiting" is checked with the origin's own count of finished answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::watch;
use weir_e2e::echo::serve_http1;
use weir_e2e::{
    ConfigDir, RedisServer, Reply, WeirProcess, http_request, poll_until, service_yaml,
};

/// The size of `/big`'s body (over the Plugin's `maxBodySize` of 64 KiB).
const BIG: usize = 200 * 1024;

/// What the origin saw and did, shared with the test.
#[derive(Default)]
struct OriginState {
    /// Requests received, by path (without the query).
    received: Mutex<HashMap<String, usize>>,
    /// `/swr` answers completed (after their delay).
    swr_answered: AtomicUsize,
    /// The delay of `/swr` answers, in milliseconds.
    swr_delay_ms: AtomicU64,
}

/// An origin whose answer depends on the path (see `answer`); stops when dropped.
struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    _shutdown: watch::Sender<()>,
}

impl Origin {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let (shutdown, rx) = watch::channel(());
        let shared = Arc::clone(&state);
        tokio::spawn(serve_http1(listener, rx, move |request| {
            let state = Arc::clone(&shared);
            async move { answer(&state, &request).await }
        }));
        Origin { addr, state, _shutdown: shutdown }
    }

    fn received(&self, path: &str) -> usize {
        self.state.received.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn big_body() -> Bytes {
    (0..BIG).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

async fn answer<B>(state: &OriginState, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let n = {
        let mut received = state.received.lock().unwrap();
        let n = received.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let header = |name: &str| {
        request.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };
    let body = format!(
        "{path} #{n} user={} lang={}",
        header("x-consumer-username"),
        header("accept-language")
    );
    let mut response = http::Response::builder().status(200);
    if path.starts_with("/auth") {
        response = response.header("cache-control", "public, max-age=600");
    } else if path.starts_with("/cookie") {
        response = response.header("set-cookie", "session=abc");
    } else if path.starts_with("/private") {
        response = response.header("cache-control", "private, max-age=600");
    } else if path.starts_with("/lang") {
        response = response.header("vary", "Accept-Language");
    } else if path.starts_with("/short") {
        response = response.header("cache-control", "max-age=1");
    } else if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    } else if path.starts_with("/error") {
        response = response.status(500);
    } else if path.starts_with("/swr") {
        let delay = state.swr_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        state.swr_answered.fetch_add(1, Ordering::SeqCst);
    } else if path.starts_with("/cond") {
        response = response
            .header("etag", "W/\"v1\"")
            .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT");
    } else if path.starts_with("/big") {
        return response.body(Full::new(big_body())).unwrap();
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

/// Plugins, Consumers and the Route: rules `/auth` (keyAuth + cache), `/swr` (ttl 1s,
/// stale 30s), `/redis` (store: Redis) and `/` (cache, varyHeaders Accept-Language).
fn config(origin_port: u16) -> String {
    let mut yaml = service_yaml("origin", origin_port);
    yaml.push_str(
        r#"---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: c}
spec:
  cache: {ttl: 1h, varyHeaders: [Accept-Language], maxBodySize: 64Ki}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: swr}
spec:
  cache: {ttl: 1s, staleWhileRevalidate: 30s}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: rc}
spec:
  cache: {ttl: 1h, store: Redis}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: alice}
spec:
  credentials: [{apiKey: {secretRef: {name: alice-key}}}]
---
apiVersion: v1
kind: Secret
metadata: {name: alice-key}
stringData: {key: alice-secret}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: bob}
spec:
  credentials: [{apiKey: {secretRef: {name: bob-key}}}]
---
apiVersion: v1
kind: Secret
metadata: {name: bob-key}
stringData: {key: bob-secret}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: cached}
spec:
  rules:
    - name: auth
      matches: [{path: {type: Prefix, value: /auth}}]
      plugins: [keys, c]
      backends: [{service: origin, port: 80}]
    - name: swr
      matches: [{path: {type: Prefix, value: /swr}}]
      plugins: [swr]
      backends: [{service: origin, port: 80}]
    - name: redis
      matches: [{path: {type: Prefix, value: /redis}}]
      plugins: [rc]
      backends: [{service: origin, port: 80}]
    - name: plain
      matches: [{path: {type: Prefix, value: /}}]
      plugins: [c]
      backends: [{service: origin, port: 80}]
"#,
    );
    yaml
}

async fn setup(label: &str) -> (Origin, ConfigDir, WeirProcess) {
    let origin = Origin::start().await;
    let dir = ConfigDir::new(label).unwrap();
    dir.write("cache.yaml", &config(origin.addr.port())).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    (origin, dir, weir)
}

async fn request(weir: &WeirProcess, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    http_request(weir.http_addr, method, "localhost", path, headers).await.unwrap()
}

async fn get(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(weir, "GET", path, headers).await
}

fn cache_status(reply: &Reply) -> &str {
    reply.headers.get("x-cache-status").map_or("(none)", |v| v.to_str().unwrap())
}

/// Asserts a 200 with `X-Cache-Status: status`; returns the body.
fn expect(reply: &Reply, status: &str) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(cache_status(reply), status, "{:?} {}", reply.headers, reply.text());
    reply.text()
}

#[tokio::test]
async fn consumers_never_share_and_personal_answers_are_never_stored() {
    let (origin, _dir, weir) = setup("cache-consumers").await;
    let alice = [("x-api-key", "alice-secret")];
    let bob = [("x-api-key", "bob-secret")];
    let a1 = expect(&get(&weir, "/auth/me", &alice).await, "Miss");
    let b1 = expect(&get(&weir, "/auth/me", &bob).await, "Miss");
    assert!(a1.contains("user=alice") && b1.contains("user=bob"), "{a1} / {b1}");
    assert_eq!(origin.received("/auth/me"), 2);
    for _ in 0..3 {
        assert_eq!(expect(&get(&weir, "/auth/me", &alice).await, "Hit"), a1);
        assert_eq!(expect(&get(&weir, "/auth/me", &bob).await, "Hit"), b1);
    }
    assert_eq!(origin.received("/auth/me"), 2, "repeats are answered from the cache");
    // Refused before the lookup: the gateway's answer says Bypass.
    let anonymous = get(&weir, "/auth/me", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(cache_status(&anonymous), "Bypass");

    // Set-Cookie and private: every request reaches the origin.
    for (path, i) in [("/cookie", 1), ("/cookie", 2), ("/cookie", 3)] {
        expect(&get(&weir, path, &[]).await, "Miss");
        assert_eq!(origin.received(path), i);
    }
    for i in 1..=3 {
        let body = expect(&get(&weir, "/private", &[]).await, "Miss");
        assert!(body.contains(&format!("#{i}")), "{body}");
    }
    assert_eq!(origin.received("/private"), 3);
    // A client's no-store bypasses the cache; POST is not a cached method.
    expect(&get(&weir, "/plain", &[]).await, "Miss");
    expect(&get(&weir, "/plain", &[]).await, "Hit");
    expect(&get(&weir, "/plain", &[("cache-control", "no-store")]).await, "Bypass");
    let post = request(&weir, "POST", "/plain", &[]).await;
    assert_eq!(cache_status(&post), "Bypass");
    assert_eq!(origin.received("/plain"), 3, "miss, no-store, POST");
    // store: Redis without --redis-url keeps its entries in this replica's memory.
    expect(&get(&weir, "/redis/local", &[]).await, "Miss");
    expect(&get(&weir, "/redis/local", &[]).await, "Hit");
    assert!(weir.log().contains("no --redis-url"), "the fallback is logged");
    // The access log (stdout in standalone mode) says what the cache did.
    poll_until(Duration::from_secs(10), "cache results in the access log", || async {
        let log = weir.log();
        Ok(["Hit", "Miss", "Bypass"]
            .iter()
            .all(|r| log.contains(&format!("\"cache\":\"{r}\"")))
            .then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn vary_headers_freshness_head_and_conditional_requests() {
    let (origin, _dir, weir) = setup("cache-vary").await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let body_en = expect(&get(&weir, "/lang", &en).await, "Miss");
    let body_fr = expect(&get(&weir, "/lang", &fr).await, "Miss");
    assert!(body_en.contains("lang=en") && body_fr.contains("lang=fr"));
    assert_eq!(expect(&get(&weir, "/lang", &en).await, "Hit"), body_en);
    assert_eq!(expect(&get(&weir, "/lang", &fr).await, "Hit"), body_fr);
    assert_eq!(origin.received("/lang"), 2);

    // max-age=1 from the origin wins over the Plugin's ttl of 1h.
    expect(&get(&weir, "/short", &[]).await, "Miss");
    let hit = get(&weir, "/short", &[]).await;
    expect(&hit, "Hit");
    assert!(hit.headers.contains_key("age"), "{:?}", hit.headers);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    expect(&get(&weir, "/short", &[]).await, "Miss");
    assert_eq!(origin.received("/short"), 2);

    // HEAD from the GET entry; 304 for matching validators.
    let full = expect(&get(&weir, "/cond", &[]).await, "Miss");
    let head = request(&weir, "HEAD", "/cond", &[]).await;
    assert_eq!((head.status, cache_status(&head)), (200, "Hit"), "{:?}", head.headers);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], full.len().to_string());
    let inm = get(&weir, "/cond", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((inm.status, cache_status(&inm)), (304, "Hit"), "{:?}", inm.headers);
    assert!(inm.body.is_empty());
    assert_eq!(inm.headers["etag"], "W/\"v1\"");
    assert!(inm.headers.contains_key("age"));
    let ims = get(&weir, "/cond", &[("if-modified-since", "Thu, 22 Oct 2015 00:00:00 GMT")]).await;
    assert_eq!((ims.status, cache_status(&ims)), (304, "Hit"));
    let older =
        get(&weir, "/cond", &[("if-modified-since", "Tue, 20 Oct 2015 00:00:00 GMT")]).await;
    assert_eq!((older.status, cache_status(&older)), (200, "Hit"));
    let other = get(&weir, "/cond", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((other.status, other.text()), (200, full));
    assert_eq!(origin.received("/cond"), 1);
}

#[tokio::test]
async fn concurrent_misses_coalesce_and_failures_are_not_stored() {
    let (origin, _dir, weir) = setup("cache-coalesce").await;
    let weir = Arc::new(weir);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let weir = Arc::clone(&weir);
        tasks.push(tokio::spawn(async move { get(&weir, "/slow", &[]).await }));
    }
    let mut statuses = HashMap::new();
    let mut bodies = std::collections::HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        *statuses.entry(cache_status(&reply).to_owned()).or_insert(0) += 1;
        bodies.insert(reply.text());
    }
    assert_eq!(origin.received("/slow"), 1, "one upstream request for 50 misses: {statuses:?}");
    assert_eq!(statuses.get("Miss"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("Hit"), Some(&49), "{statuses:?}");
    assert_eq!(bodies.len(), 1);

    // An upstream 500 is not stored.
    for i in 1..=2 {
        let reply = get(&weir, "/error", &[]).await;
        assert_eq!((reply.status, cache_status(&reply)), (500, "Miss"));
        assert_eq!(origin.received("/error"), i);
    }

    // A body over maxBodySize passes through intact and is not stored.
    for i in 1..=2 {
        let reply = get(&weir, "/big", &[]).await;
        expect(&reply, "Miss");
        assert_eq!(reply.body, big_body());
        assert_eq!(origin.received("/big"), i);
    }

    // Purge on the admin port: the next request is a miss.
    expect(&get(&weir, "/purge-me?a=1", &[]).await, "Miss");
    expect(&get(&weir, "/purge-me?a=1", &[]).await, "Hit");
    let purge = http_request(
        weir.admin_addr,
        "DELETE",
        "localhost",
        "/cache?host=localhost&path=/purge-me",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert_eq!(purge.json().unwrap()["purged"], 1, "{}", purge.text());
    expect(&get(&weir, "/purge-me?a=1", &[]).await, "Miss");
    assert_eq!(origin.received("/purge-me"), 2);

    // The metrics count every result; the memory store's bytes are reported.
    let metrics = weir.admin("/metrics").await.unwrap().text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(value("weir_cache_requests_total{result=\"hit\"}") >= 50.0, "{metrics}");
    assert!(value("weir_cache_requests_total{result=\"miss\"}") >= 7.0, "{metrics}");
    assert!(value("weir_cache_bytes") > 0.0, "{metrics}");
}

#[tokio::test]
async fn stale_entries_are_answered_while_one_refresh_runs() {
    let (origin, _dir, weir) = setup("cache-swr").await;
    let first = expect(&get(&weir, "/swr/a", &[]).await, "Miss");
    assert!(first.contains("#1"), "{first}");
    expect(&get(&weir, "/swr/a", &[]).await, "Hit");
    // Past the ttl of 1s, inside the stale window; the origin now takes 2 s to answer.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    origin.state.swr_delay_ms.store(2000, Ordering::SeqCst);
    let stale = get(&weir, "/swr/a", &[]).await;
    assert_eq!(expect(&stale, "Stale"), first);
    assert_eq!(
        origin.state.swr_answered.load(Ordering::SeqCst),
        1,
        "the stale answer did not wait for the refresh"
    );
    // More requests meanwhile: still stale, and still one refresh.
    assert_eq!(expect(&get(&weir, "/swr/a", &[]).await, "Stale"), first);
    poll_until(Duration::from_secs(15), "the refresh to be answered", || async {
        Ok((origin.state.swr_answered.load(Ordering::SeqCst) == 2).then_some(()))
    })
    .await
    .unwrap();
    origin.state.swr_delay_ms.store(0, Ordering::SeqCst);
    let fresh = poll_until(Duration::from_secs(10), "the refreshed entry", || async {
        let reply = get(&weir, "/swr/a", &[]).await;
        Ok((cache_status(&reply) == "Hit").then(|| reply.text()))
    })
    .await
    .unwrap();
    assert!(fresh.contains("#2"), "{fresh}");
    assert_eq!(origin.received("/swr/a"), 2, "exactly one background refresh");
}

/// Starts weir on `dir` with `--redis-url url` (and a generous `--redis-timeout`: a loaded
/// machine's round trip can pass the 100 ms default; a killed Redis fails at once).
async fn weir_with_redis(dir: &Path, url: &str) -> WeirProcess {
    WeirProcess::start_with(&[
        OsString::from("--config-dir"),
        dir.as_os_str().to_owned(),
        OsString::from("--redis-url"),
        OsString::from(url),
        OsString::from("--redis-timeout"),
        OsString::from("3s"),
    ])
    .await
    .unwrap()
}

#[tokio::test]
async fn redis_store_is_shared_by_gateways_and_a_dead_redis_is_a_miss() {
    let mut redis = RedisServer::start().unwrap();
    let origin = Origin::start().await;
    let dir = ConfigDir::new("cache-redis").unwrap();
    dir.write("cache.yaml", &config(origin.addr.port())).unwrap();
    let a = weir_with_redis(dir.path(), &redis.url()).await;
    let b = weir_with_redis(dir.path(), &redis.url()).await;

    let first = expect(&get(&a, "/redis/x", &[]).await, "Miss");
    // The write is asynchronous: wait until the entry is in Redis.
    poll_until(Duration::from_secs(10), "the entry in Redis", || async {
        Ok((!redis.cli(&["KEYS", "weir:cache:e:*"])?.trim().is_empty()).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(expect(&get(&b, "/redis/x", &[]).await, "Hit"), first);
    assert_eq!(expect(&get(&a, "/redis/x", &[]).await, "Hit"), first);
    assert_eq!(origin.received("/redis/x"), 1);

    // Purged on one gateway's admin port: gone from Redis for both.
    let purge = http_request(
        b.admin_addr,
        "DELETE",
        "localhost",
        "/cache?host=localhost&path=/redis/x",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(purge.json().unwrap()["redisPurged"], 1, "{}", purge.text());
    expect(&get(&a, "/redis/x", &[]).await, "Miss");
    assert_eq!(origin.received("/redis/x"), 2);

    // Redis dies: every request is a miss served by the origin, never an error.
    redis.kill();
    for (i, gateway) in [&a, &b, &a, &b].into_iter().enumerate() {
        expect(&get(gateway, "/redis/y", &[]).await, "Miss");
        assert_eq!(origin.received("/redis/y"), i + 1);
    }
}
