//! What a sampled request records on its way (one [`TraceRecord`] allocation per sampled
//! request, nothing for the others): its ids, the authentication and rate-limit phases and
//! each upstream attempt, as wall-clock nanoseconds.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::filter::Flow;
use crate::proxy::ProxyError;
use crate::snapshot::Filter;

/// Upstream attempts recorded per request; later ones are not (a retry policy rarely
/// allows more).
pub const MAX_ATTEMPTS: usize = 8;

/// Now, in nanoseconds since the Unix epoch (span times).
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A new non-zero span id.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// The ratio sampler for new traces (`TraceIdRatioBased`: the trace id's low 64 bits,
/// shifted right by one, under `ratio × 2^63`).
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    bound: u64,
}

impl Sampler {
    /// Samples `ratio` (clamped to 0.0-1.0; NaN samples nothing) of new traces.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.clamp(0.0, 1.0) };
        // 2^63 fits an f64 exactly; the cast saturates at 1.0.
        Sampler { bound: (ratio * (1u64 << 63) as f64) as u64 }
    }

    /// Whether a new trace with this id is sampled.
    pub fn sampled(&self, trace_id: u128) -> bool {
        ((trace_id as u64) >> 1) < self.bound
    }
}

/// A timed request phase (authentication or rate limit).
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Span id.
    pub span_id: u64,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End, Unix nanoseconds.
    pub end: u64,
    /// What was decided (`authenticated`, `unauthorized`, `allowed`, `limited`, …).
    pub outcome: &'static str,
    /// Authentication: the methods tried (`jwt`, `keyAuth`, `jwt,keyAuth`, …).
    pub methods: &'static str,
}

/// One upstream attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Span id (the parent-id of the `traceparent` sent on this attempt).
    pub span_id: u64,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End (response headers or failure), Unix nanoseconds; 0 while in flight.
    pub end: u64,
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// Attempts before this one.
    pub retry: u32,
    /// The upstream's status.
    pub status: Option<u16>,
    /// Why the attempt failed (`connect_error`, `timeout`, …).
    pub error: Option<&'static str>,
}

/// The spans of one sampled request, recorded on the way and turned into OTLP spans by
/// the exporter.
#[derive(Debug, Clone, Default)]
pub struct TraceRecord {
    /// The trace id (the client's, or new).
    pub trace_id: u128,
    /// The gateway's (SERVER) span id.
    pub span_id: u64,
    /// The client's span id (`traceparent` parent-id), 0 without one.
    pub parent: u64,
    /// The client's `tracestate`, kept for the spans.
    pub trace_state: Option<HeaderValue>,
    /// `http.route`: the matched rule's path condition as a template (`/api/*`), once
    /// a rule matched.
    pub route_path: Option<Box<str>>,
    /// Authentication, when it ran.
    pub auth: Option<Phase>,
    /// The rate limit, when it ran.
    pub rate_limit: Option<Phase>,
    attempts: [Option<Attempt>; MAX_ATTEMPTS],
    count: usize,
}

impl TraceRecord {
    /// A sampled request of trace `trace_id` whose client span is `parent` (0: none).
    pub fn new(trace_id: u128, parent: u64, trace_state: Option<HeaderValue>) -> Self {
        TraceRecord {
            trace_id,
            span_id: new_span_id(),
            parent,
            trace_state,
            route_path: None,
            auth: None,
            rate_limit: None,
            attempts: [None; MAX_ATTEMPTS],
            count: 0,
        }
    }

    /// The upstream attempts recorded.
    pub fn attempts(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().take(self.count).flatten()
    }

    /// How many spans this record makes.
    pub fn span_count(&self) -> u64 {
        1 + u64::from(self.auth.is_some())
            + u64::from(self.rate_limit.is_some())
            + self.count as u64
    }

    /// An upstream attempt to `endpoint` starts: returns the `traceparent` to send on it
    /// (the attempt's span as the parent, sampled).
    pub fn begin_attempt(&mut self, endpoint: SocketAddr, retry: u32) -> HeaderValue {
        let span_id = new_span_id();
        if let Some(slot) = self.attempts.get_mut(self.count) {
            *slot = Some(Attempt {
                span_id,
                start: now_nanos(),
                end: 0,
                endpoint,
                retry,
                status: None,
                error: None,
            });
            self.count += 1;
        }
        crate::proxy::trace::traceparent(self.trace_id, span_id, true)
    }

    /// The attempt begun last ended with `status` or `error`.
    pub fn end_attempt(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(Some(attempt)) =
            self.count.checked_sub(1).and_then(|i| self.attempts.get_mut(i))
            && attempt.end == 0
        {
            attempt.end = now_nanos();
            attempt.status = status;
            attempt.error = error;
        }
    }

    /// An authentication or rate-limit filter started at `start` decided `result`.
    pub fn filter_done(&mut self, filter: &Filter, start: u64, result: &Result<Flow, ProxyError>) {
        let phase = |outcome, methods| Phase {
            span_id: new_span_id(),
            start,
            end: now_nanos(),
            outcome,
            methods,
        };
        match filter {
            Filter::Authenticate(auth) => {
                let outcome = match result {
                    Ok(Flow::Continue) => "authenticated",
                    Ok(Flow::Respond(_)) => "refused",
                    Err(ProxyError::Unauthorized { .. }) => "unauthorized",
                    Err(ProxyError::AuthUnavailable { .. }) => "unavailable",
                    Err(_) => "error",
                };
                let methods =
                    match (auth.jwt.is_some(), auth.key_auth.is_some(), auth.ext_auth.is_some()) {
                        (true, true, true) => "jwt,keyAuth,extAuth",
                        (true, true, false) => "jwt,keyAuth",
                        (true, false, true) => "jwt,extAuth",
                        (true, false, false) => "jwt",
                        (false, true, true) => "keyAuth,extAuth",
                        (false, true, false) => "keyAuth",
                        (false, false, true) => "extAuth",
                        (false, false, false) => "",
                    };
                self.auth.get_or_insert(phase(outcome, methods));
            }
            Filter::RateLimit(_) => {
                let outcome = match result {
                    Ok(_) => "allowed",
                    Err(ProxyError::RateLimited { .. }) => "limited",
                    Err(_) => "error",
                };
                self.rate_limit.get_or_insert(phase(outcome, ""));
            }
            _ => {}
        }
    }
}

/// `http.route` of a path condition: the exact path, `PREFIX/*`, or the regex.
pub fn route_template(path: &crate::snapshot::PathMatch) -> Box<str> {
    use crate::snapshot::PathMatch;
    match path {
        PathMatch::Exact(p) => p.clone(),
        PathMatch::Prefix(p) => format!("{p}/*").into(),
        PathMatch::Regex(r) => r.as_str().into(),
    }
}

/// Whether `filter`'s request phase is timed for a trace (authentication, rate limit).
pub fn timed(filter: &Filter) -> bool {
    matches!(filter, Filter::Authenticate(_) | Filter::RateLimit(_))
}

/// `time` in nanoseconds since the Unix epoch.
pub fn nanos_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
