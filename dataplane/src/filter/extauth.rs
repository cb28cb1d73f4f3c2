//! `extAuth`: forward authentication. (Interface; the client lands in the next commit.)

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri};

use super::{Flow, RequestContext};
use crate::proxy::ProxyError;
use crate::snapshot::{BackendId, ObjectKey};

/// Where the auth service is.
#[derive(Debug, Clone)]
pub enum ExtAuthTarget {
    /// An `http(s)://` URL (host names resolved by DNS), asked through a pooled client.
    Url(Uri),
    /// A Service port of the snapshot's backend table, asked through the upstream pool.
    Service {
        /// The Service port.
        backend: BackendId,
        /// The path (and query) asked.
        path_and_query: PathAndQuery,
        /// The `Host` sent (`name.namespace.svc:port`).
        host: HeaderValue,
    },
}

/// Everything an [`ExtAuth`] is built from.
#[derive(Debug, Clone)]
pub struct ExtAuthSettings {
    /// The Plugin object (for logs).
    pub source: ObjectKey,
    /// The auth service.
    pub target: ExtAuthTarget,
    /// How long to wait for its answer.
    pub timeout: Duration,
    /// Request headers sent to it; `None` = every end-to-end header.
    pub forward_headers: Option<Box<[HeaderName]>>,
    /// Headers of a 2xx answer copied onto the upstream request.
    pub upstream_headers: Box<[HeaderName]>,
    /// Let the request through (unauthenticated) when the service cannot be asked.
    pub allow_on_error: bool,
}

/// A compiled `extAuth` plugin.
#[derive(Debug)]
pub struct ExtAuth {
    settings: ExtAuthSettings,
}

impl ExtAuth {
    /// Builds the filter.
    pub fn new(settings: ExtAuthSettings) -> Self {
        ExtAuth { settings }
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &ExtAuthSettings {
        &self.settings
    }

    /// Removes the client's own copies of the headers the auth service sets.
    pub fn strip_upstream_headers(&self, headers: &mut http::HeaderMap) {
        for name in &*self.settings.upstream_headers {
            headers.remove(name);
        }
    }

    /// Asks the auth service about the request.
    pub async fn check(
        &self,
        _request: &mut http::request::Parts,
        _ctx: &mut RequestContext<'_>,
    ) -> Result<Flow, ProxyError> {
        Err(ProxyError::Unavailable { reason: "extAuth is not implemented".into() })
    }
}
