//! Kubernetes mode: watchers fill the index, a debounced loop compiles and publishes it, and
//! the lease holder writes statuses and Events back.
//!
//! ```text
//! watchers (DynamicObject, per kind × namespace scope; per referenced Secret)
//!   └─ Change ─> State ──debounce──> Index ──Publisher::apply──> data plane
//!                                        └──> WriterInput ──(leader only)──> status subresource, Events
//! Elector (Lease) ──leader──┘
//! ```
//! Every replica watches and serves; only the Lease holder writes. The first snapshot is
//! published (and `/readyz` turns ready) only once every watch completed its first list
//! (a referenced Secret's watch may hold it back for at most [`SECRET_GRACE`]).
//! Losing the API server stops nothing: the last snapshot keeps serving while the watchers
//! back off and resume.

pub mod convert;
pub mod events;
pub mod lease;
pub mod rbac;
pub mod state;
pub mod status;
pub mod watch;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::Api;
use tokio::sync::{mpsc, watch as channel};
use tokio::time::Instant;

use crate::index::ObjectRef;
use crate::kube::lease::{Elector, LeaseConfig};
use crate::kube::state::{State, referenced_secrets};
use crate::kube::watch::Watchers;

use crate::kube::writer::{Writer, WriterInput};
use crate::load::LoadError;
use crate::publish::{Publisher, Shared};

/// Quiet time after the last change before compiling, once a batch is under way. A change
/// that arrives when the loop has been idle for at least this long is compiled at once
/// (leading edge): a lone `kubectl apply` pays no debounce; the changes that arrive while
/// it compiles form the next, debounced batch.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// Longest a stream of changes can delay a compile.
pub const MAX_DELAY: Duration = Duration::from_millis(100);
/// How long a newly started Secret watch may hold back publishing before the index is
/// published without it (every other watch must complete its first list).
pub const SECRET_GRACE: Duration = Duration::from_secs(5);

/// How Kubernetes mode runs.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The controller's namespace: global Plugins, and the Lease.
    pub namespace: String,
    /// Namespaces to watch; empty = all.
    pub watch_namespaces: Vec<String>,
    /// Leader election.
    pub lease: LeaseConfig,
    /// `--default-certificate`: the Secret served for unknown or absent SNI.
    pub default_certificate: Option<ObjectRef>,
    /// `--publish-service`: weir's own Service, whose addresses Gateways and Ingresses
    /// report.
    pub publish_service: Option<ObjectRef>,
}

impl KubeOptions {
    /// Options with the default lease and this replica's default identity. Blank and
    /// repeated namespaces are dropped (an empty list means all namespaces).
    pub fn new(namespace: impl Into<String>, watch_namespaces: Vec<String>) -> Self {
        let mut namespaces: Vec<String> = Vec::new();
        for ns in watch_namespaces.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_owned());
            }
        }
        KubeOptions {
            namespace: namespace.into(),
            watch_namespaces: namespaces,
            lease: LeaseConfig::new(lease::default_identity()),
            default_certificate: None,
            publish_service: None,
        }
    }
}

/// Errors of Kubernetes mode's setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No configuration to reach a cluster.
    #[error("no Kubernetes configuration: {0}")]
    Config(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    Unreachable {
        /// The cluster URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A stable reason, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "Config",
            Error::Unreachable { .. } => "Unreachable",
        }
    }
}

/// A client from `--kubeconfig`, else the in-cluster configuration or `KUBECONFIG`, checked
/// by asking the API server for its version (bounded by `timeout`).
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "{e} (not in a cluster and no KUBECONFIG; pass --config-dir for standalone mode \
                 or --kubeconfig PATH)"
            ))
        })?,
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(source)) => Err(Error::Unreachable { url, source }),
        Err(_) => Err(Error::Unreachable {
            url,
            source: kube::Error::Service(format!("no answer within {timeout:?}").into()),
        }),
    }
}

/// Runs Kubernetes mode until `stop` turns true: watchers, publishing, leader election and
/// the status writer. Returns once the lease is released. Everything runs inside this
/// future: dropping it stops it all at once (without releasing the lease, like a crash).
pub async fn run(
    client: Client,
    options: KubeOptions,
    shared: Arc<Shared>,
    stop: channel::Receiver<bool>,
) {
    let (leader_tx, leader_rx) = channel::channel(false);
    let (input_tx, input_rx) = channel::channel(Arc::new(WriterInput::default()));
    shared.set_leader(false);
    let leases = Api::namespaced(client.clone(), &options.namespace);
    let elector = Elector::new(leases, options.lease.clone()).run(leader_tx, stop.clone());
    let mut leader_view = leader_rx.clone();
    let shared_leader = Arc::clone(&shared);
    let leader = async move {
        while leader_view.changed().await.is_ok() {
            let leader = *leader_view.borrow_and_update();
            tracing::info!(leader, "status writer lease");
            shared_leader.set_leader(leader);
        }
    };
    let writer = Writer::new(client.clone(), Arc::clone(&shared), &options.lease.identity).run(
        input_rx,
        leader_rx,
        stop.clone(),
    );
    let sync = sync(client, &options, Arc::clone(&shared), input_tx, stop);
    tokio::join!(elector, leader, writer, sync);
}

