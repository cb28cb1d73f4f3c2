//! e2e: API composition (`aggregate` on a Route rule) with the real `weir` binary in
//! standalone mode in front of a real hyper origin on loopback that records what each part
//! request carried: parts merged under their keys, optional parts `null` on failure or
//! deadline, required parts failing the answer (502, 504 past the deadline), non-JSON and
//! oversized bodies as failed parts, path captures and query values substituted, the
//! request's identity headers on every part, and authentication run once before the
//! fan-out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_e2e::{
    ConfigDir, Reply, WeirProcess, free_port, http_request, serve_http1, service_yaml,
    workspace_root,
};

/// The README's token (see tests/auth.rs): iss `quickstart-issuer`, sub `user-42`.
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJxdWlja3N0YXJ0LWlzc3VlciIsInN1YiI6InVzZXItNDIiLCJleHAiOjQxMDI0NDQ4MDB9.2FOPtbGr6ly46t2XFrv4oZaPM6x86KU3NNUpFlDY3Dk";

/// One request the origin received: path and query, and its headers.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// A loopback origin for the parts: `/users/ID` and `/orders?user=ID` answer JSON,
/// `/status/NNN` answers NNN, `/html` answers HTML, `/big` a 4 KiB JSON string, `/hang`
/// sleeps 10 s before answering. Every request is recorded. Stops when dropped.
struct PartsOrigin {
    port: u16,
    seen: Seen,
    _shutdown: watch::Sender<()>,
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

impl PartsOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let (shutdown, rx) = watch::channel(());
        let record = Arc::clone(&seen);
        tokio::spawn(serve_http1(listener, rx, move |request: http::Request<_>| {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
            record.lock().unwrap().push((target.clone(), request.headers().clone()));
            async move {
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                if let Some(id) = path.strip_prefix("/users/") {
                    return json(
                        StatusCode::OK,
                        format!("  {{\"id\":\"{id}\",\"name\":\"Ada\"}}\n"),
                    );
                }
                if path == "/orders" {
                    return json(StatusCode::OK, format!("[{{\"order\":1,\"q\":\"{query}\"}}]"));
                }
                if let Some(code) = path.strip_prefix("/status/") {
                    let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
                    return json(status, "{\"error\":\"from the origin\"}".to_owned());
                }
                match path {
                    "/html" => {
                        let mut r = json(StatusCode::OK, "<html>hello</html>".to_owned());
                        r.headers_mut().insert("content-type", "text/html".parse().unwrap());
                        r
                    }
                    "/big" => json(StatusCode::OK, format!("\"{}\"", "x".repeat(4096))),
                    "/hang" => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        json(StatusCode::OK, "{\"late\":true}".to_owned())
                    }
                    _ => json(StatusCode::OK, "{\"echo\":true}".to_owned()),
                }
            }
        }));
        PartsOrigin { port, seen, _shutdown: shutdown }
    }

    fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|(p, _)| p).collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

