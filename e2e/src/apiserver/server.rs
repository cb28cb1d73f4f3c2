//! The HTTP side: the accept loop, one hyper HTTP/1.1 connection task per client, and the
//! dispatch of each request to discovery, a verb handler or a watch, recording every request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ApiRequest;
use super::error::ApiError;
use super::handlers::{self, Call};
use super::kinds;
use super::paths::{self, Endpoint, Query, ResourcePath};
use super::selectors::Selectors;
use super::store::{Store, WatchFilter, WatchStart};
use super::watch::{self as watch_stream, Render, partial_metadata};

/// Every response body: whole JSON, or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// A watch without `timeoutSeconds` ends after this long (the real server picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// State shared by the accept loop, the connections and the [`super::ApiServer`] handle.
#[derive(Debug)]
pub struct Shared {
    /// Objects, history and watches.
    pub store: Store,
    /// The resources served (built-in, and registered by CustomResourceDefinitions).
    pub kinds: kinds::Kinds,
    /// Every request served, in order.
    pub requests: Mutex<Vec<ApiRequest>>,
    /// `false`: every request is answered 503.
    pub available: AtomicBool,
    /// Flips to `true` once, on stop.
    pub shutdown: watch::Sender<bool>,
    bookmark_ms: AtomicU64,
    require_namespaces: AtomicBool,
}

impl Shared {
    /// New shared state.
    pub fn new() -> Self {
        Shared {
            store: Store::default(),
            kinds: kinds::Kinds::default(),
            requests: Mutex::new(Vec::new()),
            available: AtomicBool::new(true),
            shutdown: watch::Sender::new(false),
            bookmark_ms: AtomicU64::new(1000),
            require_namespaces: AtomicBool::new(false),
        }
    }

    /// How often open watches that allow bookmarks get one.
    pub fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_ms.load(Ordering::Relaxed).max(1))
    }

    /// Changes the bookmark period for watches opened from now on.
    pub fn set_bookmark_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self.bookmark_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Whether creates need an existing Namespace.
    pub fn require_namespaces(&self) -> bool {
        self.require_namespaces.load(Ordering::Relaxed)
    }

    /// Turns the Namespace existence check on or off.
    pub fn set_require_namespaces(&self, on: bool) {
        self.require_namespaces.store(on, Ordering::Relaxed);
    }

    /// The request log.
    pub fn log(&self) -> std::sync::MutexGuard<'_, Vec<ApiRequest>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resolves once the server is stopping.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown.subscribe();
            let svc_shared = Arc::clone(&shared);
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&svc_shared);
                async move { Ok::<_, Infallible>(dispatch(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stopped(&mut shutdown) => {}
            }
        });
    }
}

