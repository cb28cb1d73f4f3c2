//! compile() for Route `tls`: Secrets to the TLS table (exact, wildcard, default), the
//! `SecretNotFound` / `InvalidCertificate` / `CertificateConflict` conditions, the conflict
//! tie-break, last good certificates across a bad update and a deleted Secret, rotation,
//! mTLS, `https_redirect`, and the incremental paths. Certificates are made by rcgen.

use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, date_time_ymd};
use weir_dataplane::ObjectKey;
use weir_dataplane::tls::HostTls;

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};
use crate::compile::update;

/// A self-signed certificate for `sans` with common name `cn`: (cert PEM, key PEM).
fn cert(cn: &str, sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn expired(sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2025, 1, 1);
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret as YAML (stringData).
fn tls_secret(name: &str, (crt, key): &(String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(crt),
        indent(key)
    )
}

fn ca_secret(name: &str, ca: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  ca.crt: |\n{}---\n",
        indent(ca)
    )
}

/// A Route with `hosts` and `tls` (a flow mapping), created at `created`.
fn route(name: &str, created: &str, hosts: &str, tls: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, generation: 1, \
         creationTimestamp: '{created}'}}\nspec:\n  hosts: {hosts}\n  tls: {tls}\n  rules:\n    \
         - backends: [{{service: web, port: 80}}]\n    - name: api\n      matches: [{{path: {{value: /api}}}}]\n      \
         backends: [{{service: web, port: 80}}]\n---\n"
    )
}

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n";

fn index(yaml: &str) -> Index {
    let mut index = load_str(yaml);
    index.now = Some(SystemTime::now());
    index
}

fn selected<'c>(c: &'c Compiled, sni: Option<&str>) -> Option<&'c Arc<HostTls>> {
    c.tls.select(sni)
}

fn selected_name(c: &Compiled, sni: Option<&str>) -> Option<String> {
    selected(c, sni).map(|t| t.name.to_string())
}

fn redirects(c: &Compiled, name: &str) -> Vec<bool> {
    let model = c.routes.route(&ObjectKey::new("default", name)).expect("route served");
    model.rules.iter().map(|r| r.action.https_redirect).collect()
}

#[test]
fn route_hosts_exact_and_wildcard_are_served_by_sni_and_a_more_exact_route_wins() {
    let shop = cert("shop", &["shop.example.com", "*.shop.example.com"]);
    let api = cert("api", &["api.shop.example.com"]);
    let yaml = format!(
        "{SERVICE}{}{}{}{}",
        tls_secret("shop-tls", &shop),
        tls_secret("api-tls", &api),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com, '*.shop.example.com']",
            "{secretRef: {name: shop-tls}, httpRedirect: true}"
        ),
        route(
            "api",
            "2024-02-01T00:00:00Z",
            "[api.shop.example.com]",
            "{secretRef: {name: api-tls}}"
        ),
    );
    let c = compile(&index(&yaml), &Memory::default());
    for name in ["shop", "api"] {
        let s = status(&c, Kind::Route, "default", name);
        assert!(s.is_true(ACCEPTED) && s.is_true(RESOLVED_REFS) && s.is_true(PROGRAMMED), "{s:#?}");
    }
    assert_eq!(selected_name(&c, Some("shop.example.com")).as_deref(), Some("default/shop-tls"));
    assert_eq!(selected_name(&c, Some("x.shop.example.com")).as_deref(), Some("default/shop-tls"));
    assert_eq!(selected_name(&c, Some("API.shop.example.com")).as_deref(), Some("default/api-tls"));
    assert_eq!(selected_name(&c, Some("example.com")), None);
    assert_eq!(selected_name(&c, None), None);
    assert_eq!(redirects(&c, "shop"), [true, true]);
    assert_eq!(redirects(&c, "api"), [false, false]);
    assert!(c.tls_error.is_none());
}

#[test]
fn a_missing_secret_is_secret_not_found_and_the_route_serves_plain_http() {
    let yaml = format!(
        "{SERVICE}{}",
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}, httpRedirect: true}"
        )
    );
    let c = compile(&index(&yaml), &Memory::default());
    let s = status(&c, Kind::Route, "default", "shop");
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["spec.tls.secretRef: secret default/shop-tls not found"],
    );
    assert!(s.is_true(ACCEPTED) && s.is_true(PROGRAMMED));
    assert!(c.tls.is_empty());
    assert_eq!(redirects(&c, "shop"), [false, false]);
}

