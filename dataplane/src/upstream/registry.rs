//! Runtime state of the upstream layer that outlives snapshots, keyed by backend
//! ([`BackendKey`]: a Service port) and endpoint address.
//!
//! [`UpstreamRegistry::bind`] runs when a snapshot is published: each backend of the new
//! snapshot gets its [`ServiceRuntime`] (reused when the backend was already known), whose
//! endpoint states are reconciled with the new endpoint list — an endpoint that stays keeps
//! its in-flight count, health and ejection; a new one starts healthy (in slow start when the
//! policy has one); one that went is dropped with its health checker. Backends no longer in
//! the snapshot are dropped from the registry (requests still running on an older snapshot
//! keep theirs alive until they end).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::snapshot::{Backend, BackendKey, BackendTable, ObjectKey, UpstreamProtocol};
use crate::upstream::balance::{EndpointSet, Maglev};
use crate::upstream::breaker::Breaker;
use crate::upstream::health::active::{self, ActiveChecker};
use crate::upstream::health::passive::{Outcome, Outlier};
use crate::upstream::policy::{BackendPolicy, LoadBalancer, OutlierDetection};
use crate::upstream::pool::{ConnectionCount, Transport};

/// Something operators want to hear about (a Warning Event on the BackendPolicy in
/// Kubernetes mode, a log line in standalone mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// A backend's circuit opened: requests get the fallback for `open_for`.
    CircuitOpened {
        /// The backend.
        backend: BackendKey,
        /// The BackendPolicy whose `circuitBreaker` opened.
        policy: Option<ObjectKey>,
        /// Failures counted within the window.
        failures: u32,
        /// How long it stays open before half-open.
        open_for: Duration,
    },
    /// A backend's circuit closed again after successful probes.
    CircuitClosed {
        /// The backend.
        backend: BackendKey,
        /// The BackendPolicy.
        policy: Option<ObjectKey>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The registries alive in this process, for the metrics collector.
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct Inner {
    backends: Mutex<HashMap<BackendKey, Arc<ServiceRuntime>>>,
}

/// Every backend's runtime state, shared by every snapshot.
#[derive(Debug)]
pub struct UpstreamRegistry {
    inner: Arc<Inner>,
    events: broadcast::Sender<UpstreamEvent>,
}

impl Default for UpstreamRegistry {
    fn default() -> Self {
        let inner = Arc::new(Inner { backends: Mutex::new(HashMap::new()) });
        let mut live = lock(&LIVE);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&inner));
        UpstreamRegistry { inner, events: broadcast::Sender::new(64) }
    }
}

impl UpstreamRegistry {
    /// Binds every backend of a snapshot being published to its runtime state (see the
    /// module doc), starting and stopping health checkers as endpoints and policies come
    /// and go, and drops the state of backends no longer present.
    pub fn bind(&self, backends: &BackendTable) {
        let mut map = lock(&self.inner.backends);
        let mut next: HashMap<BackendKey, Arc<ServiceRuntime>> =
            HashMap::with_capacity(backends.backends.len());
        for backend in &backends.backends {
            let runtime = next
                .get(&backend.key)
                .or_else(|| map.get(&backend.key))
                .or_else(|| backend.runtime.get())
                .cloned();
            let runtime = match runtime {
                Some(runtime) => {
                    // An older table republished after its backend left: checkers again.
                    let revived = runtime.retired.swap(false, Ordering::Relaxed);
                    runtime.reconcile(backend, !revived);
                    runtime
                }
                None => ServiceRuntime::new(backend, Some(self.events.clone())),
            };
            // Already set when the table is shared with an earlier snapshot.
            let _ = backend.runtime.set(Arc::clone(&runtime));
            next.insert(backend.key.clone(), runtime);
        }
        for (key, runtime) in map.drain() {
            if !next.contains_key(&key) {
                runtime.retire();
            }
        }
        *map = next;
    }

    /// Events (circuit opened/closed) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.events.subscribe()
    }

    /// The runtime of a bound backend.
    pub fn get(&self, key: &BackendKey) -> Option<Arc<ServiceRuntime>> {
        lock(&self.inner.backends).get(key).cloned()
    }

    fn runtimes(&self) -> Vec<Arc<ServiceRuntime>> {
        self.inner.runtimes()
    }

    /// `/debug/backends`: every backend with its policy, endpoints (address, health, in
    /// flight, ejections) and circuit state, as JSON.
    pub fn describe(&self) -> serde_json::Value {
        let now = Instant::now();
        let backends: Vec<serde_json::Value> =
            self.runtimes().iter().map(|rt| rt.describe(now)).collect();
        serde_json::json!({ "backends": backends })
    }
}