const ROUTES: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: compose}
spec:
  rules:
    - name: profile
      matches: [{path: {type: Exact, value: "/profile/{id}"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: orders, port: 80, path: "/orders?user=${path.id}&since=${query.since}"}
    - name: account
      matches: [{path: {type: Prefix, value: "/accounts/{id}/summary"}}]
      plugins: [demo-jwt, demo-keys]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: orders, port: 80, path: "/orders?user=${path.id}"}
    - name: slow
      matches: [{path: {type: Exact, value: "/slow/{id}"}}]
      aggregate:
        timeout: 1s
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: orders, port: 80, path: "/hang", optional: true, timeout: 300ms}
    - name: late
      matches: [{path: {type: Exact, value: "/late"}}]
      aggregate:
        timeout: 1s
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: orders, service: orders, port: 80, path: "/hang", timeout: 300ms}
    - name: broken
      matches: [{path: {type: Exact, value: "/broken"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: orders, service: orders, port: 80, path: "/status/500"}
    - name: refused
      matches: [{path: {type: Exact, value: "/refused"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: gone, service: gone, port: 80, path: "/anything"}
    - name: html-optional
      matches: [{path: {type: Exact, value: "/html-optional"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: page, service: orders, port: 80, path: "/html", optional: true}
    - name: html-required
      matches: [{path: {type: Exact, value: "/html-required"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: page, service: orders, port: 80, path: "/html"}
    - name: cached
      matches: [{path: {type: Exact, value: "/cached/{id}"}}]
      plugins: [profile-cache]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/${path.id}"}
          - {key: orders, service: orders, port: 80, path: "/orders?user=${path.id}"}
    - name: cached-partial
      matches: [{path: {type: Exact, value: "/cached-partial"}}]
      plugins: [profile-cache]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: page, service: orders, port: 80, path: "/html", optional: true}
    - name: big
      matches: [{path: {type: Exact, value: "/big"}}]
      aggregate:
        parts:
          - {key: user, service: users, port: 80, path: "/users/1"}
          - {key: blob, service: orders, port: 80, path: "/big", optional: true, maxBodySize: 1Ki}
          - {key: small, service: orders, port: 80, path: "/big", optional: true, maxBodySize: 8Ki}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: profile-cache}
spec:
  cache: {ttl: 1m}
"#;

async fn call(weir: &WeirProcess, path: &str, headers: &[(&str, &str)]) -> Reply {
    http_request(weir.http_addr, "GET", "localhost:8080", path, headers).await.unwrap()
}

fn header(reply: &Reply, name: &str) -> String {
    reply.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_fetched_merged_and_fail_as_documented() {
    let origin = PartsOrigin::start().await;
    let dir = ConfigDir::new("aggregate").unwrap();
    let mut services = service_yaml("users", origin.port);
    services.push_str(&service_yaml("orders", origin.port));
    // Nothing listens there: every attempt is refused.
    services.push_str(&service_yaml("gone", free_port().unwrap()));
    dir.write("services.yaml", &services).unwrap();
    let auth =
        std::fs::read_to_string(workspace_root().join("deploy/examples/quickstart/auth.yaml"))
            .unwrap();
    dir.write("auth.yaml", &auth).unwrap();
    dir.write("routes.yaml", ROUTES).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // Two parts merged, in declared order, with captures and query values substituted.
    let reply = call(&weir, "/profile/42?since=2024-01-01%2012:00&x=1", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header(&reply, "content-type"), "application/json");
    assert_eq!(header(&reply, "x-weir-completed"), "true");
    assert_eq!(
        reply.text(),
        r#"{"user":{"id":"42","name":"Ada"},"orders":[{"order":1,"q":"user=42&since=2024-01-01%2012%3A00"}]}"#
    );
    let mut paths = origin.paths();
    paths.sort();
    assert_eq!(paths, vec!["/orders?user=42&since=2024-01-01%2012%3A00", "/users/42"]);
    // Every part is a GET to the part's Service host, asking for JSON.
    for (path, h) in origin.seen() {
        let service = if path.starts_with("/users/") { "users" } else { "orders" };
        assert_eq!(h["host"], format!("{service}.default.svc").as_str(), "{path}");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["x-forwarded-host"], "localhost:8080");
        assert!(h.get("accept-encoding").is_none());
    }
    // A captured segment is inserted as received (still percent-encoded).
    origin.clear();
    let reply = call(&weir, "/profile/a%2Fb", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(origin.paths().contains(&"/users/a%2Fb".to_owned()), "{:?}", origin.paths());
    // An encoded dot segment never reaches a part (normalized away before routing, or
    // refused as a capture).
    origin.clear();
    let reply = call(&weir, "/profile/%2E%2E", &[]).await;
    assert!(matches!(reply.status, 400 | 404), "{}", reply.text());
    assert!(origin.paths().is_empty(), "{:?}", origin.paths());

    // Authentication runs once, before the fan-out: no credential, no part request.
    origin.clear();
    let reply = call(&weir, "/accounts/7/summary", &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(origin.paths().is_empty(), "{:?}", origin.paths());
    // With a key: the parts carry the request's identity.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let reply = call(
        &weir,
        "/accounts/7/summary/extra",
        &[
            ("x-api-key", "demo-api-key-1"),
            ("traceparent", &traceparent),
            ("tracestate", "k=v"),
            ("x-request-id", "agg-e2e-1"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{:?}", origin.paths());
    for (path, h) in &seen {
        assert_eq!(h["x-request-id"], "agg-e2e-1", "{path}");
        assert_eq!(h["x-consumer-username"], "demo-user", "{path}");
        assert!(h["traceparent"].to_str().unwrap().contains(trace_id), "{path}: {h:?}");
        assert_eq!(h["tracestate"], "k=v", "{path}");
    }
    // A JWT consumer: its claim header reaches every part; a forged one never does.
    origin.clear();
    let bearer = format!("Bearer {TOKEN}");
    let reply = call(
        &weir,
        "/accounts/7/summary",
        &[("authorization", &bearer), ("x-user-id", "forged"), ("x-consumer-username", "root")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{:?}", origin.paths());
    // Without a client request id, every part gets the one the gateway made.
    let made = seen[0].1["x-request-id"].clone();
    assert!(!made.is_empty());
    for (path, h) in seen {
        assert_eq!(h["x-request-id"], made, "{path}");
        assert_eq!(h["x-user-id"], "user-42", "{path}");
        assert_eq!(h["x-consumer-username"], "demo-user", "{path}");
    }

    // An optional part past its deadline: null, X-Weir-Completed: false, without waiting
    // for the origin (which answers after 10 s).
    let started = Instant::now();
    let reply = call(&weir, "/slow/5", &[]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header(&reply, "x-weir-completed"), "false");
    assert_eq!(reply.text(), r#"{"user":{"id":"5","name":"Ada"},"orders":null}"#);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // A required part past its deadline: 504, the gateway's JSON error.
    let reply = call(&weir, "/late", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json().unwrap()["status"], 504);

    // A required part failing: 502, with nothing of the part's answer in it.
    let reply = call(&weir, "/broken", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let body = reply.json().unwrap();
    assert_eq!(body["status"], 502);
    assert!(!reply.text().contains("from the origin"), "{}", reply.text());
    assert_eq!(body["requestId"], header(&reply, "x-request-id").as_str());
    // Connection refused on a required part: 502 too.
    let reply = call(&weir, "/refused", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());

    // A part that is not JSON is a failed part.
    let reply = call(&weir, "/html-optional", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header(&reply, "x-weir-completed"), "false");
    assert_eq!(reply.json().unwrap()["page"], serde_json::Value::Null);
    let reply = call(&weir, "/html-required", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());

    // A body over maxBodySize is a failed part; under it, it is kept.
    let reply = call(&weir, "/big", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header(&reply, "x-weir-completed"), "false");
    let body = reply.json().unwrap();
    assert_eq!(body["blob"], serde_json::Value::Null);
    assert_eq!(body["small"].as_str().map(str::len), Some(4096));

    // A cache Plugin on an aggregate rule stores the composed answer: the second request
    // is a Hit with the same body and no part request; a partial answer is never stored.
    origin.clear();
    let first = call(&weir, "/cached/3", &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(header(&first, "x-cache-status"), "Miss");
    assert_eq!(origin.paths().len(), 2, "{:?}", origin.paths());
    let second = call(&weir, "/cached/3", &[]).await;
    assert_eq!(header(&second, "x-cache-status"), "Hit");
    assert_eq!(second.text(), first.text());
    assert_eq!(header(&second, "x-weir-completed"), "true");
    assert_eq!(origin.paths().len(), 2, "a hit sent part requests: {:?}", origin.paths());
    for _ in 0..2 {
        let reply = call(&weir, "/cached-partial", &[]).await;
        assert_eq!(header(&reply, "x-weir-completed"), "false");
        assert_eq!(header(&reply, "x-cache-status"), "Miss");
    }
    assert_eq!(origin.paths().len(), 6, "{:?}", origin.paths());

    // Any method the rule matches gets the GET fan-out; the client's body is ignored.
    origin.clear();
    let reply =
        http_request(weir.http_addr, "POST", "localhost:8080", "/profile/9", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(origin.paths().iter().all(|p| p.starts_with("/users/9") || p.starts_with("/orders")));
    drop(weir);
}
