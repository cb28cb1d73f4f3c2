//! The proxy: one request from the client through the router and balancer to an upstream.
//!
//! Per request: one snapshot load, one route lookup, one backend pick. The request and
//! response bodies stream through; hop-by-hop headers are removed both ways and the
//! `X-Forwarded-*` headers are set. Every failure is a [`ProxyError`], answered by
//! [`error_response`].

pub mod body;
pub mod edge;
pub mod error;
pub mod forward;
pub mod grpc;
pub mod headers;
pub mod normalize;
pub mod trace;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::header::{ACCESS_CONTROL_REQUEST_METHOD, HOST, ORIGIN, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

pub use crate::upstream::pool::Upstream;
pub use body::ProxyBody;
pub use error::{ProxyError, X_REQUEST_ID, error_response, grpc_error_response};

use crate::filter::{self, Flow, RequestContext};
use crate::observe::{ObservedBody, RequestRecord, grpc_status};
use crate::rewrite::rewrite_path;
use crate::router::RequestView;
use crate::server::DataPlane;
use crate::snapshot::{Filter, Rule, UpstreamProtocol};
use body::{BodyStats, ClientBody, PendingBody};

/// The client end of a connection, with what every request on it needs precomputed.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its `X-Forwarded-For` text ([`headers::forwarded_for`]).
    pub forwarded_for: HeaderValue,
    /// `Some` on a TLS connection: SNI and the verified client certificate's subject.
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
}

impl Peer {
    /// The peer at `addr`, on a plain-text connection.
    pub fn new(addr: SocketAddr) -> Self {
        Peer { addr, forwarded_for: headers::forwarded_for(addr.ip()), tls: None }
    }

    /// The peer at `addr`, on a TLS connection.
    pub fn with_tls(addr: SocketAddr, tls: crate::tls::TlsInfo) -> Self {
        Peer { tls: Some(Arc::new(tls)), ..Peer::new(addr) }
    }
}

/// Proxies one request from the client `peer` and returns the response to send: the
/// upstream's, or the gateway's own answer. The matched rule's response phase runs on
/// either; with an observer, the response body reports the request's end.
pub async fn handle(
    dataplane: &Arc<DataPlane>,
    request: Request<Incoming>,
    peer: &Peer,
) -> Response<ProxyBody> {
    let observed = dataplane.observer().map(|o| (o, Instant::now(), SystemTime::now()));
    let snapshot = dataplane.current();
    // gRPC is HTTP/2 only: HTTP/1.1 requests pay one comparison.
    let grpc = request.version() == Version::HTTP_2 && grpc::is_grpc(request.headers());
    let mut request = request;
    let (request_id, trace) = match dataplane.observability.tracing.as_deref() {
        None => (trace::ensure_request_identity(request.headers_mut()), None),
        Some(tracing) => trace::ensure_traced_identity(request.headers_mut(), tracing.sampler()),
    };
    let head = observed.as_ref().map(|_| RequestHead::of(&request));
    let mut ctx = RequestContext {
        client: Some(peer.addr),
        rate_limits: Some(&dataplane.rate_limits),
        request_id,
        backends: Some(&snapshot.backends),
        upstream: Some(&dataplane.upstream),
        trace,
        cache_runtime: Some(&dataplane.cache),
        ..RequestContext::default()
    };
    if let Some(tls) = &peer.tls {
        ctx.scheme = "https";
        ctx.client_cert_subject = tls.client_cert_subject.clone();
    }
    let mut exchange = Exchange::default();
    let (mut response, error) =
        match proxy(dataplane, &snapshot, request, peer, grpc, &mut ctx, &mut exchange).await {
            Ok(response) => (response, None),
            Err(error) if grpc => {
                (grpc_error_response(&error, Some(&ctx.request_id)), Some(error.kind()))
            }
            Err(error) => (error_response(&error, Some(&ctx.request_id)), Some(error.kind())),
        };
    // Upstream responses and gateway answers alike (rate-limit headers, response phase).
    filter::finish_response(response.headers_mut(), &ctx);
    if let Some(rule) = exchange.rule
        && !rule.action.filters.is_empty()
    {
        filter::response_phase(&rule.action.filters, &mut response, &ctx);
    }
    let tunnel = exchange.tunnel.take();
    match (observed, head) {
        (Some((observer, started, time)), Some(head)) => {
            let record = RequestRecord {
                time,
                request_id: ctx.request_id.clone(),
                client_ip: ctx.client_ip.unwrap_or_else(|| peer.addr.ip().to_canonical()),
                method: head.method,
                host: head.host,
                path: head.path,
                route: exchange.rule.map(|r| r.route().clone()),
                rule: exchange.rule.map(|r| Arc::clone(&r.name)),
                status: response.status(),
                duration: Duration::ZERO,
                upstream_duration: exchange.upstream_duration,
                backend: exchange.backend.cloned(),
                upstream: exchange.upstream_addr,
                retries: exchange.retries,
                consumer: ctx.consumer.as_ref().map(|c| Arc::clone(&c.username)),
                bytes_in: 0,
                bytes_out: 0,
                rate_limited: error == Some("rate_limited"),
                error,
                completed: false,
                traceparent: head.traceparent,
                stats: exchange.rule.map(|r| Arc::clone(&r.stats)),
                trace: ctx.trace.take(),
                cache: ctx.cache.as_ref().map(|c| c.status.as_str()),
                grpc_status: if grpc { grpc_status(response.headers()) } else { None },
            };
            if let Some(tunnel) = tunnel {
                // An upgraded session reports at its close (status 101, the whole session).
                tunnel.spawn(Some(upgrade::SessionEnd { record, started, observer }));
                return response;
            }
            response.map(|body| {
                ProxyBody::Observed(Box::new(ObservedBody::new(
                    body,
                    record,
                    started,
                    exchange.body_stats,
                    observer,
                )))
            })
        }
        _ => {
            if let Some(tunnel) = tunnel {
                tunnel.spawn(None);
            }
            response
        }
    }
}

