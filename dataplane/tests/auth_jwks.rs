//! A remote JWKS on loopback: fetched on first use, an unknown `kid` triggers a refetch that
//! picks up a rotated key, and when the IdP goes down the cached keys keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "auth_support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use http::Request;
use serde_json::json;
use support::*;
use weir_dataplane::filter::jwt::{
    JwksRegistry, JwksSettings, JwtAuth, JwtSettings, KeySource, parse_algorithm,
};
use weir_dataplane::filter::{Authenticate, ConsumerStore};
use weir_dataplane::{Backend, Filter, ObjectKey};

fn settings() -> JwksSettings {
    JwksSettings {
        refresh: Duration::from_millis(200),
        min_refetch: Duration::from_millis(100),
        fetch_timeout: Duration::from_secs(2),
        first_fetch_wait: Duration::from_secs(5),
    }
}

async fn bearer(gw: &Gateway, token: &str) -> Answer {
    let r = Request::get(gw.url("/x"))
        .header("host", "api.test")
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    send(&client(), r).await
}

/// Polls `check` every 50 ms, at most 100 times.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_jwks_rotates_and_survives_the_idp_going_down() {
    let s = Scratch::new();
    let k1 = Key::rsa(&s, "k1");
    let k2 = Key::rsa(&s, "k2");
    let idp = JwksOrigin::start(jwks(&[k1.jwk_with("k1")])).await;
    let registry = JwksRegistry::default();
    let remote = registry.get(&idp.uri(), settings()).unwrap();
    assert!(Arc::ptr_eq(&remote, &registry.get(&idp.uri(), settings()).unwrap()), "shared");
    let auth = Arc::new(JwtAuth::new(JwtSettings {
        source: ObjectKey::new("default", "jwt"),
        algorithms: vec![parse_algorithm("RS256").unwrap()],
        issuer: Some("https://idp.test".into()),
        audiences: vec!["api.test".into()],
        keys: KeySource::Remote(Arc::clone(&remote)),
        key_claim: "iss".into(),
        consumer_claim: None,
        claims_to_headers: vec![],
        forward_authorization: false,
        clock_skew: Duration::from_secs(30),
        consumers: Arc::new(ConsumerStore::default()),
    }));
    drop(remote);
    let mut a = action(&[(0, 1)]);
    a.filters = Arc::from(vec![Filter::Authenticate(Arc::new(Authenticate {
        jwt: Some(auth),
        key_auth: None,
        ext_auth: None,
    }))]);
    let origin = Origin::start("o").await;
    let gw = Gateway::start(snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", a)])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    ))
    .await;
    let token = |key: &Key, kid: &str, sub: &str| {
        mint(&s, &json!({"alg": "RS256", "kid": kid}), &claims(sub), &Signer::Key(key))
    };

    // The first request waits for the first fetch.
    assert_eq!(bearer(&gw, &token(&k1, "k1", "a")).await.status, 200);
    assert!(idp.fetches.load(Ordering::SeqCst) >= 1);

    // An unknown kid is refused while the IdP does not publish it...
    assert_gateway_error(&bearer(&gw, &token(&k2, "k2", "b")).await, 401);
    // ...and accepted once the IdP rotates to it (refetched on the unknown kid).
    idp.publish(jwks(&[k1.jwk_with("k1"), k2.jwk_with("k2")]));
    eventually("the rotated key is picked up", || async {
        bearer(&gw, &token(&k2, "k2", "c")).await.status == 200
    })
    .await;

    // The IdP goes down: background refreshes fail, cached keys keep verifying new tokens.
    idp.stop();
    let failures = weir_dataplane::metrics::metrics().jwks_fetch_failures.get();
    eventually("a refresh fails", || async {
        weir_dataplane::metrics::metrics().jwks_fetch_failures.get() > failures
    })
    .await;
    assert_eq!(bearer(&gw, &token(&k1, "k1", "d")).await.status, 200);
    assert_eq!(bearer(&gw, &token(&k2, "k2", "e")).await.status, 200);
    // An unknown kid is still refused (the refetch fails fast, no hang).
    let k3 = Key::rsa(&s, "k3");
    assert_gateway_error(&bearer(&gw, &token(&k3, "k3", "f")).await, 401);

    // When no snapshot uses the JWKS any more, it is dropped (and its task ends).
    drop(gw);
    eventually("the registry forgets the unused JWKS", || {
        let empty = registry.is_empty();
        async move { empty }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_down_from_the_start_fails_closed() {
    let s = Scratch::new();
    let k1 = Key::rsa(&s, "k1");
    let idp = JwksOrigin::start(jwks(&[])).await;
    let uri = idp.uri();
    idp.stop();
    drop(idp);
    let registry = JwksRegistry::default();
    let remote = registry.get(&uri, settings()).unwrap();
    let auth = Arc::new(JwtAuth::new(JwtSettings {
        source: ObjectKey::new("default", "jwt"),
        algorithms: vec![parse_algorithm("RS256").unwrap()],
        issuer: None,
        audiences: vec![],
        keys: KeySource::Remote(remote),
        key_claim: "iss".into(),
        consumer_claim: None,
        claims_to_headers: vec![],
        forward_authorization: false,
        clock_skew: Duration::from_secs(30),
        consumers: Arc::new(ConsumerStore::default()),
    }));
    let mut a = action(&[(0, 1)]);
    a.filters = Arc::from(vec![Filter::Authenticate(Arc::new(Authenticate {
        jwt: Some(auth),
        key_auth: None,
        ext_auth: None,
    }))]);
    let origin = Origin::start("o").await;
    let gw = Gateway::start(snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", a)])],
        vec![Backend::new(key("o"), vec![origin.addr])],
    ))
    .await;
    let t = mint(&s, &json!({"alg": "RS256", "kid": "k1"}), &claims("a"), &Signer::Key(&k1));
    for _ in 0..3 {
        assert_gateway_error(&bearer(&gw, &t).await, 401);
    }
    assert_eq!(origin.requests.load(Ordering::SeqCst), 0);
    assert!(
        weir_dataplane::metrics::encode().contains("reason=\"keys_unavailable\""),
        "{}",
        weir_dataplane::metrics::encode()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https_with_a_private_ca() {
    let s = Scratch::new();
    let k1 = Key::rsa(&s, "k1");
    let (acceptor, client_tls) = private_tls(&s);
    let idp = JwksOrigin::start_with(jwks(&[k1.jwk_with("k1")]), Some(acceptor)).await;
    let t = mint(&s, &json!({"alg": "RS256", "kid": "k1"}), &claims("a"), &Signer::Key(&k1));
    let origin = Origin::start("o").await;
    let gateway = |registry: JwksRegistry| {
        let remote = registry.get(&idp.https_uri(), settings()).unwrap();
        let auth = Arc::new(JwtAuth::new(JwtSettings {
            source: ObjectKey::new("default", "jwt"),
            algorithms: vec![parse_algorithm("RS256").unwrap()],
            issuer: None,
            audiences: vec![],
            keys: KeySource::Remote(remote),
            key_claim: "iss".into(),
            consumer_claim: None,
            claims_to_headers: vec![],
            forward_authorization: false,
            clock_skew: Duration::from_secs(30),
            consumers: Arc::new(ConsumerStore::default()),
        }));
        let mut a = action(&[(0, 1)]);
        a.filters = Arc::from(vec![Filter::Authenticate(Arc::new(Authenticate {
            jwt: Some(auth),
            key_auth: None,
            ext_auth: None,
        }))]);
        Gateway::start(snapshot(
            1,
            vec![route("r", &[], vec![rule("r", "/", a)])],
            vec![Backend::new(key("o"), vec![origin.addr])],
        ))
    };
    // Trusting the private CA: the keys are fetched over TLS.
    let gw = gateway(JwksRegistry::with_tls(client_tls)).await;
    assert_eq!(bearer(&gw, &t).await.status, 200);
    assert!(idp.fetches.load(Ordering::SeqCst) >= 1);
    // With the public roots only, the certificate is refused: no keys, fail closed.
    let fetches = idp.fetches.load(Ordering::SeqCst);
    let gw = gateway(JwksRegistry::default()).await;
    assert_gateway_error(&bearer(&gw, &t).await, 401);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), fetches, "no request got past TLS");
}
