//! The filter chain's request phase: a rule without filters, a rule with JWT authentication
//! and a hot (cached) RS256 token, and one full RS256 verification for comparison. The key
//! and the token are made by the `openssl` command-line tool at setup.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::HeaderName;
use weir_dataplane::filter::jwt::{JwtAuth, JwtSettings, KeySet, KeySource, parse_algorithm};
use weir_dataplane::filter::{Authenticate, ConsumerStore, RequestContext, request_phase};
use weir_dataplane::{Filter, ObjectKey};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An RSA key and an RS256 token valid for an hour; returns (JWKS JSON, token).
fn key_and_token() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("weir-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let k = key.to_str().unwrap();
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", k, "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwks =
        serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "e": "AQAB", "n": B64.encode(n)}]});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = B64.encode(r#"{"alg":"RS256","kid":"k1"}"#);
    let claims = serde_json::json!({"iss": "https://idp.test", "sub": "bench", "exp": now + 3600});
    let input = format!("{header}.{}", B64.encode(claims.to_string()));
    let msg = dir.join("input");
    std::fs::write(&msg, &input).unwrap();
    let sig = openssl(&["dgst", "-sha256", "-sign", k, "-binary", msg.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    (jwks.to_string(), format!("{input}.{}", B64.encode(sig)))
}

fn parts(token: Option<&str>) -> http::request::Parts {
    let mut b = http::Request::get("/api/orders/1")
        .header("host", "api.example.com")
        .header("user-agent", "bench")
        .header("accept", "*/*");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(()).unwrap().into_parts().0
}

fn bench(c: &mut Criterion) {
    let (jwks, token) = key_and_token();
    let set = Arc::new(KeySet::from_jwks(jwks.as_bytes()).unwrap());
    let jwt = Arc::new(JwtAuth::new(JwtSettings {
        source: ObjectKey::new("default", "jwt"),
        algorithms: vec![parse_algorithm("RS256").unwrap()],
        issuer: Some("https://idp.test".into()),
        audiences: vec![],
        keys: KeySource::Static(Arc::clone(&set)),
        key_claim: "iss".into(),
        consumer_claim: None,
        claims_to_headers: vec![("sub".into(), HeaderName::from_static("x-user-id"))],
        forward_authorization: false,
        clock_skew: Duration::from_secs(30),
        consumers: Arc::new(ConsumerStore::default()),
    }));
    let with_auth: Arc<[Filter]> = Arc::from(vec![Filter::Authenticate(Arc::new(Authenticate {
        jwt: Some(jwt),
        key_auth: None,
        ext_auth: None,
    }))]);
    let none: Arc<[Filter]> = Arc::from(Vec::new());

    let run = |filters: &[Filter], mut p: http::request::Parts| {
        let mut ctx = RequestContext::default();
        let result = request_phase(filters, &mut p, &mut ctx).now_or_never().expect("ready");
        assert!(result.is_ok());
        black_box((p, ctx))
    };
    // Warm the verified-token cache.
    run(&with_auth, parts(Some(&token)));

    let mut g = c.benchmark_group("request_phase");
    g.bench_function("no filters", |b| {
        b.iter_batched(|| parts(Some(&token)), |p| run(&none, p), BatchSize::SmallInput)
    });
    g.bench_function("jwt RS256 cached", |b| {
        b.iter_batched(|| parts(Some(&token)), |p| run(&with_auth, p), BatchSize::SmallInput)
    });
    g.finish();

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["https://idp.test"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(
        &serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&jwks).unwrap().keys[0],
    )
    .unwrap();
    c.bench_function("jwt RS256 full verification (uncached)", |b| {
        b.iter(|| {
            let data =
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation);
            black_box(data.is_ok())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