impl Inner {
    fn runtimes(&self) -> Vec<Arc<ServiceRuntime>> {
        let mut all: Vec<_> = lock(&self.backends).values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
}

/// Every runtime of every live registry (for the metrics collector).
pub(crate) fn live_runtimes() -> Vec<Arc<ServiceRuntime>> {
    let live: Vec<Arc<Inner>> = lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
    live.iter().flat_map(|inner| inner.runtimes()).collect()
}

/// One endpoint's state: in flight, health, ejection, slow start.
#[derive(Debug)]
pub struct EndpointState {
    /// The endpoint.
    pub addr: SocketAddr,
    /// `addr` as a URI authority (HTTP/2 `:authority` fallback), built once.
    pub authority: http::uri::Authority,
    in_flight: AtomicU32,
    /// Passive outlier state.
    pub outlier: Outlier,
    /// False while active checks fail.
    active_healthy: AtomicBool,
    checker: Mutex<Option<ActiveChecker>>,
    /// When it appeared.
    pub added: Instant,
    /// Subject to the policy's slow start (it appeared after the backend's first bind).
    pub slow_start: bool,
}

impl EndpointState {
    /// A fresh, healthy endpoint.
    pub fn new(addr: SocketAddr, added: Instant, slow_start: bool) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        EndpointState {
            addr,
            authority,
            in_flight: AtomicU32::new(0),
            outlier: Outlier::new(),
            active_healthy: AtomicBool::new(true),
            checker: Mutex::new(None),
            added,
            slow_start,
        }
    }

    /// Requests in flight to it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One more request in flight (undo with [`EndpointState::end`]).
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// One request less in flight.
    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// False while its active checks fail.
    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    fn stop_checker(&self) {
        drop(lock(&self.checker).take());
    }
}

/// `weir_upstream_requests_total`'s `result` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// An answer below 500.
    Success = 0,
    /// A 5xx answer.
    Status5xx,
    /// No connection.
    ConnectError,
    /// No response headers in time.
    Timeout,
    /// The exchange failed after connecting.
    BadResponse,
    /// Refused by an open (or half-open, busy) circuit.
    CircuitOpen,
    /// Refused by a cap (`maxParallelRequests`, `maxConnections`, `maxPendingRequests`).
    Overflow,
}

impl AttemptResult {
    /// Every result, in label order.
    pub const ALL: [AttemptResult; 7] = [
        AttemptResult::Success,
        AttemptResult::Status5xx,
        AttemptResult::ConnectError,
        AttemptResult::Timeout,
        AttemptResult::BadResponse,
        AttemptResult::CircuitOpen,
        AttemptResult::Overflow,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Status5xx => "5xx",
            AttemptResult::ConnectError => "connect_error",
            AttemptResult::Timeout => "timeout",
            AttemptResult::BadResponse => "bad_response",
            AttemptResult::CircuitOpen => "circuit_open",
            AttemptResult::Overflow => "overflow",
        }
    }
}

/// The policy-dependent part of a runtime, swapped as a whole when the policy changes.
#[derive(Debug, Default)]
pub struct RuntimeConfig {
    /// The policy (`None`: the built-in default).
    pub policy: Option<Arc<BackendPolicy>>,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// How connections are made (TLS, pool settings, connection caps).
    pub transport: Transport,
    /// The circuit breaker (kept across policy changes that leave `circuitBreaker` alone).
    pub breaker: Option<Arc<Breaker>>,
}

/// What one request holds until its response body ends (or is dropped): its endpoint's
/// in-flight count (what LeastRequest compares) and, under `maxParallelRequests`, its
/// parallel-request slot.
#[derive(Debug)]
pub struct Outstanding {
    endpoint: Arc<EndpointState>,
    slot: Option<crate::upstream::breaker::ParallelSlot>,
}

