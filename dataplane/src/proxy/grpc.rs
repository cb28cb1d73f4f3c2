//! gRPC at the edge: requests are recognised by `content-type: application/grpc*` on
//! HTTP/2; the gateway's own answers to them are gRPC answers (HTTP 200, trailers-only:
//! `grpc-status` and a percent-encoded `grpc-message` in the headers, END_STREAM), and the
//! `grpc-timeout` deadline bounds the upstream exchange.
//!
//! Status mapping (the gateway's HTTP status → `grpc-status`): 401 → 16 UNAUTHENTICATED,
//! 403 → 7 PERMISSION_DENIED, 404 (no route) → 5 NOT_FOUND, 429 → 8 RESOURCE_EXHAUSTED,
//! 502/503 → 14 UNAVAILABLE, 504 → 4 DEADLINE_EXCEEDED, 400/405/413 → 3 INVALID_ARGUMENT /
//! 12 UNIMPLEMENTED / 8 RESOURCE_EXHAUSTED, 501 → 12 UNIMPLEMENTED, anything else → 2
//! UNKNOWN (gRPC's own HTTP-to-gRPC mapping where the contract says nothing).

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::body::ProxyBody;

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Whether a request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+proto` etc. (gRPC-Web's `application/grpc-web*` is not gRPC).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The `grpc-status` code for an answer of the gateway with HTTP `status`.
pub fn status_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        200 => 0,
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        405 | 501 => 12,
        413 | 429 => 8,
        502 | 503 => 14,
        504 => 4,
        _ => 2,
    }
}

/// A `grpc-status` code as a header value (without formatting for the usual codes).
pub fn status_value(code: u8) -> HeaderValue {
    const TEXT: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    match TEXT.get(usize::from(code)) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(u16::from(code)),
    }
}

/// The `grpc-timeout` deadline of a request (`1-8 digits` + unit `H M S m u n`), if valid.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-message` text: percent-encoding of every byte outside printable ASCII and `%`.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    HeaderValue::from_maybe_shared(Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static("error"))
}

/// Turns a gateway answer into a trailers-only gRPC answer: HTTP 200,
/// `content-type: application/grpc`, `grpc-status` from the answer's status and
/// `grpc-message` (the given text, else the status's reason), no body. Other headers
/// (`x-request-id`, rate-limit headers, `WWW-Authenticate`…) are kept.
pub fn into_grpc_answer(response: &mut Response<ProxyBody>, message: Option<&str>) {
    let status = response.status();
    if status == StatusCode::OK && response.headers().contains_key(GRPC_STATUS) {
        return;
    }
    let code = status_code(status);
    let text = message.or(status.canonical_reason()).unwrap_or("error");
    *response.status_mut() = StatusCode::OK;
    *response.body_mut() = ProxyBody::empty();
    let headers = response.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, status_value(code));
    headers.insert(GRPC_MESSAGE, encode_message(text));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc(&headers(CONTENT_TYPE, "application/grpc")));
        assert!(is_grpc(&headers(CONTENT_TYPE, "application/grpc+proto")));
        assert!(is_grpc(&headers(CONTENT_TYPE, "Application/GRPC;charset=utf-8")));
        assert!(!is_grpc(&headers(CONTENT_TYPE, "application/grpc-web")));
        assert!(!is_grpc(&headers(CONTENT_TYPE, "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_parse_every_unit_and_refuse_the_rest() {
        let t = |v: &'static str| timeout(&headers(GRPC_TIMEOUT, v));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(t("99999999S"), Some(Duration::from_secs(99_999_999)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no route"), "no route");
        assert_eq!(encode_message("100% ü\n"), "100%25 %C3%BC%0A");
    }

    #[test]
    fn gateway_answers_become_trailers_only() {
        let mut r = Response::new(ProxyBody::full(Bytes::from_static(b"{}")));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert("x-request-id", HeaderValue::from_static("id"));
        into_grpc_answer(&mut r, Some("rate limit exceeded"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(r.headers()[GRPC_STATUS], "8");
        assert_eq!(r.headers()[GRPC_MESSAGE], "rate limit exceeded");
        assert_eq!(r.headers()["x-request-id"], "id");
        assert!(http_body::Body::is_end_stream(r.body()));
        for (status, code) in [(401, 16), (403, 7), (404, 5), (502, 14), (503, 14), (504, 4)] {
            assert_eq!(status_code(StatusCode::from_u16(status).unwrap()), code, "{status}");
        }
    }
}