#[test]
fn bad_material_is_invalid_certificate_with_the_precise_problem() {
    let good = cert("shop", &["shop.example.com"]);
    let other = cert("other", &["other.example.com"]);
    let cases: Vec<(String, &str)> = vec![
        (
            tls_secret("shop-tls", &("not a pem".to_owned(), good.1.clone())),
            "spec.tls.secretRef: secret default/shop-tls: tls.crt: no PEM certificate found",
        ),
        (
            tls_secret("shop-tls", &(good.0.clone(), other.1.clone())),
            "spec.tls.secretRef: secret default/shop-tls: tls.key does not match the certificate in tls.crt",
        ),
        (
            tls_secret("shop-tls", &expired(&["shop.example.com"])),
            "spec.tls.secretRef: secret default/shop-tls: tls.crt: certificate expired at 2025-01-01T00:00:00Z",
        ),
        (
            tls_secret("shop-tls", &other),
            "spec.tls.secretRef: secret default/shop-tls: tls.crt does not cover host \"shop.example.com\" (its DNS names: other.example.com)",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-tls}\nstringData: {tls.crt: x}\n---\n".to_owned(),
            "spec.tls.secretRef: secret default/shop-tls has no (or an empty) entry tls.key",
        ),
    ];
    for (secret, message) in cases {
        let yaml = format!(
            "{SERVICE}{secret}{}",
            route(
                "shop",
                "2024-01-01T00:00:00Z",
                "[shop.example.com]",
                "{secretRef: {name: shop-tls}, httpRedirect: true}"
            )
        );
        let c = compile(&index(&yaml), &Memory::default());
        let s = status(&c, Kind::Route, "default", "shop");
        assert_cond(s, RESOLVED_REFS, "False", "InvalidCertificate", &[message]);
        assert!(!cond(s, RESOLVED_REFS).message.contains("PRIVATE KEY"));
        assert!(c.tls.is_empty(), "{message}");
        assert_eq!(redirects(&c, "shop"), [false, false]);
    }
}

