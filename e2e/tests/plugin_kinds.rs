//! e2e: every Plugin kind of the shipped CRD schema either changes traffic through the real
//! `weir` binary, or is `Accepted=False` (and then fails closed). A kind added to the CRD
//! without a case here fails this test: no kind can be accepted and silently do nothing.
//!
//! One weir in standalone mode serves `/base` (no plugin) and `/k/<kind>` (that kind's
//! Plugin) on the same echo origin; each case sends the same request to both and asserts
//! the difference the kind must make.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use weir_e2e::{
    ConfigDir, EchoOrigin, Reply, WeirProcess, condition, conditions_of, http_request,
    service_yaml, workspace_root,
};

/// The typed configurations of the Plugin CRD as shipped (`charts/weir/crds`).
fn schema_kinds() -> Vec<String> {
    let path = workspace_root().join("charts/weir/crds/plugins.weir.dev.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let crd: Value = serde_saphyr::from_str(text.trim_start_matches("---\n")).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let mut kinds: Vec<String> =
        spec.as_object().unwrap().keys().filter(|k| *k != "global").cloned().collect();
    kinds.sort();
    kinds
}

/// The Plugin spec used for each kind (`None`: the test has no case for it).
fn plugin_spec(kind: &str, auth_port: u16) -> Option<String> {
    Some(match kind {
        "rateLimit" => "rateLimit: {limit: 1, window: 1m}".to_owned(),
        "jwt" => "jwt: {algorithms: [HS256]}".to_owned(),
        "keyAuth" => "keyAuth: {}".to_owned(),
        "extAuth" => format!(
            "extAuth: {{url: \"http://127.0.0.1:{auth_port}/check\", upstreamHeaders: [x-user-id], timeout: 2s}}"
        ),
        "cors" => "cors: {allowOrigins: [\"https://app.test\"]}".to_owned(),
        "requestHeaders" => {
            "requestHeaders: {set: [{name: X-Added, value: \"${route}\"}]}".to_owned()
        }
        "responseHeaders" => "responseHeaders: {set: [{name: X-Resp, value: weir}]}".to_owned(),
        "correlationId" => "correlationId: {header: X-Corr}".to_owned(),
        "cache" => "cache: {ttl: 1m}".to_owned(),
        "ipRestriction" => "ipRestriction: {deny: [127.0.0.0/8, \"::1\"]}".to_owned(),
        "requestSize" => "requestSize: {maxBody: 16}".to_owned(),
        "redirect" => "redirect: {scheme: https, host: moved.test}".to_owned(),
        "directResponse" => "directResponse: {status: 418, body: teapot}".to_owned(),
        "compression" => "compression: {minLength: 1}".to_owned(),
        _ => return None,
    })
}

fn config(kinds: &[String], auth_port: u16) -> String {
    let mut out = String::new();
    let mut rules = String::from(
        "    - matches: [{path: {value: /base}}]\n      backends: [{service: echo, port: 80}]\n",
    );
    for kind in kinds {
        let spec = plugin_spec(kind, auth_port).unwrap_or_else(|| {
            panic!("Plugin kind {kind:?} is in the CRD schema but has no case in this test")
        });
        let name = kind.to_ascii_lowercase();
        out.push_str(&format!(
            "---\napiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  {spec}\n"
        ));
        rules.push_str(&format!(
            "    - matches: [{{path: {{value: /k/{kind}}}}}]\n      plugins: [{name}]\n      backends: [{{service: echo, port: 80}}]\n"
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: kinds}}\nspec:\n  rules:\n{rules}"
    ));
    out
}

