//! The end of a request: one [`RequestRecord`] per request, handed to the data plane's
//! [`RequestObserver`] when the response has been sent (or abandoned) — for requests
//! answered by the upstream and by the gateway alike.
//!
//! This is the seam metrics, access logs and traces consume. Without an observer nothing
//! here runs: no record is built, no body is wrapped, no clock is read. With one, the
//! response body is wrapped in an [`ObservedBody`] that counts the bytes sent and hands
//! the record over when it is dropped (hyper drops it once the body is written, or when
//! the client goes away), so the hook sees the final byte counts and the full duration.
//! Observers must not block: they run on the connection's task.
//!
//! A WebSocket upgrade reports when its session closes (status 101, the whole session's
//! duration and bytes, see [`crate::proxy::upgrade`]); a gRPC stream when its trailers
//! have been sent (with their `grpc-status`).
//!
//! Consumers (issue 14):
//! - [`stats`]: per-route/rule request counters and latency histograms (`/metrics`,
//!   the dashboard), reached through the handle the matched [`Rule`](crate::snapshot::Rule)
//!   carries, so counting needs no label lookup;
//! - [`access_log`]: one line per request, formatted and written off the request path;
//! - [`otel`]: OpenTelemetry spans of sampled requests, exported over OTLP/HTTP.
//!
//! [`Fanout`] hands each record to several of them.

pub mod access_log;
pub mod otel;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::proxy::body::{BodyStats, BoxError, ProxyBody};
use crate::snapshot::{BackendKey, ObjectKey};

/// Everything known about one request at its end.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When the request arrived (wall clock).
    pub time: SystemTime,
    /// The request id (`X-Request-ID`).
    pub request_id: HeaderValue,
    /// The client address (trusted proxies applied when the rule had filters; else the
    /// TCP peer).
    pub client_ip: IpAddr,
    /// Method.
    pub method: Method,
    /// The host the client asked for.
    pub host: HeaderValue,
    /// The path (without the query string).
    pub path: Box<str>,
    /// The matched Route, `None` when no route matched.
    pub route: Option<ObjectKey>,
    /// The matched rule's name.
    pub rule: Option<Arc<str>>,
    /// The status sent to the client.
    pub status: StatusCode,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    /// From sending upstream to the upstream's response headers (all attempts), when an
    /// upstream was asked.
    pub upstream_duration: Option<Duration>,
    /// The backend (Service port) chosen, when one was.
    pub backend: Option<BackendKey>,
    /// The endpoint of the last upstream attempt.
    pub upstream: Option<SocketAddr>,
    /// Attempts after the first.
    pub retries: u32,
    /// The authenticated Consumer's username.
    pub consumer: Option<Arc<str>>,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client (after compression).
    pub bytes_out: u64,
    /// The request was refused by a rate limit.
    pub rate_limited: bool,
    /// Why the gateway answered with an error (a stable label such as `no_route`,
    /// `upstream_timeout`, `unauthorized`), `None` otherwise.
    pub error: Option<&'static str>,
    /// The response body was sent to the end (false: the client went away, or the
    /// upstream failed mid-body).
    pub completed: bool,
    /// The `traceparent` the request carried upstream (the client's, or the one the
    /// gateway minted): the access log's `trace_id` is its second field.
    pub traceparent: Option<HeaderValue>,
    /// The matched rule's metric handles (`None` when no route matched).
    pub stats: Option<Arc<stats::RuleStats>>,
    /// The spans of a sampled request (`None` when tracing is off or the request was not
    /// sampled).
    pub trace: Option<Box<otel::TraceRecord>>,
    /// The response cache's verdict (`Hit`, `Miss`, …) when a cache Plugin ran.
    pub cache: Option<&'static str>,
    /// A gRPC call's `grpc-status`: from the response trailers (or, for a trailers-only
    /// answer such as the gateway's own, the headers); `None` for other requests or when
    /// the stream ended without one.
    pub grpc_status: Option<u16>,
}

/// The `grpc-status` in `headers` (response headers or trailers), when it is a number.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    let value = headers.get(crate::proxy::grpc::GRPC_STATUS)?.as_bytes();
    if value.is_empty() || value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u16, |n, d| n.checked_mul(10)?.checked_add(u16::from(d - b'0')))
}

/// Receives one record per request. Called on the connection's task: it must not block.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// The request has ended.
    fn on_request_end(&self, record: &RequestRecord);
}

/// Hands every record to each of several observers, in order.
#[derive(Debug, Default)]
pub struct Fanout(pub Vec<Arc<dyn RequestObserver>>);

impl RequestObserver for Fanout {
    fn on_request_end(&self, record: &RequestRecord) {
        for observer in &self.0 {
            observer.on_request_end(record);
        }
    }
}

/// A response body that counts what is sent and hands the record to the observer when it
/// is dropped: after the last frame (a gRPC stream's trailers included, whose
/// `grpc-status` it keeps), or when the client went away.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ProxyBody,
    started: Instant,
    sent: u64,
    failed: bool,
    /// `grpc-status` of the trailers, when they carried one.
    trailer_status: Option<u16>,
    record: Option<RequestRecord>,
    request_body: Option<Arc<BodyStats>>,
    observer: Arc<dyn RequestObserver>,
}

impl ObservedBody {
    /// Wraps `inner`; `record` is completed (bytes, duration) when the body is dropped.
    pub fn new(
        inner: ProxyBody,
        record: RequestRecord,
        started: Instant,
        request_body: Option<Arc<BodyStats>>,
        observer: Arc<dyn RequestObserver>,
    ) -> Self {
        ObservedBody {
            inner,
            started,
            sent: 0,
            failed: false,
            trailer_status: None,
            record: Some(record),
            request_body,
            observer,
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.trailer_status = grpc_status(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => this.failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration = self.started.elapsed();
            record.bytes_out = self.sent;
            record.completed = !self.failed && self.inner.is_end_stream();
            if self.trailer_status.is_some() {
                record.grpc_status = self.trailer_status;
            }
            if let Some(stats) = &self.request_body {
                record.bytes_in = stats.bytes.load(Ordering::Relaxed);
            }
            self.observer.on_request_end(&record);
        }
    }
}
