//! Authentication through the real server against real origins: tokens minted by openssl
//! (independent of the verifying library), each attack getting its status; API keys and
//! consumers; identity headers that clients cannot forge; fail-closed rules.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "auth_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{HeaderName, Request};
use serde_json::json;
use support::*;
use weir_dataplane::filter::consumers::{ConsumerJwtKey, hash_api_key};
use weir_dataplane::filter::jwt::{
    JwtAuth, JwtKey, JwtSettings, KeySet, KeySource, parse_algorithm,
};
use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore};
use weir_dataplane::{Backend, Filter, ObjectKey, RouteModel};

fn jwt(
    keys: KeySource,
    algs: &[&str],
    issuer: Option<&str>,
    consumer_claim: Option<&str>,
    consumers: &Arc<ConsumerStore>,
) -> Arc<JwtAuth> {
    Arc::new(JwtAuth::new(JwtSettings {
        source: ObjectKey::new("default", "jwt"),
        algorithms: algs.iter().map(|a| parse_algorithm(a).unwrap()).collect(),
        issuer: issuer.map(str::to_owned),
        audiences: if issuer.is_some() { vec!["api.test".into()] } else { vec![] },
        keys,
        key_claim: "iss".into(),
        consumer_claim: consumer_claim.map(str::to_owned),
        claims_to_headers: vec![
            ("sub".into(), HeaderName::from_static("x-user-id")),
            ("roles".into(), HeaderName::from_static("x-user-roles")),
        ],
        forward_authorization: false,
        clock_skew: Duration::from_secs(30),
        consumers: Arc::clone(consumers),
    }))
}

fn protected(name: &str, prefix: &str, filters: Vec<Filter>) -> RouteModel {
    let mut a = action(&[(0, 1)]);
    a.filters = Arc::from(filters);
    route(name, &[], vec![rule(name, prefix, a)])
}

fn auth(jwt: Option<Arc<JwtAuth>>, key_auth: Option<Arc<KeyAuth>>) -> Filter {
    Filter::Authenticate(Arc::new(Authenticate { jwt, key_auth, ext_auth: None }))
}

async fn call(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(gw.url(path)).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&client(), b.body(empty()).unwrap()).await
}

