//! e2e: Ingress (`networking.k8s.io/v1`) served by the real `weir` binary in standalone
//! mode in front of real echo origins on loopback: the same app through an Ingress and a
//! Route, TLS from an Ingress (rustls client, generated CA, SNI), the default backend,
//! `weir.dev/plugins` and `weir.dev/rewrite-target`, an Ingress of another class not served,
//! and the example in `deploy/examples/ingress/` accepted by `weir validate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use weir_e2e::{
    ConfigDir, EchoOrigin, Reply, WeirProcess, conditions_of, poll_until, run_weir, service_yaml,
    workspace_root,
};

const LIMIT: Duration = Duration::from_secs(10);

const CLASSES: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: weir
spec:
  controller: weir.dev/ingress-controller
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
spec:
  controller: k8s.io/ingress-nginx
"#;

/// A CA and a `kubernetes.io/tls` Secret for `host` signed by it.
fn pki(host: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "ingress test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: shop-tls\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.pem()),
        indent(&key.serialize_pem())
    );
    (ca, secret)
}

/// GET `https://<sni><path>` through weir's HTTPS port, trusting only `ca`.
async fn https_get(
    addr: SocketAddr,
    ca: &CertifiedIssuer<'static, KeyPair>,
    sni: &str,
    path: &str,
) -> anyhow::Result<Reply> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec()))?;
    let config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = connector.connect(ServerName::try_from(sni.to_owned())?, tcp).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(conn);
        let request = http::Request::get(path).header("host", sni).body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        driver.abort();
        anyhow::Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.context("HTTPS request timed out")?
}