#[test]
fn the_oldest_route_wins_a_host_and_the_other_gets_certificate_conflict() {
    let a = cert("a", &["shop.example.com", "a.example.com"]);
    let b = cert("b", &["shop.example.com", "b.example.com"]);
    let secrets = format!("{SERVICE}{}{}", tls_secret("a-tls", &a), tls_secret("b-tls", &b));
    let tls_a = "{secretRef: {name: a-tls}, httpRedirect: true}";
    let tls_b = "{secretRef: {name: b-tls}, httpRedirect: true}";
    // "zz" is older than "aa": age first.
    let yaml = format!(
        "{secrets}{}{}",
        route("zz", "2024-01-01T00:00:00Z", "[shop.example.com, a.example.com]", tls_a),
        route("aa", "2024-06-01T00:00:00Z", "[shop.example.com, b.example.com]", tls_b),
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(selected_name(&c, Some("shop.example.com")).as_deref(), Some("default/a-tls"));
    assert!(status(&c, Kind::Route, "default", "zz").is_true(RESOLVED_REFS));
    let loser = status(&c, Kind::Route, "default", "aa");
    assert_cond(
        loser,
        RESOLVED_REFS,
        "False",
        "CertificateConflict",
        &[
            "spec.hosts[0]: host \"shop.example.com\" is served with certificate default/a-tls of Route default/zz, which is older",
        ],
    );
    assert!(loser.is_true(ACCEPTED) && loser.is_true(PROGRAMMED));
    // Its other host keeps its certificate; it does not redirect (a host of it is conflicted).
    assert_eq!(selected_name(&c, Some("b.example.com")).as_deref(), Some("default/b-tls"));
    assert_eq!(redirects(&c, "zz"), [true, true]);
    assert_eq!(redirects(&c, "aa"), [false, false]);

    // Same age: namespace/name decides ("aa" < "zz").
    let yaml = format!(
        "{secrets}{}{}",
        route("zz", "2024-01-01T00:00:00Z", "[shop.example.com, a.example.com]", tls_a),
        route("aa", "2024-01-01T00:00:00Z", "[shop.example.com, b.example.com]", tls_b),
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(selected_name(&c, Some("shop.example.com")).as_deref(), Some("default/b-tls"));
    assert_eq!(
        cond(status(&c, Kind::Route, "default", "zz"), RESOLVED_REFS).reason,
        "CertificateConflict"
    );

    // Two Routes with the same Secret share it: no conflict.
    let yaml = format!(
        "{secrets}{}{}",
        route("zz", "2024-01-01T00:00:00Z", "[shop.example.com, a.example.com]", tls_a),
        route("aa", "2024-06-01T00:00:00Z", "[shop.example.com, a.example.com]", tls_a),
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert!(status(&c, Kind::Route, "default", "aa").is_true(RESOLVED_REFS));
    assert_eq!(redirects(&c, "aa"), [true, true]);
}

#[test]
fn the_last_good_certificate_keeps_serving_across_a_bad_update_and_a_deleted_secret() {
    let good = cert("shop", &["shop.example.com"]);
    let r = route(
        "shop",
        "2024-01-01T00:00:00Z",
        "[shop.example.com]",
        "{secretRef: {name: shop-tls}, httpRedirect: true}",
    );
    let c1 = compile(
        &index(&format!("{SERVICE}{}{r}", tls_secret("shop-tls", &good))),
        &Memory::default(),
    );
    let served = Arc::clone(selected(&c1, Some("shop.example.com")).expect("served"));

    // The Secret now holds garbage: the incremental path recompiles, the old cert stays.
    let bad = tls_secret("shop-tls", &("garbage".to_owned(), good.1.clone()));
    let c2 = update(&index(&format!("{SERVICE}{bad}{r}")), &c1).expect("recompiled");
    assert!(Arc::ptr_eq(selected(&c2, Some("shop.example.com")).expect("kept"), &served));
    let s = status(&c2, Kind::Route, "default", "shop");
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "InvalidCertificate",
        &[
            "tls.crt: no PEM certificate found; the last good certificate (default/shop-tls) keeps serving",
        ],
    );
    assert_eq!(redirects(&c2, "shop"), [true, true]);

    // Deleted: still the last good one.
    let c3 = update(&index(&format!("{SERVICE}{r}")), &c2).expect("recompiled");
    assert!(Arc::ptr_eq(selected(&c3, Some("shop.example.com")).expect("kept"), &served));
    assert_cond(
        status(&c3, Kind::Route, "default", "shop"),
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &[
            "secret default/shop-tls not found; the last good certificate (default/shop-tls) keeps serving",
        ],
    );

    // Fixed: a new certificate, all good again. Deleting the Route forgets it.
    let fixed = cert("shop-2", &["shop.example.com"]);
    let c4 = update(&index(&format!("{SERVICE}{}{r}", tls_secret("shop-tls", &fixed))), &c3)
        .expect("recompiled");
    assert_eq!(selected(&c4, Some("shop.example.com")).expect("served").leaf.subject, "CN=shop-2");
    assert!(status(&c4, Kind::Route, "default", "shop").is_true(RESOLVED_REFS));
    let c5 = update(&index(&format!("{SERVICE}{}", tls_secret("shop-tls", &fixed))), &c4)
        .expect("recompiled");
    assert!(c5.tls.is_empty() && c5.memory.last_good_tls.is_empty());
}

#[test]
fn a_rotated_secret_produces_a_new_certificate() {
    let r = route(
        "shop",
        "2024-01-01T00:00:00Z",
        "[shop.example.com]",
        "{secretRef: {name: shop-tls}}",
    );
    let c1 = compile(
        &index(&format!(
            "{SERVICE}{}{r}",
            tls_secret("shop-tls", &cert("v1", &["shop.example.com"]))
        )),
        &Memory::default(),
    );
    let c2 = update(
        &index(&format!(
            "{SERVICE}{}{r}",
            tls_secret("shop-tls", &cert("v2", &["shop.example.com"]))
        )),
        &c1,
    )
    .expect("a Secret change recompiles");
    let (old, new) = (
        selected(&c1, Some("shop.example.com")).unwrap(),
        selected(&c2, Some("shop.example.com")).unwrap(),
    );
    assert_eq!((old.leaf.subject.as_str(), new.leaf.subject.as_str()), ("CN=v1", "CN=v2"));
    assert!(!Arc::ptr_eq(&old.config, &new.config));
    assert_eq!(old.name, new.name, "same identity across a rotation");
}

#[test]
fn client_ca_turns_on_client_certificates() {
    let shop = cert("shop", &["shop.example.com"]);
    let (ca, _) = cert("Partners CA", &[]);
    let base =
        format!("{SERVICE}{}{}", tls_secret("shop-tls", &shop), ca_secret("partners-ca", &ca));
    for (optional, required) in [("false", Some(true)), ("true", Some(false))] {
        let yaml = format!(
            "{base}{}",
            route(
                "shop",
                "2024-01-01T00:00:00Z",
                "[shop.example.com]",
                &format!(
                    "{{secretRef: {{name: shop-tls}}, clientCA: {{secretRef: {{name: partners-ca}}, optional: {optional}}}}}"
                )
            )
        );
        let c = compile(&index(&yaml), &Memory::default());
        assert!(status(&c, Kind::Route, "default", "shop").is_true(RESOLVED_REFS));
        let tls = selected(&c, Some("shop.example.com")).unwrap();
        assert_eq!(tls.client_auth, required);
        assert!(tls.name.starts_with("default/shop-tls+default/partners-ca"), "{}", tls.name);
        // Required client certificates: plain HTTP is never served, even without httpRedirect.
        assert!(redirects(&c, "shop").iter().all(|r| *r == (required == Some(true))));
    }
    let missing = format!(
        "{SERVICE}{}{}",
        tls_secret("shop-tls", &shop),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}, clientCA: {secretRef: {name: nope}}}"
        )
    );
    let c = compile(&index(&missing), &Memory::default());
    assert_cond(
        status(&c, Kind::Route, "default", "shop"),
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["spec.tls.clientCA.secretRef: secret default/nope not found"],
    );
    // No certificate serves, yet the Route that requires client certificates still refuses
    // plain HTTP (redirected; its HTTPS host has no certificate: closed, not open).
    assert!(redirects(&c, "shop").iter().all(|r| *r), "{:?}", redirects(&c, "shop"));
    let junk = format!(
        "{SERVICE}{}{}{}",
        tls_secret("shop-tls", &shop),
        ca_secret("partners-ca", "junk"),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}, clientCA: {secretRef: {name: partners-ca}}}"
        )
    );
    let c = compile(&index(&junk), &Memory::default());
    assert_cond(
        status(&c, Kind::Route, "default", "shop"),
        RESOLVED_REFS,
        "False",
        "InvalidCertificate",
        &[
            "spec.tls.clientCA.secretRef: secret default/partners-ca: ca.crt: no PEM certificate found",
        ],
    );
}