async fn bearer(gw: &Gateway, path: &str, token: &str) -> Answer {
    call(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_or_invalid_token_is_refused_and_valid_ones_pass() {
    let s = Scratch::new();
    let rsa = Key::rsa(&s, "rsa");
    let ec = Key::ec(&s, "ec");
    let ed = Key::ed(&s, "ed");
    let doc = jwks(&[rsa.jwk_with("k1"), ec.jwk_with("e1"), ed.jwk_with("d1")]);
    let set = KeySet::from_jwks(doc.as_bytes()).unwrap();
    assert_eq!((set.keys.len(), set.skipped), (3, 0));
    let none = Arc::new(ConsumerStore::default());
    let algs = ["RS256", "RS384", "PS256", "ES256", "EdDSA", "HS256"];
    let j = jwt(KeySource::Static(Arc::new(set)), &algs, Some("https://idp.test"), None, &none);
    let origin = Origin::start("o").await;
    let gw = Gateway::start(snapshot(
        1,
        vec![protected("p", "/", vec![auth(Some(Arc::clone(&j)), None)])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    ))
    .await;

    let rs = |kid: &str, alg: &str, c: &serde_json::Value| {
        mint(&s, &json!({"alg": alg, "typ": "JWT", "kid": kid}), c, &Signer::Key(&rsa))
    };
    // Valid tokens of every key type pass, with claim headers and without Authorization.
    let good = rs("k1", "RS256", &claims("alice"));
    let answer = bearer(&gw, "/x", &good).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = answer.json()["headers"].clone();
    assert_eq!(seen["x-user-id"], "alice");
    assert_eq!(seen["x-user-roles"], "reader,writer");
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(seen.get("x-consumer-username").is_none(), "no consumer: {seen}");
    for (alg, kid, key) in
        [("RS384", "k1", &rsa), ("PS256", "k1", &rsa), ("ES256", "e1", &ec), ("EdDSA", "d1", &ed)]
    {
        let t = mint(&s, &json!({"alg": alg, "kid": kid}), &claims("bob"), &Signer::Key(key));
        assert_eq!(bearer(&gw, "/x", &t).await.status, 200, "{alg}");
    }
    // Within the clock skew: accepted.
    let t = now();
    let mut c = claims("alice");
    c["exp"] = json!(t - 10);
    assert_eq!(bearer(&gw, "/x", &rs("k1", "RS256", &c)).await.status, 200, "skew");

    // Spoofed identity headers never reach the backend.
    let answer = call(
        &gw,
        "/x",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("x-consumer-username", "admin"),
            ("x-user-id", "root"),
        ],
    )
    .await;
    let seen = answer.json()["headers"].clone();
    assert_eq!(seen["x-user-id"], "alice");
    assert!(seen.get("x-consumer-username").is_none(), "{seen}");

    // Each attack: 401 with the gateway's body and an RFC 6750 challenge.
    let rsa_pub = rsa.public_pem.as_bytes();
    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push(("alg none", mint(&s, &json!({"alg": "none"}), &claims("x"), &Signer::Unsigned)));
    cases.push((
        "HS256 signed with the RSA public key",
        mint(&s, &json!({"alg": "HS256", "kid": "k1"}), &claims("x"), &Signer::Hmac(rsa_pub)),
    ));
    cases.push((
        "HS256 with the public key, no kid",
        mint(&s, &json!({"alg": "HS256"}), &claims("x"), &Signer::Hmac(rsa_pub)),
    ));
    cases.push(("RS512 not in the allowlist", rs("k1", "RS512", &claims("x"))));
    let mut c = claims("x");
    c["exp"] = json!(t - 3600);
    cases.push(("expired", rs("k1", "RS256", &c)));
    let mut c = claims("x");
    c["nbf"] = json!(t + 3600);
    cases.push(("not yet valid", rs("k1", "RS256", &c)));
    let mut c = claims("x");
    c["iat"] = json!(t + 3600);
    cases.push(("issued in the future", rs("k1", "RS256", &c)));
    let mut c = claims("x");
    c["iss"] = json!("https://evil.test");
    cases.push(("wrong issuer", rs("k1", "RS256", &c)));
    let mut c = claims("x");
    c["aud"] = json!("other.test");
    cases.push(("wrong audience", rs("k1", "RS256", &c)));
    let mut c = claims("x");
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", rs("k1", "RS256", &c)));
    cases.push(("unknown kid", rs("nope", "RS256", &claims("x"))));
    let other = Key::rsa(&s, "other");
    cases.push((
        "signed by another key",
        mint(&s, &json!({"alg": "RS256", "kid": "k1"}), &claims("x"), &Signer::Key(&other)),
    ));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("admin").to_string())
    };
    cases.push(("tampered payload", format!("{}.{forged}.{}", parts[0], parts[2])));
    let mut c = claims("x");
    c["pad"] = json!("p".repeat(9000));
    cases.push(("oversized", rs("k1", "RS256", &c)));
    cases.push(("malformed base64", format!("{}.%%%.{}", parts[0], parts[2])));
    cases.push(("not a JWT", "not-a-jwt".to_owned()));
    for (what, token) in &cases {
        let answer = bearer(&gw, "/x", token).await;
        assert_gateway_error(&answer, 401);
        assert_eq!(
            answer.headers["www-authenticate"], r#"Bearer realm="weir", error="invalid_token""#,
            "{what}"
        );
        let body = String::from_utf8_lossy(&answer.body);
        assert!(!body.contains("expired") && !body.contains("signature"), "no detail: {body}");
    }
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 7, "none reached it");

    // No token: a challenge without an error code.
    let answer = call(&gw, "/x", &[]).await;
    assert_gateway_error(&answer, 401);
    assert_eq!(answer.headers["www-authenticate"], r#"Bearer realm="weir""#);

    // Reasons are counted, never sent.
    let metrics = weir_dataplane::metrics::encode();
    for reason in [
        "malformed",
        "algorithm_not_allowed",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "wrong_issuer",
        "wrong_audience",
        "unknown_key",
        "bad_signature",
        "oversized",
        "missing",
    ] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "{reason}: {metrics}");
    }
    // The hot token was verified once and then served from the cache.
    assert!(!j.cache().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_authenticate_by_rotated_api_keys_and_jwt_credentials() {
    let s = Scratch::new();
    let entry = ConsumerEntry::new(
        ObjectKey::new("default", "mobile"),
        "mobile-app",
        Some("pro"),
        Arc::from(Vec::new()),
    );
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut store = ConsumerStore::default();
    store.add_consumer(&entry);
    assert!(store.add_api_key(hash_api_key(b"key-old"), &entry));
    assert!(store.add_api_key(hash_api_key(b"key-new"), &entry));
    store.add_jwt_key(
        "mobile-issuer",
        ConsumerJwtKey {
            consumer: Arc::clone(&entry),
            key: JwtKey::from_credential("HS256", secret).unwrap(),
        },
    );
    let store = Arc::new(store);
    let key_auth = Arc::new(KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: Some("apikey".into()),
        forward_credential: false,
        consumers: Arc::clone(&store),
    });
    let by_credential = jwt(KeySource::Consumers, &["HS256"], None, None, &store);
    let rsa = Key::rsa(&s, "rsa");
    let set = KeySet::from_jwks(jwks(&[rsa.jwk_with("k1")]).as_bytes()).unwrap();
    let by_claim = jwt(
        KeySource::Static(Arc::new(set)),
        &["RS256"],
        Some("https://idp.test"),
        Some("sub"),
        &store,
    );
    let origin = Origin::start("o").await;
    let gw = Gateway::start(snapshot(
        1,
        vec![
            protected("key", "/key", vec![auth(None, Some(Arc::clone(&key_auth)))]),
            protected("cred", "/cred", vec![auth(Some(by_credential), None)]),
            protected("claim", "/claim", vec![auth(Some(by_claim), None)]),
            protected(
                "both",
                "/both",
                vec![auth(
                    Some(jwt(KeySource::Consumers, &["HS256"], None, None, &store)),
                    Some(key_auth),
                )],
            ),
            protected(
                "broken",
                "/broken",
                vec![Filter::Unavailable("plugin default/gone not found".into())],
            ),
            protected("open", "/open", vec![]),
        ],
        vec![Backend::new(key("o"), vec![origin.addr])],
    ))
    .await;

    for k in ["key-old", "key-new"] {
        let answer = call(&gw, "/key", &[("x-api-key", k), ("x-consumer-username", "admin")]).await;
        assert_eq!(answer.status, 200);
        let seen = answer.json()["headers"].clone();
        assert_eq!(seen["x-consumer-username"], "mobile-app");
        assert!(seen.get("x-api-key").is_none(), "the key is not forwarded: {seen}");
    }
    let answer = call(&gw, "/key/a?x=1&apikey=key-new", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["path"], "/key/a?x=1");
    for headers in [&[("x-api-key", "key-bad")][..], &[][..]] {
        let answer = call(&gw, "/key", headers).await;
        assert_gateway_error(&answer, 401);
        assert_eq!(answer.headers["www-authenticate"], r#"ApiKey realm="weir""#);
    }

    // A jwt credential selected by `iss`.
    let header = json!({"alg": "HS256"});
    let mut c = claims("u1");
    c["iss"] = json!("mobile-issuer");
    let t = mint(&s, &header, &c, &Signer::Hmac(secret));
    let answer = bearer(&gw, "/cred", &t).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["headers"]["x-consumer-username"], "mobile-app");
    let t = mint(&s, &header, &c, &Signer::Hmac(b"another-secret-another-secret-xx"));
    assert_gateway_error(&bearer(&gw, "/cred", &t).await, 401);
    c["iss"] = json!("unknown-issuer");
    let t = mint(&s, &header, &c, &Signer::Hmac(secret));
    assert_gateway_error(&bearer(&gw, "/cred", &t).await, 401);

    // A consumer named by `consumerClaim`.
    let rs = |sub: &str| {
        mint(&s, &json!({"alg": "RS256", "kid": "k1"}), &claims(sub), &Signer::Key(&rsa))
    };
    let answer = bearer(&gw, "/claim", &rs("mobile-app")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["headers"]["x-consumer-username"], "mobile-app");
    assert_gateway_error(&bearer(&gw, "/claim", &rs("nobody")).await, 401);

    // Either credential on a rule with both; without any, both challenges.
    assert_eq!(call(&gw, "/both", &[("x-api-key", "key-old")]).await.status, 200);
    let answer = call(&gw, "/both", &[]).await;
    assert_gateway_error(&answer, 401);
    let challenges: Vec<_> = answer.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");

    // A rule whose plugin is missing fails closed.
    assert_gateway_error(&call(&gw, "/broken", &[("x-api-key", "key-old")]).await, 503);

    // Identity headers are stripped on routes without authentication too.
    let answer =
        call(&gw, "/open", &[("x-consumer-username", "admin"), ("x-consumer-id", "1")]).await;
    assert_eq!(answer.status, 200);
    let seen = answer.json()["headers"].clone();
    assert!(seen.get("x-consumer-username").is_none() && seen.get("x-consumer-id").is_none());
}
