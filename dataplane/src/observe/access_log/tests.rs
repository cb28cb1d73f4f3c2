#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, StatusCode};

use super::format::{civil_from_days, line, rfc3339_millis, trace_id};
use super::*;
use crate::snapshot::{BackendKey, ObjectKey};

/// 2026-12-02T16:00:00.123Z
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_227_200_123)
}

fn proxied() -> RequestRecord {
    RequestRecord {
        time: at(),
        request_id: HeaderValue::from_static("req-1"),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        method: Method::GET,
        host: HeaderValue::from_static("example.com"),
        path: "/orders/7".into(),
        route: Some(ObjectKey::new("default", "orders")),
        rule: Some("0".into()),
        status: StatusCode::OK,
        duration: Duration::from_micros(12_345),
        upstream_duration: Some(Duration::from_micros(10_007)),
        backend: Some(BackendKey {
            namespace: "default".into(),
            service: "orders-v1".into(),
            port: 80,
        }),
        upstream: Some(SocketAddr::from(([127, 0, 0, 1], 9001))),
        retries: 1,
        consumer: Some("mobile".into()),
        bytes_in: 5,
        bytes_out: 123,
        rate_limited: false,
        error: None,
        completed: true,
        traceparent: Some(HeaderValue::from_static(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )),
        stats: None,
        trace: None,
        cache: None,
        grpc_status: None,
    }
}

fn answered() -> RequestRecord {
    RequestRecord {
        route: None,
        rule: None,
        status: StatusCode::NOT_FOUND,
        upstream_duration: None,
        backend: None,
        upstream: None,
        retries: 0,
        consumer: None,
        bytes_in: 0,
        bytes_out: 9,
        error: Some("no_route"),
        traceparent: None,
        ..proxied()
    }
}

fn render(format: AccessLogFormat, record: &RequestRecord) -> String {
    let mut out = Vec::new();
    line(format, record, &mut out, &mut String::new());
    String::from_utf8(out).unwrap()
}

#[test]
fn json_line_has_the_api_fields_in_order() {
    let text = render(AccessLogFormat::Json, &proxied());
    assert_eq!(
        text,
        concat!(
            r#"{"time":"2026-12-02T16:00:00.123Z","request_id":"req-1","#,
            r#""trace_id":"0af7651916cd43dd8448eb211c80319c","client_ip":"127.0.0.1","#,
            r#""method":"GET","host":"example.com","path":"/orders/7","status":200,"#,
            r#""duration_ms":12.345,"route":"default/orders","rule":"0","#,
            r#""backend":"default/orders-v1:80","upstream":"127.0.0.1:9001","#,
            r#""upstream_ms":10.007,"retries":1,"consumer":"mobile","bytes_in":5,"#,
            r#""bytes_out":123,"cache":null,"rate_limited":false,"error":null,"#,
            r#""completed":true,"grpc_status":null}"#,
            "\n"
        )
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["duration_ms"].as_f64(), Some(12.345));
}

#[test]
fn json_line_of_a_gateway_answer_has_nulls() {
    let value: serde_json::Value =
        serde_json::from_str(&render(AccessLogFormat::Json, &answered())).unwrap();
    for field in ["trace_id", "route", "rule", "backend", "upstream", "upstream_ms", "consumer"] {
        assert!(value[field].is_null(), "{field}: {value}");
    }
    assert_eq!(value["error"], "no_route");
    assert_eq!(value["status"], 404);
    let limited = RequestRecord {
        status: StatusCode::TOO_MANY_REQUESTS,
        rate_limited: true,
        error: Some("rate_limited"),
        grpc_status: Some(8),
        ..answered()
    };
    let value: serde_json::Value =
        serde_json::from_str(&render(AccessLogFormat::Json, &limited)).unwrap();
    assert_eq!(
        (value["rate_limited"].as_bool(), value["grpc_status"].as_u64()),
        (Some(true), Some(8))
    );
}

