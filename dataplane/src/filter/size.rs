//! `requestSize`: request bodies larger than `maxBody` are answered 413.
//!
//! A `Content-Length` over the limit is refused here, before any upstream is contacted. A
//! body without one (chunked, or HTTP/2 without `content-length`) is counted while it
//! streams upstream: past the limit the upstream request is aborted (the upstream sees a
//! truncated body and a closed connection, never a complete request) and the client gets
//! 413 — the proxy enforces that with the limit this filter leaves in the context.

use http::header::CONTENT_LENGTH;

use super::RequestContext;
use crate::proxy::ProxyError;

/// A compiled `requestSize` plugin.
#[derive(Debug, Clone, Copy)]
pub struct RequestSize {
    /// Largest body accepted, in bytes.
    pub max_body: u64,
}

impl RequestSize {
    /// The request phase: 413 for a declared length over the limit; otherwise the limit is
    /// left for the proxy to enforce while streaming.
    pub fn check(
        &self,
        request: &http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        if let Some(len) = request.headers.get(CONTENT_LENGTH) {
            // hyper has already rejected an unparsable or conflicting Content-Length.
            let declared = len.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_body) {
                return Err(ProxyError::PayloadTooLarge);
            }
        }
        ctx.body_limit = Some(ctx.body_limit.map_or(self.max_body, |l| l.min(self.max_body)));
        Ok(())
    }
}
