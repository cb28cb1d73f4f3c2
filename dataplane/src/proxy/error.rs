//! Proxy errors and the one place that turns them into the gateway's responses: JSON
//! ([`error_response`]), or trailers-only gRPC answers to gRPC requests
//! ([`grpc_error_response`]).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::grpc::{self, GRPC_MESSAGE, GRPC_STATUS};
use crate::filter::{AuthFailure, Challenge};

/// The incoming header whose value, when valid, becomes the `requestId` of error bodies.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why the gateway answers a request itself. Each variant records where it failed; the
/// details are for logs only and never reach the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched the request (router).
    #[error("no route matches the request")]
    NoRoute,
    /// The request cannot be routed as sent (downstream), e.g. an authority-form target.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: &'static str,
    },
    /// A request on a TLS connection for a host whose certificate is not the one the
    /// connection's handshake chose (another host's SNI, e.g. to get around its client
    /// certificate requirement): 421, the client should open a connection for that host.
    #[error("misdirected request: the host is not served by this connection's certificate")]
    Misdirected,
    /// CONNECT: the gateway does not tunnel (downstream).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The matched rule has no usable endpoint: no backend with weight, an unresolved
    /// backend, or no ready endpoint (balancer).
    #[error("no ready endpoint: {reason}")]
    NoEndpoint {
        /// Why, e.g. the backend's problem message.
        reason: String,
    },
    /// The chosen backend is invalid (a Gateway API backendRef that is not permitted, not
    /// found or of an unsupported kind): its share of the traffic gets 500, as the Gateway
    /// API requires.
    #[error("invalid backend: {reason}")]
    InvalidBackend {
        /// Why (logs only).
        reason: String,
    },
    /// Connecting to the upstream failed on every attempt (upstream connect).
    #[error("upstream connect failure: {source}")]
    UpstreamConnect {
        /// The last connect error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No response headers before the request or per-try timeout (upstream timeout).
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The upstream connection failed after connecting or sent an invalid response.
    #[error("bad upstream response: {source}")]
    BadResponse {
        /// The connection error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The upstream request could not be built (e.g. a rewrite produced an invalid URI).
    #[error("invalid upstream request: {reason}")]
    InvalidUpstreamRequest {
        /// What was invalid.
        reason: String,
    },
    /// Authentication failed (filter chain): 401 with `WWW-Authenticate`. The reason is
    /// for logs and metrics only.
    #[error("unauthorized: {}", reason.as_str())]
    Unauthorized {
        /// The challenges to send.
        challenge: Challenge,
        /// Why.
        reason: AuthFailure,
    },
    /// The rate limit refused the request (filter chain): 429 with `Retry-After` and
    /// `retryAfter` in the body. Never proxied.
    #[error("rate limited (retry after {retry_after_secs}s)")]
    RateLimited {
        /// Seconds until a request would be admitted (at least 1).
        retry_after_secs: u64,
    },
    /// The rule cannot be served safely, e.g. it references a Plugin that is missing
    /// (filter chain, fail closed).
    #[error("rule unavailable: {reason}")]
    Unavailable {
        /// Why, for logs.
        reason: String,
    },
    /// A filter denied the request (`ipRestriction`): 403.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why, for logs.
        reason: &'static str,
    },
    /// The request body is larger than the `requestSize` limit: 413. Never proxied, or
    /// the upstream request was aborted mid-body.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The `extAuth` service could not be asked (connect failure, timeout, invalid
    /// answer) and its `onError` is `Deny`: 503.
    #[error("auth service unavailable: {reason}")]
    AuthUnavailable {
        /// Why, for logs.
        reason: String,
    },
    /// The backend's circuit is open, or one of its `circuitBreaker` caps is reached:
    /// answered at once with the policy's fallback (default 503 and the gateway's JSON
    /// error body); the upstream was not contacted.
    #[error("{} for backend {backend}", reason.message())]
    Fallback {
        /// The backend.
        backend: crate::snapshot::BackendKey,
        /// Open circuit or cap.
        reason: FallbackReason,
        /// The policy's `circuitBreaker.fallback` (`None`: the default answer).
        fallback: Option<Box<crate::upstream::policy::Fallback>>,
    },
    /// A WebSocket upgrade to a backend that speaks HTTP/2 (h2c or h2): 501. Upgrades need an
    /// HTTP/1.1 backend (`appProtocol` unset, `http` or `kubernetes.io/ws`).
    #[error("upgrade not supported: {reason}")]
    UpgradeUnsupported {
        /// Why, for logs.
        reason: String,
    },
}

/// Why the fallback answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The circuit is open (or half-open with its probe in flight).
    CircuitOpen,
    /// A cap is reached (`maxParallelRequests`, `maxConnections`, `maxPendingRequests`).
    Overflow,
    /// No endpoint is usable (all ejected or failing checks, `panicThreshold: 0`).
    NoHealthyEndpoint,
}

