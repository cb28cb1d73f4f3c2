//! The data plane's front door: the live snapshot holder and the hyper server loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::filter::RateLimitRuntime;
use crate::observe::RequestObserver;
use crate::proxy::{self, Upstream};
use crate::snapshot::Snapshot;

/// How long [`serve`] waits for in-flight requests after shutdown before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds the live snapshot and the runtime state that outlives snapshots (upstream pools…).
#[derive(Debug)]
pub struct DataPlane {
    current: ArcSwap<Snapshot>,
    /// Pooled upstream clients, shared by every snapshot.
    pub upstream: Upstream,
    /// Rate-limit counters, Redis store and trusted proxies, shared by every snapshot.
    pub rate_limits: RateLimitRuntime,
    /// Receives one record per request at its end (metrics, access log, traces).
    observer: Option<Arc<dyn RequestObserver>>,
}

impl DataPlane {
    /// A data plane serving an empty snapshot (every request gets 404).
    pub fn new() -> Arc<Self> {
        Self::with_rate_limits(RateLimitRuntime::default())
    }

    /// Like [`new`](Self::new), with the rate-limit state of `weir run`.
    pub fn with_rate_limits(rate_limits: RateLimitRuntime) -> Arc<Self> {
        Self::with_observer(rate_limits, None)
    }

    /// Like [`with_rate_limits`](Self::with_rate_limits), with an end-of-request observer.
    pub fn with_observer(
        rate_limits: RateLimitRuntime,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Arc<Self> {
        Arc::new(DataPlane {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            upstream: Upstream::default(),
            rate_limits,
            observer,
        })
    }

    /// Whether an end-of-request observer is set.
    pub fn has_observer(&self) -> bool {
        self.observer.is_some()
    }

    /// The end-of-request observer, if any.
    pub fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.observer.clone()
    }

    /// Atomically makes `snapshot` the live one; in-flight requests finish on the old one.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The live snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Serves HTTP/1.1 (keep-alive) and h2c (prior knowledge) on `listener` until `shutdown`
/// completes, then stops accepting and drains in-flight requests (idle keep-alive
/// connections are closed, busy ones finish their request), for at most [`DRAIN_TIMEOUT`].
/// Connection errors are logged at debug level and never stop the server.
pub async fn serve(
    listener: TcpListener,
    dataplane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer enables hyper's default 30 s header read timeout (slow-loris protection).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // e.g. too many open files: back off a little instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        serve_connection(&builder, &graceful, &dataplane, stream, peer);
    }
    drop(listener);
    tracing::debug!(connections = graceful.count(), "draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still busy after the drain timeout; closing them");
    }
    Ok(())
}

fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    dataplane: &Arc<DataPlane>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set TCP_NODELAY failed");
    }
    // One shared pair per connection (one reference count per request), with the client
    // address formatted once per connection rather than per request.
    let shared = Arc::new((Arc::clone(dataplane), proxy::Peer::new(peer)));
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(proxy::handle(&shared.0, request, &shared.1).await) }
    });
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection error");
        }
    });
}
