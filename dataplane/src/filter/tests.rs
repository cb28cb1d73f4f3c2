//! Chain tests: consumer plugins merged after authentication, rate limits by consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use futures_util::FutureExt;

use super::*;
use crate::filter::consumers::hash_api_key;
use crate::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use crate::snapshot::ObjectKey;

fn run(filters: &[Filter], key: &str) -> (Result<(), ProxyError>, RequestContext<'static>) {
    let mut parts =
        http::Request::get("/").header("x-api-key", key).body(()).unwrap().into_parts().0;
    let mut ctx = RequestContext::default();
    let r = request_phase(filters, &mut parts, &mut ctx).now_or_never().unwrap();
    (r.map(|flow| assert!(matches!(flow, Flow::Continue))), ctx)
}

#[test]
fn consumer_plugins_are_merged_after_authentication() {
    let blocked: Arc<[Filter]> = Arc::from(vec![Filter::Unavailable("consumer".into())]);
    let a = ConsumerEntry::new(ObjectKey::new("ns", "a"), "a", Some("pro"), blocked);
    let b = ConsumerEntry::new(ObjectKey::new("ns", "b"), "b", None, Arc::from(Vec::new()));
    let mut store = ConsumerStore::default();
    for (c, k) in [(&a, b"ka"), (&b, b"kb")] {
        store.add_consumer(c);
        store.add_api_key(hash_api_key(k), c);
    }
    let key_auth = Arc::new(KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: None,
        forward_credential: false,
        consumers: Arc::new(store),
    });
    let chain = [Filter::Authenticate(Arc::new(Authenticate {
        jwt: None,
        key_auth: Some(key_auth),
        ext_auth: None,
    }))];
    let (r, ctx) = run(&chain, "kb");
    assert!(r.is_ok() && ctx.authenticated);
    assert_eq!(ctx.consumer.unwrap().username.as_ref(), "b");
    let (r, ctx) = run(&chain, "ka");
    assert!(matches!(r, Err(ProxyError::Unavailable { .. })), "a's own filter ran");
    assert_eq!(ctx.tier(), Some("pro"));
    let (r, ctx) = run(&chain, "nope");
    assert!(matches!(r, Err(ProxyError::Unauthorized { .. })) && !ctx.authenticated);
}

fn limit(name: &str, limit: u64, key: crate::ratelimit::KeySource) -> Filter {
    use crate::ratelimit::*;
    let spec = RateLimitSpec::new(
        ObjectKey::new("ns", name),
        Algorithm::TokenBucket,
        limit,
        std::time::Duration::from_secs(3600),
        0,
        key,
        &[TierSpec {
            tier: "pro".into(),
            limit: limit * 10,
            window: std::time::Duration::from_secs(3600),
        }],
        StoreKind::Local,
        OnStoreError::Allow,
    )
    .unwrap();
    Filter::RateLimit(Arc::new(RateLimit::new(spec)))
}

#[test]
fn rate_limit_runs_after_authentication_keyed_by_consumer_and_tier() {
    use crate::ratelimit::KeySource;
    // `a` (tier pro) brings its own limit, which replaces the rule's; `b` has no tier.
    let own: Arc<[Filter]> = Arc::from(vec![limit("own", 2, KeySource::Consumer)]);
    let a = ConsumerEntry::new(ObjectKey::new("ns", "a"), "a", Some("pro"), own);
    let b = ConsumerEntry::new(ObjectKey::new("ns", "b"), "b", None, Arc::from(Vec::new()));
    let c = ConsumerEntry::new(ObjectKey::new("ns", "c"), "c", None, Arc::from(Vec::new()));
    let mut store = ConsumerStore::default();
    for (entry, k) in [(&a, b"ka"), (&b, b"kb"), (&c, b"kc")] {
        store.add_consumer(entry);
        store.add_api_key(hash_api_key(k), entry);
    }
    let key_auth = Arc::new(KeyAuth {
        header: DEFAULT_KEY_HEADER,
        query: None,
        forward_credential: false,
        consumers: Arc::new(store),
    });
    let chain = [
        Filter::Authenticate(Arc::new(Authenticate {
            jwt: None,
            key_auth: Some(key_auth),
            ext_auth: None,
        })),
        limit("rule", 1, KeySource::Consumer),
    ];
    // b: the rule's limit, 1.
    let (r, ctx) = run(&chain, "kb");
    assert!(r.is_ok());
    let d = ctx.rate_limit.unwrap();
    assert_eq!((d.limit, d.remaining), (1, 0));
    let (r, ctx) = run(&chain, "kb");
    assert!(matches!(r, Err(ProxyError::RateLimited { retry_after_secs }) if retry_after_secs > 0));
    assert!(!ctx.rate_limit.unwrap().allowed);
    // c has its own counter under the same limit.
    assert!(run(&chain, "kc").0.is_ok());
    // a: its own plugin, at its tier's limit (20).
    for remaining in (18..20).rev() {
        let (r, ctx) = run(&chain, "ka");
        assert!(r.is_ok());
        let d = ctx.rate_limit.unwrap();
        assert_eq!((d.limit, d.remaining), (20, remaining));
    }
    // Authentication failed: the rate limit never ran.
    let (r, ctx) = run(&chain, "nope");
    assert!(matches!(r, Err(ProxyError::Unauthorized { .. })) && ctx.rate_limit.is_none());
}

#[test]
fn a_consumers_response_headers_replace_the_rules_in_the_response_phase() {
    use crate::filter::headers::{HeaderTransform, Template};
    use crate::proxy::ProxyBody;
    let transform = |value: &str| {
        Filter::ResponseHeaders(Arc::new(HeaderTransform {
            set: vec![(http::HeaderName::from_static("x-plan"), Template::parse(value).unwrap())]
                .into(),
            add: Box::new([]),
            remove: Box::new([]),
        }))
    };
    let own: Arc<[Filter]> = Arc::from(vec![transform("gold")]);
    let gold = ConsumerEntry::new(ObjectKey::new("ns", "g"), "g", None, own);
    let plain = ConsumerEntry::new(ObjectKey::new("ns", "p"), "p", None, Arc::from(Vec::new()));
    let rule = [transform("basic")];
    for (consumer, expected) in [(Some(gold), "gold"), (Some(plain), "basic"), (None, "basic")] {
        let ctx = RequestContext { consumer, ..RequestContext::default() };
        let mut response = http::Response::new(ProxyBody::empty());
        response_phase(&rule, &mut response, &ctx);
        let values: Vec<_> = response.headers().get_all("x-plan").iter().collect();
        assert_eq!(values, [expected]);
    }
}
