//! An in-memory Kubernetes API server double that `kube::Client` talks to over real HTTP —
//! the one test double the project allows, because no real API server runs on the build
//! machines. It serves the standard verbs the way the real server does, for a fixed table
//! of resources ([`kinds::KINDS`]): weir's Routes, Plugins and Consumers, Services, Secrets,
//! ConfigMaps, Namespaces, core and `events.k8s.io` Events, EndpointSlices and Leases.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube::api::{Api, PostParams};
//! use k8s_openapi::api::coordination::v1::Lease;
//! let server = weir_e2e::apiserver::ApiServer::start().await?;
//! let leases: Api<Lease> = Api::default_namespaced(server.client());
//! let mut lease = Lease::default();
//! lease.metadata.name = Some("weir-leader".into());
//! leases.create(&PostParams::default(), &lease).await?;
//! assert_eq!(server.requests().last().map(|r| r.verb.as_str()), Some("create"));
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! # What is faithful
//! - Paths: `/api/v1/...`, `/apis/G/V/...`, namespaced (`/namespaces/NS/RES[/NAME[/status]]`),
//!   cluster-wide list and watch of namespaced resources, `/version`, and discovery
//!   (`/api`, `/apis`, `/apis/G`, `/api/v1`, `/apis/G/V`). Unknown paths: 404 `Status`.
//! - One global resourceVersion counter bumped by every write; `uid`, `creationTimestamp`,
//!   `namespace` from the path; `generation` 1 on create, +1 when anything outside `metadata`
//!   and `status` changes (and when a deletion with finalizers starts). A write that changes
//!   nothing bumps nothing and emits no event.
//! - Status subresource (kinds with `status: true`): `.../status` writes change only
//!   `status`; main-resource writes (create, update, patch, apply) never change it.
//! - create (409 `AlreadyExists`, `generateName`, RFC 1123 names, 500 when the object
//!   carries a resourceVersion), update (409 `Conflict` on a stale
//!   `metadata.resourceVersion` or another `uid`; none = unconditional), patch with merge, strategic merge,
//!   JSON patch and server-side apply, delete (preconditions, finalizers and
//!   `deletionTimestamp`) and deletecollection; `dryRun=All` stores nothing.
//! - list: `XList` at the current resourceVersion, label and field selectors.
//! - watch: newline-delimited events; resourceVersion unset or `"0"` starts with synthetic
//!   `ADDED` events for current objects; a resourceVersion resumes after it, or gets an
//!   `ERROR` event with a 410 `Expired` `Status` when it is older than the retained history;
//!   selector-filtered watches see `ADDED` when an object starts matching and `DELETED` (its
//!   previous content at the new resourceVersion) when it stops, like the watch cache;
//!   `BOOKMARK`s when `allowWatchBookmarks=true` (every second by default, see
//!   [`ApiServer::set_bookmark_interval`]); `sendInitialEvents=true` ends the initial events
//!   with the `k8s.io/initial-events-end` bookmark; `timeoutSeconds` is honoured.
//! - `Accept: ...;as=PartialObjectMetadata` (kube's metadata watchers) gets
//!   `PartialObjectMetadata[List]`.
//! - Errors are `Status` objects with the real reasons and codes.
//!
//! # Approximations (on purpose; test against a real cluster for these)
//! - No schema validation, pruning of unknown fields, defaulting, CEL rules, admission,
//!   RBAC or authentication (a real server drops fields a CRD schema does not declare); any
//!   credentials are accepted. Namespaces need not exist unless
//!   [`ApiServer::require_namespaces`] is on, and deleting a Namespace does not delete its
//!   contents.
//! - Strategic merge patch is served as a JSON merge patch (no `patchStrategy` directives:
//!   lists are replaced).
//! - Server-side apply tracks ownership per leaf field and treats every list as atomic —
//!   right for CRD lists without `x-kubernetes-list-type` (all of weir's), while a real server
//!   merges built-in map lists such as Service `ports` by key; conflicts are reported when another
//!   manager owns a field the apply would change to a different value (409 naming the
//!   conflicting fields), `force=true` takes them over; fields the manager applied
//!   before and omits now are removed unless another manager owns them; `fieldsV1` has no
//!   `.` markers; managedFields sent by clients are ignored.
//! - Non-apply writes without `fieldManager` are recorded under the user agent's product
//!   name, or `unknown` (kube sends no user agent).
//! - `generation` is kept for every kind (the real server sets it only for some built-ins).
//! - list ignores `limit`/`continue` (everything in one page) and serves every
//!   `resourceVersion`/`resourceVersionMatch` from the latest state.
//! - DELETE always answers with the object, never a `Status` (kube accepts both).
//! - History is capped at 10 000 events (older resourceVersions then expire, like a
//!   compaction); [`ApiServer::expire_history`] moves the counter on so that every
//!   resourceVersion handed out before is expired.
//! - Deprecated `/watch/` paths, `as=Table`, protobuf, CBOR and HTTP/2 are not served.

pub mod error;
mod fixtures;
mod handlers;
pub mod kinds;
mod managed;
mod meta;
pub mod paths;
mod selectors;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;

