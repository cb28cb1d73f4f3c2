//! e2e: HTTPS through the real `weir` binary in standalone mode, with certificates made by
//! the `openssl` CLI and real clients (`openssl s_client`, `curl`): SNI picks the certificate
//! of two hosts and a wildcard, unknown SNI gets the default certificate, a rotated Secret
//! serves new handshakes, an invalid Secret keeps the last good certificate, TLS 1.1 is
//! refused, ALPN negotiates h2, plain HTTP is redirected, and mTLS verifies the client
//! certificate and forwards its subject.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, curl_https, poll_until, service_yaml};

const LIMIT: Duration = Duration::from_secs(10);

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.crt`/`ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A leaf `<file>.crt`/`<file>.key` for `dns` names, signed by the CA `ca`, with subject
/// `/CN=<cn>/O=<org>`; `client` makes a client-auth certificate.
fn make_leaf(dir: &Path, ca: &str, file: &str, cn: &str, org: &str, dns: &[&str], client: bool) {
    let ext = if client {
        "extendedKeyUsage=clientAuth".to_owned()
    } else {
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        format!("subjectAltName={}\nextendedKeyUsage=serverAuth", sans.join(","))
    };
    std::fs::write(dir.join(format!("{file}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{file}.key"),
            "-out",
            &format!("{file}.csr"),
            "-subj",
            &format!("/CN={cn}/O={org}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{file}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{file}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{file}.ext"),
        ],
    );
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

fn indented(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().lines().map(|l| format!("    {l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret named `name` holding `<file>.crt`/`<file>.key`.
fn tls_secret(dir: &Path, name: &str, file: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indented(&dir.join(format!("{file}.crt"))),
        indented(&dir.join(format!("{file}.key"))),
    )
}

/// A Secret with `ca.crt` from `<file>.crt`.
fn ca_secret(dir: &Path, name: &str, file: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  ca.crt: |\n{}",
        indented(&dir.join(format!("{file}.crt"))),
    )
}

/// A Route `name` for `hosts` with `tls` (inline YAML) sending `/` to `service`.
fn tls_route(name: &str, hosts: &[&str], tls: &str, service: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata:\n  name: {name}\nspec:\n  hosts: [{}]\n  tls: {tls}\n  rules:\n    - backends:\n        - {{service: {service}, port: 80}}\n",
        hosts.join(", ")
    )
}

/// The certificate subject presented for `sni` (`None` when the handshake fails), by
/// `openssl s_client`, plus its whole output.
fn presented_subject(
    https: std::net::SocketAddr,
    sni: Option<&str>,
    extra: &[&str],
) -> (Option<String>, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &https.to_string(), "-brief"]);
    match sni {
        Some(s) => cmd.args(["-servername", s]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // -brief prints e.g. "Peer certificate: CN = a.test, O = v1".
    let subject =
        text.lines().find_map(|l| l.strip_prefix("Peer certificate: ")).map(|s| s.replace(' ', ""));
    (subject, text)
}

async fn start(dir: &ConfigDir, extra: &[&str]) -> (WeirProcess, std::net::SocketAddr) {
    let mut args: Vec<OsString> = vec!["--config-dir".into(), dir.path().as_os_str().to_owned()];
    args.extend(extra.iter().map(OsString::from));
    let weir = WeirProcess::start_with(&args).await.unwrap();
    let https = weir.https_addr;
    (weir, https)
}

async fn wait_subject(
    weir: &WeirProcess,
    https: std::net::SocketAddr,
    sni: Option<&str>,
    want: &str,
) {
    let want = want.to_owned();
    poll_until(LIMIT, &format!("{sni:?} presents {want}"), || {
        let want = want.clone();
        async move {
            let (subject, _) = presented_subject(https, sni, &[]);
            Ok((subject.as_deref() == Some(want.as_str())).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e}; last: {:?}; weir's log:\n{}", presented_subject(https, sni, &[]), weir.log())
    });
}

/// The Route's condition of `type_` in `/debug/status`: (status, reason, message).
async fn condition(
    weir: &WeirProcess,
    route: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let status = weir.status().await.ok()?;
    let object = status["objects"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Route" && o["name"] == route)?;
    let c = object["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str().unwrap_or("").to_owned(),
    ))
}

fn pki() -> (ConfigDir, PathBuf) {
    let pki = ConfigDir::new("tls-pki").unwrap();
    let d = pki.path();
    make_ca(d, "ca");
    make_leaf(d, "ca", "a", "a.test", "v1", &["a.test"], false);
    make_leaf(d, "ca", "a2", "a.test", "v2", &["a.test"], false);
    make_leaf(d, "ca", "b", "b.test", "v1", &["b.test"], false);
    make_leaf(d, "ca", "w", "w.test", "wild", &["*.w.test"], false);
    make_leaf(d, "ca", "default", "default.test", "dflt", &["default.test"], false);
    let ca = d.join("ca.crt");
    (pki, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_default_rotation_last_good_versions_and_alpn() {
    let (pki, ca) = pki();
    let p = pki.path();
    let origin = EchoOrigin::start("app").await.unwrap();
    let dir = ConfigDir::new("tls").unwrap();
    dir.write("svc.yaml", &service_yaml("app", origin.addr.port())).unwrap();
    dir.write(
        "secrets.yaml",
        &(tls_secret(p, "a-tls", "a")
            + &tls_secret(p, "b-tls", "b")
            + &tls_secret(p, "w-tls", "w")
            + &tls_secret(p, "default-tls", "default")),
    )
    .unwrap();
    dir.write(
        "routes.yaml",
        &(tls_route("a", &["a.test"], "{secretRef: {name: a-tls}}", "app")
            + &tls_route("b", &["b.test"], "{secretRef: {name: b-tls}}", "app")
            + &tls_route("w", &["*.w.test"], "{secretRef: {name: w-tls}}", "app")),
    )
    .unwrap();
    let (weir, https) = start(&dir, &["--default-certificate", "default/default-tls"]).await;

    // SNI: two hosts, a wildcard, and the default for unknown or absent SNI.
    wait_subject(&weir, https, Some("a.test"), "CN=a.test,O=v1").await;
    assert_eq!(presented_subject(https, Some("b.test"), &[]).0.as_deref(), Some("CN=b.test,O=v1"));
    assert_eq!(
        presented_subject(https, Some("x.w.test"), &[]).0.as_deref(),
        Some("CN=w.test,O=wild")
    );
    assert_eq!(
        presented_subject(https, Some("unknown.test"), &[]).0.as_deref(),
        Some("CN=default.test,O=dflt")
    );
    assert_eq!(presented_subject(https, None, &[]).0.as_deref(), Some("CN=default.test,O=dflt"));

    // A real request over TLS: ALPN h2 with curl --http2, X-Forwarded-Proto https upstream.
    let (status, body) = curl_https(https, "a.test", "/hello", &ca, &["--http2"]);
    assert_eq!(status, "200 2", "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https", "{body}");
    let (status, body) = curl_https(https, "b.test", "/", &ca, &["--http1.1"]);
    assert_eq!(status, "200 1.1", "{body}");

    // TLS 1.1 is refused by the server (the client is allowed to offer it).
    let (subject, text) =
        presented_subject(https, Some("a.test"), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert_eq!(subject, None, "TLS 1.1 handshake succeeded:\n{text}");
    assert!(text.contains("protocol version") || text.contains("alert"), "{text}");
    let (subject, text) = presented_subject(https, Some("a.test"), &["-tls1_2"]);
    assert_eq!(subject.as_deref(), Some("CN=a.test,O=v1"), "TLS 1.2 refused:\n{text}");

    // Rotation: the Secret changes, new handshakes get the new certificate.
    dir.write(
        "secrets.yaml",
        &(tls_secret(p, "a-tls", "a2")
            + &tls_secret(p, "b-tls", "b")
            + &tls_secret(p, "w-tls", "w")
            + &tls_secret(p, "default-tls", "default")),
    )
    .unwrap();
    wait_subject(&weir, https, Some("a.test"), "CN=a.test,O=v2").await;

    // An invalid Secret: InvalidCertificate, and the last good certificate keeps serving.
    let broken = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: a-tls\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: not a certificate\n  tls.key: nor a key\n";
    dir.write(
        "secrets.yaml",
        &(broken.to_owned()
            + &tls_secret(p, "b-tls", "b")
            + &tls_secret(p, "w-tls", "w")
            + &tls_secret(p, "default-tls", "default")),
    )
    .unwrap();
    poll_until(LIMIT, "a InvalidCertificate", || async {
        Ok(condition(&weir, "a", "ResolvedRefs").await.filter(|c| c.1 == "InvalidCertificate"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
    assert_eq!(presented_subject(https, Some("a.test"), &[]).0.as_deref(), Some("CN=a.test,O=v2"));

    // A missing Secret: SecretNotFound, the last good certificate still serves.
    dir.write(
        "secrets.yaml",
        &(tls_secret(p, "b-tls", "b")
            + &tls_secret(p, "w-tls", "w")
            + &tls_secret(p, "default-tls", "default")),
    )
    .unwrap();
    poll_until(LIMIT, "a SecretNotFound", || async {
        Ok(condition(&weir, "a", "ResolvedRefs").await.filter(|c| c.1 == "SecretNotFound"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; weir's log:\n{}", weir.log()));
    assert_eq!(presented_subject(https, Some("a.test"), &[]).0.as_deref(), Some("CN=a.test,O=v2"));
    drop(pki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_redirect_and_mutual_tls() {
    let (pki, ca) = pki();
    let p = pki.path();
    make_ca(p, "partners");
    make_leaf(p, "partners", "client", "client-1", "Partners", &[], true);
    make_leaf(p, "ca", "a-other", "a.test", "other", &["a.test"], false);
    make_ca(p, "strangers");
    make_leaf(p, "strangers", "stranger", "stranger", "Nobody", &[], true);
    let origin = EchoOrigin::start("app").await.unwrap();
    let dir = ConfigDir::new("tls-mtls").unwrap();
    dir.write("svc.yaml", &service_yaml("app", origin.addr.port())).unwrap();
    dir.write(
        "secrets.yaml",
        &(tls_secret(p, "a-tls", "a")
            + &tls_secret(p, "b-tls", "b")
            + &tls_secret(p, "a-other-tls", "a-other")
            + &ca_secret(p, "partners-ca", "partners")),
    )
    .unwrap();
    // `a` is older than `z-conflict` (same creation time in standalone mode, so the name
    // decides), which claims the same host with another Secret.
    dir.write(
        "routes.yaml",
        &(tls_route("a", &["a.test"], "{secretRef: {name: a-tls}, httpRedirect: true}", "app")
            + &tls_route(
                "b",
                &["b.test"],
                "{secretRef: {name: b-tls}, clientCA: {secretRef: {name: partners-ca}}}",
                "app",
            )
            + &tls_route("z-conflict", &["a.test"], "{secretRef: {name: a-other-tls}}", "app")),
    )
    .unwrap();
    let (weir, https) = start(&dir, &[]).await;
    wait_subject(&weir, https, Some("a.test"), "CN=a.test,O=v1").await;
    let conflict = condition(&weir, "z-conflict", "ResolvedRefs").await.unwrap();
    assert_eq!(
        (conflict.0.as_str(), conflict.1.as_str()),
        ("False", "CertificateConflict"),
        "{conflict:?}"
    );

    // No default certificate: unknown SNI fails the handshake.
    let (subject, text) = presented_subject(https, Some("unknown.test"), &[]);
    assert_eq!(subject, None, "{text}");

    // httpRedirect: plain HTTP for a.test is redirected to https: to 443 when the client
    // named no port (a Service maps 80/443 in front of weir), else to the HTTPS listener's.
    let reply = weir.get("a.test", "/x?y=1").await.unwrap();
    assert_eq!(reply.status, 301, "{}", reply.text());
    let location = reply.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, "https://a.test/x?y=1");
    let with_port = format!("a.test:{}", weir.http_addr.port());
    let reply = weir.get(&with_port, "/x").await.unwrap();
    assert_eq!(reply.status, 301, "{}", reply.text());
    let location = reply.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, format!("https://a.test:{}/x", https.port()));
    // b.test requires client certificates: never served over plain HTTP, even without
    // httpRedirect.
    assert_eq!(weir.get("b.test", "/").await.unwrap().status, 301);

    // mTLS: without a client certificate the handshake (or the request) fails; a stranger's
    // certificate is refused; a partner's is verified and its subject forwarded.
    let (status, _) = curl_https(https, "b.test", "/", &ca, &[]);
    assert!(status.starts_with("error") || status.starts_with("4"), "no client cert: {status}");
    let stranger = ["--cert", &path(p, "stranger.crt"), "--key", &path(p, "stranger.key")];
    let (status, _) = curl_https(https, "b.test", "/", &ca, &stranger);
    assert!(status.starts_with("error"), "stranger's cert accepted: {status}");
    let client = [
        "--cert",
        &path(p, "client.crt"),
        "--key",
        &path(p, "client.key"),
        "-H",
        "X-Client-Cert-Subject: CN=forged",
    ];
    let (status, body) = curl_https(https, "b.test", "/", &ca, &client);
    assert!(status.starts_with("200"), "{status} {body}; log:\n{}", weir.log());
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let subject = echoed["headers"]["x-client-cert-subject"].as_str().unwrap_or_default();
    assert!(subject.contains("CN=client-1") && subject.contains("O=Partners"), "{subject}");
    assert!(!subject.contains("forged"), "{subject}");

    // A forged subject on a connection without a verified certificate never reaches upstream.
    let (status, body) =
        curl_https(https, "a.test", "/", &ca, &["-H", "X-Client-Cert-Subject: CN=forged"]);
    assert!(status.starts_with("200"), "{status} {body}");
    assert!(!body.contains("forged"), "{body}");

    // Misdirected: a handshake for a.test cannot be used to reach the mTLS host b.test.
    let (status, _) = curl_https(https, "a.test", "/", &ca, &["-H", "Host: b.test"]);
    assert!(status.starts_with("421"), "{status}");
    drop(pki);
}
