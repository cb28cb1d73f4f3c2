//! A finished request's [`TraceRecord`] as OTLP spans (on the exporter's task): the
//! SERVER span of the request (OpenTelemetry HTTP semantic conventions) and its children
//! `auth`, `rate_limit` and one CLIENT `upstream attempt` per attempt.

use super::proto::{self as attr, STATUS_ERROR, Span, Status, kind};
use super::record::{Phase, TraceRecord};
use crate::observe::RequestRecord;

/// W3C trace flags: sampled.
const SAMPLED: u32 = 1;

/// Appends the spans of `record` (a sampled request) to `out`.
pub fn spans_of(record: &RequestRecord, trace: &TraceRecord, out: &mut Vec<Span>) {
    let start = super::record::nanos_of(record.time);
    let end = start.saturating_add(record.duration.as_nanos() as u64).max(start);
    let trace_id = trace.trace_id.to_be_bytes().to_vec();
    let trace_state = trace
        .trace_state
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let server = trace.span_id.to_be_bytes().to_vec();
    let child = |span_id: u64, name: &str, kind: i32, start: u64, end: u64| Span {
        trace_id: trace_id.clone(),
        span_id: span_id.to_be_bytes().to_vec(),
        trace_state: trace_state.clone(),
        parent_span_id: server.clone(),
        name: name.to_owned(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes: Vec::new(),
        status: None,
        flags: SAMPLED,
        ..Span::default()
    };

    let mut attributes = vec![
        attr::string("http.request.method", record.method.as_str()),
        attr::string("url.path", &*record.path),
        attr::int("http.response.status_code", i64::from(record.status.as_u16())),
        attr::string("client.address", record.client_ip.to_string()),
    ];
    let host = String::from_utf8_lossy(record.host.as_bytes());
    match host.parse::<http::uri::Authority>() {
        Ok(authority) => {
            attributes.push(attr::string("server.address", authority.host()));
            if let Some(port) = authority.port_u16() {
                attributes.push(attr::int("server.port", i64::from(port)));
            }
        }
        Err(_) if !host.is_empty() => attributes.push(attr::string("server.address", host)),
        Err(_) => {}
    }
    if let Some(route) = &record.route {
        attributes.push(attr::string("weir.route", route.to_string()));
    }
    // Semantic conventions: `{method} {http.route}`, the method alone without a route.
    let name = match trace.route_path.as_deref().filter(|_| record.route.is_some()) {
        Some(template) => {
            attributes.push(attr::string("http.route", template));
            format!("{} {template}", record.method)
        }
        None => record.method.as_str().to_owned(),
    };
    if let Some(rule) = &record.rule {
        attributes.push(attr::string("weir.rule", &**rule));
    }
    if let Some(backend) = &record.backend {
        attributes.push(attr::string("weir.backend", backend.to_string()));
    }
    if let Some(consumer) = &record.consumer {
        attributes.push(attr::string("weir.consumer", &**consumer));
    }
    if let Some(error) = record.error {
        attributes.push(attr::string("error.type", error));
    }
    if record.retries > 0 {
        attributes.push(attr::int("weir.retries", i64::from(record.retries)));
    }
    let failed = record.status.is_server_error();
    out.push(Span {
        parent_span_id: if trace.parent == 0 {
            Vec::new()
        } else {
            trace.parent.to_be_bytes().to_vec()
        },
        name,
        kind: kind::SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: failed.then(|| error_status(record.error.unwrap_or(""))),
        ..child(trace.span_id, "", kind::SERVER, start, end)
    });

    let phase = |p: &Phase, name: &str, outcome_key: &str| {
        let mut span = child(p.span_id, name, kind::INTERNAL, p.start, p.end);
        span.attributes.push(attr::string(outcome_key, p.outcome));
        span
    };
    if let Some(auth) = &trace.auth {
        let mut span = phase(auth, "auth", "weir.auth.outcome");
        if !auth.methods.is_empty() {
            span.attributes.push(attr::string("weir.auth.methods", auth.methods));
        }
        if let Some(consumer) = &record.consumer {
            span.attributes.push(attr::string("weir.consumer", &**consumer));
        }
        if auth.outcome != "authenticated" {
            span.status = Some(error_status(auth.outcome));
        }
        out.push(span);
    }
    if let Some(rate_limit) = &trace.rate_limit {
        out.push(phase(rate_limit, "rate_limit", "weir.ratelimit.decision"));
    }
    for attempt in trace.attempts() {
        let ended = if attempt.end == 0 { end } else { attempt.end };
        let mut span =
            child(attempt.span_id, "upstream attempt", kind::CLIENT, attempt.start, ended);
        span.attributes.extend([
            attr::string("http.request.method", record.method.as_str()),
            attr::string("server.address", attempt.endpoint.ip().to_string()),
            attr::int("server.port", i64::from(attempt.endpoint.port())),
        ]);
        if attempt.retry > 0 {
            span.attributes.push(attr::int("http.request.resend_count", i64::from(attempt.retry)));
        }
        if let Some(backend) = &record.backend {
            span.attributes.push(attr::string("weir.backend", backend.to_string()));
        }
        if let Some(status) = attempt.status {
            span.attributes.push(attr::int("http.response.status_code", i64::from(status)));
            if status >= 500 {
                span.status = Some(error_status(""));
            }
        }
        let error = attempt.error.or((attempt.end == 0).then_some("cancelled"));
        if let Some(error) = error {
            span.attributes.push(attr::string("error.type", error));
            span.status = Some(error_status(error));
        }
        out.push(span);
    }
}

fn error_status(message: &str) -> Status {
    Status { message: message.to_owned(), code: STATUS_ERROR }
}
