//! The status writer: while this replica holds the lease, applies every weir object's
//! status (and the whole status document of the Gateway API and Ingress objects weir owns) with server-side apply on the status subresource (field manager `weir`, forced),
//! only when it differs from what the object carries, and publishes Events when the
//! `Accepted` condition changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use imbl::ordmap::DiffItem;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use tokio::sync::watch;
use weir_crds::RouteStatus;

use crate::index::{Kind, ObjectRef, StatusWrite};
use crate::kube::convert::{api_resource, api_version};
use crate::kube::events::Events;
use crate::kube::status::{accepted, document_to_write, to_write};
use crate::publish::{Shared, rfc3339};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "weir";
/// Status writes in flight at once.
pub const CONCURRENCY: usize = 8;
/// Delay before failed writes are retried.
pub const RETRY: Duration = Duration::from_secs(2);

/// What the writer works from: the statuses of the live compile, and the watched objects.
#[derive(Debug, Default)]
pub struct WriterInput {
    /// Statuses computed by `compile()` for the live snapshot.
    pub statuses: crate::compile::Statuses,
    /// Every watched object whose status weir writes, with what the API server holds.
    pub watched: crate::kube::state::WatchedObjects,
}

/// The writer's memory: what it last wrote, per object (and uid).
pub struct Writer {
    client: Client,
    events: Events,
    shared: Arc<Shared>,
    written: HashMap<(Kind, ObjectRef), (Option<String>, Written)>,
    /// The input of the last round whose writes all succeeded (this term): the next round
    /// looks only at the objects whose status or watched state differ from it (a diff of
    /// persistent maps), so a round costs O(change), not O(objects), on the async workers.
    seen: Option<(crate::compile::Statuses, crate::kube::state::WatchedObjects)>,
}

/// A status this replica wrote.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    /// A weir kind's status.
    Weir(RouteStatus),
    /// A front-end kind's whole status document.
    Document(serde_json::Value),
}

impl Written {
    fn weir(&self) -> Option<&RouteStatus> {
        match self {
            Written::Weir(s) => Some(s),
            Written::Document(_) => None,
        }
    }

    fn document(&self) -> Option<&serde_json::Value> {
        match self {
            Written::Document(d) => Some(d),
            Written::Weir(_) => None,
        }
    }
}

impl Writer {
    /// A writer using `client`; `identity` names this replica in Events.
    pub fn new(client: Client, shared: Arc<Shared>, identity: &str) -> Self {
        let events = Events::new(client.clone(), identity);
        Writer { client, events, shared, written: HashMap::new(), seen: None }
    }