#[test]
fn text_line() {
    assert_eq!(
        render(AccessLogFormat::Text, &proxied()),
        "2026-12-02T16:00:00.123Z 127.0.0.1 \"GET example.com/orders/7\" 200 12.345ms \
         route=default/orders rule=0 backend=default/orders-v1:80 upstream=127.0.0.1:9001 \
         consumer=mobile request_id=req-1 trace_id=0af7651916cd43dd8448eb211c80319c in=5 \
         out=123 error=-\n"
    );
    let incomplete = RequestRecord { completed: false, grpc_status: Some(14), ..answered() };
    assert_eq!(
        render(AccessLogFormat::Text, &incomplete),
        "2026-12-02T16:00:00.123Z 127.0.0.1 \"GET example.com/orders/7\" 404 12.345ms \
         route=- rule=- backend=- upstream=- consumer=- request_id=req-1 trace_id=- in=0 \
         out=9 error=no_route grpc_status=14 incomplete\n"
    );
}

#[test]
fn hostile_values_stay_on_one_line_and_lose_userinfo() {
    let record = RequestRecord {
        host: HeaderValue::from_bytes(b"user:SECRET@evil\t\"host\xff").unwrap(),
        request_id: HeaderValue::from_bytes(b"a\"b\\c d\t").unwrap(),
        path: "/p\u{1}\n\"x\"\\é".into(),
        consumer: Some("we\nird".into()),
        ..proxied()
    };
    let json = render(AccessLogFormat::Json, &record);
    assert_eq!(json.matches('\n').count(), 1, "{json}");
    assert!(!json.contains("SECRET"), "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["host"], "evil\t\"host\u{fffd}");
    assert_eq!(value["request_id"], "a\"b\\c d\t");
    assert_eq!(value["path"], "/p\u{1}\n\"x\"\\é");
    assert_eq!(value["consumer"], "we\nird");

    let text = render(AccessLogFormat::Text, &record);
    assert!(!text.contains("SECRET"), "{text}");
    let body = text.strip_suffix('\n').unwrap();
    assert!(body.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()), "{text}");
    assert!(
        body.contains(r#""GET evil\x09\x22host\xff/p\x01\x0a\x22x\x22\x5c\xc3\xa9" 200"#),
        "{text}"
    );
    assert!(body.contains(r"request_id=a\x22b\x5cc\x20d\x09 "), "{text}");
}

#[test]
fn trace_id_only_from_a_well_formed_traceparent() {
    let tp = |s: &'static str| HeaderValue::from_static(s);
    let good = tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(trace_id(Some(&good)), Some(&b"0af7651916cd43dd8448eb211c80319c"[..]));
    for bad in [
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319",
        "00-0af7651916cd43dd8448eb211c80319c",
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c8031 \"-b7ad6b7169203331-01",
    ] {
        assert_eq!(trace_id(Some(&tp(bad))), None, "{bad}");
    }
    assert_eq!(trace_id(None), None);
}