#[test]
fn the_default_certificate_answers_unknown_and_absent_sni() {
    let wild = cert("default", &["fallback.example.com"]);
    let shop = cert("shop", &["shop.example.com"]);
    let yaml = format!(
        "{SERVICE}{}{}{}",
        tls_secret("shop-tls", &shop),
        tls_secret("fallback", &wild).replace(
            "metadata: {name: fallback}",
            "metadata: {name: fallback, namespace: weir-system}"
        ),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}}"
        ),
    );
    let mut idx = index(&yaml);
    idx.default_certificate = Some(ObjectRef::new("weir-system", "fallback"));
    let c1 = compile(&idx, &Memory::default());
    assert_eq!(selected_name(&c1, None).as_deref(), Some("weir-system/fallback"));
    assert_eq!(selected_name(&c1, Some("unknown.test")).as_deref(), Some("weir-system/fallback"));
    assert_eq!(selected_name(&c1, Some("shop.example.com")).as_deref(), Some("default/shop-tls"));
    assert!(c1.tls_error.is_none());

    // The Secret disappears: the last good default keeps serving, and it is reported.
    idx.secrets.remove(&ObjectRef::new("weir-system", "fallback"));
    let c2 = update(&idx, &c1).expect("recompiled");
    assert_eq!(selected_name(&c2, None).as_deref(), Some("weir-system/fallback"));
    assert_eq!(
        c2.tls_error.as_deref(),
        Some(
            "secret weir-system/fallback not found; the last good default certificate keeps serving"
        )
    );
    // Without a last good one: unknown SNI fails the handshake.
    let c3 = compile(&idx, &Memory::default());
    assert!(selected(&c3, None).is_none() && selected(&c3, Some("unknown.test")).is_none());
    assert_eq!(
        c3.tls_error.as_deref(),
        Some(
            "secret weir-system/fallback not found; TLS clients with an unknown or no SNI fail the handshake"
        )
    );
}

