//! The proxy: one request from the client through the router and balancer to an upstream.
//!
//! Per request: one snapshot load, one route lookup, one backend pick. The request and
//! response bodies stream through; hop-by-hop headers are removed both ways and the
//! `X-Forwarded-*` headers are set. Every failure is a [`ProxyError`], answered by
//! [`error_response`].

pub mod body;
pub mod error;
pub mod headers;
pub mod normalize;
pub mod pool;
pub mod trace;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, Version};
use http_body::Body as _;
use hyper::body::Incoming;

pub use body::ProxyBody;
pub use error::{ProxyError, X_REQUEST_ID, error_response};
pub use upstream::Upstream;

use crate::filter::{self, RequestContext};
use crate::rewrite::rewrite_path;
use crate::router::RequestView;
use crate::server::DataPlane;

/// The client end of a connection, with what every request on it needs precomputed.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its `X-Forwarded-For` text ([`headers::forwarded_for`]).
    pub forwarded_for: HeaderValue,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Peer { addr, forwarded_for: headers::forwarded_for(addr.ip()) }
    }
}

/// Proxies one request from the client `peer` and returns the response to send: the
/// upstream's, or the gateway's own JSON error.
pub async fn handle(
    dataplane: &DataPlane,
    request: Request<Incoming>,
    peer: &Peer,
) -> Response<ProxyBody> {
    let client = peer.addr;
    let mut request = request;
    let request_id = trace::ensure_request_identity(request.headers_mut());
    let mut ctx = RequestContext {
        client: Some(client),
        rate_limits: Some(&dataplane.rate_limits),
        ..RequestContext::default()
    };
    let mut response = match proxy(dataplane, request, peer, &mut ctx).await {
        Ok(response) => response,
        Err(error) => error_response(&error, Some(&request_id)),
    };
    // Upstream responses and gateway errors alike (rate-limit headers).
    filter::finish_response(response.headers_mut(), &ctx);
    response
}

/// The host the client asked for: the URI authority (HTTP/2 `:authority`, HTTP/1
/// absolute-form), else the `Host` header; empty when neither is present.
fn original_host(parts: &http::request::Parts) -> HeaderValue {
    let from_header = || parts.headers.get(HOST).cloned();
    let from_uri = || parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    // RFC 9112 §3.2.2: an absolute-form target's authority wins over the Host header.
    from_uri().or_else(from_header).unwrap_or_else(|| HeaderValue::from_static(""))
}

async fn proxy(
    dataplane: &DataPlane,
    request: Request<Incoming>,
    peer: &Peer,
    ctx: &mut RequestContext<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let snapshot = dataplane.current();
    let (mut parts, body) = request.into_parts();
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if !parts.uri.path().starts_with('/') {
        return Err(ProxyError::BadRequest {
            reason: "the request target is not an absolute path",
        });
    }
    if let Some(normal) = normalize::remove_dot_segments(parts.uri.path()) {
        let target = match parts.uri.query() {
            Some(query) => format!("{normal}?{query}"),
            None => normal,
        };
        let path_and_query = PathAndQuery::try_from(target)
            .map_err(|_| ProxyError::BadRequest { reason: "invalid request target" })?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(path_and_query);
        parts.uri = http::Uri::from_parts(uri)
            .map_err(|_| ProxyError::BadRequest { reason: "invalid request target" })?;
    }
    let host = original_host(&parts);
    // RFC 9112 §3.2: an HTTP/1.1 request without a Host is answered 400.
    let host_missing = !parts.headers.contains_key(HOST) && parts.uri.authority().is_none();
    if host_missing && parts.version == Version::HTTP_11 {
        return Err(ProxyError::BadRequest { reason: "missing Host header" });
    }
    let view = RequestView {
        method: &parts.method,
        host: host.to_str().unwrap_or(""),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let Some(matched) = snapshot.routes.find(&view) else {
        return Err(ProxyError::NoRoute);
    };
    let rule = matched.rule;
    let action = &rule.action;

    headers::remove_identity_headers(&mut parts.headers, &snapshot.identity_headers);
    if !action.filters.is_empty() {
        filter::request_phase(&action.filters, &mut parts, ctx).await.inspect_err(|e| {
            match e {
                ProxyError::Unavailable { reason } => {
                    tracing::warn!(route = %rule.route, rule = %rule.name, %reason, "rule unavailable, answering 503");
                }
                // The reason only: never the credential.
                ProxyError::Unauthorized { reason, .. } => {
                    tracing::debug!(route = %rule.route, rule = %rule.name, reason = reason.as_str(), "unauthenticated, answering 401");
                }
                ProxyError::RateLimited { retry_after_secs } => {
                    tracing::debug!(route = %rule.route, rule = %rule.name, retry_after_secs, "rate limited, answering 429");
                }
                _ => {}
            }
        })?;
    }

    let backend = action.backends.pick().and_then(|id| snapshot.backends.get(id));
    let backend = match backend {
        Some(b) if b.problem.is_none() && !b.endpoints.is_empty() => b,
        other => {
            let reason = match other {
                None => "no backend with a positive weight".to_owned(),
                Some(b) => match &b.problem {
                    Some(problem) => format!("backend {}: {problem}", b.key),
                    None => format!("backend {} has no ready endpoint", b.key),
                },
            };
            tracing::warn!(route = %rule.route, rule = %rule.name, %reason, "no endpoint, answering 503");
            return Err(ProxyError::NoEndpoint { reason });
        }
    };

    let rewritten = action
        .rewrite
        .as_ref()
        .and_then(|rw| rewrite_path(rw, matched.matched, parts.uri.path(), parts.uri.query()));
    let path_and_query = match rewritten {
        Some(pq) => PathAndQuery::try_from(pq)
            .map_err(|e| ProxyError::InvalidUpstreamRequest { reason: e.to_string() })?,
        None => {
            parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))
        }
    };

    headers::remove_hop_by_hop(&mut parts.headers);
    headers::set_forwarded(&mut parts.headers, &peer.forwarded_for, "http", &host);
    let upstream_host = action.rewrite.as_ref().and_then(|rw| rw.host.clone()).unwrap_or(host);
    if !upstream_host.is_empty() {
        parts.headers.insert(HOST, upstream_host);
    }

    let body = (!body.is_end_stream()).then(|| Arc::new(Mutex::new(Some(body))));
    let prepared =
        upstream::Prepared { method: parts.method, path_and_query, headers: parts.headers, body };
    let result =
        upstream::send(&dataplane.upstream, backend, &action.timeouts, &action.retries, prepared)
            .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(
                route = %rule.route, rule = %rule.name, backend = %backend.key, %error,
                "upstream request failed"
            );
            return Err(error);
        }
    };
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if !action.filters.is_empty() {
        filter::response_phase(&action.filters, &mut parts, ctx);
    }
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(parts, ProxyBody::Pooled(body)))
}