impl Outstanding {
    /// One more request in flight to `endpoint`.
    pub fn begin(endpoint: Arc<EndpointState>) -> Self {
        endpoint.begin();
        Outstanding { endpoint, slot: None }
    }

    /// Keeps the parallel-request slot for as long as this lives.
    pub fn keep(&mut self, slot: Option<crate::upstream::breaker::ParallelSlot>) {
        self.slot = slot;
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.endpoint.end();
    }
}

/// The runtime state of one backend: its endpoints' states, balancer cursor, circuit,
/// retry budget, transport and counters.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// The backend.
    pub key: BackendKey,
    config: ArcSwap<RuntimeConfig>,
    endpoints: ArcSwap<EndpointSet>,
    /// The round-robin cursor (survives endpoint updates).
    pub cursor: AtomicUsize,
    /// Requests in flight to the backend (policies with a retry budget).
    pub requests: AtomicU32,
    /// Retries in flight to the backend.
    pub retries: AtomicU32,
    /// When the earliest ejection ends, in nanoseconds since `epoch`; `u64::MAX`: none.
    next_expiry: AtomicU64,
    epoch: Instant,
    /// Serializes rebuilds of the endpoint set.
    rebuild: Mutex<()>,
    counters: [Counter; 7],
    /// `weir_upstream_duration_seconds{backend}`: each attempt, from sending to the
    /// response headers (or the failure).
    pub duration: crate::observe::stats::Histogram,
    /// Dropped from its registry (checkers stopped, counter series released).
    retired: AtomicBool,
    events: Option<broadcast::Sender<UpstreamEvent>>,
    self_ref: Weak<ServiceRuntime>,
}

/// Whether two policies behave the same (content, not pointers; the generation is not
/// behaviour).
fn same_policy(a: Option<&BackendPolicy>, b: Option<&BackendPolicy>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.source == b.source
                && a.load_balancer == b.load_balancer
                && a.slow_start == b.slow_start
                && a.active == b.active
                && a.passive == b.passive
                && a.panic_threshold == b.panic_threshold
                && a.breaker == b.breaker
                && a.retry == b.retry
                && a.tls.as_ref().map(|t| t.id()) == b.tls.as_ref().map(|t| t.id())
                && a.protocol == b.protocol
                && a.connection == b.connection
        }
        _ => false,
    }
}

/// The transport of `backend` ([`Transport::for_backend`]: TLS and pool settings) with the
/// backend's connection count when its breaker has connection caps.
fn transport_for(backend: &Backend) -> Transport {
    let mut transport = Transport::for_backend(backend);
    transport.connections = backend
        .policy
        .as_ref()
        .and_then(|p| p.breaker.as_ref())
        .filter(|b| b.max_connections.is_some() || b.max_pending_requests.is_some())
        .map(|b| Arc::new(ConnectionCount::new(b.max_connections, b.max_pending_requests)));
    transport
}

impl ServiceRuntime {
    /// A runtime for `backend`, its endpoints healthy and none in slow start.
    pub fn new(
        backend: &Backend,
        events: Option<broadcast::Sender<UpstreamEvent>>,
    ) -> Arc<ServiceRuntime> {
        let now = Instant::now();
        let label = backend.key.to_string();
        let counters = crate::metrics::upstream_requests(&label);
        let runtime = Arc::new_cyclic(|self_ref| ServiceRuntime {
            key: backend.key.clone(),
            config: ArcSwap::from_pointee(RuntimeConfig::default()),
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            cursor: AtomicUsize::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            next_expiry: AtomicU64::new(u64::MAX),
            epoch: now,
            rebuild: Mutex::new(()),
            counters,
            duration: crate::observe::stats::Histogram::default(),
            retired: AtomicBool::new(false),
            events,
            self_ref: self_ref.clone(),
        });
        runtime.reconcile(backend, false);
        runtime
    }

    /// The runtime of a backend used before (or without) being bound by a registry.
    pub fn of(backend: &Backend) -> &Arc<ServiceRuntime> {
        backend.runtime.get_or_init(|| ServiceRuntime::new(backend, None))
    }

    /// The current endpoint set (a lock-free load).
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    /// Counts one attempt's result in `weir_upstream_requests_total`.
    pub fn count(&self, result: AttemptResult) {
        self.counters[result as usize].inc();
    }

    /// Records one attempt's duration in `weir_upstream_duration_seconds`.
    pub fn observe_attempt(&self, took: Duration) {
        self.duration.observe(took);
    }

