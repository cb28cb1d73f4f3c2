//! e2e: the access log of the real `weir` binary: one JSON line per request with the
//! API.md fields (proxied requests and the gateway's own 404, 401 and 429), the text
//! format, no credential in any line (nor in the process log), a stalled writer that never
//! holds up a request (lines dropped and counted instead), reopening on SIGHUP after a
//! rename, a missing log directory at start; in [`sessions`], a WebSocket session logged
//! when it closes (also at shutdown) and gRPC calls with their `grpc-status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../shared/origins.rs"]
mod origins;
mod sessions;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_e2e::{
    ConfigDir, EchoOrigin, KeepAliveConn, WeirProcess, http_request, poll_until, service_yaml,
};

const WAIT: Duration = Duration::from_secs(20);

/// Routes: `orders` (rule `list`, `/api` → the echo origin), `private` (`/private`, the
/// `keys` keyAuth Plugin: header `x-api-key` or query `api_key`; Consumer `mobile-app`),
/// `limited` (`/limited`, one request per hour).
fn config(dir: &ConfigDir, origin_port: u16) {
    dir.write("services.yaml", &service_yaml("orders", origin_port)).unwrap();
    dir.write(
        "routes.yaml",
        r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  rules:
    - name: list
      matches: [{path: {value: /api}}]
      backends: [{service: orders, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: private}
spec:
  plugins: [keys]
  rules:
    - name: private
      matches: [{path: {value: /private}}]
      backends: [{service: orders, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: limited}
spec:
  plugins: [limit]
  rules:
    - name: limited
      matches: [{path: {value: /limited}}]
      backends: [{service: orders, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key, query: api_key}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: limit}
spec:
  rateLimit: {limit: 1, window: 1h, algorithm: TokenBucket}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: mobile}
spec:
  username: mobile-app
  credentials:
    - apiKey: {secretRef: {name: mobile-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: mobile-key}
stringData: {key: GOODKEY-SECRET9}
"#,
    )
    .unwrap();
}

/// `weir run --config-dir DIR` plus `extra` flags.
async fn start(dir: &ConfigDir, extra: &[&str]) -> WeirProcess {
    let mut args = vec![OsString::from("--config-dir"), dir.path().as_os_str().to_owned()];
    args.extend(extra.iter().map(OsString::from));
    WeirProcess::start_with(&args).await.unwrap()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The access-log JSON lines in `text` (other lines, such as the process's own log, are
/// skipped).
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with("{\"time\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until the file at `path` holds a JSON line for `path_field` (`status` too when
/// given), and returns it.
async fn line_for(file: &Path, path_field: &str, weir: &WeirProcess) -> Value {
    poll_until(WAIT, &format!("the access-log line of {path_field}"), || async {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        Ok(json_lines(&text).into_iter().find(|l| l["path"] == path_field))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()))
}

fn is_time(value: &Value) -> bool {
    // 2026-12-02T16:00:00.123Z
    let s = value.as_str().unwrap_or("");
    let b = s.as_bytes();
    b.len() == 24
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && s[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let dir = ConfigDir::new("access-log-json").unwrap();
    config(&dir, origin.addr.port());
    let logs = ConfigDir::new("access-log-json-out").unwrap();
    let file = logs.path().join("access.log");
    let weir = start(&dir, &["--access-log", path_arg(&file)]).await;
    let send = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        http_request(weir.http_addr, "GET", "shop.test", path, headers)
    };

    // Proxied.
    let ok = send("/api/orders?page=2", &[("x-request-id", "req-proxied-1")]).await.unwrap();
    assert_eq!(ok.status, 200);
    let line = line_for(&file, "/api/orders", &weir).await;
    // The fields, in the API's order (serde_json's map sorts them: look at the raw line).
    let raw = std::fs::read_to_string(&file).unwrap();
    let raw = raw.lines().find(|l| l.contains("\"path\":\"/api/orders\"")).unwrap();
    let mut fields: Vec<(usize, &str)> = line
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (raw.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
        .collect();
    fields.sort();
    let fields: Vec<&str> = fields.into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        fields,
        [
            "time",
            "request_id",
            "trace_id",
            "client_ip",
            "method",
            "host",
            "path",
            "status",
            "duration_ms",
            "route",
            "rule",
            "backend",
            "upstream",
            "upstream_ms",
            "retries",
            "consumer",
            "bytes_in",
            "bytes_out",
            "cache",
            "rate_limited",
            "error",
            "completed",
            "grpc_status"
        ],
        "{line}"
    );
    assert!(is_time(&line["time"]), "{line}");
    assert_eq!(line["request_id"], "req-proxied-1");
    let trace_id = line["trace_id"].as_str().unwrap();
    assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!((line["method"].as_str(), line["host"].as_str()), (Some("GET"), Some("shop.test")));
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "default/orders");
    assert_eq!(line["rule"], "list");
    assert_eq!(line["backend"], "default/orders:80");
    assert_eq!(line["upstream"], origin.addr.to_string());
    let (duration, upstream) =
        (line["duration_ms"].as_f64().unwrap(), line["upstream_ms"].as_f64().unwrap());
    assert!(upstream > 0.0 && duration >= upstream, "{line}");
    assert_eq!(line["retries"], 0);
    assert!(line["consumer"].is_null() && line["cache"].is_null() && line["error"].is_null());
    assert_eq!(
        (line["bytes_in"].as_u64(), line["bytes_out"].as_u64()),
        (Some(0), Some(ok.body.len() as u64))
    );
    assert_eq!(
        (line["rate_limited"].as_bool(), line["completed"].as_bool()),
        (Some(false), Some(true))
    );

    // No route: 404 with its error label.
    assert_eq!(send("/nowhere", &[]).await.unwrap().status, 404);
    let line = line_for(&file, "/nowhere", &weir).await;
    assert_eq!((line["status"].as_u64(), line["error"].as_str()), (Some(404), Some("no_route")));
    for field in ["route", "rule", "backend", "upstream", "upstream_ms", "consumer"] {
        assert!(line[field].is_null(), "{field}: {line}");
    }

    // No credential: 401 on the route; a good key: 200 with the consumer.
    assert_eq!(send("/private/a", &[]).await.unwrap().status, 401);
    let line = line_for(&file, "/private/a", &weir).await;
    assert_eq!(
        (line["status"].as_u64(), line["error"].as_str()),
        (Some(401), Some("unauthorized"))
    );
    assert_eq!(
        (line["route"].as_str(), line["upstream"].is_null()),
        (Some("default/private"), true)
    );
    assert_eq!(send("/private/b", &[("x-api-key", "GOODKEY-SECRET9")]).await.unwrap().status, 200);
    let line = line_for(&file, "/private/b", &weir).await;
    assert_eq!(
        (line["status"].as_u64(), line["consumer"].as_str()),
        (Some(200), Some("mobile-app"))
    );

    // The second request of the hour: 429, rate_limited.
    assert_eq!(send("/limited/1", &[]).await.unwrap().status, 200);
    assert_eq!(send("/limited/2", &[]).await.unwrap().status, 429);
    let line = line_for(&file, "/limited/2", &weir).await;
    assert_eq!(line["status"], 429);
    assert_eq!(
        (line["rate_limited"].as_bool(), line["error"].as_str()),
        (Some(true), Some("rate_limited"))
    );
    assert_eq!(line["route"], "default/limited");

    // Exactly one line per request.
    let all = json_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(all.len(), 6, "{all:#?}");
    // The counter follows the write.
    let metrics = poll_until(WAIT, "6 lines counted", || async {
        let metrics = weir.admin("/metrics").await?.text();
        Ok(metrics.contains("weir_access_log_lines_total 6").then_some(metrics))
    })
    .await
    .unwrap();
    assert!(metrics.contains("weir_access_log_dropped_total 0"), "{metrics}");
    assert!(!weir.log().contains("\"time\""), "the file target keeps stdout clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_on_stdout() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let dir = ConfigDir::new("access-log-text").unwrap();
    config(&dir, origin.addr.port());
    let weir = start(&dir, &["--access-log-format", "text"]).await;
    let reply =
        http_request(weir.http_addr, "GET", "shop.test", "/api/x?q=1", &[("x-request-id", "r-7")])
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    let line = poll_until(WAIT, "the text line", || async {
        Ok(weir.log().lines().find(|l| l.contains("\"GET shop.test/api/x\"")).map(str::to_owned))
    })
    .await
    .unwrap();
    // 2026-12-02T16:00:00.123Z 127.0.0.1 "GET shop.test/api/x" 200 1.234ms route=… …
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 16, "{line}");
    assert!(is_time(&Value::from(words[0])), "{line}");
    assert_eq!(&words[1..5], ["127.0.0.1", "\"GET", "shop.test/api/x\"", "200"], "{line}");
    let ms = words[5].strip_suffix("ms").unwrap();
    assert!(ms.parse::<f64>().unwrap() > 0.0 && ms.split('.').nth(1).unwrap().len() == 3, "{line}");
    let upstream = format!("upstream={}", origin.addr);
    let out = format!("out={}", reply.body.len());
    assert_eq!(
        &words[6..],
        [
            "route=default/orders",
            "rule=list",
            "backend=default/orders:80",
            upstream.as_str(),
            "consumer=-",
            "request_id=r-7",
            words[12],
            "in=0",
            out.as_str(),
            "error=-"
        ],
        "{line}"
    );
    assert!(words[12].starts_with("trace_id=") && words[12].len() == 9 + 32, "{line}");
}

/// Requests that carry credentials every way a client sends them: none of them is in any
/// access-log line (JSON on stdout, in the process log with everything else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_line() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let dir = ConfigDir::new("access-log-secrets").unwrap();
    config(&dir, origin.addr.port());
    let weir = start(&dir, &[]).await;
    let query = "?api_key=SECRET4&token=SECRET5&access_token=SECRET6";
    let headers: &[(&str, &str)] = &[
        ("authorization", "Bearer SECRET1"),
        ("cookie", "session=SECRET2"),
        ("apikey", "SECRET3"),
        ("x-api-key", "SECRET3B"),
        ("proxy-authorization", "Basic U0VDUkVUMTA="),
    ];
    let mut sent = 0;
    for (path, status) in [("/api/s", 200), ("/private/s", 401), ("/nowhere/s", 404)] {
        let reply =
            http_request(weir.http_addr, "GET", "shop.test", &format!("{path}{query}"), headers)
                .await
                .unwrap();
        assert_eq!(reply.status, status, "{path}");
        sent += 1;
    }
    // A good key, in the query.
    let reply =
        http_request(weir.http_addr, "GET", "shop.test", "/private/k?api_key=GOODKEY-SECRET9", &[])
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    sent += 1;
    // An absolute-form target with userinfo: the host is logged (and sent upstream)
    // without it.
    let mut raw = TcpStream::connect(weir.http_addr).await.unwrap();
    raw.write_all(
        b"GET http://user:SECRET7@shop.test/api/userinfo?token=SECRET5 HTTP/1.1\r\n\
          Host: shop.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Nor does the upstream see it (Host, X-Forwarded-Host).
    assert!(!answer.contains("SECRET7") && answer.contains("\"host\":\"shop.test\""), "{answer}");
    sent += 1;

    let lines = poll_until(WAIT, "every line", || async {
        let lines = json_lines(&weir.log());
        Ok((lines.len() >= sent).then_some(lines))
    })
    .await
    .unwrap();
    assert_eq!(lines.len(), sent, "{lines:#?}");
    let userinfo = lines.iter().find(|l| l["path"] == "/api/userinfo").unwrap();
    assert_eq!(userinfo["host"], "shop.test");
    assert_eq!(lines.iter().find(|l| l["path"] == "/private/k").unwrap()["consumer"], "mobile-app");
    let log = weir.log();
    for secret in [
        "SECRET1",
        "SECRET2",
        "SECRET3",
        "SECRET4",
        "SECRET5",
        "SECRET6",
        "SECRET7",
        "SECRET9",
        "U0VDUkVUMTA",
    ] {
        assert!(!log.contains(secret), "{secret} in weir's output:\n{log}");
    }
}

/// `--access-log` at a FIFO that is opened but never read: the writer blocks at once, the
/// queue (8192 lines) fills, and every request still completes; the rest of the lines are
/// dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_never_holds_up_requests() {
    let logs = ConfigDir::new("access-log-fifo").unwrap();
    let fifo = logs.path().join("access.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Read and write: opening does not wait for a writer, and the pipe stays open; nothing
    // is ever read.
    let _held = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let dir = ConfigDir::new("access-log-fifo-config").unwrap();
    let weir = start(&dir, &["--access-log", path_arg(&fifo)]).await;

    const CONNECTIONS: usize = 16;
    const PER_CONNECTION: usize = 750;
    let total = CONNECTIONS * PER_CONNECTION;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = weir.http_addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = KeepAliveConn::connect(addr).await.unwrap();
            for i in 0..PER_CONNECTION {
                // No route: the gateway answers, so the writer is the only slow part.
                let reply = conn.get("flood.test", &format!("/flood/{c}/{i}")).await.unwrap();
                assert_eq!(reply.status, 404);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("requests stalled")
            .unwrap();
    }
    let elapsed = started.elapsed();
    let metrics = weir.admin("/metrics").await.unwrap().text();
    let dropped = metric(&metrics, "weir_access_log_dropped_total");
    // The pipe (64 KiB) and the writer's buffer hold well under 1000 lines of ~300 bytes;
    // the queue 8192: at least the rest is dropped.
    assert!(
        dropped >= (total - 8192 - 1000) as u64 && dropped <= total as u64,
        "{dropped}\n{metrics}"
    );
    assert!(weir.admin("/healthz").await.unwrap().status == 200);
    eprintln!("{total} requests in {elapsed:?} with a stalled access log, {dropped} lines dropped");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file() {
    let origin = EchoOrigin::start("orders-v1").await.unwrap();
    let dir = ConfigDir::new("access-log-hup").unwrap();
    config(&dir, origin.addr.port());
    let logs = ConfigDir::new("access-log-hup-out").unwrap();
    let file = logs.path().join("access.log");
    let rotated = logs.path().join("access.log.1");
    let weir = start(&dir, &["--access-log", path_arg(&file)]).await;

    assert_eq!(weir.get("shop.test", "/api/before").await.unwrap().status, 200);
    line_for(&file, "/api/before", &weir).await;
    std::fs::rename(&file, &rotated).unwrap();
    let hup = Command::new("kill").args(["-HUP", &weir.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    // Lines may still reach the old file until the signal is handled; then the new one.
    let mut n = 0;
    poll_until(WAIT, "a line in the new file", || {
        n += 1;
        let path = format!("/api/after/{n}");
        let weir = &weir;
        let file = &file;
        async move {
            assert_eq!(weir.get("shop.test", &path).await?.status, 200);
            Ok(file.exists().then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", weir.log()));
    assert_eq!(weir.get("shop.test", "/api/last").await.unwrap().status, 200);
    let last = line_for(&file, "/api/last", &weir).await;
    assert_eq!(last["status"], 200);

    let old = json_lines(&std::fs::read_to_string(&rotated).unwrap());
    let new = json_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(old[0]["path"], "/api/before");
    // Every request once, in one file or the other.
    let mut paths: Vec<String> =
        old.iter().chain(&new).map(|l| l["path"].as_str().unwrap().to_owned()).collect();
    let mut expected = vec!["/api/before".to_owned()];
    expected.extend((1..=n).map(|i| format!("/api/after/{i}")));
    expected.push("/api/last".to_owned());
    paths.sort();
    expected.sort();
    assert_eq!(paths, expected);
    assert!(!new.is_empty() && new.iter().all(|l| l["path"] != "/api/before"));
    assert!(weir.log().contains("SIGHUP: reopening the access log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_log_directory_stops_the_start() {
    let dir = ConfigDir::new("access-log-nodir").unwrap();
    let missing = "/nonexistent-weir-logs/x/access.log";
    let mut args = vec![OsString::from("--config-dir"), dir.path().as_os_str().to_owned()];
    args.extend(["--access-log", missing].map(OsString::from));
    let error = WeirProcess::start_with(&args).await.unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains(&format!(
            "--access-log {missing}: directory /nonexistent-weir-logs/x does not exist"
        )),
        "{text}"
    );
}
