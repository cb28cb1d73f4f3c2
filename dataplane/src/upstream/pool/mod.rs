//! Connections to upstream endpoints: the HTTP/1.1 keep-alive pool ([`h1`]), the shared
//! HTTP/2 connections ([`h2`]), new connections for upgrades, and the connectors under
//! them ([`connect`]: TCP, TLS, the backend's connection caps). Connections are made over
//! a backend's [`Transport`] and pooled by endpoint and transport ([`PoolKey`]).
//! [`Upstream`] sends one attempt of a request to one endpoint; which endpoint, and
//! whether to send at all, is decided above it (the balancer, health and circuit breaker of
//! [`crate::upstream`], the retries of [`crate::proxy`]).

pub mod connect;
pub mod framing;
pub mod h1;
pub mod h2;
mod idle;
#[cfg(test)]
mod idle_tests;
pub(crate) mod lean;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};

use crate::filter::extauth::{UrlClient, url_client};
use crate::proxy::body::UpstreamBody;
use crate::proxy::error::ProxyError;
use crate::proxy::upgrade::Upgrades;
pub use framing::UpstreamError;
pub use h1::{ConnectError, MAX_IDLE_PER_ENDPOINT, POOL_IDLE_TIMEOUT, Pool, PooledBody};
pub use h2::H2Pool;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::snapshot::{Backend, UpstreamProtocol};
use crate::upstream::policy::ConnectionSettings;
use crate::upstream::tls::UpstreamTls;

/// How connections to one backend's endpoints are made and kept: TLS or not, pool
/// settings, and the backend's open-connection count with its cap (`maxConnections`).
/// Built once per backend when a snapshot is bound ([`crate::upstream::registry`]); the
/// default is plain TCP, default pool settings, no cap.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS to the endpoints (`BackendPolicy.tls`, or `appProtocol: https`).
    pub tls: Option<Arc<UpstreamTls>>,
    /// Idle connections kept per endpoint, and for how long.
    pub connection: ConnectionSettings,
    /// The backend's open connections (HTTP/1.1 and HTTP/2) and their cap; `None` when
    /// neither counted nor capped.
    pub connections: Option<Arc<ConnectionCount>>,
}

impl Transport {
    /// The transport of `backend` from its policy's `tls` and `connection` (plain TCP and
    /// default pool settings without a policy), without a connection count: the registry
    /// adds the backend's [`ConnectionCount`] on top.
    pub fn for_backend(backend: &Backend) -> Transport {
        match &backend.policy {
            None => Transport::default(),
            Some(policy) => Transport {
                tls: policy.tls.clone(),
                connection: policy.connection,
                connections: None,
            },
        }
    }

    /// Where connections made over this transport to `addr` are pooled.
    pub(crate) fn key(&self, addr: SocketAddr) -> PoolKey {
        PoolKey {
            addr,
            transport: self.tls.as_ref().map_or(0, |tls| tls.id()),
            worker: POOL_WORKER.with(Cell::get),
        }
    }
}

thread_local! {
    /// The per-core worker this thread is (see [`set_pool_worker`]); 0 = shared.
    static POOL_WORKER: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as per-core worker `worker` (≥ 1; `weir run --runtime
/// per-core`): the pooled HTTP/1.1 connections it opens are reused only by requests on this
/// thread. A connection's socket is registered with the event loop of the runtime that
/// opened it, so using it from another worker's runtime costs a cross-thread wake-up per
/// read. Threads never marked (the work-stealing runtime's) share one pool. Each worker
/// keeps up to `maxIdlePerEndpoint` idle connections of its own.
pub fn set_pool_worker(worker: u32) {
    POOL_WORKER.with(|w| w.set(worker));
}

/// What pooled connections are keyed by: the endpoint, and the identity of the transport
/// they were made with (0 = plain TCP, else [`UpstreamTls::id`]), so that a connection is
/// never reused for another transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// The endpoint.
    pub addr: SocketAddr,
    /// 0 for plain TCP, else the TLS configuration's identity.
    pub transport: u64,
    /// The per-core worker whose runtime opened the connection ([`set_pool_worker`]), 0
    /// when shared.
    pub worker: u32,
}

