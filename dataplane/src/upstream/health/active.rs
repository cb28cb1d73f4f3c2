//! Active health checks: one checker task per endpoint per policy. Each check is a
//! `GET path` over the backend's transport (HTTP) or a connect (TCP), bounded by
//! `timeout`, every `interval` (each wait jittered by up to 10%, the first one a random
//! share of `interval`, so checks of many endpoints spread out). The endpoint starts
//! healthy (its EndpointSlice already says ready); `unhealthyThreshold` consecutive
//! failures make it unhealthy, `healthyThreshold` consecutive successes healthy again.
//! The checker tells its owner only about transitions. Dropping the [`ActiveChecker`]
//! stops the task.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::proxy::body::UpstreamBody;
use crate::proxy::error::ProxyError;
use crate::snapshot::UpstreamProtocol;
use crate::upstream::policy::{ActiveCheck, CheckKind};
use crate::upstream::pool::{self, ConnectError, Transport};

/// Called with `false` when the endpoint turns unhealthy, `true` when it recovers.
pub type OnChange = Arc<dyn Fn(bool) + Send + Sync>;

/// The `User-Agent` of HTTP checks.
pub const USER_AGENT_VALUE: &str = "weir-health-check";

/// A running checker; dropping it stops the checks.
#[derive(Debug)]
pub struct ActiveChecker {
    task: Option<tokio::task::AbortHandle>,
}

impl ActiveChecker {
    /// True while the checker task runs (false without a runtime, or once it ended).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Drop for ActiveChecker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts checking `addr` on the current tokio runtime (no runtime: nothing runs, the
/// endpoint stays healthy).
pub fn spawn(
    addr: SocketAddr,
    check: Arc<ActiveCheck>,
    protocol: UpstreamProtocol,
    transport: Transport,
    on_change: OnChange,
) -> ActiveChecker {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return ActiveChecker { task: None };
    };
    let task = runtime.spawn(run(addr, check, protocol, transport, on_change));
    ActiveChecker { task: Some(task.abort_handle()) }
}

/// The checker task: checks forever, reporting transitions.
async fn run(
    addr: SocketAddr,
    check: Arc<ActiveCheck>,
    protocol: UpstreamProtocol,
    transport: Transport,
    on_change: OnChange,
) {
    let mut verdicts = Verdicts::new(&check);
    let request = match CheckRequest::new(addr, &check, protocol, &transport) {
        Ok(request) => request,
        Err(reason) => {
            // The compiler validates path and host; an endpoint is never made unhealthy
            // by a configuration the checker cannot send.
            tracing::warn!(endpoint = %addr, %reason, "active health check cannot be sent, not checking");
            return;
        }
    };
    let mut next = Instant::now() + first_delay(check.interval, fastrand::u64(..));
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let result = probe(addr, &check, protocol, &transport, &request).await;
        let change = match &result {
            Ok(()) => verdicts.observe(true),
            Err(Failure::Skipped(reason)) => {
                tracing::debug!(endpoint = %addr, %reason, "active health check skipped");
                None
            }
            Err(failure) => {
                tracing::debug!(endpoint = %addr, reason = %failure, "active health check failed");
                verdicts.observe(false)
            }
        };
        match (change, &result) {
            (Some(false), Err(failure)) => {
                tracing::warn!(
                    endpoint = %addr,
                    reason = %failure,
                    failures = check.unhealthy_threshold,
                    "endpoint failed its active health checks: unhealthy, out of rotation"
                );
                on_change(false);
            }
            (Some(true), _) => {
                tracing::info!(
                    endpoint = %addr,
                    successes = check.healthy_threshold,
                    "endpoint passes its active health checks again: healthy"
                );
                on_change(true);
            }
            _ => {}
        }
        // The next check `interval` (jittered) after this one started, never in the past.
        next = (started + jittered(check.interval, fastrand::u64(..))).max(Instant::now());
    }
}

/// The HTTP check request's fixed parts, built once per checker.
#[derive(Debug)]
struct CheckRequest {
    uri: Uri,
    version: Version,
    /// `Host` for HTTP/1.1 (HTTP/2 carries it in the URI).
    host: Option<HeaderValue>,
}

