//! e2e: Gateway API objects served by the real `weir` binary in standalone mode
//! (`--config-dir`), in front of real echo origins on loopback: the GATEWAY-HTTP Core
//! conformance scenarios (hostname intersection, matching precedence, weights,
//! cross-namespace references with and without ReferenceGrant, listener allowedRoutes,
//! invalid backend refs, redirects, rewrites, header modifiers, an HTTPS listener's
//! certificate) and the status reasons `/debug/status` reports. One weir process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/origins.rs"]
#[allow(dead_code)]
mod origins;

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, curl_https, http_request, poll_until};

const LIMIT: Duration = Duration::from_secs(10);

/// A Service `name` in `ns` (port 80) with one ready loopback endpoint on `port`.
fn service(ns: &str, name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"#
    )
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A CA and a certificate for `*.secure.test` it signs: (CA PEM, Secret YAML).
fn pki() -> (String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "gateway-api test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["*.secure.test".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "secure.test");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secure-cert, namespace: infra}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.pem()),
        indent(&key.serialize_pem())
    );
    (ca.pem(), secret)
}

const GATEWAY: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: shop
    port: 8080
    protocol: HTTP
    hostname: "*.shop.test"
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: shop}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.secure.test"
    tls: {certificateRefs: [{name: secure-cert}]}
    allowedRoutes: {namespaces: {from: All}}
"#;