/// An auth service: 200 with `x-user-id` for `authorization: Bearer ok`, else 401.
async fn auth_service() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let ok = request
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == "Bearer ok");
                        let response = if ok {
                            http::Response::builder().status(200).header("x-user-id", "u-1")
                        } else {
                            http::Response::builder()
                                .status(401)
                                .header("www-authenticate", "Bearer")
                        };
                        Ok::<_, Infallible>(
                            response.body(Full::new(Bytes::from_static(b"auth says no"))).unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

async fn post(addr: SocketAddr, path: &str, body: &'static [u8]) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

/// Sends the kind's probe to `/base` and to `/k/<kind>` and asserts the difference.
async fn prove(weir: &WeirProcess, status: &Value, kind: &str) {
    let addr = weir.http_addr;
    let req = |path: String, method: &'static str, headers: Vec<(&'static str, &'static str)>| async move {
        http_request(addr, method, "localhost", &path, &headers).await.unwrap()
    };
    let both = |method: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let k = format!("/k/{kind}/x");
        async move {
            let base = req("/base/x".to_owned(), method, headers.clone()).await;
            let with = req(k, method, headers).await;
            (base, with)
        }
    };
    let conditions = conditions_of(status, "Plugin", &kind.to_ascii_lowercase()).unwrap();
    let accepted = condition(&conditions, "Accepted").unwrap();
    if accepted.status == "False" {
        // Not executable: never accepted, and its rule fails closed.
        assert_eq!(accepted.reason, "Unsupported", "{kind}: {accepted:?}");
        let (base, with) = both("GET", vec![]).await;
        assert_eq!((base.status, with.status), (200, 503), "{kind}");
        return;
    }
    assert_eq!(accepted.status, "True", "{kind}: {accepted:?}");
    match kind {
        "rateLimit" => {
            let _ = req(format!("/k/{kind}/x"), "GET", vec![]).await;
            let (base, with) = both("GET", vec![]).await;
            assert_eq!((base.status, with.status), (200, 429), "{kind}");
        }
        "jwt" | "keyAuth" => {
            let (base, with) = both("GET", vec![]).await;
            assert_eq!((base.status, with.status), (200, 401), "{kind}");
        }
        "extAuth" => {
            let (base, with) = both("GET", vec![]).await;
            assert_eq!(
                (base.status, with.status, with.text().as_str()),
                (200, 401, "auth says no"),
                "{kind}"
            );
            let (_, with) =
                both("GET", vec![("authorization", "Bearer ok"), ("x-user-id", "forged")]).await;
            assert_eq!(with.status, 200, "{kind}");
            assert_eq!(with.json().unwrap()["headers"]["x-user-id"], "u-1", "{kind}");
        }
        "cors" => {
            let preflight =
                vec![("origin", "https://app.test"), ("access-control-request-method", "GET")];
            let (base, with) = both("OPTIONS", preflight).await;
            assert_eq!(
                (base.status, with.status),
                (200, 204),
                "{kind}: the base preflight goes to the origin"
            );
            assert_eq!(with.headers["access-control-allow-origin"], "https://app.test");
            assert!(!base.headers.contains_key("access-control-allow-origin"));
        }
        "requestHeaders" => {
            let (base, with) = both("GET", vec![]).await;
            assert!(base.json().unwrap()["headers"].get("x-added").is_none());
            assert_eq!(with.json().unwrap()["headers"]["x-added"], "default/kinds", "{kind}");
        }
        "responseHeaders" => {
            let (base, with) = both("GET", vec![]).await;
            assert!(!base.headers.contains_key("x-resp"));
            assert_eq!(with.headers["x-resp"], "weir", "{kind}");
        }
        "correlationId" => {
            let (base, with) = both("GET", vec![("x-corr", "c-1")]).await;
            assert!(!base.headers.contains_key("x-corr"));
            assert_eq!(with.headers["x-corr"], "c-1", "{kind}");
        }
        "ipRestriction" => {
            let (base, with) = both("GET", vec![]).await;
            assert_eq!((base.status, with.status), (200, 403), "{kind}");
        }
        "requestSize" => {
            let base = post(addr, "/base/x", b"a body of more than sixteen bytes").await;
            let with =
                post(addr, &format!("/k/{kind}/x"), b"a body of more than sixteen bytes").await;
            assert_eq!((base.status, with.status), (200, 413), "{kind}");
            assert_eq!(post(addr, &format!("/k/{kind}/x"), b"small").await.status, 200);
        }
        "redirect" => {
            let (base, with) = both("GET", vec![]).await;
            assert_eq!((base.status, with.status), (200, 302), "{kind}");
            assert_eq!(with.headers["location"], format!("https://moved.test/k/{kind}/x").as_str());
        }
        "directResponse" => {
            let (base, with) = both("GET", vec![]).await;
            assert_eq!(
                (base.status, with.status, with.text().as_str()),
                (200, 418, "teapot"),
                "{kind}"
            );
        }
        "compression" => {
            let (base, with) = both("GET", vec![("accept-encoding", "gzip")]).await;
            assert!(!base.headers.contains_key("content-encoding"));
            assert_eq!(
                with.headers.get("content-encoding").map(|v| v.to_str().unwrap()),
                Some("gzip"),
                "{kind}"
            );
        }
        "cache" => {
            // The echo origin's body holds the request id: a hit repeats the first answer.
            let (_, first) = both("GET", vec![]).await;
            let (base, second) = both("GET", vec![]).await;
            assert!(!base.headers.contains_key("x-cache-status"), "{kind}");
            let status = |r: &Reply| r.headers["x-cache-status"].to_str().unwrap().to_owned();
            assert_eq!((status(&first), status(&second)), ("Miss".into(), "Hit".into()));
            assert_eq!(first.body, second.body, "{kind}");
        }
        other => panic!(
            "Plugin kind {other:?} is accepted but this test cannot prove it changes traffic"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_kind_changes_traffic_or_is_not_accepted() {
    let kinds = schema_kinds();
    assert!(kinds.len() >= 14, "{kinds:?}");
    let echo = EchoOrigin::start("echo").await.unwrap();
    let (auth_addr, auth_task) = auth_service().await;
    let dir = ConfigDir::new("kinds").unwrap();
    dir.write("services.yaml", &service_yaml("echo", echo.addr.port())).unwrap();
    dir.write("kinds.yaml", &config(&kinds, auth_addr.port())).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    let status = weir.status().await.unwrap();
    let conditions = conditions_of(&status, "Route", "kinds").unwrap();
    let route = condition(&conditions, "Accepted").unwrap();
    assert_eq!(route.status, "True", "{route:?}");
    for kind in &kinds {
        prove(&weir, &status, kind).await;
    }
    auth_task.abort();
}
