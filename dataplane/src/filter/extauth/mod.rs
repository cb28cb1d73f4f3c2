//! `extAuth`: forward authentication, like nginx `auth_request`, Traefik `ForwardAuth` or
//! oauth2-proxy behind a gateway.
//!
//! For every request of a rule that has it, after `jwt`/`keyAuth` when those are configured
//! too (then both must admit the request), weir asks the auth service with a `GET` without
//! a body to the configured URL or Service path. The auth request carries:
//! - the client's headers named in `forwardHeaders`, or, when the list is empty, every
//!   end-to-end header of the request except the client's own `X-Forwarded-*` and
//!   `Forwarded`; in both cases never a hop-by-hop header, `Host`, `Content-Length`,
//!   `Transfer-Encoding` or `Expect`;
//! - `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host` (the host the client
//!   asked for), `X-Forwarded-Uri` (the original path and query), `X-Forwarded-For` (the
//!   client address, trusted proxies applied) and `X-Request-ID`, always set by weir;
//! - `Host`: the URL's authority, or `name.namespace.svc:port` for a Service.
//!
//! The whole exchange (connect, response headers, body) is bounded by `timeout`. Then:
//! - **2xx**: the request goes on. Each header named in `upstreamHeaders` is copied from
//!   the answer onto the upstream request, all its values, replacing; the client's own
//!   copies were removed before ([`ExtAuth::strip_upstream_headers`]), so identity cannot
//!   be forged. The request counts as authenticated; extAuth never sets a Consumer (one
//!   found by `jwt`/`keyAuth` before stays).
//! - **any other status** (a 3xx to a login page, 401, 403, even a 5xx): the client gets
//!   that answer, its headers minus hop-by-hop ones, its body capped at
//!   [`MAX_BODY_BYTES`] (with `Content-Length` fixed). The request never reaches the
//!   upstream.
//! - **no answer** (connect failure, no ready endpoint, timeout, invalid response, body
//!   read error): with `onError: Deny` a 503 ([`ProxyError::AuthUnavailable`]); with
//!   `Allow` the request goes on, not authenticated by extAuth, and a warning names the
//!   plugin and the reason.
//!
//! A URL target is asked through one pooled HTTP(S) client (hyper-util with rustls,
//! aws-lc-rs) kept in the process-wide [`Upstream`], so connections are reused across
//! requests and snapshot reloads; a Service target through weir's own upstream connection
//! pool, round robin over its ready endpoints. Credentials (`Authorization`, `Cookie`) are
//! forwarded but never logged. Outcomes are counted in `weir_ext_auth_decisions_total`.

mod answer;
mod request;
mod transport;

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri};

pub use answer::MAX_BODY_BYTES;
pub use request::{X_FORWARDED_METHOD, X_FORWARDED_URI};
pub(crate) use transport::{UrlClient, url_client};

use super::{Flow, RequestContext};
use crate::proxy::{ProxyError, Upstream};
use crate::snapshot::{BackendId, ObjectKey};

/// Where the auth service is.
#[derive(Debug, Clone)]
pub enum ExtAuthTarget {
    /// An `http(s)://` URL (host names resolved by DNS), asked through a pooled client.
    Url(Uri),
    /// A Service port of the snapshot's backend table, asked through the upstream pool.
    Service {
        /// The Service port.
        backend: BackendId,
        /// The path (and query) asked.
        path_and_query: PathAndQuery,
        /// The `Host` sent (`name.namespace.svc:port`).
        host: HeaderValue,
    },
}

/// Everything an [`ExtAuth`] is built from.
#[derive(Debug, Clone)]
pub struct ExtAuthSettings {
    /// The Plugin object (for logs).
    pub source: ObjectKey,
    /// The auth service.
    pub target: ExtAuthTarget,
    /// How long to wait for its answer.
    pub timeout: Duration,
    /// Request headers sent to it; `None` = every end-to-end header.
    pub forward_headers: Option<Box<[HeaderName]>>,
    /// Headers of a 2xx answer copied onto the upstream request.
    pub upstream_headers: Box<[HeaderName]>,
    /// Let the request through (unauthenticated) when the service cannot be asked.
    pub allow_on_error: bool,
}