    fn reconcile(&self, backend: &Backend, existed: bool) {
        let now = Instant::now();
        let old = self.config.load_full();
        let policy = backend.policy.clone();
        let changed = !same_policy(old.policy.as_deref(), policy.as_deref())
            || old.protocol != backend.protocol
            || !existed;
        let _rebuild = lock(&self.rebuild);
        if changed {
            let breaker_config = policy.as_ref().and_then(|p| p.breaker.clone());
            let breaker = match (&old.breaker, breaker_config) {
                (Some(b), Some(c)) if *b.config() == c => Some(Arc::clone(b)),
                (_, Some(c)) => Some(Arc::new(Breaker::new(c))),
                (_, None) => None,
            };
            self.config.store(Arc::new(RuntimeConfig {
                transport: transport_for(backend),
                policy: policy.clone(),
                protocol: backend.protocol,
                breaker,
            }));
        }
        let slow_start = existed && policy.as_ref().is_some_and(|p| p.slow_start.is_some());
        let current = self.endpoints.load_full();
        let mut fresh = Vec::new();
        let all: Vec<Arc<EndpointState>> = backend
            .endpoints
            .iter()
            .map(|addr| match current.all.iter().find(|e| e.addr == *addr) {
                Some(kept) => Arc::clone(kept),
                None => {
                    let endpoint = Arc::new(EndpointState::new(*addr, now, slow_start));
                    fresh.push(Arc::clone(&endpoint));
                    endpoint
                }
            })
            .collect();
        for gone in current.all.iter().filter(|e| !backend.endpoints.contains(&e.addr)) {
            gone.stop_checker();
        }
        let restart: &[Arc<EndpointState>] = if changed { &all } else { &fresh };
        self.start_checkers(restart);
        self.store_set(all.into(), now);
    }

    /// (Re)starts the active checkers of `endpoints` under the current policy (none
    /// without a tokio runtime or an active check); their health starts good.
    fn start_checkers(&self, endpoints: &[Arc<EndpointState>]) {
        let config = self.config.load_full();
        let check = config.policy.as_ref().and_then(|p| p.active.clone());
        let has_runtime = tokio::runtime::Handle::try_current().is_ok();
        for endpoint in endpoints {
            let checker = match (&check, has_runtime) {
                (Some(check), true) => {
                    let (runtime, weak) = (self.self_ref.clone(), Arc::downgrade(endpoint));
                    let on_change: active::OnChange = Arc::new(move |healthy| {
                        if let (Some(rt), Some(ep)) = (runtime.upgrade(), weak.upgrade()) {
                            rt.set_active_health(&ep, healthy);
                        }
                    });
                    Some(active::spawn(
                        endpoint.addr,
                        Arc::clone(check),
                        config.protocol,
                        config.transport.clone(),
                        on_change,
                    ))
                }
                _ => None,
            };
            let mut slot = lock(&endpoint.checker);
            endpoint.active_healthy.store(true, Ordering::Relaxed);
            *slot = checker;
        }
    }

    fn set_active_health(&self, endpoint: &EndpointState, healthy: bool) {
        if endpoint.active_healthy.swap(healthy, Ordering::Relaxed) != healthy {
            // The checker logs the transition with its reason.
            tracing::debug!(backend = %self.key, endpoint = %endpoint.addr, healthy, "usable endpoints rebuilt after a health transition");
            self.rebuild();
        }
    }

    /// Dropped from the registry: checkers stop, metric series go.
    fn retire(&self) {
        if self.retired.swap(true, Ordering::Relaxed) {
            return;
        }
        for endpoint in self.endpoints.load().all.iter() {
            endpoint.stop_checker();
        }
        crate::metrics::release_upstream_requests(&self.key.to_string());
    }

    /// Recomputes the usable set from the endpoints' health (after a transition).
    pub fn rebuild(&self) {
        let _rebuild = lock(&self.rebuild);
        let all = self.endpoints.load().all.clone();
        self.store_set(all, Instant::now());
    }

