//! A BackendPolicy spec → the data plane's [`BackendPolicy`] settings (everything but TLS,
//! which depends on Secrets and on the target Service): durations parsed, header and cookie
//! names checked, defaults applied. Every error names the field. The same checks as the
//! CRD's schema and CEL rules, for standalone mode where no API server runs them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use weir_crds::backend_policy::{
    ActiveCheckType, BackendPolicySpec, BackendProtocol, ConsistentHashType, LoadBalancerType,
};
use weir_crds::parse_duration;
use weir_dataplane::UpstreamProtocol;
use weir_dataplane::upstream::policy::{
    ActiveCheck, BackendPolicy, CheckKind, CircuitBreaker, ConnectionSettings, Fallback,
    HashCookie, HashOn, LoadBalancer, OutlierDetection, RetryBudget,
};

/// Default `consecutive5xx` of a `passive` block that sets neither threshold.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;

/// Collects the errors of one spec.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, field: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{field}: {problem}"));
    }

    /// A duration that must be positive.
    fn duration(&mut self, field: &str, value: &str) -> Duration {
        match parse_duration(value) {
            Ok(d) if d.is_zero() => {
                self.push(field, "must be greater than 0");
                Duration::ZERO
            }
            Ok(d) => d,
            Err(e) => {
                self.push(field, e);
                Duration::ZERO
            }
        }
    }

    fn at_least_one(&mut self, field: &str, value: u32) -> u32 {
        if value == 0 {
            self.push(field, "must be at least 1");
        }
        value
    }

    fn percent(&mut self, field: &str, value: u32) -> u8 {
        match u8::try_from(value).ok().filter(|v| *v <= 100) {
            Some(v) => v,
            None => {
                self.push(field, format!("{value} is not a percentage (0-100)"));
                0
            }
        }
    }

    fn header_name(&mut self, field: &str, value: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(value.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.push(field, format!("{value:?} is not a valid header name"));
                None
            }
        }
    }
}

