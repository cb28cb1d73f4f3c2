//! The proxy against real in-process origins: routing, weights, rewrites, headers and the
//! gateway's own 404.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use http::Request;
use weir_dataplane::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_prefix_and_host() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let snap = snapshot(
        1,
        vec![
            route(
                "any",
                &[],
                vec![
                    rule("any", "/", action(&[(0, 1)])),
                    rule("any", "/orders", action(&[(1, 1)])),
                ],
            ),
            route("api", &["api.example.com"], vec![rule("api", "/", action(&[(2, 1)]))]),
            route("wild", &["*.wild.test"], vec![rule("wild", "/w", action(&[(1, 1)]))]),
        ],
        vec![
            Backend::new(key("a"), vec![a.addr]),
            Backend::new(key("b"), vec![b.addr]),
            Backend::new(key("c"), vec![c.addr]),
        ],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    assert_eq!(get(&client, &gw.url("/"), "other.test").await.origin(), "a");
    assert_eq!(get(&client, &gw.url("/orders/1"), "other.test").await.origin(), "b");
    assert_eq!(get(&client, &gw.url("/ordersx"), "other.test").await.origin(), "a");
    assert_eq!(get(&client, &gw.url("/orders"), "api.example.com").await.origin(), "c");
    assert_eq!(get(&client, &gw.url("/x"), "API.example.com:8080").await.origin(), "c");
    assert_eq!(get(&client, &gw.url("/w/1"), "x.wild.test").await.origin(), "b");
    // Wildcard bucket has no rule for `/`: falls back to the any-host Route.
    assert_eq!(get(&client, &gw.url("/"), "x.wild.test").await.origin(), "a");
    let answer = get(&client, &gw.url("/orders/7?x=1"), "other.test").await;
    assert_eq!(answer.json()["path"], "/orders/7?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let snap = snapshot(
        1,
        vec![route("split", &[], vec![rule("split", "/", action(&[(0, 90), (1, 10)]))])],
        vec![Backend::new(key("a"), vec![a.addr]), Backend::new(key("b"), vec![b.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    let mut to_a = 0u32;
    for _ in 0..1000 {
        let answer = get(&client, &gw.url("/"), "h").await;
        assert_eq!(answer.status, 200);
        if answer.origin() == "a" {
            to_a += 1;
        }
    }
    // 90% ± 3% (the schedule is deterministic smooth weighted round robin).
    assert!((870..=930).contains(&to_a), "a got {to_a} of 1000");
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst) as u32, to_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_prefix_and_host() {
    let a = Origin::start("a").await;
    let mut act = action(&[(0, 1)]);
    act.rewrite = Some(Box::new(rewrite("/", Some("orders.internal"))));
    let mut v2 = action(&[(0, 1)]);
    v2.rewrite = Some(Box::new(rewrite("/v2", None)));
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/api", act), rule("r", "/old", v2)])],
        vec![Backend::new(key("a"), vec![a.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    let json = get(&client, &gw.url("/api/v1/orders?q=1"), "shop.test").await.json();
    assert_eq!(json["path"], "/v1/orders?q=1");
    assert_eq!(json["headers"]["host"], "orders.internal");
    assert_eq!(json["headers"]["x-forwarded-host"], "shop.test");
    assert_eq!(get(&client, &gw.url("/api"), "shop.test").await.json()["path"], "/");
    let json = get(&client, &gw.url("/old/x"), "shop.test").await.json();
    assert_eq!(json["path"], "/v2/x");
    assert_eq!(json["headers"]["host"], "shop.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_set_and_hop_by_hop_removed() {
    let a = Origin::start("a").await;
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("a"), vec![a.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    let request = Request::get(gw.url("/h?hop=1"))
        .header("host", "shop.test:8080")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic abc")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-keep", "yes")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.status, 200);
    let headers = &answer.json()["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.test:8080");
    assert_eq!(headers["host"], "shop.test:8080");
    assert_eq!(headers["x-keep"], "yes");
    for gone in ["connection", "x-drop-me", "keep-alive", "proxy-authorization", "te"] {
        assert!(headers.get(gone).is_none(), "{gone} was forwarded: {headers}");
    }
    // Response side: the origin's hop-by-hop headers do not reach the client.
    assert!(answer.headers.get("x-resp-drop").is_none(), "{:?}", answer.headers);
    assert!(answer.headers.get("keep-alive").is_none(), "{:?}", answer.headers);
    assert_eq!(answer.headers["x-resp-keep"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_and_traceparent_reach_the_upstream() {
    let a = Origin::start("a").await;
    let snap = snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("a"), vec![a.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    // Minted when absent.
    let answer = get(&client, &gw.url("/t"), "shop.test").await;
    let headers = &answer.json()["headers"];
    assert!(uuid_like(headers["x-request-id"].as_str().unwrap()), "{headers}");
    let tp = headers["traceparent"].as_str().unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
    // Kept when valid.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get(gw.url("/t"))
        .header("host", "shop.test")
        .header("x-request-id", "req-7")
        .header("traceparent", incoming)
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    let headers = &answer.json()["headers"];
    assert_eq!(headers["x-request-id"], "req-7");
    assert_eq!(headers["traceparent"], incoming);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_a_json_404() {
    let a = Origin::start("a").await;
    let snap = snapshot(
        1,
        vec![route("r", &["only.test"], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("a"), vec![a.addr])],
    );
    let gw = Gateway::start(snap).await;
    let client = client();
    let answer = get(&client, &gw.url("/x"), "other.test").await;
    assert_gateway_error(&answer, 404);
    let id = answer.json()["requestId"].as_str().unwrap().to_owned();
    assert!(uuid_like(&id), "{id}");

    let request = Request::get(gw.url("/x"))
        .header("host", "other.test")
        .header("x-request-id", "req-42")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert_gateway_error(&answer, 404);
    assert_eq!(answer.json()["requestId"], "req-42");

    // An invalid incoming id is replaced.
    let request = Request::get(gw.url("/x"))
        .header("host", "other.test")
        .header("x-request-id", "has space")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert!(uuid_like(answer.json()["requestId"].as_str().unwrap()));
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
