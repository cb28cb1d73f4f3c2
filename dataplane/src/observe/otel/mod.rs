//! OpenTelemetry tracing: parent-based sampling at the request's start, spans for the
//! request, authentication, rate limit and each upstream attempt, built from timings
//! recorded on the way ([`TraceRecord`]) and exported in batches over OTLP/HTTP (protobuf)
//! by a background task with a bounded queue. A collector that is down costs a counter
//! (`weir_trace_spans_dropped_total`), never latency: the request only offers its record
//! to the queue (`try_send`), and a full queue drops it.
//!
//! Why not the OpenTelemetry SDK: its batch span processor drops silently when its queue
//! is full (a log line, no count the gateway can export) and its exporters neither count
//! failed exports; the span and parent ids must be chosen by the proxy anyway (the
//! `traceparent` sent upstream names the attempt's span before the span exists). So weir
//! builds the OTLP messages of the `opentelemetry-proto` crate ([`proto`]), encodes them
//! with prost and POSTs them with the hyper client it already has.

pub mod export;
pub mod proto;
pub mod record;
pub mod spans;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc, oneshot};

pub use record::{Sampler, TraceRecord};

use super::{RequestObserver, RequestRecord};

/// Sampled requests that may wait for the exporter before new ones are dropped.
pub const DEFAULT_QUEUE: usize = 4096;

/// How long [`Tracing::shutdown`] waits for the last export.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// How to start tracing.
#[derive(Debug, Clone)]
pub struct TracingOptions {
    /// `--otlp-endpoint`: the collector's OTLP/HTTP base URL (`/v1/traces` is appended
    /// when the URL has no path).
    pub endpoint: String,
    /// `--trace-sampling`: ratio of new traces sampled, 0.0-1.0 (a client's sampled flag
    /// is followed).
    pub sampling: f64,
    /// `service.name` of the resource.
    pub service_name: String,
}

/// Span counters (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct TraceMetrics {
    /// Spans dropped: queue full, export failed or rejected by the collector.
    pub dropped: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
}

/// The running tracer and exporter.
#[derive(Debug)]
pub struct Tracing {
    sampler: Sampler,
    queue: mpsc::Sender<RequestRecord>,
    metrics: TraceMetrics,
    stop: Arc<Notify>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

/// The collector's traces URL from `--otlp-endpoint`: `http` or `https` with a host;
/// `/v1/traces` appended when the URL has no path.
pub fn traces_url(endpoint: &str) -> Result<http::Uri, String> {
    let uri: http::Uri =
        endpoint.parse().map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other} is not supported (http or https)")),
        None => return Err("no scheme; expected http://HOST:PORT".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host; expected http://HOST:PORT".to_owned());
    }
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    if path.is_empty() || path == "/" {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        return http::Uri::from_parts(parts).map_err(|e| e.to_string());
    }
    Ok(uri)
}

impl Tracing {
    /// Starts the exporter (in the background: a collector down at start is not an error).
    /// Fails on a malformed endpoint, or outside a Tokio runtime.
    pub fn start(options: TracingOptions) -> Result<Arc<Self>, String> {
        Self::start_with_queue(options, DEFAULT_QUEUE)
    }

    /// [`start`](Self::start) with a queue of `queue` sampled requests.
    pub fn start_with_queue(options: TracingOptions, queue: usize) -> Result<Arc<Self>, String> {
        let url = traces_url(options.endpoint.trim())?;
        if !(0.0..=1.0).contains(&options.sampling) {
            return Err(format!("--trace-sampling {} is not within 0.0-1.0", options.sampling));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing needs a Tokio runtime".to_owned())?;
        let client = export::client().ok_or("no TLS provider for the OTLP client")?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let metrics = TraceMetrics::default();
        let stop = Arc::new(Notify::new());
        let (done, stopped) = oneshot::channel();
        let exporter = export::Exporter::new(
            client,
            url,
            export::resource(&options.service_name),
            metrics.clone(),
        );
        runtime.spawn(exporter.run(rx, Arc::clone(&stop), done));
        Ok(Arc::new(Tracing {
            sampler: Sampler::new(options.sampling),
            queue: tx,
            metrics,
            stop,
            stopped: Mutex::new(Some(stopped)),
        }))
    }

    /// The sampler of new traces.
    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// The span counters.
    pub fn metrics(&self) -> &TraceMetrics {
        &self.metrics
    }

    /// Registers `weir_trace_spans_dropped_total` and `weir_trace_spans_exported_total`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "weir_trace_spans_dropped",
            "Trace spans dropped: the export queue was full, or the collector failed or refused them",
            self.metrics.dropped.clone(),
        );
        registry.register(
            "weir_trace_spans_exported",
            "Trace spans the OTLP collector accepted",
            self.metrics.exported.clone(),
        );
    }

    /// Exports what is queued and stops the exporter, waiting at most [`SHUTDOWN_LIMIT`].
    pub async fn shutdown(&self) {
        let stopped = self.stopped.lock().ok().and_then(|mut s| s.take());
        let Some(stopped) = stopped else { return };
        self.stop.notify_one();
        if tokio::time::timeout(SHUTDOWN_LIMIT, stopped).await.is_err() {
            tracing::warn!("the last trace export did not finish in {SHUTDOWN_LIMIT:?}");
        }
    }
}

impl RequestObserver for Tracing {
    fn on_request_end(&self, record: &RequestRecord) {
        let Some(trace) = &record.trace else { return };
        let spans = trace.span_count();
        if self.queue.try_send(record.clone()).is_err() {
            self.metrics.dropped.inc_by(spans);
        }
    }
}

#[cfg(test)]
mod tests;