/// True for a cookie name (an RFC 6265 token).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// True for a DNS name or an IP address usable as SNI and verified name.
pub(crate) fn valid_hostname(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The protocol `spec.protocol` names.
pub(crate) fn protocol_of(p: BackendProtocol) -> UpstreamProtocol {
    match p {
        BackendProtocol::HTTP1 => UpstreamProtocol::Http1,
        BackendProtocol::H2C => UpstreamProtocol::H2c,
        BackendProtocol::H2 => UpstreamProtocol::H2,
    }
}

/// Checks a spec and compiles everything but `tls` (left `None`) and `source`/`generation`.
/// The errors name the field (`spec.healthCheck.active.interval: ...`).
pub fn compile_spec(spec: &BackendPolicySpec) -> Result<BackendPolicy, Vec<String>> {
    let mut e = Errors::default();
    let mut out = BackendPolicy {
        panic_threshold: BackendPolicy::DEFAULT_PANIC_THRESHOLD,
        ..BackendPolicy::default()
    };
    if spec.target_refs.is_empty() {
        e.push("spec.targetRefs", "at least one Service is required");
    }
    for (i, t) in spec.target_refs.iter().enumerate() {
        if t.kind != "Service" || t.group.as_deref().is_some_and(|g| !g.is_empty()) {
            e.push(
                &format!("spec.targetRefs[{i}]"),
                format!(
                    "kind {:?} (group {:?}) is not supported: only kind Service (group \"\")",
                    t.kind,
                    t.group.as_deref().unwrap_or("")
                ),
            );
        }
        if t.name.is_empty() {
            e.push(&format!("spec.targetRefs[{i}].name"), "must not be empty");
        }
    }
    if let Some(lb) = &spec.load_balancer {
        out.load_balancer = load_balancer(&mut e, lb);
        if let Some(slow) = &lb.slow_start {
            out.slow_start = Some(e.duration("spec.loadBalancer.slowStart.window", &slow.window));
        }
    }
    if let Some(hc) = &spec.health_check {
        out.panic_threshold = e.percent("spec.healthCheck.panicThreshold", hc.panic_threshold);
        if let Some(active) = &hc.active {
            out.active = active_check(&mut e, active).map(Arc::new);
        }
        if let Some(p) = &hc.passive {
            const F: &str = "spec.healthCheck.passive";
            let (c5, cg) = (p.consecutive_5xx, p.consecutive_gateway_errors);
            let c5 = match (c5, cg) {
                (None, None) => Some(DEFAULT_CONSECUTIVE_5XX),
                (c5, _) => c5.map(|v| e.at_least_one(&format!("{F}.consecutive5xx"), v)),
            };
            let cg = cg.map(|v| e.at_least_one(&format!("{F}.consecutiveGatewayErrors"), v));
            out.passive = Some(OutlierDetection {
                consecutive_5xx: c5,
                consecutive_gateway_errors: cg,
                base_ejection_time: e
                    .duration(&format!("{F}.baseEjectionTime"), &p.base_ejection_time),
                max_ejection_percent: e
                    .percent(&format!("{F}.maxEjectionPercent"), p.max_ejection_percent),
            });
        }
    }
    if let Some(cb) = &spec.circuit_breaker {
        out.breaker = Some(breaker(&mut e, cb));
    }
    if let Some(r) = &spec.retry {
        let backoff = r.backoff.clone().unwrap_or_default();
        let base = e.duration("spec.retry.backoff.base", &backoff.base);
        let max = e.duration("spec.retry.backoff.max", &backoff.max);
        if max < base {
            e.push("spec.retry.backoff.max", format!("{max:?} is less than base {base:?}"));
        }
        if r.budget_percent > 100 {
            e.push("spec.retry.budgetPercent", format!("{} is not 0-100", r.budget_percent));
        }
        out.retry = Some(RetryBudget {
            budget_percent: r.budget_percent,
            backoff_base: base,
            backoff_max: max,
        });
    }
    if let Some(c) = &spec.connection {
        out.connection = ConnectionSettings {
            max_idle_per_endpoint: usize::try_from(c.max_idle_per_endpoint).unwrap_or(usize::MAX),
            idle_timeout: e.duration("spec.connection.idleTimeout", &c.idle_timeout),
        };
    }
    out.protocol = spec.protocol.map(protocol_of);
    match (spec.protocol, &spec.tls) {
        (Some(BackendProtocol::H2), None) => {
            e.push("spec.protocol", "H2 (HTTP/2 over TLS) requires spec.tls");
        }
        (Some(BackendProtocol::H2C), Some(_)) => {
            e.push("spec.protocol", "H2C is HTTP/2 without TLS; with spec.tls use H2 (or HTTP1)")
        }
        _ => {}
    }
    if let Some(tls) = &spec.tls {
        if tls.ca_secret_ref.is_some() == tls.well_known_ca_certificates.is_some() {
            e.push("spec.tls", "exactly one of caSecretRef or wellKnownCACertificates must be set");
        }
        for (field, r) in [
            ("spec.tls.caSecretRef.name", &tls.ca_secret_ref),
            ("spec.tls.clientCertificateRef.name", &tls.client_certificate_ref),
        ] {
            if r.as_ref().is_some_and(|r| r.name.is_empty()) {
                e.push(field, "must not be empty");
            }
        }
        if let Some(h) = &tls.hostname
            && !valid_hostname(h)
        {
            e.push("spec.tls.hostname", format!("{h:?} is not a DNS name or an IP address"));
        }
    }
    if e.0.is_empty() { Ok(out) } else { Err(e.0) }
}

fn load_balancer(e: &mut Errors, lb: &weir_crds::backend_policy::LoadBalancerSpec) -> LoadBalancer {
    const F: &str = "spec.loadBalancer.consistentHash";
    match lb.type_ {
        LoadBalancerType::RoundRobin => LoadBalancer::RoundRobin,
        LoadBalancerType::LeastRequest => LoadBalancer::LeastRequest,
        LoadBalancerType::Random => LoadBalancer::Random,
        LoadBalancerType::ConsistentHash => {
            let Some(ch) = &lb.consistent_hash else {
                e.push(F, "required when spec.loadBalancer.type is ConsistentHash");
                return LoadBalancer::RoundRobin;
            };
            let on = match ch.type_ {
                ConsistentHashType::SourceIP => Some(HashOn::SourceIp),
                ConsistentHashType::Header => match &ch.header {
                    None => {
                        e.push(&format!("{F}.header"), "required when type is Header");
                        None
                    }
                    Some(h) => e.header_name(&format!("{F}.header"), h).map(HashOn::Header),
                },
                ConsistentHashType::Cookie => match &ch.cookie {
                    None => {
                        e.push(&format!("{F}.cookie"), "required when type is Cookie");
                        None
                    }
                    Some(c) => {
                        if !is_token(&c.name) {
                            e.push(
                                &format!("{F}.cookie.name"),
                                format!("{:?} is not a valid cookie name", c.name),
                            );
                        }
                        let ttl =
                            c.ttl.as_deref().map(|t| e.duration(&format!("{F}.cookie.ttl"), t));
                        let path = c.path.as_deref().unwrap_or("/");
                        if !path.starts_with('/')
                            || path.bytes().any(|b| b.is_ascii_control() || b == b';')
                        {
                            e.push(
                                &format!("{F}.cookie.path"),
                                format!("{path:?} is not a cookie path"),
                            );
                        }
                        Some(HashOn::Cookie(HashCookie {
                            name: c.name.as_str().into(),
                            ttl,
                            path: path.into(),
                        }))
                    }
                },
                ConsistentHashType::QueryParam => match ch.query_param.as_deref() {
                    None | Some("") => {
                        e.push(&format!("{F}.queryParam"), "required when type is QueryParam");
                        None
                    }
                    Some(q) => Some(HashOn::QueryParam(q.into())),
                },
            };
            on.map_or(LoadBalancer::RoundRobin, LoadBalancer::ConsistentHash)
        }
    }
}

fn active_check(
    e: &mut Errors,
    a: &weir_crds::backend_policy::ActiveHealthCheckSpec,
) -> Option<ActiveCheck> {
    const F: &str = "spec.healthCheck.active";
    let kind = match a.type_ {
        ActiveCheckType::TCP => CheckKind::Tcp,
        ActiveCheckType::HTTP => {
            if !a.path.starts_with('/')
                || http::uri::PathAndQuery::try_from(a.path.as_str()).is_err()
            {
                e.push(&format!("{F}.path"), format!("{:?} is not a path starting with /", a.path));
            }
            let host = a.host.as_deref().and_then(|h| match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    e.push(&format!("{F}.host"), format!("{h:?} is not a valid Host header"));
                    None
                }
            });
            if a.expected_statuses.is_empty() {
                e.push(&format!("{F}.expectedStatuses"), "must list at least one status");
            }
            let mut statuses = Vec::with_capacity(a.expected_statuses.len());
            for (i, s) in a.expected_statuses.iter().enumerate() {
                match StatusCode::from_u16(*s).ok().filter(|_| (100..=599).contains(s)) {
                    Some(code) => statuses.push(code),
                    None => e.push(
                        &format!("{F}.expectedStatuses[{i}]"),
                        format!("{s} is not an HTTP status"),
                    ),
                }
            }
            CheckKind::Http {
                path: a.path.as_str().into(),
                host,
                expected_statuses: statuses.into(),
            }
        }
    };
    let check = ActiveCheck {
        kind,
        interval: e.duration(&format!("{F}.interval"), &a.interval),
        timeout: e.duration(&format!("{F}.timeout"), &a.timeout),
        healthy_threshold: e.at_least_one(&format!("{F}.healthyThreshold"), a.healthy_threshold),
        unhealthy_threshold: e
            .at_least_one(&format!("{F}.unhealthyThreshold"), a.unhealthy_threshold),
    };
    Some(check)
}

