//! e2e: the `rateLimit` plugin with the real `weir` binary in standalone mode: the headers on
//! every response of a limited route (upstream answers and gateway errors alike), the 429
//! that never reaches the upstream, two Routes sharing one Plugin's counters, counters kept
//! across a reload that leaves the plugin alone, keys by consumer and tiers (the quickstart
//! Consumer), two gateways sharing one real `redis-server` (killed and restarted
//! mid-test), and the same sharing in Kubernetes mode (against the API server double).
//!
//! Limits use `TokenBucket` with long windows (one token back per several minutes), so a
//! test is deterministic however slowly a loaded machine runs it: nothing here depends on
//! where a window boundary falls, and no assertion is about elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;
use weir_e2e::apiserver::ApiServer;
use weir_e2e::{
    ConfigDir, RedisServer, Reply, WeirProcess, free_port, http_request, poll_until, service_yaml,
    workspace_root,
};

/// The six rate-limit headers every response of a limited route carries.
const HEADERS: [&str; 6] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// An origin that counts the requests it receives: 503 under `/fail`, else 200.
struct CountingOrigin {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingOrigin {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<_>| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let status =
                            if request.uri().path().starts_with("/fail") { 503 } else { 200 };
                        let mut response = http::Response::new(Full::new(Bytes::from("origin\n")));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingOrigin { addr, count, task }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `rateLimit` Plugin: `limit` per hour as a token bucket (one token back every
/// 60/limit minutes: none comes back during a test), plus extra YAML lines.
fn limit_plugin(name: &str, limit: u64, extra: &str) -> String {
    format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\n\
         spec:\n  rateLimit:\n    limit: {limit}\n    window: 1h\n    algorithm: TokenBucket\n{extra}"
    )
}

/// A Route `name` on `prefix` to Service `service` with route-level `plugins`.
fn route(name: &str, prefix: &str, service: &str, plugins: &str) -> String {
    format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  plugins: [{plugins}]\n  rules:\n    - matches: [{{path: {{type: Prefix, value: {prefix}}}}}]\n\
         \x20     backends: [{{service: {service}, port: 80}}]\n"
    )
}

async fn get(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> Reply {
    http_request(weir.http_addr, "GET", "localhost", path, headers).await.unwrap()
}

fn header(reply: &Reply, name: &str) -> String {
    reply.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Asserts the six headers are present, `Limit` = `limit` and `Remaining` = `remaining`.
fn assert_headers(reply: &Reply, limit: u64, remaining: u64) {
    for name in HEADERS {
        assert!(reply.headers.contains_key(name), "{name} missing: {:?}", reply.headers);
    }
    assert_eq!(header(reply, "ratelimit-limit"), limit.to_string(), "{:?}", reply.headers);
    assert_eq!(header(reply, "x-ratelimit-limit"), limit.to_string());
    assert_eq!(header(reply, "ratelimit-remaining"), remaining.to_string(), "{:?}", reply.headers);
    assert_eq!(header(reply, "x-ratelimit-remaining"), remaining.to_string());
    assert_eq!(header(reply, "ratelimit-reset"), header(reply, "x-ratelimit-reset"));
}

/// Asserts a 429 as API.md describes it; returns its `retryAfter`.
fn assert_429(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(header(reply, "content-type"), "application/json");
    let body = reply.json().unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "rate limit exceeded");
    assert!(body["requestId"].is_string(), "{body}");
    let retry_after = body["retryAfter"].as_u64().unwrap();
    assert!(retry_after >= 1, "{body}");
    assert_eq!(header(reply, "retry-after"), retry_after.to_string());
    retry_after
}

/// Waits until the weir process serves a config version above `version`.
async fn wait_version_above(weir: &WeirProcess, version: u64) -> u64 {
    poll_until(Duration::from_secs(10), "a new snapshot version", || async {
        let v = weir.status().await?["version"].as_u64().unwrap_or(0);
        Ok((v > version).then_some(v))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_routes_send_the_headers_share_counters_and_refuse_without_proxying() {
    let origin = CountingOrigin::start().await;
    let dir = ConfigDir::new("rl-local").unwrap();
    let mut services = service_yaml("app", origin.addr.port());
    // A Service whose only endpoint refuses connections: the gateway answers 502 itself.
    services.push_str(&service_yaml("down", free_port().unwrap()));
    dir.write("services.yaml", &services).unwrap();
    dir.write("plugins.yaml", &limit_plugin("shared", 5, "")).unwrap();
    let routes = [
        route("a", "/a", "app", "shared"),
        route("b", "/b", "app", "shared"),
        route("fail", "/fail", "app", "shared"),
        route("down", "/down", "down", "shared"),
        route("free", "/free", "app", ""),
    ]
    .concat();
    dir.write("routes.yaml", &routes).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // Two Routes and four kinds of answer, one Plugin: one counter, headers on each.
    let reply = get(&weir, "/a", &[]).await;
    assert_eq!(reply.status, 200);
    assert_headers(&reply, 5, 4);
    assert!(reply.headers.get("retry-after").is_none());
    let reply = get(&weir, "/b", &[]).await;
    assert_eq!(reply.status, 200);
    assert_headers(&reply, 5, 3);
    let reply = get(&weir, "/fail", &[]).await;
    assert_eq!(reply.status, 503, "the origin's own 5xx");
    assert_eq!(reply.text(), "origin\n");
    assert_headers(&reply, 5, 2);
    let reply = get(&weir, "/down", &[]).await;
    assert_eq!(reply.status, 502, "a gateway error after the check: {}", reply.text());
    assert_headers(&reply, 5, 1);
    let reply = get(&weir, "/b", &[]).await;
    assert_eq!(reply.status, 200);
    assert_headers(&reply, 5, 0);
    assert_eq!(origin.count(), 4, "/down never reached this origin");

    // Spent: 429 on both Routes, with the headers, and the origin sees nothing more.
    for path in ["/a", "/b", "/fail", "/a"] {
        let reply = get(&weir, path, &[("x-request-id", "rl-req-1")]).await;
        assert_429(&reply);
        assert_eq!(reply.json().unwrap()["requestId"], "rl-req-1");
        assert_headers(&reply, 5, 0);
    }
    assert_eq!(origin.count(), 4, "a refused request reached the upstream");
    // Without --trusted-proxies, X-Forwarded-For is the client's word: ignored.
    assert_429(&get(&weir, "/a", &[("x-forwarded-for", "203.0.113.9")]).await);

    // A route without the plugin: no headers, not limited.
    let reply = get(&weir, "/free", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(HEADERS.iter().all(|h| !reply.headers.contains_key(*h)), "{:?}", reply.headers);

    // A reload that leaves the plugin alone keeps its counters...
    let version = weir.status().await.unwrap()["version"].as_u64().unwrap();
    dir.write("extra.yaml", &route("extra", "/extra", "app", "")).unwrap();
    let version = wait_version_above(&weir, version).await;
    assert_eq!(get(&weir, "/extra", &[]).await.status, 200);
    assert_429(&get(&weir, "/a", &[]).await);
    // ...as does a reload that edits the plugin file without changing the config.
    dir.write("plugins.yaml", &format!("# edited\n{}", limit_plugin("shared", 5, ""))).unwrap();
    dir.write("extra.yaml", &route("extra", "/extra2", "app", "")).unwrap();
    let version = wait_version_above(&weir, version).await;
    assert_429(&get(&weir, "/b", &[]).await);
    assert_eq!(origin.count(), 6);

    // Changing the plugin's config starts fresh counters.
    dir.write("plugins.yaml", &limit_plugin("shared", 6, "")).unwrap();
    wait_version_above(&weir, version).await;
    let reply = get(&weir, "/a", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_headers(&reply, 6, 5);
    assert!(!weir.log().contains("panicked"), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_limits_key_by_consumer_and_tiers_choose_the_limit() {
    let origin = CountingOrigin::start().await;
    let quickstart = workspace_root().join("deploy/examples/quickstart");
    let read = |name: &str| std::fs::read_to_string(quickstart.join(name)).unwrap();
    // The quickstart's plugins with a window no test run can cross (see the module doc).
    let limits = read("ratelimit.yaml")
        .replace("window: 1m", "window: 24h")
        .replace("algorithm: SlidingWindow", "algorithm: TokenBucket");
    assert!(limits.matches("algorithm: TokenBucket").count() == 2, "{limits}");
    let dir = ConfigDir::new("rl-quickstart").unwrap();
    let services =
        [service_yaml("users", origin.addr.port()), service_yaml("orders", origin.addr.port())];
    dir.write("services.yaml", &services.concat()).unwrap();
    dir.write("auth.yaml", &read("auth.yaml")).unwrap();
    dir.write("ratelimit.yaml", &limits).unwrap();
    // A second Consumer without a tier.
    dir.write(
        "basic.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Consumer\nmetadata: {name: basic}\n\
         spec: {credentials: [{apiKey: {secretRef: {name: basic-key}}}]}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: basic-key}\nstringData: {key: basic-api-key}\n",
    )
    .unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // /api/limited: 5 per client address, then 429.
    for remaining in (0..5).rev() {
        let reply = get(&weir, "/api/limited", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_headers(&reply, 5, remaining);
    }
    assert_429(&get(&weir, "/api/limited", &[]).await);

    // /api/metered: the `pro` Consumer gets its tier's 10, whichever credential it uses.
    let demo = [("x-api-key", "demo-api-key-1")];
    for remaining in (1..10).rev() {
        let reply = get(&weir, "/api/metered", &demo).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_headers(&reply, 10, remaining);
    }
    let reply = get(&weir, "/api/metered", &[("x-api-key", "demo-api-key-2")]).await;
    assert_headers(&reply, 10, 0);
    assert_429(&get(&weir, "/api/metered", &demo).await);
    assert_429(&get(&weir, "/api/metered", &[("x-api-key", "demo-api-key-2")]).await);
    // The Consumer without a tier has its own counter, with the base limit (3).
    let basic = [("x-api-key", "basic-api-key")];
    for remaining in (0..3).rev() {
        let reply = get(&weir, "/api/metered", &basic).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_headers(&reply, 3, remaining);
    }
    assert_429(&get(&weir, "/api/metered", &basic).await);
    // Authentication runs first: no credential is a 401, before any counter is touched.
    let reply = get(&weir, "/api/metered", &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers.get("ratelimit-limit").is_none());
    assert_eq!(origin.count(), 5 + 10 + 3);
}

/// A Redis round trip on a loaded 2-core machine can take longer than the 100 ms default:
/// the tests wait longer, so that only a Redis that is really gone takes `onStoreError`
/// (a killed Redis fails at once: no client is connected).
const REDIS_TIMEOUT: &str = "3s";

/// Starts weir on `dir` with `--redis-url url`.
async fn weir_with_redis(dir: &Path, url: &str) -> WeirProcess {
    let args: Vec<OsString> = [
        "--config-dir".as_ref(),
        dir.as_os_str(),
        "--redis-url".as_ref(),
        url.as_ref(),
        "--redis-timeout".as_ref(),
        REDIS_TIMEOUT.as_ref(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    WeirProcess::start_with(&args).await.unwrap()
}

/// Sends `n` requests to `path`, alternating between the gateways; returns the statuses.
async fn alternate(gateways: &[&WeirProcess], path: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        statuses.push(get(gateways[i % gateways.len()], path, &[]).await.status);
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_redis_and_apply_on_store_error_when_it_dies() {
    let mut redis = RedisServer::start().unwrap();
    let origin = CountingOrigin::start().await;
    let dir = ConfigDir::new("rl-redis").unwrap();
    dir.write("services.yaml", &service_yaml("app", origin.addr.port())).unwrap();
    let plugins = [
        limit_plugin("open", 10, "    store: Redis\n    onStoreError: Allow\n"),
        limit_plugin("closed", 10, "    store: Redis\n    onStoreError: Deny\n"),
    ]
    .concat();
    dir.write("plugins.yaml", &plugins).unwrap();
    let routes =
        [route("open", "/open", "app", "open"), route("closed", "/closed", "app", "closed")];
    dir.write("routes.yaml", &routes.concat()).unwrap();
    let a = weir_with_redis(dir.path(), &redis.url()).await;
    let b = weir_with_redis(dir.path(), &redis.url()).await;
    let both = [&a, &b];

    // Exactly `limit` between them, per route.
    for path in ["/open", "/closed"] {
        let statuses = alternate(&both, path, 16).await;
        assert_eq!(count(&statuses, 200), 10, "{path}: {statuses:?}");
        assert_eq!(count(&statuses, 429), 6, "{path}: {statuses:?}");
        assert_eq!(&statuses[..10], &[200; 10], "{path}: {statuses:?}");
    }
    assert_eq!(origin.count(), 20);

    // Redis dies: Deny refuses (429, fail closed), Allow serves from each replica's local
    // guard (same limit, per replica). Every request gets an answer.
    redis.kill();
    for gateway in both {
        let reply = get(gateway, "/closed", &[]).await;
        assert_429(&reply);
        assert_headers(&reply, 10, 0);
        let reply = get(gateway, "/open", &[]).await;
        assert_eq!(reply.status, 200, "fail open: {}", reply.text());
        assert_headers(&reply, 10, 9);
    }
    assert_eq!(origin.count(), 22);
    let metrics = a.admin("/metrics").await.unwrap().text();
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("weir_ratelimit_store_errors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no store error metric: {metrics}"));
    assert!(errors >= 2.0, "{metrics}");

    // Redis is back (empty: no persistence): shared limiting resumes on both gateways.
    redis.restart().unwrap();
    poll_until(Duration::from_secs(30), "Redis to be used again", || async {
        Ok((get(&a, "/closed", &[]).await.status == 200).then_some(()))
    })
    .await
    .unwrap();
    poll_until(Duration::from_secs(30), "Redis to be used again by b", || async {
        Ok((get(&b, "/closed", &[]).await.status == 200).then_some(()))
    })
    .await
    .unwrap();
    // Start the window afresh: a poll answered 429 because its Redis call timed out while
    // the connection came back may still be counted by Redis, even after the polls (the
    // client replays what it queued during the reconnection; a busy machine makes that race
    // likely). So empty Redis until it stays empty for a second: then nothing late is left,
    // and exactly the limit is shared between the gateways again.
    poll_until(Duration::from_secs(30), "Redis to stay empty", || async {
        redis.cli(&["FLUSHALL"])?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok((redis.cli(&["DBSIZE"])?.trim() == "0").then_some(()))
    })
    .await
    .unwrap();
    let statuses = alternate(&both, "/closed", 14).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 4, "{statuses:?}");
    assert_eq!(&statuses[..10], &[200; 10], "{statuses:?}");
    for gateway in both {
        assert_eq!(gateway.admin("/healthz").await.unwrap().status, 200);
        assert!(!gateway.log().contains("panicked"), "{}", gateway.log());
    }
}

/// Applies every document of `yaml` (namespace `default`) to the API server double.
async fn apply_all(client: &kube::Client, yaml: &str) {
    for doc in yaml.split("\n---").map(|d| d.trim().trim_start_matches("---").trim()) {
        if doc.is_empty() {
            continue;
        }
        let value: Value = serde_saphyr::from_str(doc).unwrap();
        let api_version = value["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, value["kind"].as_str().unwrap());
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
        let name = value["metadata"]["name"].as_str().unwrap();
        api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&value)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_replicas_share_one_redis() {
    let redis = RedisServer::start().unwrap();
    let origin = CountingOrigin::start().await;
    let server = ApiServer::start().await.unwrap();
    let dir = ConfigDir::new("rl-kubeconfig").unwrap();
    dir.write("kubeconfig.yaml", &server.kubeconfig_yaml()).unwrap();
    let client = server.client();
    let config = [
        service_yaml("app", origin.addr.port()),
        limit_plugin("shared", 4, "    store: Redis\n"),
        route("limited", "/limited", "app", "shared"),
    ]
    .concat();
    apply_all(&client, &config).await;

    let args: Vec<OsString> = [
        "--kubeconfig".as_ref(),
        dir.path().join("kubeconfig.yaml").as_os_str(),
        "--namespace".as_ref(),
        "weir-system".as_ref(),
        "--redis-url".as_ref(),
        redis.url().as_ref(),
        "--redis-timeout".as_ref(),
        REDIS_TIMEOUT.as_ref(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let a = WeirProcess::start_with(&args).await.unwrap();
    let b = WeirProcess::start_with(&args).await.unwrap();
    for gateway in [&a, &b] {
        poll_until(Duration::from_secs(15), "the route in the live snapshot", || async {
            let reply = gateway.admin("/debug/match?method=GET&host=x&path=/limited").await?;
            Ok((reply.status == 200 && reply.text().contains("limited")).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log()));
    }
    let statuses = alternate(&[&a, &b], "/limited", 10).await;
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");
    assert_eq!(origin.count(), 4);
    drop((a, b));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_make_forwarded_clients_count_apart() {
    let origin = CountingOrigin::start().await;
    let dir = ConfigDir::new("rl-trusted").unwrap();
    dir.write("services.yaml", &service_yaml("app", origin.addr.port())).unwrap();
    dir.write("plugins.yaml", &limit_plugin("one", 1, "")).unwrap();
    dir.write("routes.yaml", &route("a", "/a", "app", "one")).unwrap();
    let args: Vec<OsString> = [
        "--config-dir".as_ref(),
        dir.path().as_os_str(),
        "--trusted-proxies".as_ref(),
        "127.0.0.0/8".as_ref(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let weir = WeirProcess::start_with(&args).await.unwrap();
    // The test client stands for a proxy on 127.0.0.1: the right-most untrusted address
    // of X-Forwarded-For is the client.
    let first = [("x-forwarded-for", "198.51.100.7, 203.0.113.1")];
    assert_eq!(get(&weir, "/a", &first).await.status, 200);
    assert_429(&get(&weir, "/a", &first).await);
    let second = [("x-forwarded-for", "203.0.113.1, 203.0.113.2")];
    assert_eq!(get(&weir, "/a", &second).await.status, 200);
    assert_429(&get(&weir, "/a", &second).await);
    assert_eq!(origin.count(), 2);
}
