//! Watches through kube: event order, resume after `break_watches`, 410 after
//! `expire_history`, selector transitions, bookmarks, and kube-runtime's watcher
//! recovering from both disruptions.

use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use weir_crds::Route;
use weir_e2e::apiserver::ApiServer;
use weir_e2e::poll_until;

use crate::common::{next, route, rv_of};

fn event_summary(event: &WatchEvent<Route>) -> (String, String) {
    match event {
        WatchEvent::Added(r) => ("ADDED".into(), r.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(r) => ("MODIFIED".into(), r.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Deleted(r) => ("DELETED".into(), r.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR".into(), e.code.to_string()),
    }
}

/// The next event that is not a bookmark.
async fn next_change<S>(stream: &mut S) -> (String, String)
where
    S: futures_util::Stream<Item = Result<WatchEvent<Route>, kube::Error>> + Unpin,
{
    for _ in 0..100 {
        let event = next(stream).await.expect("stream ended").expect("watch error");
        if !matches!(event, WatchEvent::Bookmark(_)) {
            return event_summary(&event);
        }
    }
    panic!("only bookmarks")
}

#[tokio::test]
async fn watch_sees_changes_in_order_and_resumes_after_a_break() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    routes.create(&pp, &route("before", "a.example.com")).await.unwrap();

    // resourceVersion "0": synthetic ADDED for what exists, then changes
    let mut from_zero = routes.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(next_change(&mut from_zero).await, ("ADDED".into(), "before".into()));

    let list_rv =
        routes.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut stream = routes.watch(&WatchParams::default(), &list_rv).await.unwrap().boxed();
    routes.create(&pp, &route("r", "a.example.com")).await.unwrap();
    routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hosts": ["b.example.com"]}})),
        )
        .await
        .unwrap();
    let deleted = routes.delete("r", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(next_change(&mut stream).await, ("ADDED".into(), "r".into()));
    assert_eq!(next_change(&mut stream).await, ("MODIFIED".into(), "r".into()));
    assert_eq!(next_change(&mut stream).await, ("DELETED".into(), "r".into()));
    assert_eq!(next_change(&mut from_zero).await, ("ADDED".into(), "r".into()));
    let last_seen = rv_of(&deleted.metadata);

    // break every watch: streams end; resuming from the last RV misses nothing
    server.break_watches();
    assert!(next(&mut stream).await.is_none(), "stream ended by break_watches");
    routes.create(&pp, &route("after", "a.example.com")).await.unwrap();
    let mut resumed =
        routes.watch(&WatchParams::default(), &last_seen.to_string()).await.unwrap().boxed();
    assert_eq!(next_change(&mut resumed).await, ("ADDED".into(), "after".into()));
    let watches = server.requests().into_iter().filter(|r| r.verb == "watch").count();
    assert_eq!(watches, 3);
    server.stop().await;
}

#[tokio::test]
async fn expired_history_answers_410_and_bookmarks_carry_progress() {
    let server = ApiServer::start().await.unwrap();
    server.set_bookmark_interval(Duration::from_millis(50));
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let created =
        routes.create(&PostParams::default(), &route("r", "a.example.com")).await.unwrap();
    let old_rv = rv_of(&created.metadata).to_string();

    // bookmarks arrive on an idle watch, at the current resourceVersion
    let mut idle = routes.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match next(&mut idle).await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, old_rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }

    server.expire_history();
    let mut expired = routes.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match next(&mut expired).await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(next(&mut expired).await.is_none(), "the stream ends after the error");
    // a fresh list's resourceVersion is watchable again
    let fresh =
        routes.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut ok = routes.watch(&WatchParams::default().timeout(1), &fresh).await.unwrap().boxed();
    routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hosts": ["z.example.com"]}})),
        )
        .await
        .unwrap();
    assert_eq!(next_change(&mut ok).await, ("MODIFIED".into(), "r".into()));
    // timeoutSeconds=1 ends the stream
    let mut rest = 0;
    while let Some(item) = next(&mut ok).await {
        item.unwrap();
        rest += 1;
        assert!(rest < 100, "stream did not end");
    }
    server.stop().await;
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut web = route("r", "a.example.com");
    web.metadata.labels = Some([("team".to_owned(), "web".to_owned())].into());
    routes.create(&PostParams::default(), &web).await.unwrap();
    routes.create(&PostParams::default(), &route("other", "a.example.com")).await.unwrap();

    let mut stream =
        routes.watch(&WatchParams::default().labels("team=web"), "").await.unwrap().boxed();
    assert_eq!(next_change(&mut stream).await, ("ADDED".into(), "r".into()));
    let relabel = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    routes.patch("r", &PatchParams::default(), &relabel("db")).await.unwrap();
    routes.patch("r", &PatchParams::default(), &relabel("db2")).await.unwrap();
    routes.patch("other", &PatchParams::default(), &relabel("nope")).await.unwrap();
    routes.patch("r", &PatchParams::default(), &relabel("web")).await.unwrap();
    assert_eq!(next_change(&mut stream).await, ("DELETED".into(), "r".into()));
    assert_eq!(next_change(&mut stream).await, ("ADDED".into(), "r".into()));

    let mut by_name = routes
        .watch(&WatchParams::default().fields("metadata.name=other"), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_change(&mut by_name).await, ("ADDED".into(), "other".into()));
    routes.delete("r", &DeleteParams::default()).await.unwrap();
    routes.delete("other", &DeleteParams::default()).await.unwrap();
    assert_eq!(next_change(&mut by_name).await, ("DELETED".into(), "other".into()));
    assert_eq!(next_change(&mut stream).await, ("DELETED".into(), "r".into()));
    server.stop().await;
}

