//! OpenTelemetry tracing (CONTRACT STUB — issue 14, tracing): parent-based sampling at the
//! request's start, spans for the request, authentication, rate limit and each upstream
//! attempt, built from timings recorded on the way and exported in batches over OTLP/HTTP
//! (protobuf) by a background exporter with a bounded queue; a collector that is down
//! costs a counter (`weir_trace_spans_dropped_total`), never latency.

use std::sync::Arc;

use super::{RequestObserver, RequestRecord};

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

/// The spans of one sampled request, recorded on the way.
#[derive(Debug, Clone, Default)]
pub struct TraceRecord {}

/// The running tracer and exporter.
#[derive(Debug)]
pub struct Tracing {}

impl Tracing {
    /// Starts the exporter (in the background: a collector down at start is not an error).
    pub fn start(_options: TracingOptions) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Tracing {}))
    }

    /// Registers `weir_trace_spans_dropped_total` (and any other tracing metric).
    pub fn register(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Exports what is queued and stops (shutdown), bounded in time.
    pub async fn shutdown(&self) {}
}

impl RequestObserver for Tracing {
    fn on_request_end(&self, _record: &RequestRecord) {}
}
