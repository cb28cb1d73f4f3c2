//! Sending a request upstream over weir's connection pools, with timeouts and retries.
//!
//! HTTP/1.1 backends use the keep-alive [`Pool`](crate::upstream::pool::Pool); a WebSocket upgrade request goes over a
//! new connection that hyper lets the proxy take over after a 101 (never pooled); h2c
//! backends share one multiplexed HTTP/2 connection per endpoint ([`H2Pool`](crate::upstream::pool::H2Pool)). Timeouts
//! and retries are the same for all three.
//!
//! Each attempt takes an idle keep-alive connection to the chosen endpoint from the
//! pool or opens a new one (the route's connect timeout bounds the TCP connect), and
//! sends the request in origin form with the `Host` header as prepared. A request that a
//! reused connection could not send (it closed while idle) goes out again on another
//! connection, since nothing of it reached the upstream.
//!
//! Retry semantics (`RetryPolicy`): a request is sent again, to the backend's next
//! endpoint, only when its body can still be sent: either the request had no body, or
//! the body was never polled by an upstream connection. Bodies are streamed, never
//! buffered, so a request whose body started flowing is never retried. On top of that,
//! retries on `Timeout` and `Status5xx` (where the upstream may have seen the request)
//! only apply to idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE); a connect
//! failure is retried for any method, because nothing reached the upstream.

use std::net::SocketAddr;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::{Instant, timeout_at};

use super::body::{BodySlot, UpstreamBody, unsent};
use super::error::ProxyError;
use crate::snapshot::{Backend, RetryPolicy, Timeouts, UpstreamProtocol};
use crate::upstream::pool::{AttemptError, PooledBody, Upstream, Via};

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
    /// A WebSocket upgrade: sent over a new connection that can be taken over after a 101.
    pub upgrade: bool,
}

impl Prepared {
    fn body_available(&self) -> bool {
        self.body.as_ref().is_none_or(unsent)
    }

    fn build(&self, headers: HeaderMap) -> Request<UpstreamBody> {
        let body = match &self.body {
            None => UpstreamBody::Empty,
            Some(slot) => UpstreamBody::streamed(slot),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        // Origin form: HTTP/1.1 to an origin server sends the path and query only.
        *request.uri_mut() = Uri::from(self.path_and_query.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        request
    }

    /// The HTTP/2 request: absolute URI (`:scheme http`, `:authority` from the prepared
    /// `Host`, else the endpoint's address), no `Host` header.
    fn build_h2(&self, mut headers: HeaderMap, endpoint: &Authority) -> Request<UpstreamBody> {
        let authority = headers
            .remove(HOST)
            .and_then(|h| {
                Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(h.as_bytes())).ok()
            })
            .unwrap_or_else(|| endpoint.clone());
        let mut request = self.build(headers);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(self.path_and_query.clone());
        if let Ok(uri) = Uri::from_parts(uri) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_2;
        request
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

/// What [`send`] did: how many times it retried and where it last went.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Attempts {
    /// Attempts after the first.
    pub retries: u32,
    /// The endpoint of the last attempt.
    pub last: Option<SocketAddr>,
}

/// Sends `request` to `backend`'s endpoints (round robin, the next endpoint on each
/// retry) under `timeouts` and `retries`, until response headers arrive.
pub(crate) async fn send(
    upstream: &Upstream,
    backend: &Backend,
    timeouts: &Timeouts,
    retries: &RetryPolicy,
    mut request: Prepared,
    attempts: &mut Attempts,
) -> Result<Response<PooledBody>, ProxyError> {
    let deadline = timeouts.request.map(|d| Instant::now() + d);
    let idempotent = idempotent(&request.method);
    let via = match (backend.protocol, request.upgrade) {
        (UpstreamProtocol::H2c | UpstreamProtocol::H2, _) => Via::H2,
        (UpstreamProtocol::Http1, true) => Via::Upgrade,
        (UpstreamProtocol::Http1, false) => Via::Pooled,
    };
    let transport = crate::upstream::pool::Transport::for_backend(backend); // conn: until the registry provides it
    let mut left = retries.attempts;
    loop {
        let (endpoint, authority) =
            backend.next_target().ok_or_else(|| ProxyError::NoEndpoint {
                reason: format!("backend {} has no ready endpoint", backend.key),
            })?;
        attempts.last = Some(endpoint);
        // A copy of the headers is needed only when a request that reached the upstream
        // may be sent again; after a connect failure the headers come back unused.
        let resend_after_sent = left > 0 && (retries.on_timeout || retries.on_5xx);
        let headers = if resend_after_sent {
            request.headers.clone()
        } else {
            std::mem::take(&mut request.headers)
        };
        let built = match via {
            Via::H2 => request.build_h2(headers, authority),
            Via::Pooled | Via::Upgrade => request.build(headers),
        };
        let future = upstream.request(endpoint, &transport, timeouts.connect, built, via);
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
            Some(Err(AttemptError::Connect(source, headers))) => {
                if !resend_after_sent {
                    request.headers = headers;
                }
                if retries.on_connect_failure && can_retry {
                    tracing::debug!(%endpoint, error = %source, "upstream connect failed, retrying");
                } else {
                    return Err(ProxyError::UpstreamConnect { source: Box::new(source) });
                }
            }
            Some(Err(AttemptError::Exchange(source))) => {
                return Err(ProxyError::BadResponse { source: Box::new(source) });
            }
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
        attempts.retries += 1;
    }
}