impl FallbackReason {
    /// What happened, as the default fallback body says it.
    pub fn message(self) -> &'static str {
        match self {
            FallbackReason::CircuitOpen => "circuit open",
            FallbackReason::Overflow => "too many requests in flight",
            FallbackReason::NoHealthyEndpoint => "no healthy endpoint",
        }
    }
}

impl ProxyError {
    /// The status the gateway answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Fallback { fallback, .. } => {
                fallback.as_ref().map_or(StatusCode::SERVICE_UNAVAILABLE, |f| f.status)
            }
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::InvalidBackend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamConnect { .. } | ProxyError::BadResponse { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::InvalidUpstreamRequest { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpgradeUnsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// A stable label for logs, metrics and the [`RequestRecord`](crate::observe::RequestRecord).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::Misdirected => "misdirected",
            ProxyError::NoEndpoint { .. } => "no_endpoint",
            ProxyError::InvalidBackend { .. } => "invalid_backend",
            ProxyError::UpstreamConnect { .. } => "upstream_connect",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::BadResponse { .. } => "bad_response",
            ProxyError::InvalidUpstreamRequest { .. } => "invalid_upstream_request",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Unavailable { .. } => "unavailable",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::PayloadTooLarge => "payload_too_large",
            ProxyError::AuthUnavailable { .. } => "auth_unavailable",
            ProxyError::UpgradeUnsupported { .. } => "upgrade_unsupported",
            ProxyError::Fallback { reason: FallbackReason::CircuitOpen, .. } => "circuit_open",
            ProxyError::Fallback { reason: FallbackReason::Overflow, .. } => "overflow",
            ProxyError::Fallback { reason: FallbackReason::NoHealthyEndpoint, .. } => "no_endpoint",
        }
    }

    /// The client-facing message: fixed text, no internal detail.
    pub fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route matches the request",
            ProxyError::BadRequest { .. } => "bad request",
            ProxyError::MethodNotAllowed => "method not allowed",
            ProxyError::Misdirected => "misdirected request",
            ProxyError::NoEndpoint { .. } => "no ready endpoint",
            ProxyError::InvalidBackend { .. } => "invalid backend",
            ProxyError::UpstreamConnect { .. } => "upstream connect failure",
            ProxyError::UpstreamTimeout => "upstream timeout",
            ProxyError::BadResponse { .. } => "bad upstream response",
            ProxyError::InvalidUpstreamRequest { .. } => "internal error",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::RateLimited { .. } => "rate limit exceeded",
            ProxyError::Unavailable { .. } => "service unavailable",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::PayloadTooLarge => "request body too large",
            ProxyError::AuthUnavailable { .. } => "authorization service unavailable",
            ProxyError::UpgradeUnsupported { .. } => {
                "WebSocket upgrades are not supported by this backend (HTTP/2)"
            }
            ProxyError::Fallback { reason, .. } => reason.message(),
        }
    }
}

/// Whether an incoming request id is safe to echo: 1 to 128 visible ASCII characters out of
/// letters, digits and `-_.:`.
pub fn valid_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// The gateway's answer to a gRPC request (see [`super::grpc`]) for `error`: HTTP 200,
/// trailers-only, `grpc-status` from the error's HTTP status, `grpc-message` its public
/// message, and `x-request-id` as in [`error_response`] (`WWW-Authenticate` and
/// `Retry-After` too). No body is built.
pub fn grpc_error_response(
    error: &ProxyError,
    request_id: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let status = error.status();
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    // The fallback is "unavailable" (14) whatever HTTP status the policy answers with.
    let code = match error {
        ProxyError::Fallback { .. } => 14,
        _ => grpc::status_code(status),
    };
    headers.insert(GRPC_STATUS, grpc::status_value(code));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(error.public_message()));
    match request_id.filter(|v| valid_request_id(v)) {
        Some(id) => headers.insert(X_REQUEST_ID, id.clone()),
        None => headers.insert(X_REQUEST_ID, super::trace::new_request_id()),
    };
    add_error_headers(error, headers);
    response
}