#[test]
fn tls_without_hosts_is_invalid_and_keeps_the_last_good_version() {
    let shop = cert("shop", &["shop.example.com"]);
    let good = route(
        "shop",
        "2024-01-01T00:00:00Z",
        "[shop.example.com]",
        "{secretRef: {name: shop-tls}}",
    );
    let base = format!("{SERVICE}{}", tls_secret("shop-tls", &shop));
    let c1 = compile(&index(&format!("{base}{good}")), &Memory::default());
    let bad = good
        .replace("hosts: [shop.example.com]", "hosts: []")
        .replace("generation: 1", "generation: 2");
    let c2 = update(&index(&format!("{base}{bad}")), &c1).expect("recompiled");
    let s = status(&c2, Kind::Route, "default", "shop");
    assert_cond(
        s,
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.tls: requires at least one host in spec.hosts",
            "the last good version (generation 1) keeps serving",
        ],
    );
    assert_eq!(selected_name(&c2, Some("shop.example.com")).as_deref(), Some("default/shop-tls"));
}

#[test]
fn a_change_to_a_plain_route_keeps_the_tls_table() {
    let shop = cert("shop", &["shop.example.com"]);
    let plain = "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: plain, generation: 1}\n\
                 spec:\n  hosts: [plain.test]\n  rules: [{backends: [{service: web, port: 80}]}]\n---\n";
    let base = format!(
        "{SERVICE}{}{}",
        tls_secret("shop-tls", &shop),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}}"
        )
    );
    let c1 = compile(&index(&format!("{base}{plain}")), &Memory::default());
    let edited =
        plain.replace("plain.test", "plain2.test").replace("generation: 1", "generation: 2");
    let c2 = update(&index(&format!("{base}{edited}")), &c1).expect("recompiled");
    assert!(Arc::ptr_eq(&c1.tls, &c2.tls));
    assert!(
        Arc::ptr_eq(&c1.state.shared_inputs(), &c2.state.shared_inputs()),
        "not a full compile"
    );
}

#[test]
fn standalone_secrets_with_base64_data_work() {
    use base64::Engine as _;
    let (crt, key) = cert("shop", &["shop.example.com"]);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        "{SERVICE}apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-tls}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n---\n{}",
        b64(&crt),
        b64(&key),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}}"
        )
    );
    let loaded = crate::load::parse_file("tls.yaml", &yaml).expect("parses");
    let (mut idx, errors) = crate::load::merge([("tls.yaml", loaded.as_slice())], "weir-system");
    assert!(errors.is_empty(), "{errors:?}");
    idx.now = Some(SystemTime::now());
    let c = compile(&idx, &Memory::default());
    assert!(status(&c, Kind::Route, "default", "shop").is_true(RESOLVED_REFS));
    assert_eq!(selected_name(&c, Some("shop.example.com")).as_deref(), Some("default/shop-tls"));
}

#[test]
fn referenced_secrets_include_route_tls_and_the_default_certificate() {
    let yaml = route(
        "shop",
        "2024-01-01T00:00:00Z",
        "[shop.example.com]",
        "{secretRef: {name: shop-tls}, clientCA: {secretRef: {name: partners-ca}}}",
    );
    let mut idx = index(&yaml);
    idx.default_certificate = Some(ObjectRef::new("weir-system", "fallback"));
    let wanted = crate::kube::state::referenced_secrets(&idx);
    for (ns, name) in
        [("default", "shop-tls"), ("default", "partners-ca"), ("weir-system", "fallback")]
    {
        assert!(wanted.contains(&ObjectRef::new(ns, name)), "{ns}/{name} not watched: {wanted:?}");
    }
}