/// Open upstream connections of one backend, and the cap (`circuitBreaker.maxConnections`);
/// requests waiting for a new connection to be made (TCP and TLS handshakes), and their cap
/// (`circuitBreaker.maxPendingRequests`). weir never queues past a cap: the pool fails the
/// attempt at once with [`ConnectError::ConnectionLimit`] / [`ConnectError::PendingLimit`].
#[derive(Debug, Default)]
pub struct ConnectionCount {
    open: AtomicU32,
    pending: AtomicU32,
    /// Past this many open connections, a request that needs a new one fails at once
    /// with [`ConnectError::ConnectionLimit`]. `None` = unlimited.
    pub max: Option<u32>,
    /// Past this many requests waiting for a new connection, another one fails at once
    /// with [`ConnectError::PendingLimit`]. `None` = unlimited.
    pub max_pending: Option<u32>,
}

impl ConnectionCount {
    /// A count with caps.
    pub fn new(max: Option<u32>, max_pending: Option<u32>) -> Self {
        ConnectionCount { open: AtomicU32::new(0), pending: AtomicU32::new(0), max, max_pending }
    }

    /// Requests waiting for a new connection now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes a pending slot before making a new connection, or `false` at the cap; give it
    /// back with [`ConnectionCount::end_pending`] once the connection is made or failed.
    pub fn try_begin_pending(&self) -> bool {
        match self.max_pending {
            None => {
                self.pending.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok(),
        }
    }

    /// Gives back a slot of [`ConnectionCount::try_begin_pending`].
    pub fn end_pending(&self) {
        let _ =
            self.pending.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection, or `false` at the cap. The slot is given back
    /// with [`ConnectionCount::release`] when the connection closes.
    pub fn try_acquire(&self) -> bool {
        match self.max {
            None => {
                self.open.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok(),
        }
    }

    /// Gives back a slot taken by [`ConnectionCount::try_acquire`].
    pub fn release(&self) {
        let _ = self.open.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// The upstream connection pools (HTTP/1.1 and HTTP/2) and the open upgraded
/// connections, shared by every snapshot.
#[derive(Debug, Default)]
pub struct Upstream {
    pool: Arc<Pool>,
    /// One multiplexed connection per h2c endpoint.
    h2: H2Pool,
    /// Upgraded (WebSocket) connections, which outlive the requests that made them.
    upgrades: Arc<Upgrades>,
    /// The pooled client of `extAuth` URL targets, made on first use.
    ext_auth_client: OnceLock<Option<UrlClient>>,
}

/// Why one attempt failed.
pub(crate) enum AttemptError {
    /// No connection could be made; nothing reached the upstream, and the request's
    /// headers come back so a retry needs no copy of them.
    Connect(ConnectError, HeaderMap),
    /// The exchange failed after connecting.
    Exchange(UpstreamError),
}

/// How one attempt reaches its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// HTTP/1.1 over a pooled keep-alive connection.
    Pooled,
    /// HTTP/1.1 over a new connection that can be upgraded (never pooled).
    Upgrade,
    /// HTTP/2 over the endpoint's shared connection.
    H2,
}

impl Upstream {
    /// The pool of idle upstream connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The HTTP/2 (h2c) upstream connections.
    pub fn h2(&self) -> &H2Pool {
        &self.h2
    }

    /// The open upgraded (WebSocket) connections. Graceful shutdown closes them last:
    /// after the HTTP connections drained, `upgrades().close()` then
    /// `upgrades().closed().await`.
    pub fn upgrades(&self) -> &Arc<Upgrades> {
        &self.upgrades
    }

    /// The pooled HTTP(S) client of `extAuth` URL targets (made on first use, trusting
    /// Mozilla's root CAs unless [`Upstream::set_ext_auth_tls`] came first).
    pub(crate) fn ext_auth_client(&self) -> Option<&UrlClient> {
        self.ext_auth_client.get_or_init(|| url_client(None)).as_ref()
    }

    /// Makes `extAuth` URL targets trust `tls` (e.g. a private CA) instead of Mozilla's
    /// root CAs. False when the client was already made (by a request or an earlier call).
    pub fn set_ext_auth_tls(&self, tls: &rustls::ClientConfig) -> bool {
        self.ext_auth_client.set(url_client(Some(tls))).is_ok()
    }

    /// One request to `addr` over a pooled or new connection (the TCP connect bounded by
    /// `connect_timeout`), until response headers: for requests the gateway makes itself
    /// (`extAuth`). No retry and no overall timeout; reading the response body to the end
    /// returns the connection to the pool.
    pub(crate) async fn request_once(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let transport = Transport::default();
        let now = std::time::Instant::now();
        self.request_h1(addr, &transport, connect_timeout, request, now).await.map_err(
            |e| match e {
                AttemptError::Connect(source, _) => {
                    ProxyError::UpstreamConnect { source: Box::new(source) }
                }
                AttemptError::Exchange(source) => {
                    ProxyError::BadResponse { source: Box::new(source) }
                }
            },
        )
    }

    /// Sends `request` to `addr` `via` a pooled, new or shared HTTP/2 connection made
    /// over `transport`, until response headers. `now` is the request's clock reading:
    /// the pool reads none of its own (idle connections expire by it, and a connection
    /// returned to the pool counts as idle since the start of the request it served).
    pub(crate) async fn request(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        connect_timeout: Duration,
        request: Request<UpstreamBody>,
        via: Via,
        now: std::time::Instant,
    ) -> Result<Response<PooledBody>, AttemptError> {
        match via {
            Via::Pooled => self.request_h1(addr, transport, connect_timeout, request, now).await,
            // Boxed: the common HTTP/1.1 request's future stays as small as before.
            Via::Upgrade => {
                Box::pin(Self::request_upgrade(addr, transport, connect_timeout, request)).await
            }
            Via::H2 => Box::pin(self.request_h2(addr, transport, connect_timeout, request)).await,
        }
    }

    /// An upgrade request, over a new connection that can be taken over after a 101.
    async fn request_upgrade(
        addr: SocketAddr,
        transport: &Transport,
        connect_timeout: Duration,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, AttemptError> {
        let mut sender = match h1::connect(addr, transport, connect_timeout, true).await {
            Ok(sender) => sender,
            Err(e) => {
                return Err(AttemptError::Connect(e, std::mem::take(request.headers_mut())));
            }
        };
        match sender.send_request(request).await {
            Ok(response) => Ok(response.map(PooledBody::unpooled)),
            Err(error) => Err(AttemptError::Exchange(error.into())),
        }
    }

    async fn request_h1(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        connect_timeout: Duration,
        request: Request<UpstreamBody>,
        now: std::time::Instant,
    ) -> Result<Response<PooledBody>, AttemptError> {
        let key = transport.key(addr);
        let (mut parts, body) = request.into_parts();
        let mut body = Some(body);
        // The head is serialized once, on the first connection, and sent as is again.
        let mut encoded: Option<(bytes::Bytes, framing::RequestFraming)> = None;
        // Each pass either takes a connection out of the pool (finitely many) or is the
        // last one, over a new connection.
        loop {
            let (mut conn, reused) = match self.pool.checkout(&key, now) {
                Some(mut conn) => {
                    if let Some(home) = &mut conn.home {
                        home.settings = transport.connection;
                    }
                    (conn, true)
                }
                None => {
                    let home = lean::Home {
                        pool: Arc::clone(&self.pool),
                        key,
                        settings: transport.connection,
                    };
                    match h1::connect_lean(addr, transport, connect_timeout, home).await {
                        Ok(conn) => (conn, false),
                        Err(e) => {
                            return Err(AttemptError::Connect(
                                e,
                                std::mem::take(&mut parts.headers),
                            ));
                        }
                    }
                }
            };
            let (head, framing) = match &encoded {
                Some((head, framing)) => (head.clone(), *framing),
                None => {
                    let empty = UpstreamBody::Empty;
                    let (head, framing) = conn.encode(&mut parts, body.as_ref().unwrap_or(&empty));
                    encoded = Some((head.clone(), framing));
                    (head, framing)
                }
            };
            conn.begin(head, parts.method.clone(), body.take(), framing, now);
            match std::future::poll_fn(|cx| conn.poll_head(cx)).await {
                Ok(response) => return Ok(response.map(|()| PooledBody::lean(conn))),
                Err(error) => {
                    // A reused connection that failed before any of the response: the
                    // upstream closed it while idle. Sent again over another connection
                    // when the request can be replayed (its body not taken yet) and either
                    // the upstream cannot have seen it (the write failed) or it is
                    // idempotent.
                    let resend = reused
                        && !conn.received()
                        && (matches!(error, UpstreamError::Write(_))
                            || (idempotent(&parts.method)
                                && matches!(
                                    error,
                                    UpstreamError::ClosedBeforeResponse | UpstreamError::Read(_)
                                )));
                    if resend && let Some(unsent) = conn.replayable_body() {
                        tracing::debug!(%addr, %error, "pooled connection closed, resending");
                        body = unsent;
                        continue;
                    }
                    if transport.tls.is_some() {
                        connect::log_tls_failure(addr, &error);
                    }
                    return Err(AttemptError::Exchange(error));
                }
            }
        }
    }

    async fn request_h2(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        connect_timeout: Duration,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, AttemptError> {
        if transport.tls.is_some() {
            // The request was built for h2c.
            set_scheme(&mut request, Scheme::HTTPS);
        }
        // What the request needs to go out again once it was sent ([`h2::Replay`]).
        let replay = h2::Replay::keep(&mut request);
        // Sent again, on a new connection (or, after a REFUSED_STREAM, the same one), up to
        // [`H2_RESENDS`] times: when the shared connection closed before taking it, when the
        // upstream refused it unprocessed, or, for an idempotent request on a reused
        // connection, when the connection closed before its response. More than once: under
        // load, a request refused by one connection's GOAWAY can meet the next one's (nginx
        // says GOAWAY every `keepalive_requests`, 1000 by default).
        let mut resends = 0;
        loop {
            let (mut sender, reused, shared) = match self
                .h2
                .sender(addr, transport, connect_timeout)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    return Err(AttemptError::Connect(e, std::mem::take(request.headers_mut())));
                }
            };
            let mut error = match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(PooledBody::unpooled)),
                Err(error) => error,
            };
            let unsent = error.take_message();
            let refusal = h2::refusal(error.error());
            if refusal == Some(h2::Refusal::GoingAway) {
                // Its upstream takes no new streams on it.
                self.h2.retire(addr, transport, &shared);
            }
            let again = match unsent {
                Some(unsent) => Some(unsent),
                None if refusal.is_some()
                    || h2::dropped_unsent(error.error())
                    || (reused && h2::closed(error.error()) && idempotent(replay.method())) =>
                {
                    replay.request()
                }
                None => None,
            };
            match again {
                Some(again) if resends < H2_RESENDS => {
                    tracing::debug!(%addr, error = %error.error(), "HTTP/2 request not processed, resending");
                    self.h2.discard(addr, transport);
                    request = again;
                    resends += 1;
                }
                _ => return Err(AttemptError::Exchange(error.into_error().into())),
            }
        }
    }
}

/// How many times an HTTP/2 request the upstream did not process goes out again.
const H2_RESENDS: u8 = 3;

/// Methods whose request may be sent again when a reused connection closed before
/// answering (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Sets the scheme of an absolute request URI (`:scheme` of an HTTP/2 request).
fn set_scheme<B>(request: &mut Request<B>, scheme: Scheme) {
    if request.uri().scheme() == Some(&scheme) {
        return;
    }
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// One request over a new connection made over `transport` and spoken in `protocol`, never
/// pooled (closed when the response is dropped) and outside the backend's connection caps,
/// bounded by `timeout` from the connect to the response headers: for active health checks.
///
/// `request` may be in origin form (`/healthz`) with a `Host` header; without one, the
/// endpoint's address is the host. It is sent as HTTP/1.1 for `Http1`, and as HTTP/2
/// (`:scheme` `http` or `https`, `:authority` from `Host`) for `H2c` and `H2`. TLS is
/// used when `transport` has it (HTTP/2 then needs ALPN `h2`).
#[allow(dead_code, reason = "called by the active health checks (upstream::health::active)")]
pub(crate) async fn request_unpooled(
    addr: SocketAddr,
    transport: &Transport,
    protocol: UpstreamProtocol,
    timeout: Duration,
    mut request: Request<UpstreamBody>,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
    let exchange = async {
        let connect_error = |e| ProxyError::UpstreamConnect { source: Box::new(e) };
        let bad_response = |e| ProxyError::BadResponse { source: Box::new(e) };
        match protocol {
            UpstreamProtocol::Http1 => {
                as_http1(&mut request, addr);
                let mut sender =
                    h1::connect_unpooled(addr, transport, timeout).await.map_err(connect_error)?;
                sender.send_request(request).await.map_err(bad_response)
            }
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                as_h2(&mut request, addr, transport.tls.is_some());
                let mut sender =
                    h2::connect_unpooled(addr, transport, timeout).await.map_err(connect_error)?;
                sender.send_request(request).await.map_err(bad_response)
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| ProxyError::UpstreamTimeout)?
}

/// The request's `Host` or else the endpoint's address, as an authority.
fn authority_of<B>(request: &Request<B>, addr: SocketAddr) -> Authority {
    request
        .uri()
        .authority()
        .cloned()
        .or_else(|| {
            let host = request.headers().get(http::header::HOST)?;
            Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(host.as_bytes())).ok()
        })
        .or_else(|| Authority::try_from(addr.to_string()).ok())
        .unwrap_or_else(|| Authority::from_static("localhost"))
}

/// HTTP/1.1 in origin form with a `Host` header.
fn as_http1<B>(request: &mut Request<B>, addr: SocketAddr) {
    if !request.headers().contains_key(http::header::HOST) {
        let authority = authority_of(request, addr);
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
    }
    if request.uri().authority().is_some() {
        let path = request.uri().path_and_query().cloned();
        *request.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    *request.version_mut() = Version::HTTP_11;
}

/// HTTP/2: an absolute URI (`:scheme`, `:authority` from `Host`), no `Host` header.
fn as_h2<B>(request: &mut Request<B>, addr: SocketAddr, tls: bool) {
    let authority = authority_of(request, addr);
    request.headers_mut().remove(http::header::HOST);
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
}

/// Opens a connection to `addr` over `transport` (TCP, then the TLS handshake when it has
/// TLS) within `timeout`, and closes it: for TCP health checks. Outside the backend's
/// connection caps.
#[allow(dead_code, reason = "called by the active health checks (upstream::health::active)")]
pub(crate) async fn probe_connect(
    addr: SocketAddr,
    transport: &Transport,
    timeout: Duration,
) -> Result<(), ConnectError> {
    match &transport.tls {
        None => connect::tcp_connect(addr, timeout).await.map(drop),
        Some(tls) => {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut stream = connect::tls_connect(addr, tls, timeout, false).await?;
            // A polite close (close_notify), but the check has passed already.
            let _ =
                tokio::time::timeout_at(deadline, tokio::io::AsyncWriteExt::shutdown(&mut stream))
                    .await;
            Ok(())
        }
    }
}
