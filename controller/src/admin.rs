//! The admin server (`--admin-addr`): health, readiness, metrics and debug views.
//!
//! `/healthz`, `/readyz` (200 once the first snapshot is live, 503 again once shutdown
//! began), `/metrics` (Prometheus
//! text), `/debug/snapshot` (the live snapshot; it holds no secrets), `/debug/status` (every
//! object's conditions and the load errors), `/debug/backends` (every backend's policy,
//! endpoints with health, in-flight and ejection, and circuit state) and
//! `/debug/match?method=&host=&path=` (`header=name:value` may repeat), `/debug/stats`
//! (per-Route counters) and the dashboard at `/` (see [`crate::dashboard`]).
//! `DELETE /cache?host=H&path=P` purges the response cache's entries of a host and path
//! (every method, query, vary value and consumer), `DELETE /cache` every entry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_dataplane::RequestView;
use weir_dataplane::router::describe_snapshot;

use crate::publish::Shared;

type Body = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// Decodes `%XX` escapes and `+` in a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Answers `/debug/match`: which route, rule, backends and plugins a request would get.
pub fn match_request(shared: &Shared, query: Option<&str>) -> (StatusCode, Value) {
    let params = query_pairs(query);
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let method = match Method::from_bytes(get("method").unwrap_or("GET").as_bytes()) {
        Ok(m) => m,
        Err(_) => return (StatusCode::BAD_REQUEST, json!({"error": "invalid method"})),
    };
    let host = get("host").unwrap_or("");
    let full_path = get("path").unwrap_or("/");
    let (path, request_query) = match full_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full_path, None),
    };
    let mut headers = HeaderMap::new();
    for (_, h) in params.iter().filter(|(k, _)| k == "header") {
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        match (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        {
            (Ok(n), Ok(v)) => drop(headers.append(n, v)),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("invalid header {h:?}")}),
                );
            }
        }
    }
    let snapshot = shared.dataplane.current();
    let request =
        RequestView { method: &method, host, path, query: request_query, headers: &headers };
    let request_json =
        json!({"method": method.as_str(), "host": host, "path": path, "query": request_query});
    let Some(m) = snapshot.routes.find(&request) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"version": snapshot.version, "request": request_json, "match": null,
                   "why": "no rule of any Route matches this host, path, method, headers and query"}),
        );
    };
    let rule = m.rule;
    let position = rule.matches.iter().position(|x| std::ptr::eq(x, m.matched)).unwrap_or(0);
    let described = snapshot.routes.describe();
    let route_key = rule.route().to_string();
    let route_json = described["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["key"] == route_key.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    let rule_json = route_json["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["index"] == rule.index))
        .cloned()
        .unwrap_or(Value::Null);
    let backends: Vec<Value> = rule
        .action
        .backends
        .backends()
        .iter()
        .map(|wb| match snapshot.backends.get(wb.id) {
            Some(b) => json!({
                "service": b.key.to_string(), "weight": wb.weight,
                "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "problem": b.problem,
            }),
            None => {
                json!({"id": wb.id.0, "weight": wb.weight, "problem": "missing from the snapshot"})
            }
        })
        .collect();
    let plugins: Vec<Value> = shared
        .live
        .load()
        .as_ref()
        .and_then(|c| {
            let key = crate::index::ObjectRef::new(&*rule.route().namespace, &*rule.route().name);
            c.rule_plugins.get(&key).and_then(|rules| rules.get(rule.index)).cloned()
        })
        .unwrap_or_default()
        .iter()
        .map(|p| json!({"type": p.kind.as_str(), "source": p.source.to_string(), "level": p.level}))
        .collect();
    let matched = rule_json["matches"].get(position).cloned().unwrap_or(Value::Null);
    (
        StatusCode::OK,
        json!({
            "version": snapshot.version,
            "request": request_json,
            "route": route_key,
            "generation": route_json["generation"],
            "hosts": route_json["hosts"],
            "rule": {"name": &*rule.name, "index": rule.index},
            "matched": matched,
            "why": format!(
                "host {host:?} selects Route {route_key}; its rule {} (index {}) is the most \
                 specific rule whose match entry {position} holds", rule.name, rule.index
            ),
            "backends": backends,
            "aggregate": rule_json["aggregate"],
            "plugins": plugins,
            "rewrite": rule_json["rewrite"],
            "timeouts": rule_json["timeouts"],
            "retries": rule_json["retries"],
        }),
    )
}

/// `DELETE /cache?host=H&path=P` (both or neither): removes the entries from memory and
/// Redis. Answers `{"purged": N}` (memory entries), plus `redisPurged` (Redis keys) or
/// `redisError` when a Redis store is configured.
pub async fn purge_cache(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let pairs = query_pairs(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (host, path) = (get("host"), get("path"));
    if host.is_some() != path.is_some() {
        let error = "give both host and path, or neither to purge everything";
        return json_response(StatusCode::BAD_REQUEST, &json!({ "error": error }));
    }
    let (purged, redis) = shared.dataplane.cache.purge(host, path).await;
    tracing::info!(host = host.unwrap_or("*"), path = path.unwrap_or("*"), purged, "cache purged");
    let mut body = json!({ "purged": purged });
    match redis {
        Some(Ok(n)) => body["redisPurged"] = json!(n),
        Some(Err(e)) => body["redisError"] = json!(e),
        None => {}
    }
    json_response(StatusCode::OK, &body)
}

/// Handles one admin request.
pub fn handle(shared: &Shared, method: &Method, path: &str, query: Option<&str>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "use GET"}));
    }
    match path {
        "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => {
            if shared.draining() {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "shutting down\n",
                )
            } else if shared.status.load().ready {
                respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "not ready\n")
            }
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            weir_dataplane::metrics::append_to(shared.metrics.encode()),
        ),
        "/debug/snapshot" => {
            json_response(StatusCode::OK, &describe_snapshot(&shared.dataplane.current()))
        }
        "/debug/status" => {
            let status = shared.status.load();
            let mut value = serde_json::to_value(&**status).unwrap_or(Value::Null);
            if let (Some(leader), Some(map)) = (shared.leader(), value.as_object_mut()) {
                map.insert("leader".to_owned(), Value::Bool(leader));
            }
            json_response(StatusCode::OK, &value)
        }
        "/debug/backends" => json_response(StatusCode::OK, &shared.dataplane.registry.describe()),
        "/debug/stats" => {
            json_response(StatusCode::OK, &crate::dashboard::stats(&shared.dataplane.current()))
        }
        "/debug/match" => {
            let (status, body) = match_request(shared, query);
            json_response(status, &body)
        }
        _ => crate::dashboard::asset(path).unwrap_or_else(|| {
            json_response(StatusCode::NOT_FOUND, &json!({"error": "not found", "status": 404}))
        }),
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let service = service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move {
                let (method, uri) = (req.method(), req.uri());
                if method == Method::DELETE && uri.path() == "/cache" {
                    return Ok::<_, Infallible>(purge_cache(&shared, uri.query()).await);
                }
                Ok(handle(&shared, method, uri.path(), uri.query()))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
