//! One access-log line from a [`RequestRecord`]: a JSON object (the API.md fields in their
//! order, then `completed` and `grpc_status`) or a human line. Runs on the writer thread,
//! into a reused buffer.
//!
//! No field can carry a credential: the record has no headers and no query string, and the
//! host is written without any `user:password@` prefix. JSON strings are escaped by
//! serde_json; in the text format every byte outside printable ASCII (and `"`, `\`, space)
//! is written as `\xNN`, so a line is always one line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::AccessLogFormat;
use crate::observe::RequestRecord;

/// Appends `record` as one line (ending in `\n`) to `out`; `scratch` is reused for values
/// that are formatted before escaping.
pub(super) fn line(
    format: AccessLogFormat,
    record: &RequestRecord,
    out: &mut Vec<u8>,
    scratch: &mut String,
) {
    match format {
        AccessLogFormat::Json => json(record, out, scratch),
        AccessLogFormat::Text => text(record, out, scratch),
    }
    out.push(b'\n');
}

/// The JSON object.
fn json(r: &RequestRecord, out: &mut Vec<u8>, scratch: &mut String) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_millis(r.time, out);
    out.extend_from_slice(b"\",\"request_id\":");
    json_str(&lossy(r.request_id.as_bytes()), out);
    out.extend_from_slice(b",\"trace_id\":");
    match trace_id(r.traceparent.as_ref()) {
        Some(id) => {
            out.push(b'"');
            out.extend_from_slice(id);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client_ip\":\"");
    ip(r.client_ip, out);
    out.extend_from_slice(b"\",\"method\":");
    json_str(r.method.as_str(), out);
    out.extend_from_slice(b",\"host\":");
    json_str(&lossy(without_userinfo(r.host.as_bytes())), out);
    out.extend_from_slice(b",\"path\":");
    json_str(&r.path, out);
    out.extend_from_slice(b",\"status\":");
    int(r.status.as_u16(), out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(r.duration, out);
    out.extend_from_slice(b",\"route\":");
    json_display(r.route.as_ref(), out, scratch);
    out.extend_from_slice(b",\"rule\":");
    json_opt_str(r.rule.as_deref(), out);
    out.extend_from_slice(b",\"backend\":");
    json_display(r.backend.as_ref(), out, scratch);
    out.extend_from_slice(b",\"upstream\":");
    match r.upstream {
        Some(addr) => {
            out.push(b'"');
            socket_addr(addr, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_ms\":");
    match r.upstream_duration {
        Some(d) => millis(d, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"retries\":");
    int(r.retries, out);
    out.extend_from_slice(b",\"consumer\":");
    json_opt_str(r.consumer.as_deref(), out);
    out.extend_from_slice(b",\"bytes_in\":");
    int(r.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    int(r.bytes_out, out);
    out.extend_from_slice(b",\"cache\":");
    json_opt_str(r.cache, out);
    out.extend_from_slice(if r.rate_limited {
        b",\"rate_limited\":true,\"error\":"
    } else {
        b",\"rate_limited\":false,\"error\":"
    });
    json_opt_str(r.error, out);
    out.extend_from_slice(if r.completed {
        b",\"completed\":true,\"grpc_status\":"
    } else {
        b",\"completed\":false,\"grpc_status\":"
    });
    match r.grpc_status {
        Some(code) => int(code, out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// The human line: `TIME CLIENT "METHOD HOSTPATH" STATUS DURATIONms route=… rule=…
/// backend=… upstream=… consumer=… request_id=… trace_id=… in=N out=N error=…`, `-` for
/// what is unknown; ` grpc_status=N` and ` incomplete` when they apply.
fn text(r: &RequestRecord, out: &mut Vec<u8>, scratch: &mut String) {
    rfc3339_millis(r.time, out);
    out.push(b' ');
    ip(r.client_ip, out);
    out.extend_from_slice(b" \"");
    text_bytes(r.method.as_str().as_bytes(), out);
    out.push(b' ');
    text_bytes(without_userinfo(r.host.as_bytes()), out);
    text_bytes(r.path.as_bytes(), out);
    out.extend_from_slice(b"\" ");
    int(r.status.as_u16(), out);
    out.push(b' ');
    millis(r.duration, out);
    out.extend_from_slice(b"ms route=");
    text_display(r.route.as_ref(), out, scratch);
    out.extend_from_slice(b" rule=");
    text_opt(r.rule.as_deref(), out);
    out.extend_from_slice(b" backend=");
    text_display(r.backend.as_ref(), out, scratch);
    out.extend_from_slice(b" upstream=");
    match r.upstream {
        Some(addr) => socket_addr(addr, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" consumer=");
    text_opt(r.consumer.as_deref(), out);
    out.extend_from_slice(b" request_id=");
    match r.request_id.as_bytes() {
        [] => out.push(b'-'),
        id => text_bytes(id, out),
    }
    out.extend_from_slice(b" trace_id=");
    out.extend_from_slice(trace_id(r.traceparent.as_ref()).unwrap_or(b"-"));
    out.extend_from_slice(b" in=");
    int(r.bytes_in, out);
    out.extend_from_slice(b" out=");
    int(r.bytes_out, out);
    out.extend_from_slice(b" error=");
    text_opt(r.error, out);
    if let Some(code) = r.grpc_status {
        out.extend_from_slice(b" grpc_status=");
        int(code, out);
    }
    if !r.completed {
        out.extend_from_slice(b" incomplete");
    }
}

/// `bytes` without a `user:password@` prefix (an absolute-form target's userinfo).
fn without_userinfo(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|b| *b == b'@') {
        Some(at) => &bytes[at + 1..],
        None => bytes,
    }
}

/// A header value's text: UTF-8 as is, anything else with replacement characters.
fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The 32 hex digits of a `traceparent` (`00-TRACEID-PARENTID-FLAGS`), when well formed.
pub(super) fn trace_id(traceparent: Option<&HeaderValue>) -> Option<&[u8]> {
    let bytes = traceparent?.as_bytes();
    let id = bytes.get(3..35)?;
    let well_formed = bytes.get(2) == Some(&b'-')
        && bytes.get(35) == Some(&b'-')
        && id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    well_formed.then_some(id)
}

/// A JSON string (quoted, escaped).
fn json_str(value: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn json_opt_str(value: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Some(v) => json_str(v, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_display(value: Option<&impl std::fmt::Display>, out: &mut Vec<u8>, scratch: &mut String) {
    match value {
        Some(v) => {
            scratch.clear();
            let _ = write!(scratch, "{v}");
            json_str(scratch, out);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Printable ASCII as is; space, `"`, `\`, control characters and non-ASCII bytes as
/// `\xNN`.
fn text_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn text_opt(value: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Some(v) if !v.is_empty() => text_bytes(v.as_bytes(), out),
        _ => out.push(b'-'),
    }
}

fn text_display(value: Option<&impl std::fmt::Display>, out: &mut Vec<u8>, scratch: &mut String) {
    match value {
        Some(v) => {
            scratch.clear();
            let _ = write!(scratch, "{v}");
            text_bytes(scratch.as_bytes(), out);
        }
        None => out.push(b'-'),
    }
}

/// An integer in decimal (`itoa`: no `core::fmt` on the writer thread's per-line path).
fn int(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` in decimal, zero-padded to `width` digits (`n` has at most `width` digits here).
fn padded(n: u64, width: usize, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits.len())));
    out.extend_from_slice(digits);
}

/// An IP address as text (IPv4 without `core::fmt`; IPv6 through `Display`, which also
/// does the `::` compression).
fn ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => ipv4(v4, out),
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Dotted-quad text of an IPv4 address.
fn ipv4(v4: Ipv4Addr, out: &mut Vec<u8>) {
    for (k, octet) in v4.octets().into_iter().enumerate() {
        if k > 0 {
            out.push(b'.');
        }
        int(octet, out);
    }
}

/// `1.2.3.4:80` or `[::1]:80`.
fn socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            ipv4(*v4.ip(), out);
            out.push(b':');
            int(v4.port(), out);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Milliseconds with microsecond precision: `12.345`.
fn millis(d: Duration, out: &mut Vec<u8>) {
    let micros = d.as_micros();
    int(micros / 1000, out);
    out.push(b'.');
    padded((micros % 1000) as u64, 3, out);
}

/// `2026-12-02T16:00:00.123Z` (UTC, milliseconds); times before 1970 as the epoch.
pub(super) fn rfc3339_millis(time: SystemTime, out: &mut Vec<u8>) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    padded(year, 4, out);
    out.push(b'-');
    padded(month, 2, out);
    out.push(b'-');
    padded(day, 2, out);
    out.push(b'T');
    padded(rem / 3600, 2, out);
    out.push(b':');
    padded(rem % 3600 / 60, 2, out);
    out.push(b':');
    padded(rem % 60, 2, out);
    out.push(b'.');
    padded(u64::from(since.subsec_millis()), 3, out);
    out.push(b'Z');
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
pub(super) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod writers {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn addresses_and_numbers_match_display() {
        for ip in ["0.0.0.0", "1.2.3.4", "10.100.9.255", "255.255.255.255", "::1", "fe80::1:2"] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(text(|o| super::ip(addr, o)), addr.to_string());
            let sock = SocketAddr::new(addr, 8080);
            assert_eq!(text(|o| socket_addr(sock, o)), sock.to_string());
        }
        for micros in [0u64, 7, 999, 1_000, 1_001, 12_345, 9_999_999] {
            let d = Duration::from_micros(micros);
            let expected = format!("{}.{:03}", micros / 1000, micros % 1000);
            assert_eq!(text(|o| millis(d, o)), expected);
        }
        assert_eq!(text(|o| padded(7, 4, o)), "0007");
        assert_eq!(text(|o| padded(2026, 4, o)), "2026");
        assert_eq!(text(|o| int(u64::MAX, o)), u64::MAX.to_string());
    }

    #[test]
    fn timestamps_match_the_formatted_reference() {
        for secs in [0u64, 59, 951_782_400, 1_796_227_199, 4_102_444_800 + 86_399] {
            for ms in [0u64, 5, 123, 999] {
                let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
                let (y, mo, d) = civil_from_days(secs / 86_400);
                let rem = secs % 86_400;
                let expected = format!(
                    "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60
                );
                assert_eq!(text(|o| rfc3339_millis(t, o)), expected);
            }
        }
    }
}