const ROUTES: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: across-a, namespace: infra, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [across.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: across-b, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [across.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: v2, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [match.test]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix/longer}}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /hdr}, headers: [{name: x-version, value: two}]}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{name: v, value: "2"}]}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /q}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /m}, method: POST}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /m}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.test, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /rw}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /backend}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: set}], add: [{name: x-added, value: added}], remove: [x-remove]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-response, value: from-gateway}]}
    backendRefs: [{name: v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: weights, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [weights.test]
  rules:
  - backendRefs: [{name: v1, port: 80, weight: 3}, {name: v2, port: 80, weight: 1}, {name: v3, port: 80, weight: 0}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [invalid.test]
  rules:
  - backendRefs: [{name: v1, port: 80}, {name: does-not-exist, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  hostnames: [a.shop.test, elsewhere.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: guarded, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  hostnames: [guarded.shop.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    filters: [{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: web, port: 80}}}]
    backendRefs: [{name: web, port: 80}]
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /wild}}]
    backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: granted, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  hostnames: [granted.shop.test]
  rules:
  - backendRefs: [{name: v1, namespace: infra, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-granted, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  hostnames: [notgranted.shop.test]
  rules:
  - backendRefs: [{name: web, namespace: other, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps-to-v1, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: v1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: denied, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: shop}]
  hostnames: [denied.shop.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: https}]
  hostnames: [a.secure.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
"#;

async fn backend(
    weir: &WeirProcess,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = http_request(weir.http_addr, method, host, path, headers).await.unwrap();
    assert_eq!(reply.status, 200, "{method} {host}{path}: {}", reply.text());
    reply.json().unwrap()["backend"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_http_core_scenarios() {
    let v1 = EchoOrigin::start("v1").await.unwrap();
    let v2 = EchoOrigin::start("v2").await.unwrap();
    let v3 = EchoOrigin::start("v3").await.unwrap();
    let apps_web = EchoOrigin::start("apps-web").await.unwrap();
    let other_web = EchoOrigin::start("other-web").await.unwrap();
    let dir = ConfigDir::new("gateway-api").unwrap();
    let (ca, secret) = pki();
    let ca_path = dir.path().join("ca.pem.txt");
    std::fs::write(&ca_path, ca).unwrap();
    let services = [
        service("infra", "v1", v1.addr.port()),
        service("infra", "v2", v2.addr.port()),
        service("infra", "v3", v3.addr.port()),
        service("apps", "web", apps_web.addr.port()),
        service("other", "web", other_web.addr.port()),
    ]
    .concat();
    dir.write("services.yaml", &services).unwrap();
    dir.write("gateway.yaml", &(GATEWAY.to_owned() + &secret)).unwrap();
    dir.write("routes.yaml", ROUTES).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    poll_until(LIMIT, "match.test served", || async {
        Ok((weir.get("match.test", "/exact").await?.status == 200).then_some(()))
    })
    .await
    .unwrap();

    // HTTPRouteMatching / HTTPRouteExactPathMatching / HTTPRouteHeaderMatching /
    // HTTPRouteQueryParamMatching / HTTPRouteMethodMatching: precedence.
    assert_eq!(backend(&weir, "GET", "match.test", "/exact", &[]).await, "v1");
    assert_eq!(weir.get("match.test", "/exact/more").await.unwrap().status, 404);
    assert_eq!(backend(&weir, "GET", "match.test", "/prefix/x", &[]).await, "v1");
    assert_eq!(backend(&weir, "GET", "match.test", "/prefix/longer/x", &[]).await, "v2");
    assert_eq!(
        weir.get("match.test", "/prefixes").await.unwrap().status,
        404,
        "prefixes match on segments"
    );
    assert_eq!(backend(&weir, "GET", "match.test", "/hdr", &[("x-version", "two")]).await, "v2");
    assert_eq!(backend(&weir, "GET", "match.test", "/hdr", &[("x-version", "one")]).await, "v1");
    assert_eq!(backend(&weir, "GET", "match.test", "/q?v=2", &[]).await, "v2");
    assert_eq!(backend(&weir, "GET", "match.test", "/q?v=3", &[]).await, "v1");
    assert_eq!(backend(&weir, "POST", "match.test", "/m", &[]).await, "v2");
    assert_eq!(backend(&weir, "GET", "match.test", "/m", &[]).await, "v1");

    // HTTPRouteMatchingAcrossRoutes: the most specific match across HTTPRoutes; an exact
    // tie goes to the older HTTPRoute (across-b, though its name sorts later).
    assert_eq!(backend(&weir, "GET", "across.test", "/x", &[]).await, "v1");
    assert_eq!(backend(&weir, "GET", "across.test", "/b/x", &[]).await, "v2");
    assert_eq!(backend(&weir, "GET", "across.test", "/tie", &[]).await, "v2");

    // HTTPRouteRedirectHostAndStatus / HTTPRouteRedirectPath.
    let reply = weir.get("match.test", "/old/x?k=v").await.unwrap();
    assert_eq!(reply.status, 301, "{}", reply.text());
    assert_eq!(reply.headers["location"], "http://new.test/new/x?k=v");

    // HTTPRouteRewriteHost / HTTPRouteRewritePath / HTTPRouteRequestHeaderModifier /
    // HTTPRouteResponseHeaderModifier.
    let reply = http_request(
        weir.http_addr,
        "GET",
        "match.test",
        "/rw/x",
        &[("x-remove", "1"), ("x-added", "first")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["x-response"], "from-gateway");
    let body = reply.json().unwrap();
    assert_eq!(body["path"], "/backend/x");
    assert_eq!(body["host"], "rewritten.test");
    assert_eq!(body["headers"]["x-set"], "set");
    assert!(body["headers"]["x-remove"].is_null(), "{body}");
    assert!(body["headers"]["x-added"].to_string().contains("added"), "{body}");

    // HTTPRouteWeight: 3:1:0 over 200 requests (expected 150 / 50 / 0).
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        *counts.entry(backend(&weir, "GET", "weights.test", "/", &[]).await).or_default() += 1;
    }
    let (c1, c2) = (counts.get("v1").copied().unwrap_or(0), counts.get("v2").copied().unwrap_or(0));
    assert!((120..=180).contains(&c1) && (20..=80).contains(&c2), "{counts:?}");
    assert!(!counts.contains_key("v3"), "weight 0 got traffic: {counts:?}");

    // HTTPRouteInvalidBackendRefUnknownKind-like: a missing Service's share answers 500,
    // the valid backend's share is served.
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..40 {
        let reply = weir.get("invalid.test", "/").await.unwrap();
        match reply.status {
            200 => {
                assert_eq!(reply.json().unwrap()["backend"], "v1");
                ok += 1;
            }
            500 => {
                assert_eq!(reply.json().unwrap()["status"], 500);
                errors += 1;
            }
            s => panic!("unexpected {s}: {}", reply.text()),
        }
    }
    assert!(ok > 0 && errors > 0, "ok {ok}, 500s {errors}");

    // HTTPRouteHostnameIntersection + HTTPRouteListenerHostnameMatching: the shop
    // listener (*.shop.test) serves a.shop.test, not elsewhere.test.
    assert_eq!(backend(&weir, "GET", "a.shop.test", "/", &[]).await, "apps-web");
    assert_eq!(weir.get("elsewhere.test", "/").await.unwrap().status, 404);
    // No hostnames: the listener's `*.shop.test`, which matches one or more labels, never
    // `shop.test` itself.
    assert_eq!(backend(&weir, "GET", "x.y.shop.test", "/wild", &[]).await, "apps-web");
    assert_eq!(backend(&weir, "GET", "x.shop.test", "/wild", &[]).await, "apps-web");
    assert_eq!(weir.get("shop.test", "/wild").await.unwrap().status, 404);
    // A rule with a filter weir cannot run (ExternalAuth) answers 500: its requests never
    // fall through to the catch-all rule, which lacks the filter; the other rule is served.
    assert_eq!(weir.get("guarded.shop.test", "/admin/users").await.unwrap().status, 500);
    assert_eq!(backend(&weir, "GET", "guarded.shop.test", "/", &[]).await, "apps-web");

    // HTTPRouteCrossNamespace / HTTPRouteReferenceGrant / HTTPRoutePartiallyInvalidViaInvalidReferenceGrant.
    assert_eq!(backend(&weir, "GET", "granted.shop.test", "/", &[]).await, "v1");
    assert_eq!(weir.get("notgranted.shop.test", "/").await.unwrap().status, 500);

    // GatewayWithAttachedRoutes / allowedRoutes: namespace `other` has no team label.
    assert_eq!(weir.get("denied.shop.test", "/").await.unwrap().status, 404);

    // HTTPS listener: the certificate from certificateRefs (Gateway's namespace) serves
    // a.secure.test; plain HTTP for a Route attached only to HTTPS is redirected.
    let (code, body) = curl_https(weir.https_addr, "a.secure.test", "/", &ca_path, &[]);
    assert!(code.starts_with("200 "), "{code}: {body}\n{}", weir.log());
    assert!(body.contains("apps-web"), "{body}");
    let plain = weir.get("a.secure.test", "/").await.unwrap();
    assert_eq!(plain.status, 301, "{}", plain.text());

    // Status reasons in /debug/status.
    let status = weir.status().await.unwrap();
    let reason = |kind: &str, key: &str, type_: &str| {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let object = status["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["namespace"] == ns && o["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {key} in {status}"));
        let c = object["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("{type_} of {key}: {object}"));
        assert_eq!(c["observedGeneration"], 1, "{c}");
        (c["status"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned())
    };
    let pair = |s: &str, r: &str| (s.to_owned(), r.to_owned());
    assert_eq!(
        reason("HTTPRoute", "other/denied", "Accepted"),
        pair("False", "NotAllowedByListeners")
    );
    assert_eq!(
        reason("HTTPRoute", "apps/not-granted", "ResolvedRefs"),
        pair("False", "RefNotPermitted")
    );
    assert_eq!(reason("HTTPRoute", "apps/granted", "ResolvedRefs"), pair("True", "ResolvedRefs"));
    assert_eq!(
        reason("HTTPRoute", "infra/invalid", "ResolvedRefs"),
        pair("False", "BackendNotFound")
    );
    assert_eq!(reason("HTTPRoute", "infra/matching", "Accepted"), pair("True", "Accepted"));
    assert_eq!(reason("Gateway", "infra/gw", "Programmed"), pair("True", "Programmed"));
    assert_eq!(reason("GatewayClass", "weir", "Accepted"), pair("True", "Accepted"));
}

/// One gRPC call (a 6-byte message) over HTTP/2 prior knowledge to `addr`: the response
/// head, body and trailers.
async fn grpc_call(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> (http::Response<()>, bytes::Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let frame = bytes::Bytes::from_static(&[0, 0, 0, 0, 1, 0x2a]);
    let request = http::Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(frame))
        .unwrap();
    let response =
        tokio::time::timeout(LIMIT, sender.send_request(request)).await.unwrap().unwrap();
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(LIMIT, body.collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned();
    (http::Response::from_parts(parts, ()), collected.to_bytes(), trailers)
}

/// GRPCRoute: a method match to an h2c Service (`appProtocol: kubernetes.io/h2c`), a
/// request header added on the way, and the gateway's own gRPC answer for another method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_to_an_h2c_backend() {
    let (grpc_addr, _grpc) = origins::grpc_origin().await;
    let dir = ConfigDir::new("gateway-api-grpc").unwrap();
    let port = grpc_addr.port();
    let yaml = format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: weir}}
spec: {{controllerName: weir.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: weir
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: orders, namespace: infra}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: {port}, appProtocol: kubernetes.io/h2c}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: orders-local
  namespace: infra
  labels: {{kubernetes.io/service-name: orders}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: orders, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.test]
  rules:
  - matches: [{{method: {{service: shop.Orders, method: Get}}}}]
    backendRefs: [{{name: orders, port: 50051}}]
"#
    );
    dir.write("grpc.yaml", &yaml).unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();
    let (response, body, trailers) = poll_until(LIMIT, "gRPC call served", || async {
        let (response, body, trailers) =
            grpc_call(weir.http_addr, "grpc.test", "/shop.Orders/Get").await;
        Ok(trailers.is_some().then_some((response, body, trailers)))
    })
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&body[..], &[0, 0, 0, 0, 1, 0x2a], "the origin echoes the message");
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-origin"], "h2c", "spoken to over h2c");

    // Another method of the service is not matched (Exact method match): weir's own gRPC
    // answer, grpc-status 5 (NOT_FOUND).
    let (response, _, _) = grpc_call(weir.http_addr, "grpc.test", "/shop.Orders/Delete").await;
    assert_eq!(response.headers()["grpc-status"], "5");

    let status = weir.status().await.unwrap();
    let route = status["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "GRPCRoute" && o["name"] == "orders")
        .unwrap_or_else(|| panic!("GRPCRoute in {status}"));
    assert!(
        route["conditions"].as_array().unwrap().iter().all(|c| c["status"] == "True"),
        "{route}"
    );
}