fn json_response(status: u16, body: &Value) -> http::Response<Body> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn header(req: &http::Request<Incoming>, name: http::header::HeaderName) -> &str {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

async fn dispatch(shared: &Arc<Shared>, req: http::Request<Incoming>) -> http::Response<Body> {
    let mut record = ApiRequest {
        verb: req.method().as_str().to_ascii_lowercase(),
        path: req.uri().path().to_owned(),
        ..ApiRequest::default()
    };
    let response = match route(shared, req, &mut record).await {
        Ok(response) => response,
        Err(err) => json_response(err.code(), &err.to_status()),
    };
    record.status = response.status().as_u16();
    shared.log().push(record);
    response
}

async fn route(
    shared: &Arc<Shared>,
    req: http::Request<Incoming>,
    record: &mut ApiRequest,
) -> Result<http::Response<Body>, ApiError> {
    if !shared.available.load(Ordering::SeqCst) {
        return Err(ApiError::ServiceUnavailable(
            "the API server is unavailable (set_available(false))".into(),
        ));
    }
    let served = shared.kinds.all();
    let doc = match paths::parse_path(req.uri().path(), &shared.kinds)? {
        Endpoint::Version => kinds::version(),
        Endpoint::CoreVersions => kinds::core_versions(),
        Endpoint::Groups => kinds::group_list(&served),
        Endpoint::Group(g) => kinds::group(&served, &g)
            .ok_or_else(|| ApiError::NotFound(format!("group {g:?} not served")))?,
        Endpoint::Resources { group, version } => {
            kinds::resource_list(&served, &group, &version)
                .ok_or_else(|| ApiError::NotFound(format!("{group}/{version} not served")))?
        }
        Endpoint::Resource(path) => return resource(shared, req, path, record).await,
    };
    if req.method() != http::Method::GET {
        return Err(ApiError::MethodNotAllowed("discovery is read-only".into()));
    }
    Ok(json_response(200, &doc))
}

async fn resource(
    shared: &Arc<Shared>,
    req: http::Request<Incoming>,
    path: ResourcePath,
    record: &mut ApiRequest,
) -> Result<http::Response<Body>, ApiError> {
    record.group = path.kind.group.to_owned();
    record.version = path.kind.version.to_owned();
    record.resource = path.kind.plural.to_owned();
    record.subresource = path.subresource.clone();
    record.namespace = path.namespace.clone();
    record.name = path.name.clone();
    let query = Query::parse(req.uri().query().unwrap_or_default())?;
    record.field_manager = query.field_manager.clone();
    record.resource_version = query.resource_version.clone();
    record.label_selector = query.label_selector.clone();
    record.field_selector = query.field_selector.clone();
    let verb = paths::verb(req.method(), &path, &query)?;
    record.verb = verb.to_owned();
    let content_type = header(&req, http::header::CONTENT_TYPE)
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if verb == "patch" {
        record.patch_type = Some(content_type.clone());
    }
    let how = if header(&req, http::header::ACCEPT).contains("as=PartialObjectMetadata") {
        Render::Metadata
    } else {
        Render::Full
    };
    let user_agent =
        header(&req, http::header::USER_AGENT).split('/').next().unwrap_or_default().to_owned();
    let manager = query
        .field_manager
        .clone()
        .or_else(|| Some(user_agent).filter(|ua| !ua.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());

    if verb == "watch" {
        let selectors = Selectors::parse(
            query.label_selector.as_deref(),
            query.field_selector.as_deref(),
            path.kind,
        )?;
        let start =
            match (query.send_initial_events, query.resource_version.as_deref()) {
                (true, _) | (false, None | Some("" | "0")) => {
                    WatchStart::Current(query.send_initial_events)
                }
                (false, Some(rv)) => WatchStart::After(rv.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid resource version {rv:?}"))
                })?),
            };
        let filter = WatchFilter { kind: path.kind, namespace: path.namespace.clone(), selectors };
        let timeout =
            query.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_WATCH_TIMEOUT);
        let body =
            watch_stream::open(shared, filter, start, query.allow_bookmarks, Some(timeout), how);
        let mut response = http::Response::new(body);
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return Ok(response);
    }

    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?
        .to_bytes();
    let require_namespace = shared.require_namespaces();
    let call = Call {
        path: &path,
        query: &query,
        body: &body,
        content_type: &content_type,
        manager,
        require_namespace,
    };
    let (status, value) = {
        let mut state = shared.store.lock();
        match verb {
            "get" => (200, handlers::get(&state, &call)?),
            "list" => (200, handlers::list(&state, &call)?),
            "create" => (201, handlers::create(&mut state, &call)?),
            "update" => (200, handlers::update(&mut state, &call)?),
            "patch" => handlers::patch(&mut state, &call)?,
            "delete" => (200, handlers::delete(&mut state, &call)?),
            _ => (200, handlers::delete_collection(&mut state, &call)?),
        }
    };
    if path.kind.plural == "customresourcedefinitions"
        && matches!(verb, "create" | "update" | "patch")
        && path.subresource.is_none()
    {
        shared.kinds.register_crd(&value);
    }
    let value = match how {
        Render::Full => value,
        Render::Metadata if value.get("items").is_some() => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": value["metadata"].clone(),
            "items": value["items"].as_array().map(|items| items.iter().map(partial_metadata).collect::<Vec<_>>()),
        }),
        Render::Metadata => partial_metadata(&value),
    };
    Ok(json_response(status, &value))
}