/// Polls until `GET host path` answers `status` (and, for 200, comes from `backend`).
async fn wait_for(weir: &WeirProcess, host: &str, path: &str, status: u16, backend: &str) -> Reply {
    poll_until(LIMIT, &format!("{host}{path} → {status} {backend}"), || async {
        let reply = weir.get(host, path).await?;
        let ok = reply.status == status
            && (status != 200 || reply.json().is_ok_and(|b| b["backend"] == backend));
        Ok(ok.then_some(reply))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_route_serve_the_same_app_with_tls_default_backend_and_annotations() {
    let app = EchoOrigin::start("app").await.unwrap();
    let fallback = EchoOrigin::start("fallback").await.unwrap();
    let dir = ConfigDir::new("ingress").unwrap();
    let (ca, secret) = pki("shop.test");
    dir.write(
        "base.yaml",
        &format!(
            "{CLASSES}{}{}{secret}",
            service_yaml("app", app.addr.port()),
            service_yaml("fallback", fallback.addr.port())
        ),
    )
    .unwrap();
    // The same app through a weir Route (route.test) and an Ingress (shop.test).
    dir.write(
        "route.yaml",
        r#"apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: app
spec:
  hosts: [route.test]
  rules:
    - matches: [{path: {type: Prefix, value: /api}}]
      backends: [{service: app, port: 80}]
"#,
    )
    .unwrap();
    dir.write(
        "ingress.yaml",
        r#"---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata:
  name: stamp
spec:
  requestHeaders:
    set: [{name: x-via, value: weir-ingress}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations:
    weir.dev/plugins: stamp
spec:
  ingressClassName: weir
  defaultBackend:
    service: {name: fallback, port: {name: http}}
  tls:
    - hosts: [shop.test]
      secretName: shop-tls
  rules:
    - host: shop.test
      http:
        paths:
          - path: /api
            pathType: Prefix
            backend: {service: {name: app, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  annotations:
    weir.dev/rewrite-target: /v2
    weir.dev/ssl-redirect: "false"
spec:
  ingressClassName: weir
  rules:
    - host: rewrite.test
      http:
        paths:
          - path: /old
            pathType: Prefix
            backend: {service: {name: app, port: {name: http}}}
          - path: /bucket
            pathType: Prefix
            backend: {resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: theirs
spec:
  ingressClassName: nginx
  rules:
    - host: theirs.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {service: {name: app, port: {number: 80}}}
"#,
    )
    .unwrap();
    let weir = WeirProcess::start(dir.path()).await.unwrap();

    // The same app, through the Route and through the Ingress (over HTTPS, by SNI).
    let via_route = wait_for(&weir, "route.test", "/api/items?x=1", 200, "app").await;
    assert_eq!(via_route.json().unwrap()["path"], "/api/items?x=1");
    let via_ingress = poll_until(LIMIT, "HTTPS shop.test/api", || async {
        let r = https_get(weir.https_addr, &ca, "shop.test", "/api/items?x=1").await?;
        Ok((r.status == 200).then_some(r))
    })
    .await
    .unwrap();
    let body = via_ingress.json().unwrap();
    assert_eq!(
        (body["backend"].as_str(), body["path"].as_str()),
        (Some("app"), Some("/api/items?x=1"))
    );
    // weir.dev/plugins applied the Plugin to the Ingress's rule (not to the Route's).
    assert_eq!(body["headers"]["x-via"], "weir-ingress", "{body}");
    assert!(via_route.json().unwrap()["headers"].get("x-via").is_none());
    // The path is element-wise: /apix is not /api, so it goes to the default backend.
    let other = https_get(weir.https_addr, &ca, "shop.test", "/apix").await.unwrap();
    assert_eq!(other.json().unwrap()["backend"], "fallback");

    // TLS configured: plain HTTP to the Ingress's host is redirected (ssl-redirect default).
    let plain = weir.get("shop.test", "/api/items").await.unwrap();
    assert_eq!(plain.status, 301, "{}", plain.text());
    assert!(plain.headers["location"].to_str().unwrap().starts_with("https://shop.test"));

    // Default backend: any unmatched host and path; never in front of a more specific rule.
    let unmatched = wait_for(&weir, "unknown.test", "/anything", 200, "fallback").await;
    assert_eq!(unmatched.json().unwrap()["path"], "/anything");
    wait_for(&weir, "route.test", "/api", 200, "app").await;
    wait_for(&weir, "route.test", "/other", 200, "fallback").await;

    // weir.dev/rewrite-target replaces the matched prefix.
    let rewritten = wait_for(&weir, "rewrite.test", "/old/page?q=1", 200, "app").await;
    assert_eq!(rewritten.json().unwrap()["path"], "/v2/page?q=1");
    // A `resource` backend (not supported): that path answers 500 in weir's JSON error
    // shape, the other path of the same rule is served.
    let bucket = weir.get("rewrite.test", "/bucket/x").await.unwrap();
    assert_eq!(bucket.status, 500, "{}", bucket.text());
    assert_eq!(bucket.json().unwrap()["status"], 500);

    // Another class's Ingress is not served (its host falls through to the default
    // backend) and has no status.
    let theirs = wait_for(&weir, "theirs.test", "/", 200, "fallback").await;
    assert_eq!(theirs.json().unwrap()["backend"], "fallback");
    let status = weir.status().await.unwrap();
    assert!(conditions_of(&status, "Ingress", "theirs").is_none(), "{status}");
    let shop = conditions_of(&status, "Ingress", "shop").expect("status of Ingress shop");
    assert!(shop.iter().all(|c| c.status == "True"), "{shop:?}");

    // Removing the Ingress stops serving its host over HTTPS paths (falls to the default).
    dir.write("ingress.yaml", "").unwrap();
    wait_for(&weir, "rewrite.test", "/old/page", 404, "").await;
}

#[test]
fn the_ingress_example_validates() {
    let example = workspace_root().join("deploy/examples/ingress");
    let mut args = vec!["validate".to_owned()];
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            args.push("-f".to_owned());
            args.push(path.to_str().unwrap().to_owned());
        }
    }
    assert!(args.len() > 1, "no YAML in {}", example.display());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_weir(&args).unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Ingress"), "the Ingresses are listed: {text}");
}
