//! The pooled upstream client, and sending a request with timeouts and retries.
//!
//! Clients (each with its own keep-alive pool) are keyed by connect timeout, since hyper's
//! connector holds the timeout: routes with the same connect timeout share one pool. The
//! set is created lazily, read lock-free and outlives snapshots.
//!
//! Retry semantics (`RetryPolicy`): a request is sent again, to the backend's next
//! endpoint, only when its body can still be sent: either the request had no body, or
//! the body was never polled by an upstream connection. Bodies are streamed, never
//! buffered, so a request whose body started flowing is never retried. On top of that,
//! retries on `Timeout` and `Status5xx` (where the upstream may have seen the request)
//! only apply to idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE); a connect
//! failure is retried for any method, because nothing reached the upstream.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::ResponseFuture;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, timeout_at};

use super::body::{BodySlot, UpstreamBody, unsent};
use super::error::ProxyError;
use crate::snapshot::{Backend, RetryPolicy, Timeouts};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Distinct connect timeouts that get their own pooled client; past this, the client with
/// the closest timeout is used (a configuration with more is unusual; such requests take
/// the cold path's lock).
const MAX_CLIENTS: usize = 64;

type HttpClient = Client<HttpConnector, UpstreamBody>;

/// The upstream clients, shared by every snapshot.
pub struct Upstream {
    clients: ArcSwap<Vec<(Duration, HttpClient)>>,
    grow: Mutex<()>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let timeouts: Vec<Duration> = self.clients.load().iter().map(|(d, _)| *d).collect();
        f.debug_struct("Upstream").field("connect_timeouts", &timeouts).finish()
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream { clients: ArcSwap::from_pointee(Vec::new()), grow: Mutex::new(()) }
    }
}

impl Upstream {
    /// Starts sending `request` with the client for `connect_timeout`.
    fn request(&self, connect_timeout: Duration, request: Request<UpstreamBody>) -> ResponseFuture {
        {
            let clients = self.clients.load();
            if let Some((_, client)) = clients.iter().find(|(d, _)| *d == connect_timeout) {
                return client.request(request);
            }
        }
        self.add_client(connect_timeout).request(request)
    }

    #[cold]
    fn add_client(&self, connect_timeout: Duration) -> HttpClient {
        let _guard = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.clients.load_full();
        if let Some((_, client)) = current.iter().find(|(d, _)| *d == connect_timeout) {
            return client.clone();
        }
        if current.len() >= MAX_CLIENTS {
            // Never drop existing pools (that would close every route's keep-alive
            // connections): past the cap, the client with the closest timeout serves.
            if let Some((_, client)) =
                current.iter().min_by_key(|(d, _)| d.abs_diff(connect_timeout))
            {
                return client.clone();
            }
        }
        let client = build_client(connect_timeout);
        let mut next = (*current).clone();
        next.push((connect_timeout, client.clone()));
        self.clients.store(Arc::new(next));
        client
    }
}

fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .set_host(false)
        .build(connector)
}

/// An upstream request, prepared once and built per attempt.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Method.
    pub method: Method,
    /// Path and query sent upstream (rewritten or as received).
    pub path_and_query: PathAndQuery,
    /// Headers sent upstream (hop-by-hop removed, forwarding headers set).
    pub headers: HeaderMap,
    /// The body, `None` when the client sent none.
    pub body: Option<BodySlot>,
}

impl Prepared {
    fn body_available(&self) -> bool {
        self.body.as_ref().is_none_or(unsent)
    }

    fn build(
        &self,
        authority: &Authority,
        headers: HeaderMap,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let authority = authority.clone();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(self.path_and_query.clone());
        let uri = Uri::from_parts(parts)
            .map_err(|e| ProxyError::InvalidUpstreamRequest { reason: e.to_string() })?;
        let body = match &self.body {
            None => UpstreamBody::Empty,
            Some(slot) => UpstreamBody::streamed(slot),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Sends `request` to `backend`'s endpoints (round robin, the next endpoint on each
/// retry) under `timeouts` and `retries`, until response headers arrive.
pub(crate) async fn send(
    upstream: &Upstream,
    backend: &Backend,
    timeouts: &Timeouts,
    retries: &RetryPolicy,
    mut request: Prepared,
) -> Result<Response<Incoming>, ProxyError> {
    let deadline = timeouts.request.map(|d| Instant::now() + d);
    let idempotent = idempotent(&request.method);
    let mut left = retries.attempts;
    loop {
        let (endpoint, authority) =
            backend.next_target().ok_or_else(|| ProxyError::NoEndpoint {
                reason: format!("backend {} has no ready endpoint", backend.key),
            })?;
        let headers =
            if left == 0 { std::mem::take(&mut request.headers) } else { request.headers.clone() };
        let future = upstream.request(timeouts.connect, request.build(authority, headers)?);
        let try_deadline = retries.per_try_timeout.map(|d| Instant::now() + d);
        let limit = match (deadline, try_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match limit {
            Some(at) => timeout_at(at, future).await.ok(),
            None => Some(future.await),
        };
        let can_retry = left > 0 && request.body_available();
        match result {
            None => {
                let per_try_fired = try_deadline.is_some_and(|t| deadline.is_none_or(|d| t < d));
                if per_try_fired && retries.on_timeout && idempotent && can_retry {
                    tracing::debug!(%endpoint, "upstream attempt timed out, retrying");
                } else {
                    tracing::debug!(%endpoint, "upstream timeout");
                    return Err(ProxyError::UpstreamTimeout);
                }
            }
            Some(Err(source)) if source.is_connect() => {
                if retries.on_connect_failure && can_retry {
                    tracing::debug!(%endpoint, error = %source, "upstream connect failed, retrying");
                } else {
                    return Err(ProxyError::UpstreamConnect { source });
                }
            }
            Some(Err(source)) => return Err(ProxyError::BadResponse { source }),
            Some(Ok(response)) => {
                if retries.on_5xx && idempotent && can_retry && retryable_status(response.status())
                {
                    tracing::debug!(%endpoint, status = %response.status(), "upstream 5xx, retrying");
                } else {
                    return Ok(response);
                }
            }
        }
        left -= 1;
    }
}
