//! Request identity sent upstream: the request id header and W3C `traceparent`.
//!
//! A valid incoming `X-Request-ID` is kept, otherwise the gateway mints a UUID v4; the same
//! id is the `requestId` of the gateway's own error bodies. A valid incoming `traceparent`
//! is forwarded unchanged; a missing or malformed one is replaced by a new sampled trace.
//!
//! With tracing on ([`ensure_traced_identity`]) the sampling decision is made here,
//! parent-based: a valid client `traceparent` is followed (its sampled flag decides), a
//! new trace is sampled by the ratio on its trace id. The trace id is kept either way, so
//! the access log's `trace_id` and the upstream's context agree. A sampled request gets a
//! [`TraceRecord`] and its own span id; each upstream attempt then sends a `traceparent`
//! naming the attempt's span. `tracestate` passes through unchanged.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::error::{X_REQUEST_ID, valid_request_id};
use crate::observe::otel::{Sampler, TraceRecord};

/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// `tracestate` (W3C Trace Context).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Makes sure `headers` carries a valid request id and a valid `traceparent`, and returns
/// the request id.
pub fn ensure_request_identity(headers: &mut HeaderMap) -> HeaderValue {
    // `insert` also collapses duplicates: only the value chosen here goes upstream.
    let id = match headers.get(X_REQUEST_ID) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => new_request_id(),
    };
    headers.insert(X_REQUEST_ID, id.clone());
    // W3C: several traceparent headers make the context invalid.
    let traceparent = match headers.get(TRACEPARENT) {
        Some(v) if valid_traceparent(v) && headers.get_all(TRACEPARENT).iter().count() == 1 => {
            v.clone()
        }
        _ => new_traceparent(),
    };
    headers.insert(TRACEPARENT, traceparent);
    id
}

/// [`ensure_request_identity`] with tracing on: the request id, and the trace record when
/// the request is sampled (parent-based on a valid client `traceparent`, else `sampler`
/// on a new trace id). The `traceparent` left in `headers` is the client's when it is not
/// sampled (a new trace gets flags `00`), and names the gateway's span when it is.
pub fn ensure_traced_identity(
    headers: &mut HeaderMap,
    sampler: Sampler,
) -> (HeaderValue, Option<Box<TraceRecord>>) {
    let id = match headers.get(X_REQUEST_ID) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => new_request_id(),
    };
    headers.insert(X_REQUEST_ID, id.clone());
    let client = match headers.get(TRACEPARENT) {
        Some(v) if valid_traceparent(v) && headers.get_all(TRACEPARENT).iter().count() == 1 => {
            parse_traceparent(v)
        }
        _ => None,
    };
    let (trace_id, parent, sampled) = match client {
        Some(context) => context,
        None => {
            let trace_id = fastrand::u128(1..);
            (trace_id, 0, sampler.sampled(trace_id))
        }
    };
    if !sampled {
        if client.is_none() {
            let span = crate::observe::otel::record::new_span_id();
            headers.insert(TRACEPARENT, traceparent(trace_id, span, false));
        }
        return (id, None);
    }
    let state = headers.get(TRACESTATE).cloned();
    let record = Box::new(TraceRecord::new(trace_id, parent, state));
    headers.insert(TRACEPARENT, traceparent(trace_id, record.span_id, true));
    (id, Some(record))
}

/// The trace id, parent id and sampled flag of a valid `traceparent`.
fn parse_traceparent(value: &HeaderValue) -> Option<(u128, u64, bool)> {
    let b = value.as_bytes();
    let text = std::str::from_utf8(b.get(..55)?).ok()?;
    let trace = u128::from_str_radix(text.get(3..35)?, 16).ok()?;
    let parent = u64::from_str_radix(text.get(36..52)?, 16).ok()?;
    let flags = u8::from_str_radix(text.get(53..55)?, 16).ok()?;
    Some((trace, parent, flags & 1 == 1))
}

/// A fresh request id: a UUID v4 (hyphenated, lower case) from the thread's `fastrand`
/// generator (wyrand: a few instructions per draw, no lock, no system call), formatted in a
/// stack buffer. Request ids identify, they do not authenticate: they need uniqueness, not
/// unpredictability. (A `uuid::Uuid::new_v4()` draws from `rand`'s ChaCha thread generator:
/// ~600 instructions per id, measured with callgrind.)
pub fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_ne_bytes()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A new sampled `traceparent`: version 00, random non-zero trace id and parent id from the
/// thread's `fastrand` generator.
fn new_traceparent() -> HeaderValue {
    traceparent(fastrand::u128(..).max(1), fastrand::u64(..).max(1), true)
}

/// `00-<trace:032x>-<span:016x>-01` (`-00` when not `sampled`), written without
/// `core::fmt` (on every request that arrives without a valid `traceparent`).
pub(crate) fn traceparent(trace: u128, span: u64, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    if !sampled {
        buf[54] = b'0';
    }
    for i in 0..32 {
        buf[3 + i] = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        buf[36 + i] = HEX[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// W3C Trace Context version-00 shape: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, with
/// non-zero trace and parent ids. Future versions (not `ff`) are accepted by prefix.
pub fn valid_traceparent(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let nonzero = |s: &[u8]| s.iter().any(|c| *c != b'0');
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(version)
        && version != b"ff"
        && (version != b"00" || b.len() == 55)
        && hex(trace)
        && nonzero(trace)
        && hex(parent)
        && nonzero(parent)
        && hex(flags)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keeps_valid_and_mints_missing_identity() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-1"));
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(tp));
        assert_eq!(ensure_request_identity(&mut h), "abc-1");
        assert_eq!(h.get(TRACEPARENT).unwrap(), tp);

        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id with spaces"));
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let id = ensure_request_identity(&mut h);
        assert_eq!(id.len(), 36);
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(ensure_request_identity(&mut HeaderMap::new()), id);
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), &id);
        assert!(valid_traceparent(h.get(TRACEPARENT).unwrap()));
        assert_ne!(h.get(TRACEPARENT).unwrap(), "garbage");
    }

    #[test]
    fn traceparent_matches_the_format_reference() {
        let cases = [
            (1u128, 1u64),
            (u128::MAX, u64::MAX),
            (0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7),
            (0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0x8000_0000_0000_000a),
        ];
        for (trace, span) in cases {
            let reference = format!("00-{trace:032x}-{span:016x}-01");
            let minted = traceparent(trace, span, true);
            assert_eq!(minted, reference.as_str());
            assert!(valid_traceparent(&minted));
        }
    }

    #[test]
    fn traceparent_validation() {
        let ok = |s: &'static str| valid_traceparent(&HeaderValue::from_static(s));
        assert!(ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!ok("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!ok("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
        assert!(!ok("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!ok("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        assert!(ok("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
    }
}
