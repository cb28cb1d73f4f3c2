//! The background exporter: takes finished sampled requests from the bounded queue,
//! turns them into spans and POSTs them in batches (`ExportTraceServiceRequest`, protobuf)
//! to the collector. A failed or refused export drops its spans and counts them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tokio::sync::{Notify, mpsc, oneshot};

use super::TraceMetrics;
use super::proto::{
    self as attr, ExportTraceServiceRequest, ExportTraceServiceResponse, InstrumentationScope,
    Resource, ResourceSpans, ScopeSpans, Span,
};
use crate::observe::RequestRecord;

/// Requests per export (each makes one to a few spans).
pub const MAX_BATCH: usize = 512;

/// How long a partial batch waits for more before it is sent.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

/// How long one export may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The OTLP client: HTTP, or HTTPS with Mozilla's root CAs.
pub(super) fn client() -> Option<HttpsClient> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .ok()?
        .https_or_http()
        .enable_http1()
        .build();
    Some(Client::builder(TokioExecutor::new()).build(https))
}

/// The resource of every span: `service.name`, `service.version`.
pub(super) fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            attr::string("service.name", service_name),
            attr::string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Resource::default()
    }
}

/// The exporter task's state.
pub(super) struct Exporter {
    client: HttpsClient,
    url: http::Uri,
    resource: Resource,
    metrics: TraceMetrics,
    /// Whether the last export failed (a warning once per failing streak).
    failing: bool,
}

impl Exporter {
    pub(super) fn new(
        client: HttpsClient,
        url: http::Uri,
        resource: Resource,
        metrics: TraceMetrics,
    ) -> Self {
        Exporter { client, url, resource, metrics, failing: false }
    }

    /// Exports batches until `stop` is notified (then what is queued, once) or every
    /// sender is gone.
    pub(super) async fn run(
        mut self,
        mut queue: mpsc::Receiver<RequestRecord>,
        stop: Arc<Notify>,
        done: oneshot::Sender<()>,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                n = queue.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        stopping = true;
                    }
                }
                () = stop.notified() => stopping = true,
            }
            if !stopping && batch.len() < MAX_BATCH {
                // Gather more for a while (or until a batch is full).
                let until = tokio::time::Instant::now() + BATCH_DELAY;
                loop {
                    let room = MAX_BATCH - batch.len();
                    tokio::select! {
                        n = queue.recv_many(&mut batch, room) => {
                            if n == 0 {
                                stopping = true;
                                break;
                            }
                        }
                        () = tokio::time::sleep_until(until) => break,
                        () = stop.notified() => {
                            stopping = true;
                            break;
                        }
                    }
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                }
            }
            if stopping {
                while batch.len() < MAX_BATCH * 8
                    && let Ok(record) = queue.try_recv()
                {
                    batch.push(record);
                }
            }
            for chunk in batch.chunks(MAX_BATCH) {
                self.export(chunk).await;
            }
            batch.clear();
        }
        let _ = done.send(());
    }

    /// Sends the spans of `records`; counts them exported or dropped.
    async fn export(&mut self, records: &[RequestRecord]) {
        let mut spans: Vec<Span> = Vec::with_capacity(records.len() * 3);
        for record in records {
            if let Some(trace) = &record.trace {
                super::spans::spans_of(record, trace, &mut spans);
            }
        }
        if spans.is_empty() {
            return;
        }
        let count = spans.len() as u64;
        let message = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weir".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let body = Bytes::from(message.encode_to_vec());
        match tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(count);
                self.metrics.exported.inc_by(count - rejected);
                self.metrics.dropped.inc_by(rejected);
                if self.failing {
                    tracing::info!(url = %self.url, "trace export works again");
                    self.failing = false;
                }
            }
            Ok(Err(reason)) => self.failed(count, &reason),
            Err(_) => self.failed(count, &format!("no answer within {EXPORT_TIMEOUT:?}")),
        }
    }

    fn failed(&mut self, count: u64, reason: &str) {
        self.metrics.dropped.inc_by(count);
        if !self.failing {
            tracing::warn!(url = %self.url, %reason, "trace export failed, dropping spans until it works");
            self.failing = true;
        }
    }

    /// POSTs one export; `Ok(rejected spans)` on a 2xx.
    async fn post(&self, body: Bytes) -> Result<u64, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"))
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                text.push_str(": ");
                text.push_str(&source.to_string());
            }
            text
        })?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("collector answered {status}"));
        }
        let rejected = ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
        Ok(rejected)
    }
}