/// The watch → debounce → publish loop.
async fn sync(
    client: Client,
    options: &KubeOptions,
    shared: Arc<Shared>,
    input: channel::Sender<Arc<WriterInput>>,
    mut stop: channel::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut state = State::default();
    {
        let index = state.index_mut();
        index.controller_namespace.clone_from(&options.namespace);
        index.default_certificate.clone_from(&options.default_certificate);
        index.publish_service.clone_from(&options.publish_service);
    }
    let mut watchers = Watchers::new(client.clone(), tx, &options.watch_namespaces);
    watchers.start_all(&mut state, &options.namespace);
    // API discovery: the Gateway API kinds are watched once their CRDs are served.
    let (served_tx, mut served) = channel::channel(None);
    let discovery = tokio::spawn(watch::discover(client, served_tx));
    let _discovery = AbortOnDrop(discovery);
    let mut publisher = Publisher::new(Arc::clone(&shared));
    let mut secrets_started: Option<Instant> = None;
    // (first change, last change) of the pending batch.
    let mut pending: Option<(Instant, Instant)> = None;
    // The pending batch started after an idle period: compile it at once.
    let mut leading = false;
    // When the last round ended.
    let mut last_round: Option<Instant> = None;
    loop {
        let deadline =
            pending.map(
                |(first, last)| {
                    if leading { first } else { (last + DEBOUNCE).min(first + MAX_DELAY) }
                },
            );
        // A served certificate that expires is reported by a compile once it has.
        let recheck = if pending.is_none() { publisher.tls_recheck_in() } else { None };
        // True when the pending batch is due. The compile runs after the `select!`, which
        // must not hold its (non-`Send`) output across the compile's `.await`.
        let due = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = sleep_for(recheck) => {
                if publisher.tls_recheck_due() {
                    let now = Instant::now();
                    pending = Some((now, now));
                }
                false
            }
            changed = served.changed() => {
                if changed.is_err() {
                    tracing::error!("API discovery stopped");
                    return;
                }
                let kinds = served.borrow_and_update().clone().unwrap_or_default();
                watchers.sync_served(&mut state, &kinds);
                let now = Instant::now();
                pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                false
            }
            change = rx.recv() => {
                let Some(change) = change else { return };
                if state.apply(change) {
                    let now = Instant::now();
                    if pending.is_none() {
                        leading = last_round.is_some_and(|t| now >= t + DEBOUNCE);
                    }
                    pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                }
                false
            }
            () = sleep_until(deadline) => true,
        };
        if !due {
            continue;
        }
        pending = None;
        leading = false;
        // The clock certificates are checked against in the compile that follows.
        state.index_mut().now = Some(std::time::SystemTime::now());
        let wanted = referenced_secrets(state.index());
        if watchers.sync_secret_refs(&mut state, &wanted) {
            secrets_started = Some(Instant::now());
        }
        let waiting = served.borrow().is_none()
            || (!state.synced()
                && (!state.synced_except_secret_refs()
                    || secrets_started.is_some_and(|t| t.elapsed() < SECRET_GRACE)));
        if waiting {
            // The new watches' first lists (or discovery) will trigger the next round;
            // poll anyway so the grace period is bounded.
            let now = Instant::now();
            pending = Some((now + Duration::from_millis(200), now + Duration::from_millis(200)));
            continue;
        }
        // The index is kept incrementally (O(change) per event); the compile (a full one
        // is O(objects)) runs on a blocking thread ([`crate::source::round`], shared with
        // standalone mode) and never stalls proxying on the async workers (a single one
        // with `WEIR_WORKER_THREADS=1`). This loop waits for it, so changes queue in the
        // channel meanwhile. `state` and `publisher` are moved there and back.
        let Some((back, back_publisher, _)) =
            crate::source::round(state, publisher, (), true).await
        else {
            return;
        };
        (state, publisher) = (back, back_publisher);
        last_round = Some(Instant::now());
        let watched = state.watched();
        let statuses = shared.live.load().as_ref().map(|c| c.statuses.clone()).unwrap_or_default();
        input.send_replace(Arc::new(WriterInput { statuses, watched }));
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Objects that do not convert, as load errors (shown by `/debug/status` and counted in
/// `weir_config_errors`).
fn invalid_errors(watched: &state::WatchedObjects) -> Vec<LoadError> {
    watched
        .iter()
        .filter_map(|((kind, key), w)| {
            w.invalid.as_ref().map(|i| LoadError {
                file: format!("{} {key}", kind.as_str()),
                document: 0,
                reason: i.message.clone(),
            })
        })
        .collect()
}

impl crate::source::Source for State {
    /// The watch events are applied to the index as they arrive (O(change) each, on the
    /// loop); a round only collects the load errors.
    type Changes = ();

    fn apply(&mut self, (): ()) -> crate::source::Applied {
        crate::source::Applied { changed: true, errors: invalid_errors(&self.watched()) }
    }

    fn index(&self) -> &crate::index::Index {
        State::index(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_repeated_watch_namespaces_are_dropped() {
        let o = KubeOptions::new(
            "weir-system",
            vec![" a".into(), String::new(), "b".into(), "a".into()],
        );
        assert_eq!(o.watch_namespaces, vec!["a", "b"]);
        assert!(KubeOptions::new("x", vec![String::new()]).watch_namespaces.is_empty());
    }
}