fn breaker(e: &mut Errors, cb: &weir_crds::backend_policy::CircuitBreakerSpec) -> CircuitBreaker {
    const F: &str = "spec.circuitBreaker";
    let cap = |e: &mut Errors, name: &str, v: Option<u32>| {
        v.map(|v| e.at_least_one(&format!("{F}.{name}"), v))
    };
    let fallback = cb.fallback.clone().unwrap_or_default();
    let status = match StatusCode::from_u16(fallback.status)
        .ok()
        .filter(|_| (200..=599).contains(&fallback.status))
    {
        Some(s) => s,
        None => {
            e.push(
                &format!("{F}.fallback.status"),
                format!("{} is not a status from 200 to 599", fallback.status),
            );
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let content_type = fallback.content_type.as_deref().unwrap_or("application/json");
    let content_type = match HeaderValue::from_str(content_type) {
        Ok(v) if !content_type.is_empty() => v,
        _ => {
            e.push(
                &format!("{F}.fallback.contentType"),
                format!("{content_type:?} is not a valid Content-Type value"),
            );
            HeaderValue::from_static("application/json")
        }
    };
    CircuitBreaker {
        failure_threshold: e.at_least_one(&format!("{F}.failureThreshold"), cb.failure_threshold),
        window: e.duration(&format!("{F}.window"), &cb.window),
        open_for: e.duration(&format!("{F}.openFor"), &cb.open_for),
        success_threshold: e.at_least_one(&format!("{F}.successThreshold"), cb.success_threshold),
        max_connections: cap(e, "maxConnections", cb.max_connections),
        max_pending_requests: cap(e, "maxPendingRequests", cb.max_pending_requests),
        max_parallel_requests: cap(e, "maxParallelRequests", cb.max_parallel_requests),
        fallback: Fallback { status, body: fallback.body.map(Bytes::from), content_type },
    }
}