/// `Retry-After` of a 429 and the `WWW-Authenticate` challenges of a 401.
fn add_error_headers(error: &ProxyError, headers: &mut http::HeaderMap) {
    if let ProxyError::RateLimited { retry_after_secs } = error {
        headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    if let ProxyError::Unauthorized { challenge, .. } = error {
        if challenge.bearer {
            headers.append(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(if challenge.invalid_token {
                    r#"Bearer realm="weir", error="invalid_token""#
                } else {
                    r#"Bearer realm="weir""#
                }),
            );
        }
        if challenge.api_key {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_static(r#"ApiKey realm="weir""#));
        }
    }
}

/// The gateway's JSON response for `error`: `{"error", "status", "requestId"}` with
/// `content-type: application/json` (a 429 adds `retryAfter` and `Retry-After`). The request id is the incoming `x-request-id` when
/// valid, else a fresh UUID v4. This is the only place errors become responses.
pub fn error_response(error: &ProxyError, request_id: Option<&HeaderValue>) -> Response<ProxyBody> {
    let status = error.status();
    let id = match request_id.filter(|v| valid_request_id(v)).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => super::trace::new_request_id().to_str().unwrap_or_default().to_owned(),
    };
    if let ProxyError::Fallback { fallback: Some(f), .. } = error
        && let Some(body) = &f.body
    {
        let mut response = Response::new(ProxyBody::full(body.clone()));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, f.content_type.clone());
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
        return response;
    }
    let message = match error {
        // The default fallback names the backend ("circuit open for backend ns/svc:80").
        ProxyError::Fallback { .. } => serde_json::Value::from(error.to_string()),
        _ => serde_json::Value::from(error.public_message()),
    };
    let mut body = serde_json::json!({
        "error": message,
        "status": status.as_u16(),
        "requestId": id,
    });
    let retry_after = match error {
        ProxyError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
    };
    if let (Some(secs), Some(map)) = (retry_after, body.as_object_mut()) {
        map.insert("retryAfter".to_owned(), secs.into());
    }
    let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    add_error_headers(error, response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("{\"x\"}")));
        let long = "a".repeat(129);
        assert!(!valid_request_id(&HeaderValue::from_str(&long).unwrap()));
    }

    #[test]
    fn statuses_match_the_api() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoEndpoint { reason: "x".into() }.status(), 503);
        let invalid = ProxyError::InvalidBackend { reason: "not permitted".into() };
        assert_eq!(
            (invalid.status(), invalid.kind()),
            (StatusCode::INTERNAL_SERVER_ERROR, "invalid_backend")
        );
        assert_eq!(invalid.public_message(), "invalid backend");
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        let r = error_response(&ProxyError::NoRoute, Some(&HeaderValue::from_static("id-1")));
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[X_REQUEST_ID], "id-1");
    }

    #[test]
    fn unauthorized_carries_the_challenges_and_no_reason() {
        let challenge = Challenge { bearer: true, api_key: true, invalid_token: true };
        let e = ProxyError::Unauthorized { challenge, reason: AuthFailure::Expired };
        let r = error_response(&e, None);
        assert_eq!(r.status(), 401);
        let values: Vec<_> = r.headers().get_all(WWW_AUTHENTICATE).iter().collect();
        assert_eq!(
            values,
            [r#"Bearer realm="weir", error="invalid_token""#, r#"ApiKey realm="weir""#]
        );
        assert_eq!(ProxyError::Unavailable { reason: "x".into() }.status(), 503);
    }

    fn fallback_error(body: Option<&'static str>) -> ProxyError {
        let fallback = crate::upstream::policy::Fallback {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: body.map(|b| Bytes::from_static(b.as_bytes())),
            content_type: HeaderValue::from_static("text/plain"),
        };
        ProxyError::Fallback {
            backend: crate::snapshot::BackendKey {
                namespace: "shop".into(),
                service: "orders".into(),
                port: 80,
            },
            reason: FallbackReason::CircuitOpen,
            fallback: Some(Box::new(fallback)),
        }
    }

    #[test]
    fn the_fallback_answers_with_the_policy_status_body_and_type() {
        let r =
            error_response(&fallback_error(Some("busy")), Some(&HeaderValue::from_static("r1")));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
        assert_eq!(r.headers()[X_REQUEST_ID], "r1");
        let ProxyBody::Full(Some(bytes)) = r.into_body() else { panic!("not a full body") };
        assert_eq!(bytes, "busy");
        // Without a body: the gateway's JSON error with the policy's status.
        let r = error_response(&fallback_error(None), Some(&HeaderValue::from_static("r2")));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let ProxyBody::Full(Some(bytes)) = r.into_body() else { panic!("not a full body") };
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "circuit open for backend shop/orders:80",
                "status": 429, "requestId": "r2"})
        );
        // gRPC: unavailable, whatever the HTTP status.
        let g = grpc_error_response(&fallback_error(Some("busy")), None);
        assert_eq!(g.status(), 200);
        assert_eq!(g.headers()[GRPC_STATUS], "14");
        assert_eq!(fallback_error(None).kind(), "circuit_open");
    }

    #[test]
    fn rate_limited_is_a_429_with_retry_after_in_header_and_body() {
        let e = ProxyError::RateLimited { retry_after_secs: 42 };
        let r = error_response(&e, Some(&HeaderValue::from_static("rid-7")));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "42");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let ProxyBody::Full(Some(bytes)) = r.into_body() else { panic!("not a full body") };
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "rate limit exceeded", "status": 429,
                "requestId": "rid-7", "retryAfter": 42})
        );
    }
}