#[test]
fn dates() {
    let show = |t: SystemTime| {
        let mut out = Vec::new();
        rfc3339_millis(t, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(show(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(show(at()), "2026-12-02T16:00:00.123Z");
    assert_eq!(show(UNIX_EPOCH + Duration::from_secs(951_825_599)), "2000-02-29T11:59:59.000Z");
    assert_eq!(show(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "2100-02-28T23:59:59.000Z");
    assert_eq!(show(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
    // Every day from 1970 to 2500 follows the previous one.
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut prev = civil_from_days(0);
    assert_eq!(prev, (1970, 1, 1));
    for days in 1..194_000 {
        let (y, m, d) = civil_from_days(days);
        let month_len = match prev.1 {
            2 if leap(prev.0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let expected = if prev.2 < month_len {
            (prev.0, prev.1, prev.2 + 1)
        } else if prev.1 < 12 {
            (prev.0, prev.1 + 1, 1)
        } else {
            (prev.0 + 1, 1, 1)
        };
        assert_eq!((y, m, d), expected, "day {days}");
        prev = (y, m, d);
    }
}

fn temp_dir(label: &str) -> std::path::PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir()
        .join(format!("weir-access-log-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (up to 10 s) until `path` holds `n` lines, and returns them.
fn lines_of(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..500 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text.lines().map(str::to_owned).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never had {n} lines: {:?}", path.display(), std::fs::read_to_string(path));
}

#[test]
fn writes_to_a_file_and_reopens_it() {
    let dir = temp_dir("reopen");
    let path = dir.join("access.log");
    let log = AccessLog::start(AccessLogOptions {
        target: AccessLogTarget::Path(path.clone()),
        format: AccessLogFormat::Json,
        queue: 64,
    })
    .unwrap();
    for i in 0..3 {
        log.on_request_end(&RequestRecord { path: format!("/before/{i}").into(), ..proxied() });
    }
    let before = lines_of(&path, 3);
    assert!(before[2].contains(r#""path":"/before/2""#), "{before:?}");

    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    log.on_request_end(&RequestRecord { path: "/after".into(), ..proxied() });
    let after = lines_of(&path, 1);
    assert_eq!(after.len(), 1);
    assert!(after[0].contains(r#""path":"/after""#), "{after:?}");
    assert_eq!(std::fs::read_to_string(&rotated).unwrap().lines().count(), 3);
    assert_eq!((log.written(), log.dropped()), (4, 0));

    // A reopen that fails (the directory is gone) keeps the old file.
    std::fs::remove_dir_all(&dir).unwrap();
    log.reopen();
    log.on_request_end(&proxied());
    for _ in 0..500 {
        if log.written() == 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!((log.written(), log.dropped()), (5, 0));
}

#[tokio::test]
async fn flush_waits_for_every_queued_line() {
    let dir = temp_dir("flush");
    let path = dir.join("access.log");
    let log = AccessLog::start(AccessLogOptions {
        target: AccessLogTarget::Path(path.clone()),
        format: AccessLogFormat::Text,
        queue: 1000,
    })
    .unwrap();
    for i in 0..500 {
        log.on_request_end(&RequestRecord { path: format!("/{i}").into(), ..proxied() });
    }
    assert!(log.flush(Duration::from_secs(10)).await);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 500);
    assert!(text.lines().last().unwrap().contains(" \"GET example.com/499\" "), "{text}");
    assert_eq!((log.written(), log.dropped()), (500, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let error = AccessLog::start(AccessLogOptions {
        target: AccessLogTarget::Path("/nonexistent-weir-dir/sub/access.log".into()),
        format: AccessLogFormat::Json,
        queue: 8,
    })
    .unwrap_err();
    assert_eq!(error.to_string(), "directory /nonexistent-weir-dir/sub does not exist");
}

#[test]
fn the_metrics_are_registered() {
    let log = AccessLog::start(AccessLogOptions {
        target: AccessLogTarget::Path(temp_dir("metrics").join("a.log")),
        format: AccessLogFormat::Text,
        queue: 8,
    })
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    log.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("weir_access_log_dropped_total 0"), "{text}");
    assert!(text.contains("weir_access_log_lines_total 0"), "{text}");
}

/// Formatting cost per line (run with `--ignored --nocapture`, release).
#[test]
#[ignore = "a measurement"]
fn formatting_cost() {
    let record = proxied();
    let mut out = Vec::with_capacity(1 << 20);
    let mut scratch = String::new();
    let n = 1_000_000;
    let started = std::time::Instant::now();
    for _ in 0..n {
        out.clear();
        line(AccessLogFormat::Json, &record, &mut out, &mut scratch);
    }
    let json = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        out.clear();
        line(AccessLogFormat::Text, &record, &mut out, &mut scratch);
    }
    let text = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(super::for_the_line(std::hint::black_box(&record)));
    }
    let copy = started.elapsed() / n;
    println!(
        "json {json:?}/line, text {text:?}/line, record copy {copy:?}; record {} bytes",
        std::mem::size_of::<RequestRecord>()
    );
}