    /// Writes every status that differs. Returns false when some write failed.
    pub async fn write_all(&mut self, input: &WriterInput) -> bool {
        let ids: Vec<(Kind, ObjectRef)> = match self.seen.take() {
            Some((statuses, watched)) => {
                let mut ids = std::collections::BTreeSet::new();
                for item in statuses.diff(&input.statuses) {
                    let (DiffItem::Add(id, _)
                    | DiffItem::Update { new: (id, _), .. }
                    | DiffItem::Remove(id, _)) = item;
                    ids.insert(id.clone());
                }
                for item in watched.diff(&input.watched) {
                    let (DiffItem::Add(id, _)
                    | DiffItem::Update { new: (id, _), .. }
                    | DiffItem::Remove(id, _)) = item;
                    ids.insert(id.clone());
                }
                ids.into_iter().collect()
            }
            None => {
                self.written.retain(|k, (uid, _)| {
                    input.watched.get(k).is_some_and(|w| w.existing.uid == *uid)
                });
                input.watched.keys().cloned().collect()
            }
        };
        let now = rfc3339(SystemTime::now());
        let mut jobs = Vec::new();
        for id in ids {
            let Some(watched) = input.watched.get(&id) else {
                self.written.remove(&id);
                continue;
            };
            if self.written.get(&id).is_some_and(|(uid, _)| *uid != watched.existing.uid) {
                self.written.remove(&id);
            }
            let kind = &id.0;
            let last = self.written.get(&id).map(|(_, s)| s);
            let compiled = input.statuses.get(&id).map(|s| &**s);
            let (status, previous) = match kind.info().status {
                StatusWrite::Never => continue,
                StatusWrite::Weir => {
                    let last = last.and_then(Written::weir);
                    let Some(status) = to_write(*kind, compiled, watched, last, &now) else {
                        continue;
                    };
                    let before = last.unwrap_or(&watched.existing.status);
                    (Written::Weir(status), accepted(before).cloned())
                }
                StatusWrite::Document => {
                    let last = last.and_then(Written::document);
                    let Some(document) = document_to_write(compiled, watched, last, &now) else {
                        continue;
                    };
                    (Written::Document(document), None)
                }
            };
            jobs.push((id, watched.clone(), status, previous));
        }
        let this = &*self;
        let results: Vec<_> = futures_util::stream::iter(jobs)
            .map(|(id, watched, status, previous)| async move {
                let result = this.patch(id.0, &id.1, &status).await;
                (id, watched, status, previous, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut ok = true;
        for ((kind, key), watched, status, previous, result) in results {
            match result {
                Ok(()) => {
                    self.shared.metrics.status_write("written");
                    if let Some(c) = status.weir().and_then(accepted)
                        && previous.as_ref().is_none_or(|p| {
                            (&p.status, &p.reason, &p.message) != (&c.status, &c.reason, &c.message)
                        })
                    {
                        let c = c.clone();
                        self.events.accepted(kind, &key, watched.existing.uid.as_deref(), &c).await;
                    }
                    self.written.insert((kind, key), (watched.existing.uid.clone(), status));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    self.shared.metrics.status_write("error");
                    tracing::warn!(kind = kind.as_str(), object = %key, "writing status: {e}");
                    ok = false;
                }
            }
        }
        if ok {
            self.seen = Some((input.statuses.clone(), input.watched.clone()));
        }
        ok
    }

    /// `Some(uid)` of the BackendPolicy an upstream event is about (as last watched) while
    /// this replica leads; `None` when it does not lead.
    fn event_target(
        &self,
        leader: &watch::Receiver<bool>,
        input: &watch::Receiver<Arc<WriterInput>>,
        event: &weir_dataplane::upstream::registry::UpstreamEvent,
    ) -> Option<Option<String>> {
        if !*leader.borrow() {
            return None;
        }
        let key = crate::upstream_events::describe(event).policy;
        let input = input.borrow();
        let watched = key.and_then(|k| input.watched.get(&(Kind::BackendPolicy, k)));
        Some(watched.and_then(|w| w.existing.uid.clone()))
    }

    async fn patch(
        &self,
        kind: Kind,
        key: &ObjectRef,
        status: &Written,
    ) -> Result<(), kube::Error> {
        let resource = api_resource(kind);
        let api = if kind.namespaced() {
            Api::<DynamicObject>::namespaced_with(self.client.clone(), &key.namespace, &resource)
        } else {
            Api::<DynamicObject>::all_with(self.client.clone(), &resource)
        };
        let status = match status {
            Written::Weir(s) => serde_json::to_value(s).map_err(kube::Error::SerdeError)?,
            Written::Document(d) => d.clone(),
        };
        let body = serde_json::json!({
            "apiVersion": api_version(kind),
            "kind": kind.as_str(),
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&key.name, &params, &Patch::Apply(&body)).await.map(|_| ())
    }

    /// Runs until `stop`: writes whenever the input changes while `leader` is true, and
    /// retries failed writes after [`RETRY`]. Upstream events (a circuit opened) are logged,
    /// and, while `leader`, published as Events on their BackendPolicy.
    pub async fn run(
        mut self,
        mut input: watch::Receiver<Arc<WriterInput>>,
        mut leader: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut retry = false;
        let mut upstream = Some(self.shared.dataplane.registry.subscribe());
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                event = async {
                    match upstream.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => Some(event),
                changed = input.changed() => if changed.is_err() { return } else { None },
                changed = leader.changed() => if changed.is_err() { return } else { None },
                _ = tokio::time::sleep(RETRY), if retry => None,
            };
            match event {
                None => {}
                Some(Ok(event)) => {
                    crate::upstream_events::log(&event);
                    if let Some(uid) = self.event_target(&leader, &input, &event) {
                        self.events.upstream(&event, uid.as_deref()).await;
                    }
                    continue;
                }
                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(missed = n, "upstream events dropped (fell behind)");
                    continue;
                }
                Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    upstream = None;
                    continue;
                }
            }
            if !*leader.borrow_and_update() {
                // A new term starts from what the objects carry.
                self.written.clear();
                self.seen = None;
                retry = false;
                continue;
            }
            let current = Arc::clone(&input.borrow_and_update());
            retry = !self.write_all(&current).await;
        }
    }
}