#[test]
fn certificates_are_reused_while_their_secrets_are_unchanged_and_rechecked_against_the_clock() {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["shop.example.com".to_owned()]).unwrap();
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2025, 1, 1);
    let pair = (p.self_signed(&key).unwrap().pem(), key.serialize_pem());
    let plugin = "apiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {name: cors}\n\
                  spec: {cors: {allowOrigins: ['https://a.test']}}\n---\n";
    let yaml = format!(
        "{SERVICE}{}{}",
        tls_secret("shop-tls", &pair),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}}"
        )
    );
    let at = |year_2024_day: u64| {
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_704_067_200 + year_2024_day * 86_400)
    };
    let mut idx = load_str(&yaml);
    idx.now = Some(at(0));
    let c1 = compile(&idx, &Memory::default());
    let first = Arc::clone(selected(&c1, Some("shop.example.com")).expect("valid in 2024"));

    // A Plugin is added (a full compile) a day later: the same certificate object is reused.
    let mut idx2 = load_str(&format!("{yaml}{plugin}"));
    idx2.now = Some(at(1));
    let c2 = update(&idx2, &c1).expect("recompiled");
    assert!(!Arc::ptr_eq(&c1.state.shared_inputs(), &c2.state.shared_inputs()), "a full compile");
    assert!(Arc::ptr_eq(selected(&c2, Some("shop.example.com")).unwrap(), &first));

    // Compiled again after it expired: reported, and the last good one keeps serving.
    let mut idx3 = load_str(&yaml);
    idx3.now = Some(at(400));
    let c3 = update(&idx3, &c2).expect("recompiled");
    assert_cond(
        status(&c3, Kind::Route, "default", "shop"),
        RESOLVED_REFS,
        "False",
        "InvalidCertificate",
        &[
            "tls.crt: certificate expired at 2025-01-01T00:00:00Z; the last good certificate (default/shop-tls) keeps serving",
        ],
    );
    assert!(Arc::ptr_eq(selected(&c3, Some("shop.example.com")).unwrap(), &first));
}

#[test]
fn the_first_expiry_is_when_the_next_compile_must_happen() {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["shop.example.com".to_owned()]).unwrap();
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2025, 1, 1);
    let pair = (p.self_signed(&key).unwrap().pem(), key.serialize_pem());
    let yaml = format!(
        "{SERVICE}{}{}",
        tls_secret("shop-tls", &pair),
        route(
            "shop",
            "2024-01-01T00:00:00Z",
            "[shop.example.com]",
            "{secretRef: {name: shop-tls}}"
        )
    );
    let at = |secs: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let mut idx = load_str(&yaml);
    idx.now = Some(at(1_704_067_200)); // 2024-01-01
    let c1 = compile(&idx, &Memory::default());
    assert_eq!(c1.tls_recheck_at, Some(at(1_735_689_601)), "2025-01-01T00:00:01Z");
    idx.now = Some(at(1_735_689_600));
    assert!(update(&idx, &c1).is_none(), "not yet: nothing changed");
    idx.now = Some(at(1_735_689_601));
    let c2 = update(&idx, &c1).expect("the expiry recompiles");
    assert_eq!(
        cond(status(&c2, Kind::Route, "default", "shop"), RESOLVED_REFS).reason,
        "InvalidCertificate"
    );
    assert_eq!(c2.tls_recheck_at, None, "nothing valid left to watch");
    assert!(update(&idx, &c2).is_none());
}

#[test]
fn a_route_that_never_was_valid_claims_no_host() {
    let a = cert("a", &["shop.example.com"]);
    let b = cert("b", &["shop.example.com"]);
    // The older Route has an invalid rule (a bad regex) and no last good version.
    let broken =
        route("old", "2024-01-01T00:00:00Z", "[shop.example.com]", "{secretRef: {name: a-tls}}")
            .replace("{path: {value: /api}}", "{path: {type: RegularExpression, value: '(/api'}}");
    let yaml = format!(
        "{SERVICE}{}{}{broken}{}",
        tls_secret("a-tls", &a),
        tls_secret("b-tls", &b),
        route("new", "2024-06-01T00:00:00Z", "[shop.example.com]", "{secretRef: {name: b-tls}}"),
    );
    let c = compile(&index(&yaml), &Memory::default());
    assert_eq!(cond(status(&c, Kind::Route, "default", "old"), ACCEPTED).status, "False");
    assert!(status(&c, Kind::Route, "default", "new").is_true(RESOLVED_REFS));
    assert_eq!(selected_name(&c, Some("shop.example.com")).as_deref(), Some("default/b-tls"));
}
