//! e2e: per-request metrics with the real `weir` binary in standalone mode, in front of the
//! demo backend: after a known mix of requests (200s, a 404 without route, a 401 from
//! keyAuth, a 429 from a local rateLimit, a 502 from a dead endpoint, a 504 from a route
//! timeout) `/metrics` counts each exactly — `weir_http_requests_total`, the duration
//! histograms' `_count`, `weir_ratelimit_decisions_total`, `weir_upstream_duration_seconds`
//! — counters survive a reload, a deleted route's series disappear, 1,000 distinct invalid
//! API keys add no series, and with `--metrics-per-consumer` requests are labelled by
//! consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use weir_e2e::{
    ConfigDir, DemoOrigin, KeepAliveConn, WeirProcess, free_port, http_request, poll_until,
    service_yaml,
};

/// How long a reload or the last request's accounting may take before a test gives up.
const LIMIT: Duration = Duration::from_secs(10);

/// A Route `name` with one rule `name` on `Prefix /name`, sending to `service`, with
/// optional route plugins and extra rule fields.
fn route(name: &str, service: &str, plugins: &[&str], extra: &str) -> String {
    format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n  plugins: [{}]\n  rules:\n    - name: {name}\n      matches: [{{path: {{type: Prefix, value: /{name}}}}}]\n      backends: [{{service: {service}, port: 80}}]\n{extra}",
        plugins.join(", ")
    )
}

