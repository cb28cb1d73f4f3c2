//! How the auth service is reached: a URL through one pooled HTTP(S) client that the
//! process-wide [`Upstream`] keeps (made on first use), a Service through weir's own
//! upstream connection pool, round robin over the Service's ready endpoints.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::answer::{self, Answer};
use crate::proxy::Upstream;
use crate::proxy::body::UpstreamBody;
use crate::snapshot::Backend;
use crate::upstream::pool::{MAX_IDLE_PER_ENDPOINT, POOL_IDLE_TIMEOUT};

/// The client of `extAuth` URL targets: HTTP/1.1, `http` and `https`, pooled per host.
pub(crate) type UrlClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for URL targets trusting Mozilla's root CAs (webpki-roots), or `tls` when
/// given (its ALPN protocols are replaced by HTTP/1.1's); aws-lc-rs either way. `None`
/// only if the crypto provider cannot make a TLS configuration.
pub(crate) fn url_client(tls: Option<&rustls::ClientConfig>) -> Option<UrlClient> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(config) => {
            let mut config = config.clone();
            config.alpn_protocols.clear();
            builder.with_tls_config(config)
        }
        None => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            builder.with_provider_and_webpki_roots(provider).ok()?
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Some(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
            .build(https),
    )
}

/// `GET` with `headers` and `Host`, no body.
fn get<B>(uri: Uri, host: HeaderValue, mut headers: HeaderMap, body: B) -> Request<B> {
    headers.insert(HOST, host);
    let mut request = Request::new(body);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// Asks a URL target through the shared client.
pub(super) async fn ask_url(
    upstream: &Upstream,
    uri: &Uri,
    host: HeaderValue,
    headers: HeaderMap,
) -> Result<Answer, String> {
    let client = upstream
        .ext_auth_client()
        .ok_or_else(|| "no TLS configuration for the auth client".to_owned())?;
    let request = get(uri.clone(), host, headers, Empty::new());
    let response = client.request(request).await.map_err(|e| answer::describe(&e))?;
    answer::read(response).await
}

/// A Service target, resolved in the live snapshot.
pub(super) struct ServiceTarget<'a> {
    /// The Service port.
    pub backend: &'a Backend,
    /// The path (and query) asked.
    pub path_and_query: &'a PathAndQuery,
    /// The `Host` sent.
    pub host: HeaderValue,
    /// Bounds the TCP connect of a new connection.
    pub connect_timeout: Duration,
}

/// Asks a Service target over weir's upstream pool: its next ready endpoint.
pub(super) async fn ask_service(
    upstream: &Upstream,
    target: ServiceTarget<'_>,
    headers: HeaderMap,
) -> Result<Answer, String> {
    let backend = target.backend;
    if let Some(problem) = &backend.problem {
        return Err(format!("auth Service {}: {problem}", backend.key));
    }
    let addr = backend
        .next_endpoint()
        .ok_or_else(|| format!("auth Service {} has no ready endpoint", backend.key))?;
    // Origin form, as to any upstream.
    let uri = Uri::from(target.path_and_query.clone());
    let request = get(uri, target.host, headers, UpstreamBody::Empty);
    let response = upstream
        .request_once(addr, target.connect_timeout, request)
        .await
        .map_err(|e| answer::describe(&e))?;
    answer::read(response).await
}
