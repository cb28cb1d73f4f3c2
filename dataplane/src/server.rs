//! The data plane's front door: the live snapshot holder, the state shared by every
//! snapshot, and [`serve`] (a plain listener with default options).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::filter::RateLimitRuntime;
use crate::listener::{Edge, ListenerMetrics, ListenerOptions, PlainListener};
use crate::observe::RequestObserver;
use crate::proxy::Upstream;
use crate::snapshot::Snapshot;

/// What observes requests in `weir run`: each part is optional.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// Per-request metrics (on by default).
    pub metrics: Option<Arc<crate::observe::stats::RequestMetrics>>,
    /// `--access-log`.
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    /// `--otlp-endpoint`.
    pub tracing: Option<Arc<crate::observe::otel::Tracing>>,
}

/// How long a listener waits for in-flight requests after shutdown before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds the live snapshot and the runtime state that outlives snapshots (upstream pools…).
#[derive(Debug)]
pub struct DataPlane {
    current: ArcSwap<Snapshot>,
    /// Pooled upstream clients, shared by every snapshot.
    pub upstream: Upstream,
    /// Runtime state of every backend (endpoint health, in-flight counts, circuits),
    /// shared by every snapshot.
    pub registry: crate::upstream::UpstreamRegistry,
    /// Rate-limit counters, Redis store and trusted proxies, shared by every snapshot.
    pub rate_limits: RateLimitRuntime,
    /// The response cache (one store per process, so entries survive reloads).
    pub cache: Arc<crate::cache::CacheRuntime>,
    /// Receives one record per request at its end (metrics, access log, traces).
    observer: Option<Arc<dyn RequestObserver>>,
    /// The request metrics, access log and tracer of `weir run` (also reachable through
    /// `observer`).
    pub observability: Observability,
    /// Connection metrics of the listeners.
    pub listeners: ListenerMetrics,
    /// Turns true (once) when a published snapshot first has a certificate.
    tls_wanted: watch::Sender<bool>,
    /// The HTTPS listener's port, for redirects to HTTPS.
    https_port: AtomicU16,
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
        Self::build(rate_limits, observer, Observability::default(), Default::default())
    }

    /// Like [`with_rate_limits`](Self::with_rate_limits), with request metrics, an access
    /// log and a tracer: each record goes to every one present, in that order.
    pub fn with_observability(
        rate_limits: RateLimitRuntime,
        observability: Observability,
    ) -> Arc<Self> {
        Self::with_cache(rate_limits, observability, crate::cache::CacheRuntime::default())
    }

    /// Like [`with_observability`](Self::with_observability), with the response cache of
    /// `weir run` (`--cache-memory`, the Redis store of `--redis-url`).
    pub fn with_cache(
        rate_limits: RateLimitRuntime,
        observability: Observability,
        cache: crate::cache::CacheRuntime,
    ) -> Arc<Self> {
        let mut all: Vec<Arc<dyn RequestObserver>> = Vec::new();
        if let Some(m) = &observability.metrics {
            all.push(Arc::clone(m) as Arc<dyn RequestObserver>);
        }
        if let Some(log) = &observability.access_log {
            all.push(Arc::clone(log) as Arc<dyn RequestObserver>);
        }
        if let Some(t) = &observability.tracing {
            all.push(Arc::clone(t) as Arc<dyn RequestObserver>);
        }
        let observer: Option<Arc<dyn RequestObserver>> = match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Arc::new(crate::observe::Fanout(all))),
        };
        Self::build(rate_limits, observer, observability, cache)
    }

    fn build(
        rate_limits: RateLimitRuntime,
        observer: Option<Arc<dyn RequestObserver>>,
        observability: Observability,
        cache: crate::cache::CacheRuntime,
    ) -> Arc<Self> {
        Arc::new(DataPlane {
            cache: Arc::new(cache),
            observability,
            current: ArcSwap::from_pointee(Snapshot::empty()),
            upstream: Upstream::default(),
            registry: crate::upstream::UpstreamRegistry::default(),
            rate_limits,
            observer,
            listeners: ListenerMetrics::default(),
            tls_wanted: watch::Sender::new(false),
            https_port: AtomicU16::new(443),
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
        let has_tls = !snapshot.tls.is_empty();
        self.registry.bind(&snapshot.backends);
        self.current.store(Arc::new(snapshot));
        if has_tls {
            self.tls_wanted.send_if_modified(|wanted| !std::mem::replace(wanted, true));
        }
    }

    /// Turns true once a published snapshot has a certificate (the HTTPS listener is then
    /// needed; it stays needed).
    pub fn tls_wanted(&self) -> watch::Receiver<bool> {
        self.tls_wanted.subscribe()
    }

    /// Sets the HTTPS listener's port (`--https-addr`; default 443), used by redirects to
    /// HTTPS for clients that named a port.
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// The HTTPS listener's port.
    pub fn https_port(&self) -> u16 {
        self.https_port.load(Ordering::Relaxed)
    }

    /// The live snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Serves HTTP/1.1 (keep-alive) and h2c (prior knowledge) on `listener` with the default
/// [`ListenerOptions`] until `shutdown` completes, then stops accepting and drains
/// in-flight requests (idle keep-alive connections are closed, busy ones finish their
/// request), for at most [`DRAIN_TIMEOUT`]. Connection errors are logged at debug level
/// and never stop the server. `weir run` uses [`crate::listener`] directly.
pub async fn serve(
    listener: TcpListener,
    dataplane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let edge = Edge::new(dataplane, ListenerOptions::default());
    PlainListener::new(listener).serve(edge, shutdown).await;
    Ok(())
}