pub use self::fixtures::{FixtureError, gateway_api_crds};
use self::server::Shared;

/// One request the double served, for assertions on what a client did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// the lower-cased HTTP method for paths that are not resources.
    pub verb: String,
    /// API group, `""` = core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name (`""` for discovery and unknown paths).
    pub resource: String,
    /// `status` for status subresource requests.
    pub subresource: Option<String>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `content-type` of a patch (`application/apply-patch+yaml`, ...).
    pub patch_type: Option<String>,
    /// Response status code.
    pub status: u16,
    /// The URL path, without query.
    pub path: String,
    /// The `resourceVersion` query parameter (list, watch, get).
    pub resource_version: Option<String>,
    /// The `labelSelector` query parameter.
    pub label_selector: Option<String>,
    /// The `fieldSelector` query parameter.
    pub field_selector: Option<String>,
}

/// A running API server double on `127.0.0.1`. Stop it with [`ApiServer::stop`]; dropping
/// it stops it too.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    client: kube::Client,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Namespaces that exist from the start, like on a fresh cluster.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

impl ApiServer {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start() -> anyhow::Result<ApiServer> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        seed_namespaces(&shared);
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        let client = kube::Client::try_from(config_for(addr)?).context("building kube::Client")?;
        Ok(ApiServer { addr, shared, client, task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `kube::Config` for this server: default namespace `default`, and kube's retries
    /// of 503 responses turned off so that [`ApiServer::set_available`] is seen at once.
    pub fn config(&self) -> kube::Config {
        // The address is a valid authority, so this cannot fail; fall back to the default.
        config_for(self.addr).unwrap_or_else(|_| kube::Config::new(http::Uri::default()))
    }

    /// A client for this server (see [`ApiServer::config`]).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig pointing at [`ApiServer::url`], namespace `default`, for the `weir`
    /// binary (`--kubeconfig` or `KUBECONFIG`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: weir-double\n    cluster:\n      server: {}\n\
             contexts:\n  - name: weir-double\n    context:\n      cluster: weir-double\n      user: weir-double\n      namespace: default\n\
             current-context: weir-double\nusers:\n  - name: weir-double\n    user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    /// Every request served so far, in order of completion of the response head.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.log().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.log().clear();
    }

    /// Ends every open watch stream now; clients resume from their last resourceVersion.
    pub fn break_watches(&self) {
        self.shared.store.lock().break_watches();
    }

    /// Forgets the event history: a watch resuming from any resourceVersion handed out so
    /// far gets a 410 `Expired` `ERROR` event (open watches are not ended; combine with
    /// [`ApiServer::break_watches`] to force clients to re-list).
    pub fn expire_history(&self) {
        self.shared.store.lock().expire_history();
    }

    /// Down: every request is answered 503 `ServiceUnavailable` and open watches are ended.
    /// Up: served again.
    pub fn set_available(&self, up: bool) {
        self.shared.available.store(up, Ordering::SeqCst);
        if !up {
            self.break_watches();
        }
    }

    /// How often watches that allow bookmarks get one (default 1 s); applies to watches
    /// opened afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.set_bookmark_interval(every);
    }

    /// Creates every object of a (multi-document) YAML text directly in the store, as
    /// `kubectl create -f` would (namespace `default` when unset); watchers see `ADDED`
    /// events, and nothing is added to [`ApiServer::requests`]. Returns `namespace/name`
    /// of each object.
    pub fn create_yaml(&self, yaml: &str) -> Result<Vec<String>, FixtureError> {
        fixtures::create_all(&self.shared, yaml)
    }

    /// [`ApiServer::create_yaml`] for objects already parsed: faster for bulk fixtures
    /// (e.g. 100k Routes).
    pub fn create_objects(
        &self,
        objects: Vec<serde_json::Value>,
    ) -> Result<Vec<String>, FixtureError> {
        fixtures::create_values(&self.shared, objects)
    }

    /// With `true`, creating a namespaced object in a Namespace that does not exist is
    /// answered 404, like the real server's NamespaceLifecycle admission. Off by default so
    /// tests need not create Namespaces (`default`, `kube-system` and `kube-public` exist).
    pub fn require_namespaces(&self, on: bool) {
        self.shared.set_require_namespaces(on);
    }

    /// The number of watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.shared.store.lock().open_watches()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv()
    }

    /// Stops serving and closes every connection (open watches end).
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.break_watches();
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn config_for(addr: SocketAddr) -> anyhow::Result<kube::Config> {
    let uri: http::Uri = format!("http://{addr}").parse().context("cluster URL")?;
    let mut config = kube::Config::new(uri);
    config.default_retry = false;
    Ok(config)
}

fn seed_namespaces(shared: &Shared) {
    let mut state = shared.store.lock();
    for name in INITIAL_NAMESPACES {
        let Some(kind) = kinds::Kind::find("", "v1", "namespaces") else { return };
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": meta::now(), "generation": 1},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        state.put(kind, store::key(kind, "", name), obj, None);
    }
}
