//! The cache's rules without a network: what is stored and for how long (RFC 9111 as a
//! shared cache), the key's isolation, answers made from an entry (304, HEAD, Age), the
//! Redis layout, the memory store's bound and purge, and coalescing's lead/wait protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::entry::{Age, Entry};
use super::freshness::{self, Freshness, NotStored, RequestCacheability};
use super::store::MemoryStore;
use super::*;
use crate::filter::{ConsumerEntry, RequestContext};
use crate::snapshot::ObjectKey;

fn plugin() -> CachePlugin {
    CachePlugin {
        id: "default/c".into(),
        ttl: Duration::from_secs(300),
        methods: vec![Method::GET, Method::HEAD].into(),
        statuses: vec![200, 301, 404].into(),
        vary: vec![HeaderName::from_static("accept-language")].into(),
        stale_while_revalidate: Duration::ZERO,
        max_body_size: 1024,
        store: StoreKind::Memory,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn store(pairs: &[(&'static str, &str)], credentials: bool) -> Result<Freshness, NotStored> {
    freshness::storable(&plugin(), StatusCode::OK, &headers(pairs), credentials, SystemTime::now())
}

#[test]
fn personal_and_uncacheable_answers_are_never_stored() {
    assert_eq!(store(&[("set-cookie", "a=1")], false), Err(NotStored::SetCookie));
    assert_eq!(store(&[("cache-control", "private")], false), Err(NotStored::Private));
    assert_eq!(store(&[("cache-control", "max-age=60, Private")], false), Err(NotStored::Private));
    assert_eq!(store(&[("cache-control", "no-store")], false), Err(NotStored::NoStore));
    assert_eq!(store(&[("cache-control", "no-cache")], false), Err(NotStored::NoCache));
    assert_eq!(store(&[("vary", "*")], false), Err(NotStored::Vary));
    assert_eq!(store(&[("vary", "Accept-Language, Cookie")], false), Err(NotStored::Vary));
    assert!(store(&[("vary", "accept-language")], false).is_ok());
    // Credentials: only `public` answers.
    assert_eq!(store(&[], true), Err(NotStored::Credentials));
    assert_eq!(store(&[("cache-control", "max-age=60")], true), Err(NotStored::Credentials));
    assert!(store(&[("cache-control", "public, max-age=60")], true).is_ok());
    // Statuses not listed are not stored.
    let p = plugin();
    let no = freshness::storable(
        &p,
        StatusCode::INTERNAL_SERVER_ERROR,
        &HeaderMap::new(),
        false,
        SystemTime::now(),
    );
    assert_eq!(no, Err(NotStored::Status));
}

#[test]
fn freshness_is_s_maxage_then_max_age_then_expires_capped_by_ttl_minus_age() {
    let fresh = |pairs: &[(&'static str, &str)]| store(pairs, false).map(|f| f.fresh_for.as_secs());
    assert_eq!(fresh(&[]), Ok(300), "no directive: the Plugin's ttl");
    assert_eq!(fresh(&[("cache-control", "max-age=60")]), Ok(60));
    assert_eq!(fresh(&[("cache-control", "max-age=60, s-maxage=20")]), Ok(20));
    assert_eq!(fresh(&[("cache-control", "max-age=6000")]), Ok(300), "capped by ttl");
    assert_eq!(fresh(&[("cache-control", "max-age=60"), ("age", "15")]), Ok(45));
    assert_eq!(fresh(&[("cache-control", "max-age=60"), ("age", "60")]), Err(NotStored::Expired));
    assert_eq!(fresh(&[("cache-control", "max-age=0")]), Err(NotStored::Expired));
    let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let expires = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_100));
    assert_eq!(fresh(&[("date", &date), ("expires", &expires)]), Ok(100));
    assert_eq!(
        fresh(&[("expires", "0")]),
        Err(NotStored::Expired),
        "an invalid Expires is expired"
    );
    assert_eq!(
        fresh(&[("cache-control", "max-age=30"), ("expires", &expires), ("date", &date)]),
        Ok(30),
        "max-age wins over Expires"
    );
    // A stale window keeps an already-stale answer servable while revalidated.
    let mut p = plugin();
    p.stale_while_revalidate = Duration::from_secs(10);
    let f = freshness::storable(
        &p,
        StatusCode::OK,
        &headers(&[("cache-control", "max-age=0")]),
        false,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!((f.fresh_for, f.stale_for), (Duration::ZERO, Duration::from_secs(10)));
}

#[test]
fn client_directives_bypass_or_revalidate() {
    assert_eq!(freshness::request(&HeaderMap::new()), RequestCacheability::Normal);
    let r = |pairs: &[(&'static str, &str)]| freshness::request(&headers(pairs));
    assert_eq!(r(&[("cache-control", "no-store")]), RequestCacheability::Bypass);
    assert_eq!(r(&[("range", "bytes=0-1")]), RequestCacheability::Bypass);
    assert_eq!(r(&[("cache-control", "no-cache")]), RequestCacheability::Revalidate);
    assert_eq!(r(&[("pragma", "no-cache")]), RequestCacheability::Revalidate);
    assert_eq!(r(&[("cache-control", "max-age=0")]), RequestCacheability::Revalidate);
    assert_eq!(r(&[("cache-control", "max-stale=5")]), RequestCacheability::Normal);
}

fn ctx_with(consumer: Option<&str>, authenticated: bool) -> RequestContext<'static> {
    RequestContext {
        authenticated,
        consumer: consumer.map(|name| {
            let none: Arc<[crate::snapshot::Filter]> = Arc::from(Vec::new());
            ConsumerEntry::new(ObjectKey::new("default", name), name, None, none)
        }),
        ..RequestContext::default()
    }
}

#[test]
fn keys_isolate_consumers_plugins_and_vary_values() {
    let p = plugin();
    let key = |host: &str, consumer: Option<&str>, auth: bool, lang: Option<&str>| {
        let h = lang.map_or_else(HeaderMap::new, |l| headers(&[("accept-language", l)]));
        CacheKey::new(&p, host, &Method::GET, "/a", Some("q=1"), &h, &ctx_with(consumer, auth))
    };
    let anon = key("api.test", None, false, None);
    assert_eq!(anon, key("API.test:8080", None, false, None), "host case and port do not matter");
    assert_ne!(anon, key("api.test", Some("alice"), true, None));
    assert_ne!(
        key("api.test", Some("alice"), true, None),
        key("api.test", Some("bob"), true, None)
    );
    assert_ne!(anon, key("api.test", None, true, None), "authenticated without a consumer");
    assert_ne!(key("api.test", None, false, Some("en")), key("api.test", None, false, Some("fr")));
    assert_ne!(anon, key("api.test", None, false, Some("")), "absent differs from empty");
    let mut other = plugin();
    other.id = "default/other".into();
    let h = HeaderMap::new();
    let ctx = ctx_with(None, false);
    assert_ne!(anon, CacheKey::new(&other, "api.test", &Method::GET, "/a", Some("q=1"), &h, &ctx));
    assert_ne!(anon, CacheKey::new(&p, "api.test", &Method::GET, "/a", Some("q=2"), &h, &ctx));
    assert_ne!(anon.digest(), key("api.test", Some("alice"), true, None).digest());
}

fn entry(pairs: &[(&'static str, &str)], fresh: u64, stale: u64) -> Entry {
    let freshness = Freshness {
        fresh_for: Duration::from_secs(fresh),
        stale_for: Duration::from_secs(stale),
        initial_age: 5,
    };
    Entry::new(
        StatusCode::OK,
        headers(pairs),
        Bytes::from_static(b"hello"),
        SystemTime::now(),
        freshness,
    )
}

#[test]
fn answers_from_an_entry_carry_age_and_honour_validators() {
    let e = entry(
        &[("etag", "W/\"v1\""), ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"), ("age", "99")],
        60,
        0,
    );
    let now = e.stored + Duration::from_secs(3);
    let full = e.respond(&Method::GET, &HeaderMap::new(), now);
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["age"], "8", "initial age 5 + 3 s in the store");
    assert_eq!(full.headers()["content-length"], "5");
    let inm = e.respond(&Method::GET, &headers(&[("if-none-match", "\"x\", \"v1\"")]), now);
    assert_eq!(inm.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(inm.headers()["etag"], "W/\"v1\"");
    assert!(!inm.headers().contains_key("content-length"));
    let star = e.respond(&Method::GET, &headers(&[("if-none-match", "*")]), now);
    assert_eq!(star.status(), StatusCode::NOT_MODIFIED);
    let miss = e.respond(&Method::GET, &headers(&[("if-none-match", "\"v2\"")]), now);
    assert_eq!(miss.status(), StatusCode::OK);
    let ims =
        |d: &str| e.respond(&Method::GET, &headers(&[("if-modified-since", d)]), now).status();
    assert_eq!(ims("Wed, 21 Oct 2015 07:28:00 GMT"), StatusCode::NOT_MODIFIED);
    assert_eq!(ims("Tue, 20 Oct 2015 07:28:00 GMT"), StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let both = headers(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ]);
    assert_eq!(e.respond(&Method::GET, &both, now).status(), StatusCode::OK);
    assert!(http_body::Body::is_end_stream(
        e.respond(&Method::HEAD, &HeaderMap::new(), now).body()
    ));
}

#[test]
fn entries_age_from_fresh_to_stale_to_expired() {
    let e = entry(&[], 10, 20);
    assert_eq!(e.age_at(e.stored + Duration::from_secs(9)), Age::Fresh);
    assert_eq!(e.age_at(e.stored + Duration::from_secs(10)), Age::Stale);
    assert_eq!(e.age_at(e.stored + Duration::from_secs(29)), Age::Stale);
    assert_eq!(e.age_at(e.stored + Duration::from_secs(30)), Age::Expired);
}

#[test]
fn the_redis_layout_round_trips_and_rejects_garbage() {
    let e = entry(&[("content-type", "text/plain"), ("x-multi", "a"), ("x-multi", "b")], 60, 30);
    let back = Entry::decode(e.encode()).unwrap();
    assert_eq!(back.status, e.status);
    assert_eq!(back.headers, e.headers);
    assert_eq!(back.body, e.body);
    assert_eq!(back.freshness, e.freshness);
    let millis = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(millis(back.stored), millis(e.stored));
    assert!(Entry::decode(Bytes::from_static(b"\x02garbage")).is_none());
    let mut cut = e.encode();
    cut.truncate(40);
    assert!(Entry::decode(cut).is_none());
}

#[test]
fn the_memory_store_is_bounded_in_bytes_and_purges_by_host_and_path() {
    let p = plugin();
    let ctx = ctx_with(None, false);
    let h = HeaderMap::new();
    let store = MemoryStore::new(64 * 1024);
    let big = |n: usize| {
        let mut e = entry(&[], 60, 0);
        e.body = Bytes::from(vec![b'x'; n]);
        Arc::new(e)
    };
    for i in 0..100 {
        let key = CacheKey::new(&p, "a.test", &Method::GET, &format!("/p{i}"), None, &h, &ctx);
        store.insert(key, big(4096));
    }
    assert!(store.bytes() <= 64 * 1024, "bounded: {}", store.bytes());
    assert!(store.bytes() > 0);

    let store = MemoryStore::new(1 << 20);
    for (host, path, query) in
        [("a.test", "/x", "1"), ("a.test", "/x", "2"), ("a.test", "/y", "1"), ("b.test", "/x", "1")]
    {
        store.insert(CacheKey::new(&p, host, &Method::GET, path, Some(query), &h, &ctx), big(10));
    }
    assert_eq!(store.purge(Some("a.test"), Some("/x")), 2);
    assert_eq!(store.purge(Some("a.test"), Some("/x")), 0);
    assert_eq!(store.purge(None, None), 2);
}

#[tokio::test]
async fn one_leader_per_key_and_waiters_learn_its_outcome() {
    let runtime = Arc::new(CacheRuntime::new(1 << 20, None));
    let p = plugin();
    let key = CacheKey::new(
        &p,
        "a.test",
        &Method::GET,
        "/",
        None,
        &HeaderMap::new(),
        &ctx_with(None, false),
    );
    let lead = runtime.lead(&key).unwrap();
    let mut waiter = runtime.lead(&key).unwrap_err();
    assert_eq!(*waiter.borrow(), Outcome::Pending);
    drop(lead); // a leader that goes away (client gone, error) fails its waiters over
    assert_eq!(*waiter.wait_for(|o| *o != Outcome::Pending).await.unwrap(), Outcome::Failed);
    let next = runtime.lead(&key).expect("the key is free again");
    let mut waiter = runtime.lead(&key).unwrap_err();
    runtime.insert(&p, key.clone(), entry(&[], 60, 0), Some(next));
    assert_eq!(*waiter.wait_for(|o| *o != Outcome::Pending).await.unwrap(), Outcome::Stored);
    assert!(runtime.memory.get(&key).is_some());
}

#[tokio::test]
async fn a_stored_entry_owns_its_bytes_not_the_connection_buffer() {
    // One buffer standing for a connection's read buffer: the body chunk and the header
    // value are slices of it, as hyper makes them.
    let buffer = Bytes::from(vec![b'a'; 16 * 1024]);
    let chunk = buffer.slice(0..100);
    let value = HeaderValue::from_maybe_shared(buffer.slice(200..210)).unwrap();
    let mut response_headers = HeaderMap::new();
    response_headers.insert("etag", value);
    let runtime = Arc::new(CacheRuntime::new(1 << 20, None));
    let p = Arc::new(plugin());
    let key = CacheKey::new(
        &p,
        "a.test",
        &Method::GET,
        "/",
        None,
        &HeaderMap::new(),
        &ctx_with(None, false),
    );
    let freshness =
        Freshness { fresh_for: Duration::from_secs(60), stale_for: Duration::ZERO, initial_age: 0 };
    let store = super::body::Store::new(
        Arc::clone(&runtime),
        Arc::clone(&p),
        key.clone(),
        None,
        StatusCode::OK,
        response_headers,
        freshness,
    );
    store.collect(http_body_util::Full::new(chunk)).await;
    let stored = runtime.memory.get(&key).expect("stored");
    let inside = |ptr: *const u8| {
        let start = buffer.as_ptr() as usize;
        (start..start + buffer.len()).contains(&(ptr as usize))
    };
    assert_eq!(stored.body.len(), 100);
    assert!(!inside(stored.body.as_ptr()), "the body pins the read buffer");
    let etag = stored.headers.get("etag").unwrap();
    assert_eq!(etag.as_bytes(), b"aaaaaaaaaa");
    assert!(!inside(etag.as_bytes().as_ptr()), "a header pins the read buffer");
}