impl CheckRequest {
    /// `None` for TCP checks.
    fn new(
        addr: SocketAddr,
        check: &ActiveCheck,
        protocol: UpstreamProtocol,
        transport: &Transport,
    ) -> Result<Option<Self>, String> {
        let CheckKind::Http { path, host, .. } = &check.kind else { return Ok(None) };
        let host = match host {
            Some(host) => host.clone(),
            None => HeaderValue::try_from(addr.to_string())
                .map_err(|e| format!("endpoint address {addr} as healthCheck.active host: {e}"))?,
        };
        let path = http::uri::PathAndQuery::try_from(&**path)
            .map_err(|e| format!("healthCheck.active.path {path:?}: {e}"))?;
        Ok(Some(match protocol {
            UpstreamProtocol::Http1 => {
                CheckRequest { uri: Uri::from(path), version: Version::HTTP_11, host: Some(host) }
            }
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let authority = Authority::try_from(host.as_bytes())
                    .map_err(|e| format!("healthCheck.active.host {host:?}: {e}"))?;
                let mut parts = http::uri::Parts::default();
                let tls = transport.tls.is_some() || protocol == UpstreamProtocol::H2;
                parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
                parts.authority = Some(authority);
                parts.path_and_query = Some(path);
                let uri = Uri::from_parts(parts).map_err(|e| format!("check URI: {e}"))?;
                CheckRequest { uri, version: Version::HTTP_2, host: None }
            }
        }))
    }

    fn build(&self) -> Request<UpstreamBody> {
        let mut request = Request::new(UpstreamBody::Empty);
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        if let Some(host) = &self.host {
            request.headers_mut().insert(HOST, host.clone());
        }
        request.headers_mut().insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        request
    }
}

/// Why one check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// An answer with a status not in `expectedStatuses`.
    Status(StatusCode),
    /// No answer (or no connection) within `timeout`.
    Timeout,
    /// The connection (TCP or TLS) could not be made.
    Connect(String),
    /// The exchange failed after connecting.
    BadResponse(String),
    /// Not a verdict on the endpoint (the backend's connection cap): neither counted as a
    /// success nor as a failure.
    Skipped(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "status {}", status.as_u16()),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Connect(e) => write!(f, "connect error: {e}"),
            Failure::BadResponse(e) => write!(f, "bad response: {e}"),
            Failure::Skipped(e) => write!(f, "skipped: {e}"),
        }
    }
}

impl From<ConnectError> for Failure {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Timeout(_) => Failure::Timeout,
            ConnectError::ConnectionLimit | ConnectError::PendingLimit => {
                Failure::Skipped(error.to_string())
            }
            other => Failure::Connect(other.to_string()),
        }
    }
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        match error {
            ProxyError::UpstreamTimeout => Failure::Timeout,
            ProxyError::UpstreamConnect { source } => match source.downcast::<ConnectError>() {
                Ok(connect) => Failure::from(*connect),
                Err(other) => Failure::Connect(other.to_string()),
            },
            other => Failure::BadResponse(other.to_string()),
        }
    }
}

/// One check of `addr`.
async fn probe(
    addr: SocketAddr,
    check: &ActiveCheck,
    protocol: UpstreamProtocol,
    transport: &Transport,
    request: &Option<CheckRequest>,
) -> Result<(), Failure> {
    let exchange = async {
        match (&check.kind, request) {
            (CheckKind::Http { expected_statuses, .. }, Some(request)) => {
                let response = pool::request_unpooled(
                    addr,
                    transport,
                    protocol,
                    check.timeout,
                    request.build(),
                )
                .await?;
                let status = response.status();
                // Dropped unread: the connection is never reused.
                drop(response);
                if expected_statuses.contains(&status) {
                    Ok(())
                } else {
                    Err(Failure::Status(status))
                }
            }
            _ => Ok(pool::probe_connect(addr, transport, check.timeout).await?),
        }
    };
    // `request_unpooled` and `probe_connect` bound themselves by `timeout`; this bounds
    // the whole check whatever they do.
    tokio::time::timeout(check.timeout, exchange).await.unwrap_or(Err(Failure::Timeout))
}

/// The consecutive-result counting of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdicts {
    healthy: bool,
    /// Consecutive results against the current verdict.
    streak: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Verdicts {
    /// Healthy, as the EndpointSlice says.
    fn new(check: &ActiveCheck) -> Self {
        Verdicts {
            healthy: true,
            streak: 0,
            healthy_threshold: check.healthy_threshold.max(1),
            unhealthy_threshold: check.unhealthy_threshold.max(1),
        }
    }

    /// One check's result; the new verdict when it changed.
    fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if ok { self.healthy_threshold } else { self.unhealthy_threshold };
        if self.streak < threshold {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// The wait before a checker's first check: a random share of `interval`, in
/// `[0, interval)`, from a random `r`.
fn first_delay(interval: Duration, r: u64) -> Duration {
    share(interval.as_nanos(), r)
}

/// `interval` jittered by up to ±10% (in `[0.9, 1.1) × interval`), from a random `r`.
fn jittered(interval: Duration, r: u64) -> Duration {
    let nanos = interval.as_nanos();
    Duration::from_nanos(u64::try_from(nanos * 9 / 10).unwrap_or(u64::MAX)) + share(nanos / 5, r)
}

/// `r / 2^64` of `nanos`: in `[0, nanos)` (0 when `nanos` is 0).
fn share(nanos: u128, r: u64) -> Duration {
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    Duration::from_nanos(((u128::from(nanos) * u128::from(r)) >> 64) as u64)
}

#[cfg(test)]
#[path = "active_tests.rs"]
mod tests;
