//! Watch responses: a chunked body of newline-delimited `{"type":..,"object":..}` events fed
//! by the store, with periodic bookmarks, `timeoutSeconds`, and an end when the watch is
//! broken, the client goes away or the server stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::kinds::Kind;
use super::server::{Body, Shared, stopped};
use super::store::{WatchFilter, WatchItem, WatchStart};

/// How a watch renders its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Whole objects.
    Full,
    /// `PartialObjectMetadata` (the client asked for `as=PartialObjectMetadata`).
    Metadata,
}

/// An object as `PartialObjectMetadata`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn render(item: &WatchItem, kind: &Kind, how: Render) -> Bytes {
    let event = match item {
        WatchItem::Event(ty, obj) => {
            let obj = match how {
                Render::Full => obj.clone(),
                Render::Metadata => partial_metadata(obj),
            };
            json!({"type": ty, "object": obj})
        }
        WatchItem::Bookmark(rv, initial_end) => {
            let mut metadata =
                json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
            if *initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let (api_version, kind_name) = match how {
                Render::Full => (kind.api_version(), kind.kind.to_owned()),
                Render::Metadata => {
                    ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadata".to_owned())
                }
            };
            json!({"type": "BOOKMARK", "object": {"kind": kind_name, "apiVersion": api_version, "metadata": metadata}})
        }
        WatchItem::Error(status) => json!({"type": "ERROR", "object": status}),
    };
    let mut line = event.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// Opens the watch in the store and returns the streaming body.
pub fn open(
    shared: &Arc<Shared>,
    filter: WatchFilter,
    start: WatchStart,
    bookmarks: bool,
    timeout: Option<Duration>,
    how: Render,
) -> Body {
    let kind = filter.kind;
    let (id, mut events) = shared.store.lock().watch(filter, start);
    let (out, out_rx) = mpsc::channel::<Bytes>(64);
    let shared = Arc::clone(shared);
    let mut shutdown = shared.shutdown.subscribe();
    let period = shared.bookmark_interval();
    tokio::spawn(async move {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tokio::select! {
                item = events.recv() => {
                    let Some(item) = item else { break };
                    let last = matches!(item, WatchItem::Error(_));
                    if out.send(render(&item, kind, how)).await.is_err() || last {
                        break;
                    }
                }
                _ = ticks.tick(), if bookmarks => {
                    if !shared.store.lock().bookmark(id) {
                        // Broken: drain what was queued before, then end.
                        continue;
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = out.closed() => break,
                _ = stopped(&mut shutdown) => break,
            }
        }
        shared.store.lock().unwatch(id);
    });
    let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}