/// The causes below an error's message and its first source (which the message already
/// shows), joined by `: ` — hyper's "connection error" hides why, e.g. a TLS alert from an
/// upstream that refused the gateway's client certificate. Only on the error path.
fn deeper_causes(error: &ProxyError) -> String {
    let mut out = String::new();
    let mut next = std::error::Error::source(error).and_then(std::error::Error::source);
    while let Some(cause) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// What the end-of-request record needs of the request line, copied only when observed.
struct RequestHead {
    method: Method,
    host: HeaderValue,
    path: Box<str>,
    traceparent: Option<HeaderValue>,
}

impl RequestHead {
    fn of(request: &Request<Incoming>) -> Self {
        RequestHead {
            method: request.method().clone(),
            host: authority_host(request.uri())
                .or_else(|| request.headers().get(HOST).cloned())
                .unwrap_or_else(|| HeaderValue::from_static("")),
            path: request.uri().path().into(),
            traceparent: request.headers().get(trace::TRACEPARENT).cloned(),
        }
    }
}

/// What the proxy learnt about one request on the way, for the response phase and the
/// end-of-request record.
#[derive(Default)]
struct Exchange<'s> {
    /// The matched rule.
    rule: Option<&'s Rule>,
    /// The backend chosen.
    backend: Option<&'s crate::snapshot::BackendKey>,
    /// The endpoint of the last attempt.
    upstream_addr: Option<SocketAddr>,
    /// Attempts after the first.
    retries: u32,
    /// Until the upstream's response headers (observed requests only).
    upstream_duration: Option<Duration>,
    /// The client's body as it streamed upstream (observed or limited requests only).
    body_stats: Option<Arc<BodyStats>>,
    /// An accepted WebSocket upgrade, started by `handle` after the response phase.
    tunnel: Option<upgrade::Tunnel>,
}

/// The host the client asked for: the URI authority (HTTP/2 `:authority`, HTTP/1
/// absolute-form), else the `Host` header; empty when neither is present.
pub(crate) fn original_host(parts: &http::request::Parts) -> HeaderValue {
    let from_header = || parts.headers.get(HOST).cloned();
    let from_uri = || authority_host(&parts.uri);
    // RFC 9112 §3.2.2: an absolute-form target's authority wins over the Host header.
    from_uri().or_else(from_header).unwrap_or_else(|| HeaderValue::from_static(""))
}

/// The URI's authority without userinfo: `host[:port]`. An absolute-form target's
/// `user:password@` must reach neither the upstream's `Host` nor a log.
fn authority_host(uri: &http::Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    HeaderValue::from_str(host).ok()
}