/// What extAuth decided about one request: the label of `weir_ext_auth_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The auth service answered 2xx.
    Allowed,
    /// The auth service answered something else, returned to the client.
    Refused,
    /// No answer, `onError: Deny`: 503.
    ErrorDenied,
    /// No answer, `onError: Allow`: let through.
    ErrorAllowed,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::ErrorDenied => "error_denied",
            Outcome::ErrorAllowed => "error_allowed",
        }
    }
}

/// A compiled `extAuth` plugin.
#[derive(Debug)]
pub struct ExtAuth {
    settings: ExtAuthSettings,
    /// `forward_headers` without the names that are never sent.
    forward: Option<Box<[HeaderName]>>,
    /// The `Host` of the auth request, or why a URL target cannot be asked.
    host: Result<HeaderValue, String>,
}

/// The `Host` for a URL target: its authority, when it is an absolute `http(s)` URL
/// without user information (which would be sent as `Host`; the message never repeats it).
fn url_host(uri: &Uri) -> Result<HeaderValue, String> {
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .filter(|_| matches!(uri.scheme_str(), Some("http" | "https")));
    authority
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .ok_or_else(|| "the url is not an absolute http(s) URL without user information".to_owned())
}

impl ExtAuth {
    /// Builds the filter.
    pub fn new(settings: ExtAuthSettings) -> Self {
        let forward = settings.forward_headers.as_deref().map(request::sendable);
        let host = match &settings.target {
            ExtAuthTarget::Url(uri) => url_host(uri),
            ExtAuthTarget::Service { host, .. } => Ok(host.clone()),
        };
        ExtAuth { settings, forward, host }
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &ExtAuthSettings {
        &self.settings
    }

    /// Removes the client's own copies of the headers the auth service sets.
    pub fn strip_upstream_headers(&self, headers: &mut http::HeaderMap) {
        for name in &*self.settings.upstream_headers {
            headers.remove(name);
        }
    }

    /// Asks the auth service about the request: `Continue` on a 2xx (its
    /// `upstreamHeaders` copied onto the request), `Respond` with its own answer otherwise,
    /// and per `onError` when it cannot be asked.
    pub async fn check(
        &self,
        request: &mut http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Flow, ProxyError> {
        let headers = request::headers(self.forward.as_deref(), request, ctx);
        let timeout = self.settings.timeout;
        let asked = tokio::time::timeout(timeout, self.ask(headers, ctx)).await;
        let result = asked.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        let outcome = match result {
            Ok(answer) if answer.status.is_success() => {
                answer::copy_headers(&self.settings.upstream_headers, &answer.headers, request);
                ctx.authenticated = true;
                Ok((Outcome::Allowed, Flow::Continue))
            }
            Ok(answer) => Ok((Outcome::Refused, Flow::Respond(Box::new(answer.into_response())))),
            Err(reason) if self.settings.allow_on_error => {
                tracing::warn!(
                    plugin = %self.settings.source, %reason,
                    "auth service unavailable; letting the request through (onError: Allow)"
                );
                Ok((Outcome::ErrorAllowed, Flow::Continue))
            }
            Err(reason) => Err(ProxyError::AuthUnavailable {
                reason: format!("extAuth {}: {reason}", self.settings.source),
            }),
        };
        match outcome {
            Ok((outcome, flow)) => {
                crate::metrics::ext_auth_decision(outcome);
                Ok(flow)
            }
            Err(error) => {
                crate::metrics::ext_auth_decision(Outcome::ErrorDenied);
                Err(error)
            }
        }
    }

    /// One exchange with the auth service, until its body is read (capped).
    async fn ask(
        &self,
        headers: http::HeaderMap,
        ctx: &RequestContext<'_>,
    ) -> Result<answer::Answer, String> {
        // Without a data plane (unit tests) a fresh pool serves this one request.
        let own;
        let upstream = match ctx.upstream {
            Some(upstream) => upstream,
            None => {
                own = Upstream::default();
                &own
            }
        };
        let host = self.host.clone()?;
        match &self.settings.target {
            ExtAuthTarget::Url(uri) => transport::ask_url(upstream, uri, host, headers).await,
            ExtAuthTarget::Service { backend, path_and_query, .. } => {
                let backend = ctx
                    .backends
                    .and_then(|table| table.get(*backend))
                    .ok_or_else(|| "the auth Service is not in the backend table".to_owned())?;
                let target = transport::ServiceTarget {
                    backend,
                    path_and_query,
                    host,
                    connect_timeout: self.settings.timeout,
                };
                transport::ask_service(upstream, target, headers).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