    /// Rebuilds when an ejection has ended by `now` (cheap when nothing is ejected).
    pub fn expire_ejections(&self, now: Instant) {
        let next = self.next_expiry.load(Ordering::Relaxed);
        if next != u64::MAX && self.nanos(now) >= next {
            let _rebuild = lock(&self.rebuild);
            // Another request may have rebuilt it while this one waited.
            if self.nanos(now) >= self.next_expiry.load(Ordering::Relaxed) {
                let all = self.endpoints.load().all.clone();
                self.store_set(all, now);
            }
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Builds and stores the set over `all` (the caller holds the rebuild lock).
    fn store_set(&self, all: Box<[Arc<EndpointState>]>, now: Instant) {
        let config = self.config.load_full();
        let policy = config.policy.as_deref();
        let mut usable = Vec::with_capacity(all.len());
        let mut next_expiry: Option<Instant> = None;
        for (i, endpoint) in all.iter().enumerate() {
            let until = endpoint.outlier.ejected_until(now);
            if let Some(until) = until {
                next_expiry = Some(next_expiry.map_or(until, |n| n.min(until)));
            }
            if until.is_none() && endpoint.active_healthy() {
                usable.push(i as u32);
            }
        }
        let threshold =
            policy.map_or(BackendPolicy::DEFAULT_PANIC_THRESHOLD, |p| p.panic_threshold);
        let panic = threshold > 0
            && !all.is_empty()
            && usable.len() * 100 < usize::from(threshold) * all.len();
        let was_panic = self.endpoints.load().panic;
        if panic {
            if !was_panic {
                tracing::warn!(backend = %self.key, usable = usable.len(), total = all.len(), threshold, "panic mode: too few usable endpoints, every endpoint is used");
            }
            usable = (0..all.len() as u32).collect();
        } else if was_panic {
            tracing::info!(backend = %self.key, usable = usable.len(), total = all.len(), "panic mode over");
        }
        let maglev = match policy.map(|p| &p.load_balancer) {
            Some(LoadBalancer::ConsistentHash(_)) => {
                let addrs: Vec<SocketAddr> = usable.iter().map(|&i| all[i as usize].addr).collect();
                Maglev::new(&addrs)
            }
            _ => None,
        };
        let slow_start = policy.and_then(|p| p.slow_start).is_some_and(|window| {
            usable.iter().any(|&i| {
                let e = &all[i as usize];
                e.slow_start && now.saturating_duration_since(e.added) < window
            })
        });
        let expiry = next_expiry.map_or(u64::MAX, |at| self.nanos(at));
        self.next_expiry.store(expiry, Ordering::Relaxed);
        self.endpoints.store(Arc::new(EndpointSet {
            all,
            usable: usable.into(),
            panic,
            maglev,
            slow_start,
        }));
    }

    /// Records an attempt's outcome for outlier detection, ejecting the endpoint when its
    /// threshold is reached and `maxEjectionPercent` allows it.
    pub fn record_outlier(
        &self,
        endpoint: &EndpointState,
        config: &OutlierDetection,
        outcome: Outcome,
        now: Instant,
    ) {
        if !endpoint.outlier.record(config, outcome, now) {
            return;
        }
        let set = self.endpoints.load();
        let total = set.all.len();
        let ejected = set.all.iter().filter(|e| e.outlier.is_ejected(now)).count();
        if (ejected + 1) * 100 > usize::from(config.max_ejection_percent) * total {
            tracing::debug!(backend = %self.key, endpoint = %endpoint.addr, ejected, total, "outlier not ejected: maxEjectionPercent reached");
            return;
        }
        let duration = endpoint.outlier.eject(config, now);
        tracing::warn!(backend = %self.key, endpoint = %endpoint.addr, ejection_ms = duration.as_millis() as u64, "endpoint ejected (outlier detection)");
        self.rebuild();
    }

    /// Sends and logs an event about this backend.
    pub fn event(&self, event: UpstreamEvent) {
        match &event {
            // The controller logs them with the policy's name (and sends Events in
            // Kubernetes mode); here only for debugging the data plane alone.
            UpstreamEvent::CircuitOpened { failures, open_for, .. } => {
                tracing::debug!(backend = %self.key, failures, open_for_ms = open_for.as_millis() as u64, "circuit opened: requests get the fallback");
            }
            UpstreamEvent::CircuitClosed { .. } => {
                tracing::debug!(backend = %self.key, "circuit closed");
            }
        }
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

#[path = "registry_describe.rs"]
mod describe;

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