/// `backend` when it can take a request (no problem, a ready endpoint), else why not;
/// `missing` is the reason when there is none. Shared by the proxy and aggregate parts.
pub(crate) fn ready_backend<'b>(
    backend: Option<&'b crate::snapshot::Backend>,
    missing: &str,
) -> Result<&'b crate::snapshot::Backend, String> {
    match backend {
        Some(b) if b.problem.is_none() && !b.endpoints.is_empty() => Ok(b),
        None => Err(missing.to_owned()),
        Some(b) => Err(match &b.problem {
            Some(problem) => format!("backend {}: {problem}", b.key),
            None => format!("backend {} has no ready endpoint", b.key),
        }),
    }
}

/// The rule for a request. A CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) is matched as the request it announces when that
/// rule has a `cors` filter, else as the `OPTIONS` request it is.
fn find_rule<'t>(
    snapshot: &'t crate::snapshot::Snapshot,
    parts: &http::request::Parts,
    host: &str,
) -> Option<crate::router::RouteMatch<'t>> {
    let mut view = RequestView {
        method: &parts.method,
        host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    if parts.method == Method::OPTIONS
        && parts.headers.contains_key(ORIGIN)
        && let Some(announced) = parts.headers.get(ACCESS_CONTROL_REQUEST_METHOD)
        && let Ok(announced) = Method::from_bytes(announced.as_bytes())
        && let Some(matched) = snapshot.routes.find(&RequestView { method: &announced, ..view })
        && matched.rule.action.filters.iter().any(|f| matches!(f, Filter::Cors(_)))
    {
        return Some(matched);
    }
    view.method = &parts.method;
    snapshot.routes.find(&view)
}

