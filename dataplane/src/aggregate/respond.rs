//! The fan-out of one composed request: every part fetched concurrently in the request's
//! task, each under its deadline and size cap, merged once the last one is in — or
//! answered at once when a required part fails.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::time::{Instant, timeout_at};

use super::template::is_dot_segment;
use super::{Aggregate, Part, X_WEIR_COMPLETED};
use crate::filter::RequestContext;
use crate::proxy::{Peer, ProxyBody, ProxyError, forward, headers};
use crate::server::DataPlane;
use crate::snapshot::{BackendTable, RequestMatch, Rule, Snapshot};

/// Why a part is missing from the answer (for logs; the client sees only 502/504 or
/// `null`).
#[derive(Debug, thiserror::Error)]
enum PartFailure {
    #[error("deadline passed")]
    Deadline,
    #[error("{0}")]
    Upstream(ProxyError),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the body failed: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
}

impl PartFailure {
    fn timed_out(&self) -> bool {
        matches!(self, PartFailure::Deadline | PartFailure::Upstream(ProxyError::UpstreamTimeout))
    }
}

/// The composed answer to a request that matched `rule` (entry `matched`), after its
/// request phase: `parts` are the request's head as the filters left it (identity headers,
/// request id, `traceparent`). Any method gets the `GET` fan-out; the client's body is
/// drained by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn respond(
    dataplane: &DataPlane,
    snapshot: &Snapshot,
    rule: &Rule,
    aggregate: &Aggregate,
    matched: &RequestMatch,
    parts: http::request::Parts,
    peer: &Peer,
    host: HeaderValue,
    ctx: &RequestContext<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let path = parts.uri.path();
    let Some(captured) = aggregate.captures(&rule.matches, matched, path) else {
        return Err(ProxyError::NoRoute);
    };
    if captured.iter().any(|c| is_dot_segment(c)) {
        return Err(ProxyError::BadRequest { reason: "a captured path segment is a dot segment" });
    }
    let query = parts.uri.query();
    let mut targets = Vec::with_capacity(aggregate.parts.len());
    for part in &aggregate.parts {
        let rendered = part.path.render(&captured, query);
        let target = PathAndQuery::try_from(rendered)
            .map_err(|e| ProxyError::InvalidUpstreamRequest { reason: e.to_string() })?;
        targets.push(target);
    }
    let client = ctx.client_ip.unwrap_or_else(|| peer.addr.ip().to_canonical());
    let mut base = parts.headers;
    headers::remove_hop_by_hop(&mut base);
    // The parts are bodiless GETs whose JSON the gateway reads: nothing about the client's
    // body, no compressed, ranged or conditional answers.
    for name in [
        CONTENT_LENGTH,
        CONTENT_TYPE,
        EXPECT,
        ACCEPT_ENCODING,
        RANGE,
        IF_RANGE,
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
    ] {
        base.remove(name);
    }
    base.insert(ACCEPT, HeaderValue::from_static("application/json"));
    let proto = if peer.tls.is_some() { "https" } else { "http" };
    headers::set_forwarded(&mut base, &peer.forwarded_for, proto, &host);

    let start = Instant::now();
    let mut pending: FuturesUnordered<_> = aggregate
        .parts
        .iter()
        .zip(targets)
        .enumerate()
        .map(|(i, (part, target))| {
            let mut headers = base.clone();
            headers.insert(HOST, part.host.clone());
            let fetch = Fetch { dataplane, backends: &snapshot.backends, rule, part, client };
            let deadline = start + part.timeout;
            async move { (i, fetch.run(target, headers, query, deadline).await) }
        })
        .collect();
    let mut results: Vec<Option<Bytes>> = vec![None; aggregate.parts.len()];
    let mut completed = true;
    while let Some((i, result)) = pending.next().await {
        let Some(part) = aggregate.parts.get(i) else { continue };
        match result {
            Ok(json) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(json);
                }
            }
            Err(failure) if part.optional => {
                completed = false;
                tracing::debug!(route = %rule.route(), rule = %rule.name, part = %part.key, %failure, "optional aggregate part failed, answering null");
            }
            Err(failure) => {
                tracing::warn!(route = %rule.route(), rule = %rule.name, part = %part.key, %failure, "required aggregate part failed");
                return Err(if failure.timed_out() {
                    ProxyError::UpstreamTimeout
                } else {
                    ProxyError::BadResponse { source: Box::new(failure) }
                });
            }
        }
    }
    let mut response = Response::new(ProxyBody::full(aggregate.merge(&results)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        X_WEIR_COMPLETED,
        HeaderValue::from_static(if completed { "true" } else { "false" }),
    );
    Ok(response)
}