const AUTH: &str = r#"---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key, query: apikey}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: demo}
spec:
  username: demo-user
  credentials:
    - apiKey: {secretRef: {name: demo-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: demo-key}
stringData:
  key: demo-api-key-1
"#;

const LIMIT_PLUGIN: &str = r#"---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: two-per-hour}
spec:
  rateLimit: {limit: 2, window: 1h, algorithm: TokenBucket}
"#;

/// The value of the sample `series` (`name{labels}`, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample line's series (name and labels), without values.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

async fn metrics(weir: &WeirProcess) -> String {
    let reply = weir.admin("/metrics").await.unwrap();
    assert_eq!(reply.status, 200);
    reply.text()
}

/// `weir_http_requests_total` of rule `name` of Route `name` in `default`.
fn requests(name: &str, code: &str) -> String {
    format!(
        r#"weir_http_requests_total{{namespace="default",route="{name}",rule="{name}",code="{code}"}}"#
    )
}

fn duration_count(name: &str) -> String {
    format!(r#"weir_http_request_duration_seconds_count{{namespace="default",route="{name}"}}"#)
}

/// Waits until `/metrics` satisfies `done` (a request is counted when its response body
/// has been sent, just after the client read it), then returns the exposition.
async fn until(weir: &WeirProcess, what: &str, done: impl Fn(&str) -> bool) -> String {
    let last = std::sync::Mutex::new(String::new());
    poll_until(LIMIT, what, || async {
        let text = metrics(weir).await;
        if done(&text) {
            return Ok(Some(text));
        }
        *last.lock().unwrap() = text;
        Ok(None)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last /metrics:\n{}", last.lock().unwrap()))
}

/// Waits until `series` is at `value`.
async fn until_value(weir: &WeirProcess, series: &str, value: f64) -> String {
    until(weir, &format!("{series} = {value}"), |t| sample(t, series) == Some(value)).await
}

/// The sum of every sample of metric `name` (e.g. every `_count` of a histogram).
fn total(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn status_of(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> u16 {
    http_request(weir.http_addr, "GET", "localhost", path, headers).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_mix_of_requests_is_counted_exactly() {
    let demo = DemoOrigin::start("demo").await.unwrap();
    let dir = ConfigDir::new("metrics-mix").unwrap();
    dir.write("services.yaml", &service_yaml("demo", demo.addr.port())).unwrap();
    // Nothing listens there: connection refused, 502.
    dir.write("dead.yaml", &service_yaml("dead", free_port().unwrap())).unwrap();
    dir.write("auth.yaml", AUTH).unwrap();
    dir.write("limit.yaml", LIMIT_PLUGIN).unwrap();
    dir.write("ok.yaml", &route("ok", "demo", &[], "")).unwrap();
    dir.write("keyed.yaml", &route("keyed", "demo", &["keys"], "")).unwrap();
    dir.write("limited.yaml", &route("limited", "demo", &["two-per-hour"], "")).unwrap();
    dir.write("dead-route.yaml", &route("dead", "dead", &[], "")).unwrap();
    let slow = route("slow", "demo", &[], "      timeouts: {request: 100ms}\n");
    dir.write("slow.yaml", &slow).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    for _ in 0..5 {
        assert_eq!(status_of(&weir, "/ok", &[]).await, 200);
    }
    for path in ["/nothing", "/else"] {
        assert_eq!(status_of(&weir, path, &[]).await, 404);
    }
    assert_eq!(status_of(&weir, "/keyed", &[]).await, 401);
    assert_eq!(status_of(&weir, "/keyed", &[("x-api-key", "demo-api-key-1")]).await, 200);
    for expected in [200, 200, 429] {
        assert_eq!(status_of(&weir, "/limited", &[]).await, expected);
    }
    assert_eq!(status_of(&weir, "/dead", &[]).await, 502);
    assert_eq!(status_of(&weir, "/slow?delay=3000", &[]).await, 504);

    // 14 requests in all: wait until each is counted, then every count is exact.
    let text = until(&weir, "14 requests counted", |t| {
        total(t, "weir_http_requests_total") == 14.0
            && total(t, "weir_http_request_duration_seconds_count") == 14.0
    })
    .await;
    let expected = [
        (requests("ok", "2xx"), 5.0),
        (r#"weir_http_requests_total{namespace="",route="",rule="",code="4xx"}"#.to_owned(), 2.0),
        (requests("keyed", "4xx"), 1.0),
        (requests("keyed", "2xx"), 1.0),
        (requests("limited", "2xx"), 2.0),
        (requests("limited", "4xx"), 1.0),
        (requests("dead", "5xx"), 1.0),
        (requests("slow", "5xx"), 1.0),
        (duration_count("ok"), 5.0),
        (duration_count("keyed"), 2.0),
        (duration_count("limited"), 3.0),
        (duration_count("dead"), 1.0),
        (duration_count("slow"), 1.0),
        (r#"weir_http_request_duration_seconds_count{namespace="",route=""}"#.to_owned(), 2.0),
        (
            r#"weir_ratelimit_decisions_total{plugin="default/two-per-hour",result="allowed"}"#
                .to_owned(),
            2.0,
        ),
        (
            r#"weir_ratelimit_decisions_total{plugin="default/two-per-hour",result="limited"}"#
                .to_owned(),
            1.0,
        ),
        // Attempts: 5 ok + 1 keyed + 2 limited + 1 slow reached the demo backend.
        (r#"weir_upstream_duration_seconds_count{backend="default/demo:80"}"#.to_owned(), 9.0),
        (r#"weir_upstream_duration_seconds_count{backend="default/dead:80"}"#.to_owned(), 1.0),
        (
            r#"weir_upstream_requests_total{backend="default/dead:80",result="connect_error"}"#
                .to_owned(),
            1.0,
        ),
    ];
    for (series, value) in &expected {
        assert_eq!(sample(&text, series), Some(*value), "{series} in\n{text}");
    }
    assert!(
        !text.contains(r#"route="ok",rule="ok",code="5xx""#),
        "no series for a class without requests: {text}"
    );
    // The 504's histogram: the route timeout (100 ms) bounds it, above 50 ms.
    let le = |bound: &str| {
        let series = format!(
            r#"weir_http_request_duration_seconds_bucket{{le="{bound}",namespace="default",route="slow"}}"#
        );
        sample(&text, &series)
    };
    assert_eq!(le("0.05"), Some(0.0), "{text}");
    assert_eq!(le("+Inf"), Some(1.0), "{text}");

    // 1,000 distinct (invalid) API keys add no series: one first (its auth-failure reason
    // series appears), then 999 more over one connection.
    let mut conn = KeepAliveConn::connect(weir.http_addr).await.unwrap();
    assert_eq!(conn.get("localhost", "/keyed?apikey=bad-0").await.unwrap().status, 401);
    let before = series(&until_value(&weir, &duration_count("keyed"), 3.0).await);
    for i in 1..1_000 {
        let reply = conn.get("localhost", &format!("/keyed?apikey=bad-{i}")).await.unwrap();
        assert_eq!(reply.status, 401);
    }
    let after = until_value(&weir, &duration_count("keyed"), 1_002.0).await;
    assert_eq!(sample(&after, &requests("keyed", "4xx")), Some(1_001.0), "{after}");
    assert_eq!(series(&after), before, "1,000 keys added series");
    assert!(!after.contains("consumer="), "no consumer label without the flag");

    // A reload that deletes the slow route: its series go, the others keep counting.
    dir.remove("slow.yaml").unwrap();
    poll_until(LIMIT, "the slow route gone", || async {
        Ok((status_of(&weir, "/slow", &[]).await == 404).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(status_of(&weir, "/ok", &[]).await, 200);
    let text = until_value(&weir, &duration_count("ok"), 6.0).await;
    assert!(!text.contains(r#"route="slow""#), "deleted route still exposed:\n{text}");
    assert_eq!(sample(&text, &requests("ok", "2xx")), Some(6.0), "{text}");
    assert_eq!(sample(&text, &requests("limited", "4xx")), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_metrics_label_requests_by_consumer() {
    let demo = DemoOrigin::start("demo").await.unwrap();
    let dir = ConfigDir::new("metrics-consumer").unwrap();
    dir.write("services.yaml", &service_yaml("demo", demo.addr.port())).unwrap();
    dir.write("auth.yaml", AUTH).unwrap();
    dir.write("keyed.yaml", &route("keyed", "demo", &["keys"], "")).unwrap();
    let weir = WeirProcess::start_with(&[
        OsString::from("--config-dir"),
        dir.path().as_os_str().to_owned(),
        OsString::from("--metrics-per-consumer"),
    ])
    .await
    .unwrap();

    for _ in 0..2 {
        assert_eq!(status_of(&weir, "/keyed", &[("x-api-key", "demo-api-key-1")]).await, 200);
    }
    for key in ["bad-1", "bad-2", "bad-3"] {
        assert_eq!(status_of(&weir, "/keyed", &[("x-api-key", key)]).await, 401);
    }
    let labelled = |code: &str, consumer: &str| {
        format!(
            r#"weir_http_requests_total{{namespace="default",route="keyed",rule="keyed",code="{code}",consumer="{consumer}"}}"#
        )
    };
    let text = until(&weir, "5 requests counted by consumer", |t| {
        total(t, "weir_http_requests_total") == 5.0
    })
    .await;
    assert_eq!(sample(&text, &labelled("2xx", "demo-user")), Some(2.0), "{text}");
    assert_eq!(sample(&text, &labelled("4xx", "")), Some(3.0), "{text}");
    let lines = text.lines().filter(|l| l.starts_with("weir_http_requests_total{")).count();
    assert_eq!(lines, 2, "{text}");
    assert!(sample(&text, &requests("keyed", "2xx")).is_none(), "every series has the label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_off_produce_no_request_series() {
    let demo = DemoOrigin::start("demo").await.unwrap();
    let dir = ConfigDir::new("metrics-off").unwrap();
    dir.write("services.yaml", &service_yaml("demo", demo.addr.port())).unwrap();
    dir.write("ok.yaml", &route("ok", "demo", &[], "")).unwrap();
    let weir = WeirProcess::start_with(&[
        OsString::from("--config-dir"),
        dir.path().as_os_str().to_owned(),
        OsString::from("--request-metrics"),
        OsString::from("false"),
    ])
    .await
    .unwrap();
    assert_eq!(status_of(&weir, "/ok", &[]).await, 200);
    assert_eq!(status_of(&weir, "/none", &[]).await, 404);
    // The upstream layer's series are there; the per-request ones are not.
    let series = r#"weir_upstream_requests_total{backend="default/demo:80",result="success"}"#;
    let text = until_value(&weir, series, 1.0).await;
    assert!(!text.contains("weir_http_requests"), "{text}");
    assert!(!text.contains("weir_http_request_duration"), "{text}");
}