#[allow(clippy::too_many_arguments)]
async fn proxy<'s>(
    dataplane: &Arc<DataPlane>,
    snapshot: &'s crate::snapshot::Snapshot,
    request: Request<Incoming>,
    peer: &Peer,
    grpc: bool,
    ctx: &mut RequestContext<'s>,
    exchange: &mut Exchange<'s>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    // Drained if the gateway answers without sending it upstream.
    let mut body = PendingBody(Some(body));
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    // hyper offers an upgrade only for HTTP/1.1 requests with an `Upgrade` header (no
    // extension at all on the common path); only WebSocket is proxied.
    let upgrade = match parts.extensions.remove::<OnUpgrade>() {
        Some(on_upgrade) => upgrade::websocket_requested(&parts.headers).map(|v| (on_upgrade, v)),
        None => None,
    };
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
    if let Some(tls) = &peer.tls
        && edge::misdirected(snapshot, tls, &host)
    {
        return Err(ProxyError::Misdirected);
    }
    let Some(matched) = find_rule(snapshot, &parts, host.to_str().unwrap_or("")) else {
        return Err(ProxyError::NoRoute);
    };
    let rule: &'s Rule = matched.rule;
    exchange.rule = Some(rule);
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.route_path =
            Some(crate::observe::otel::record::route_template(&matched.matched.path));
    }
    let action = &rule.action;
    if action.https_redirect && peer.tls.is_none() {
        let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        return edge::https_redirect(&host, target, dataplane.https_port());
    }

    headers::remove_identity_headers(&mut parts.headers, &snapshot.identity_headers);
    if !action.filters.is_empty() {
        ctx.route = Some(rule.route());
        ctx.matched = Some(matched.matched);
        ctx.request_timeout = action.timeouts.request;
        let flow = filter::request_phase(&action.filters, &mut parts, ctx).await.inspect_err(|e| {
            match e {
                ProxyError::Unavailable { reason } => {
                    tracing::warn!(route = %rule.route(), rule = %rule.name, %reason, "rule unavailable, answering 503");
                }
                // The reason only: never the credential.
                ProxyError::Unauthorized { reason, .. } => {
                    tracing::debug!(route = %rule.route(), rule = %rule.name, reason = reason.as_str(), "unauthenticated, answering 401");
                }
                ProxyError::RateLimited { retry_after_secs } => {
                    tracing::debug!(route = %rule.route(), rule = %rule.name, retry_after_secs, "rate limited, answering 429");
                }
                ProxyError::AuthUnavailable { reason } => {
                    tracing::warn!(route = %rule.route(), rule = %rule.name, %reason, "auth service unavailable, answering 503");
                }
                _ => {}
            }
        })?;
        if let Flow::Respond(mut response) = flow {
            response.headers_mut().insert(X_REQUEST_ID, ctx.request_id.clone());
            if grpc {
                grpc::into_grpc_answer(&mut response, None);
            }
            return Ok(*response);
        }
    }

    if let Some(aggregate) = &action.aggregate {
        // API composition: the parts' GETs instead of proxying; the client's body is drained.
        // Boxed, so the fan-out's state does not grow every request's future.
        let matched = matched.matched;
        let respond = crate::aggregate::respond(
            dataplane, snapshot, rule, aggregate, matched, parts, peer, host, ctx,
        );
        let response = Box::pin(respond).await?;
        // A cache Plugin on the rule stores the composed answer like an upstream one; a
        // stale entry is refreshed in the foreground here (the fan-out is the request's).
        let Some(cache) = ctx.cache.as_deref_mut() else { return Ok(response) };
        if cache.take_refresh().is_some() {
            cache.status = crate::cache::CacheStatus::Miss;
        }
        let (parts, body) = response.into_parts();
        // A partial answer (an optional part missing) is never stored.
        let partial = parts.headers.get(crate::aggregate::X_WEIR_COMPLETED)
            != Some(&HeaderValue::from_static("true"));
        let body = match if partial { None } else { cache.begin_store(&parts) } {
            Some(store) => {
                ProxyBody::Cached(Box::new(crate::cache::body::TeeBody::new(body, store)))
            }
            None => body,
        };
        return Ok(Response::from_parts(parts, body));
    }

    let backend = action.backends.pick().and_then(|id| snapshot.backends.get(id));
    let backend = match ready_backend(backend, "no backend with a positive weight") {
        Ok(b) => b,
        Err(reason) if backend.is_some_and(|b| b.invalid) => {
            tracing::warn!(route = %rule.route(), rule = %rule.name, %reason, "invalid backend, answering 500");
            return Err(ProxyError::InvalidBackend { reason });
        }
        Err(reason) => {
            tracing::warn!(route = %rule.route(), rule = %rule.name, %reason, "no endpoint, answering 503");
            return Err(ProxyError::NoEndpoint { reason });
        }
    };
    exchange.backend = Some(&backend.key);
    if upgrade.is_some() && backend.protocol != UpstreamProtocol::Http1 {
        let how = match backend.protocol {
            UpstreamProtocol::H2 => "HTTP/2 over TLS (h2)",
            _ => "HTTP/2 without TLS (h2c)",
        };
        return Err(ProxyError::UpgradeUnsupported {
            reason: format!("backend {} speaks {how}", backend.key),
        });
    }
    // ConsistentHash: the request's key, once (a cookie weir makes is set on the answer).
    let hashed = match backend.policy.as_deref().map(|p| &p.load_balancer) {
        Some(crate::upstream::policy::LoadBalancer::ConsistentHash(on)) => {
            // Trusted proxies apply as for the filters (already resolved when they ran).
            if ctx.client_ip.is_none() {
                ctx.resolve_client_ip(&parts.headers);
            }
            let client = ctx.client_ip.unwrap_or_else(|| peer.addr.ip().to_canonical());
            crate::upstream::balance::request_hash(on, &parts.headers, parts.uri.query(), client)
        }
        _ => crate::upstream::balance::RequestHash::default(),
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
    if let Some((_, value)) = &upgrade {
        upgrade::restore_upgrade_headers(&mut parts.headers, value.clone());
    }
    let proto = match &peer.tls {
        None => "http",
        Some(tls) => {
            if let Some(subject) = &tls.client_cert_subject {
                parts.headers.insert(edge::X_CLIENT_CERT_SUBJECT, subject.clone());
            }
            "https"
        }
    };
    headers::set_forwarded(&mut parts.headers, &peer.forwarded_for, proto, &host);
    let upstream_host = action.rewrite.as_ref().and_then(|rw| rw.host.clone()).unwrap_or(host);
    if !upstream_host.is_empty() {
        parts.headers.insert(HOST, upstream_host);
    }

    let observed = dataplane.has_observer();
    // `timeouts.idle`: both directions of the exchange count as activity.
    let activity = action.timeouts.idle.map(|_| Arc::new(upgrade::Activity::new()));
    let body = match body.0.take() {
        Some(body) if !body.is_end_stream() => {
            let stats = (observed || ctx.body_limit.is_some()).then(Arc::<BodyStats>::default);
            exchange.body_stats = stats.clone();
            let body = ClientBody::with_activity(body, ctx.body_limit, stats, activity.clone());
            Some(Arc::new(Mutex::new(Some(body))))
        }
        _ => None,
    };
    // A gRPC deadline bounds the exchange like `timeouts.request` (the smaller wins); the
    // header itself goes upstream unchanged.
    let mut timeouts = *action.timeouts;
    if grpc && let Some(deadline) = grpc::timeout(&parts.headers) {
        timeouts.request = Some(timeouts.request.map_or(deadline, |r| r.min(deadline)));
    }
    let prepared = forward::Prepared {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
        upgrade: upgrade.is_some(),
        hash: hashed.hash,
    };
    // Cache: a stale entry is answered now; this request's exchange refreshes it in the
    // background (one per key).
    if let Some(cache) = ctx.cache.as_deref_mut()
        && let Some(stale) = cache.take_refresh()
    {
        let (retries, stale) = (&action.retries, &*stale);
        return Ok(crate::cache::refresh::answer_stale(
            dataplane, snapshot, backend, &timeouts, retries, prepared, stale, cache,
        ));
    }
    let sent_at = observed.then(Instant::now);
    let mut attempts = forward::Attempts { trace: ctx.trace.take(), ..Default::default() };
    let result = forward::send(
        &dataplane.upstream,
        backend,
        &timeouts,
        &action.retries,
        prepared,
        &mut attempts,
    )
    .await;
    ctx.trace = attempts.trace.take();
    exchange.retries = attempts.retries;
    exchange.upstream_addr = attempts.last;
    exchange.upstream_duration = sent_at.map(|t| t.elapsed());
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let too_large = exchange
                .body_stats
                .as_ref()
                .is_some_and(|s| s.exceeded.load(std::sync::atomic::Ordering::Relaxed));
            if too_large {
                tracing::debug!(route = %rule.route(), rule = %rule.name, "request body over the limit, upstream request aborted, answering 413");
                return Err(ProxyError::PayloadTooLarge);
            }
            if let ProxyError::BadResponse { source } = &error
                && body::ClientBodyError::is_cause_of(&**source)
            {
                tracing::debug!(route = %rule.route(), rule = %rule.name, %error, "client request body broken, answering 400");
                return Err(ProxyError::BadRequest { reason: "broken request body" });
            }
            if let ProxyError::Fallback { .. } = &error {
                // Once per request while a circuit is open: the opening itself is the warning.
                tracing::debug!(route = %rule.route(), rule = %rule.name, backend = %backend.key, %error, "answered with the fallback");
            } else {
                tracing::warn!(
                    route = %rule.route(), rule = %rule.name, backend = %backend.key, %error,
                    cause = %deeper_causes(&error), "upstream request failed"
                );
            }
            return Err(error);
        }
    };
    let (mut parts, body) = response.into_parts();
    if let Some((client, requested)) = upgrade
        && parts.status == StatusCode::SWITCHING_PROTOCOLS
    {
        let Some(upstream_side) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(ProxyError::BadResponse {
                source: "101 without an upgradable connection".into(),
            });
        };
        let accepted = parts.headers.get(UPGRADE).cloned().unwrap_or(requested);
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(cookie) = hashed.set_cookie {
            parts.headers.append(http::header::SET_COOKIE, cookie);
        }
        upgrade::restore_upgrade_headers(&mut parts.headers, accepted);
        // The tunnel keeps only the idle timeout of this snapshot's rule; `handle` starts
        // it once the session's record is known.
        exchange.tunnel = Some(upgrade::Tunnel::new(
            dataplane.upstream.upgrades(),
            client,
            upstream_side,
            timeouts.idle,
            peer.addr,
        ));
        drop(body);
        parts.version = Version::HTTP_11;
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    // Cache: the answer as the upstream sent it is copied into the store as it streams.
    let store = ctx.cache.as_deref_mut().and_then(|c| c.begin_store(&parts));
    if let Some(cookie) = hashed.set_cookie {
        parts.headers.append(http::header::SET_COOKIE, cookie);
    }
    parts.version = Version::HTTP_11;
    let body = match (timeouts.idle, activity) {
        (Some(idle), Some(activity)) => {
            // The wait for the headers is `timeouts.request`'s: idle time starts now.
            activity.touch();
            let body = body::IdleBody::new(ProxyBody::Pooled(body), idle, activity);
            ProxyBody::Idle(Box::new(body))
        }
        _ => ProxyBody::Pooled(body),
    };
    let body = match store {
        Some(store) => ProxyBody::Cached(Box::new(crate::cache::body::TeeBody::new(body, store))),
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}