#[tokio::test]
async fn kube_runtime_watcher_recovers_from_breaks_and_expiry() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let (reader, writer) = reflector::store::<Route>();
    let stream = reflector(writer, watcher(routes.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let _ = item;
        }
    });
    let names = move || {
        let mut n: Vec<String> =
            reader.state().iter().filter_map(|r| r.metadata.name.clone()).collect();
        n.sort();
        n
    };
    let has = |want: &'static [&'static str]| {
        let names = names.clone();
        move || {
            let now = names();
            async move { anyhow::Ok((now == want).then_some(())) }
        }
    };
    let lists = |server: &ApiServer| server.requests().iter().filter(|r| r.verb == "list").count();

    routes.create(&PostParams::default(), &route("a", "a.example.com")).await.unwrap();
    poll_until(Duration::from_secs(10), "a in the store", has(&["a"])).await.unwrap();
    let lists_before = lists(&server);

    // a broken watch resumes from its resourceVersion without re-listing
    server.break_watches();
    routes.create(&PostParams::default(), &route("b", "a.example.com")).await.unwrap();
    poll_until(Duration::from_secs(10), "a, b in the store", has(&["a", "b"])).await.unwrap();
    assert_eq!(lists(&server), lists_before, "no re-list after a plain break");
    let resumed = server.requests().into_iter().rfind(|r| r.verb == "watch").unwrap();
    let resumed_rv: u64 = resumed.resource_version.unwrap().parse().unwrap();
    assert!(resumed_rv > 0, "resumed from a resourceVersion, not from scratch");

    // expired history: the resumed watch gets 410 and the watcher re-lists
    server.expire_history();
    server.break_watches();
    routes.delete("a", &DeleteParams::default()).await.unwrap();
    routes.create(&PostParams::default(), &route("c", "a.example.com")).await.unwrap();
    poll_until(Duration::from_secs(20), "b, c in the store", has(&["b", "c"])).await.unwrap();
    assert!(lists(&server) > lists_before, "re-listed after 410");
    task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_versions_in_watch_order() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    let mut stream = routes.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let routes = routes.clone();
            tokio::spawn(async move {
                routes
                    .create(&PostParams::default(), &route(&format!("r{i}"), "a.example.com"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let (mut last, mut added) = (0, 0);
    for _ in 0..100 {
        if added == 20 {
            break;
        }
        match next(&mut stream).await.unwrap().unwrap() {
            WatchEvent::Added(r) => {
                let rv = rv_of(&r.metadata);
                assert!(rv > last, "resourceVersions increase in watch order");
                (last, added) = (rv, added + 1);
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last, server.resource_version());
    server.stop().await;
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    let server = ApiServer::start().await.unwrap();
    let routes: Api<Route> = Api::default_namespaced(server.client());
    for name in ["a", "b"] {
        routes.create(&PostParams::default(), &route(name, "a.example.com")).await.unwrap();
    }
    let mut stream = routes.watch(&WatchParams::streaming_lists(), "").await.unwrap().boxed();
    assert_eq!(next_change(&mut stream).await, ("ADDED".into(), "a".into()));
    assert_eq!(next_change(&mut stream).await, ("ADDED".into(), "b".into()));
    match next(&mut stream).await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str),
                Some("true")
            );
            assert_eq!(b.metadata.resource_version, server.resource_version().to_string());
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    // kube-runtime's streaming-list watcher fills a store from it
    let (reader, writer) = reflector::store::<Route>();
    let config = watcher::Config::default().streaming_lists();
    let stream = reflector(writer, watcher(routes.clone(), config)).applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    let ready = tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready()).await;
    assert!(ready.is_ok_and(|r| r.is_ok()));
    assert_eq!(reader.state().len(), 2);
    assert!(
        server.requests().iter().all(|r| r.verb != "list"),
        "no list call with streaming lists"
    );
    task.abort();
    server.stop().await;
}