/// What one part's fetch needs.
struct Fetch<'a> {
    dataplane: &'a DataPlane,
    backends: &'a BackendTable,
    rule: &'a Rule,
    part: &'a Part,
    client: std::net::IpAddr,
}

impl Fetch<'_> {
    /// The part's JSON text (validated, surrounding whitespace trimmed), or why not.
    async fn run(
        self,
        target: PathAndQuery,
        headers: HeaderMap,
        query: Option<&str>,
        deadline: Instant,
    ) -> Result<Bytes, PartFailure> {
        match timeout_at(deadline, self.fetch(target, headers, query, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(PartFailure::Deadline),
        }
    }

    async fn fetch(
        &self,
        target: PathAndQuery,
        headers: HeaderMap,
        query: Option<&str>,
        deadline: Instant,
    ) -> Result<Bytes, PartFailure> {
        let part = self.part;
        let backend =
            crate::proxy::ready_backend(self.backends.get(part.backend), "unknown backend")
                .map_err(|reason| PartFailure::Upstream(ProxyError::NoEndpoint { reason }))?;
        let hash = match backend.policy.as_deref().map(|p| &p.load_balancer) {
            Some(crate::upstream::policy::LoadBalancer::ConsistentHash(on)) => {
                crate::upstream::balance::request_hash(on, &headers, query, self.client).hash
            }
            _ => None,
        };
        // The rule's timeouts, the request timeout capped by the part's deadline so the
        // upstream layer records a late part as a timeout (breaker, outlier detection).
        let mut timeouts = *self.rule.action.timeouts;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        timeouts.request = Some(timeouts.request.map_or(left, |r| r.min(left)));
        let prepared = forward::Prepared {
            method: Method::GET,
            path_and_query: target,
            headers,
            body: None,
            upgrade: false,
            hash,
        };
        let mut attempts = forward::Attempts::default();
        let response = forward::send(
            &self.dataplane.upstream,
            backend,
            &timeouts,
            &self.rule.action.retries,
            prepared,
            &mut attempts,
        )
        .await
        .map_err(PartFailure::Upstream)?;
        if !response.status().is_success() {
            return Err(PartFailure::Status(response.status()));
        }
        let body = response.into_body();
        if body.size_hint().lower() > part.max_body_size {
            return Err(PartFailure::TooLarge(part.max_body_size));
        }
        let limit = usize::try_from(part.max_body_size).unwrap_or(usize::MAX);
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(PartFailure::TooLarge(part.max_body_size));
            }
            Err(e) => return Err(PartFailure::Body(e)),
        };
        json_text(bytes)
    }
}

/// `bytes` trimmed to its JSON value, once validated.
fn json_text(bytes: Bytes) -> Result<Bytes, PartFailure> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_slice(&bytes).map_err(PartFailure::NotJson)?;
    let text = raw.get();
    // The raw value borrows `bytes`: its offset there (whitespace around it is trimmed).
    let offset = (text.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    match offset.checked_add(text.len()) {
        Some(end) if end <= bytes.len() => Ok(bytes.slice(offset..end)),
        _ => Ok(Bytes::copy_from_slice(text.as_bytes())),
    }
}

#[cfg(test)]
pub(super) fn json_text_for_tests(bytes: &'static [u8]) -> Option<Bytes> {
    json_text(Bytes::from_static(bytes)).ok()
}
