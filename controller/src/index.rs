//! The index: every object the compiler reads, keyed by namespace/name.
//!
//! Sources (the Kubernetes watchers, or the directory loader in standalone mode) fill it;
//! `compile()` reads it and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::gateway_api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use weir_crds::{BackendPolicy, Consumer, Plugin, Route, RouteSpec};

/// Namespace and name of an object. Ordered, so iteration is deterministic.
///
/// Both parts are shared strings: the many maps keyed by an object (the index, statuses,
/// the compiler's memory and incremental state, the status view) hold clones of one
/// key, not copies of its text.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    /// Namespace (`default` when the source object had none).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl ObjectRef {
    /// Builds a reference.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        ObjectRef { namespace: intern_namespace(namespace.as_ref()), name: name.as_ref().into() }
    }

    /// The data plane's key of the same object (sharing the strings).
    pub fn object_key(&self) -> weir_dataplane::ObjectKey {
        weir_dataplane::ObjectKey {
            namespace: Arc::clone(&self.namespace),
            name: Arc::clone(&self.name),
        }
    }
}

/// Two shared strings compared by content, the same allocation first (equal without
/// reading the text).
fn cmp_shared(a: &Arc<str>, b: &Arc<str>) -> std::cmp::Ordering {
    if Arc::ptr_eq(a, b) { std::cmp::Ordering::Equal } else { a.cmp(b) }
}

// Ordered and compared by content, as the derived impls would, but a namespace (interned)
// or name shared with the other key compares equal without a `memcmp`: the compiler's maps
// compare keys of one namespace millions of times in a full compile (memcmp was 21% of its
// instructions at 10k Routes). Consistent with `Hash` (content): the same allocation is
// the same content.
impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.namespace, &other.namespace) || self.namespace == other.namespace)
            && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }
}

impl Eq for ObjectRef {}

impl std::hash::Hash for ObjectRef {
    /// By content (what the derived impl did): equal keys hash alike however their strings
    /// are shared.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_shared(&self.namespace, &other.namespace)
            .then_with(|| cmp_shared(&self.name, &other.name))
    }
}

/// One shared string per namespace: objects of a namespace share its name. A namespace no
/// key uses any more is dropped from the table when the table next grows past twice the
/// size it had after its last sweep.
fn intern_namespace(namespace: &str) -> Arc<str> {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex, PoisonError};
    static TABLE: LazyLock<Mutex<(HashSet<Arc<str>>, usize)>> =
        LazyLock::new(|| Mutex::new((HashSet::new(), 16)));
    let mut guard = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let (table, sweep_at) = &mut *guard;
    if let Some(found) = table.get(namespace) {
        return Arc::clone(found);
    }
    if table.len() >= *sweep_at {
        table.retain(|n| Arc::strong_count(n) > 1);
        *sweep_at = (table.len() * 2).max(16);
    }
    let interned: Arc<str> = namespace.into();
    table.insert(Arc::clone(&interned));
    interned
}

impl std::fmt::Display for ObjectRef {
    /// `namespace/name`, or just `name` for a cluster-scoped object (namespace `""`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A Route as the controller keeps it: the spec, and of the metadata only what the
/// compiler reads. The parsed `weir_crds::Route` carries a whole `ObjectMeta` (360 bytes
/// inline, plus its strings) and a status; the index holds one of these per Route for as
/// long as the Route exists, so it keeps this instead (memory per Route). Built from a
/// parsed Route ([`From<Route>`], or `Deserialize` through it).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(from = "Route")]
pub struct RouteObject {
    /// What the compiler reads of `metadata`.
    pub metadata: RouteMeta,
    /// The spec, as parsed.
    pub spec: RouteSpec,
}

/// The part of a Route's `metadata` the controller keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMeta {
    /// Namespace (`default` when the object had none) and name, shared with the index's
    /// keys.
    pub key: ObjectRef,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp` (the precedence tie-break between Routes).
    pub creation_timestamp: Option<Time>,
}

impl From<Route> for RouteObject {
    fn from(route: Route) -> Self {
        let meta = route.metadata;
        let namespace = meta.namespace.filter(|n| !n.is_empty());
        RouteObject {
            metadata: RouteMeta {
                key: ObjectRef::new(
                    namespace.as_deref().unwrap_or("default"),
                    meta.name.unwrap_or_default(),
                ),
                generation: meta.generation,
                creation_timestamp: meta.creation_timestamp,
            },
            spec: route.spec,
        }
    }
}

impl RouteObject {
    /// A Route named `name` in `namespace` with `spec` (tests, derived Routes).
    pub fn new(namespace: &str, name: &str, spec: RouteSpec) -> Self {
        RouteObject {
            metadata: RouteMeta {
                key: ObjectRef::new(namespace, name),
                generation: None,
                creation_timestamp: None,
            },
            spec,
        }
    }
}

/// The kinds the compiler reads. The order matters: statuses are sorted by kind, and the
/// front-end kinds (GatewayClass and after) come last, so they form one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// weir.dev/v1alpha1 Route.
    Route,
    /// weir.dev/v1alpha1 Plugin.
    Plugin,
    /// weir.dev/v1alpha1 Consumer.
    Consumer,
    /// weir.dev/v1alpha1 BackendPolicy.
    BackendPolicy,
    /// v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// v1 Secret.
    Secret,
    /// gateway.networking.k8s.io/v1 GatewayClass (cluster-scoped: namespace `""`).
    GatewayClass,
    /// gateway.networking.k8s.io/v1 Gateway.
    Gateway,
    /// gateway.networking.k8s.io/v1 HTTPRoute.
    HttpRoute,
    /// gateway.networking.k8s.io/v1 GRPCRoute.
    GrpcRoute,
    /// gateway.networking.k8s.io/v1beta1 ReferenceGrant.
    ReferenceGrant,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// networking.k8s.io/v1 IngressClass (cluster-scoped: namespace `""`).
    IngressClass,
    /// v1 Namespace (cluster-scoped: namespace `""`; only its labels are used, by Gateway
    /// listeners' `allowedRoutes.namespaces.selector`).
    Namespace,
}

/// Whether and how weir writes an object's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// weir never writes it (inputs only: Services, Secrets, classes it does not own…).
    Never,
    /// weir's own status shape (`observedGeneration`, `conditions`, `effectivePlugins`).
    Weir,
    /// The whole status document the kind's API defines (`ObjectStatus::document`), for
    /// the objects weir owns (those with a status entry).
    Document,
}

/// When a kind is watched in Kubernetes mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchWhen {
    /// From the start, in every watched namespace scope (built-in APIs and weir's CRDs).
    Always,
    /// Once API discovery shows its group/version is served (CRDs that may be absent, such
    /// as the Gateway API); re-checked periodically.
    WhenServed,
    /// Only labelled or referenced objects (Secrets), by their own watches.
    Referenced,
}

/// Everything weir knows about one kind: the one table the watchers, the converter, the
/// status writer and the RBAC list read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind.
    pub kind: Kind,
    /// API group (`""` = core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Namespaced (`false`: cluster-scoped, keyed with namespace `""`).
    pub namespaced: bool,
    /// Whether and how weir writes its status.
    pub status: StatusWrite,
    /// When it is watched.
    pub watch: WatchWhen,
}

const fn info(
    kind: Kind,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    namespaced: bool,
    status: StatusWrite,
    watch: WatchWhen,
) -> KindInfo {
    KindInfo { kind, group, version, plural, namespaced, status, watch }
}

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = weir_crds::gateway_api::GROUP;

/// Every kind, in [`Kind`] order.
pub const KINDS: [KindInfo; 15] = {
    use StatusWrite::{Document, Never, Weir};
    use WatchWhen::{Always, Referenced, WhenServed};
    [
        info(Kind::Route, "weir.dev", "v1alpha1", "routes", true, Weir, Always),
        info(Kind::Plugin, "weir.dev", "v1alpha1", "plugins", true, Weir, Always),
        info(Kind::Consumer, "weir.dev", "v1alpha1", "consumers", true, Weir, Always),
        info(Kind::BackendPolicy, "weir.dev", "v1alpha1", "backendpolicies", true, Weir, Always),
        info(Kind::Service, "", "v1", "services", true, Never, Always),
        info(Kind::EndpointSlice, "discovery.k8s.io", "v1", "endpointslices", true, Never, Always),
        info(Kind::Secret, "", "v1", "secrets", true, Never, Referenced),
        info(
            Kind::GatewayClass,
            GATEWAY_GROUP,
            "v1",
            "gatewayclasses",
            false,
            Document,
            WhenServed,
        ),
        info(Kind::Gateway, GATEWAY_GROUP, "v1", "gateways", true, Document, WhenServed),
        info(Kind::HttpRoute, GATEWAY_GROUP, "v1", "httproutes", true, Document, WhenServed),
        info(Kind::GrpcRoute, GATEWAY_GROUP, "v1", "grpcroutes", true, Document, WhenServed),
        info(
            Kind::ReferenceGrant,
            GATEWAY_GROUP,
            "v1beta1",
            "referencegrants",
            true,
            Never,
            WhenServed,
        ),
        info(Kind::Ingress, "networking.k8s.io", "v1", "ingresses", true, Document, Always),
        info(Kind::IngressClass, "networking.k8s.io", "v1", "ingressclasses", false, Never, Always),
        info(Kind::Namespace, "", "v1", "namespaces", false, Never, Always),
    ]
};

impl Kind {
    /// The kind's entry in [`KINDS`].
    pub fn info(self) -> &'static KindInfo {
        &KINDS[self as usize]
    }

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Route => "Route",
            Kind::Plugin => "Plugin",
            Kind::Consumer => "Consumer",
            Kind::BackendPolicy => "BackendPolicy",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Namespace => "Namespace",
        }
    }

    /// The kind named `name` (its `kind` string).
    pub fn parse(name: &str) -> Option<Kind> {
        KINDS.iter().map(|i| i.kind).find(|k| k.as_str() == name)
    }

    /// False for the cluster-scoped kinds (GatewayClass, IngressClass, Namespace), keyed
    /// with namespace `""`.
    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// `apiVersion`: `v1` or `group/version`.
    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.version.to_owned() } else { format!("{}/{}", i.group, i.version) }
    }
}

/// Every object the compiler reads. Objects are stored with `metadata.namespace` set.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Routes.
    pub routes: BTreeMap<ObjectRef, Arc<RouteObject>>,
    /// Plugins.
    pub plugins: BTreeMap<ObjectRef, Arc<Plugin>>,
    /// Consumers.
    pub consumers: BTreeMap<ObjectRef, Arc<Consumer>>,
    /// BackendPolicies.
    pub backend_policies: BTreeMap<ObjectRef, Arc<BackendPolicy>>,
    /// Services.
    pub services: BTreeMap<ObjectRef, Arc<Service>>,
    /// EndpointSlices (keyed by their own name; linked to Services by the
    /// `kubernetes.io/service-name` label).
    pub endpoint_slices: BTreeMap<ObjectRef, Arc<EndpointSlice>>,
    /// Secrets (only those referenced by weir objects, or labelled for weir).
    pub secrets: BTreeMap<ObjectRef, Arc<Secret>>,
    /// GatewayClasses (cluster-scoped: keyed with namespace `""`).
    pub gateway_classes: BTreeMap<ObjectRef, Arc<GatewayClass>>,
    /// Gateways.
    pub gateways: BTreeMap<ObjectRef, Arc<Gateway>>,
    /// HTTPRoutes.
    pub http_routes: BTreeMap<ObjectRef, Arc<HttpRoute>>,
    /// GRPCRoutes.
    pub grpc_routes: BTreeMap<ObjectRef, Arc<GrpcRoute>>,
    /// ReferenceGrants.
    pub reference_grants: BTreeMap<ObjectRef, Arc<ReferenceGrant>>,
    /// Ingresses.
    pub ingresses: BTreeMap<ObjectRef, Arc<Ingress>>,
    /// IngressClasses (cluster-scoped: keyed with namespace `""`).
    pub ingress_classes: BTreeMap<ObjectRef, Arc<IngressClass>>,
    /// Namespaces (cluster-scoped: keyed with namespace `""`), for their labels.
    pub namespaces: BTreeMap<ObjectRef, Arc<Namespace>>,
    /// `--publish-service`: weir's own Service, whose addresses Gateways and Ingresses
    /// report in their status. `None`: no addresses are reported.
    pub publish_service: Option<ObjectRef>,
    /// The controller's own namespace, where `global: true` Plugins are honoured. Empty
    /// means [`DEFAULT_CONTROLLER_NAMESPACE`].
    pub controller_namespace: String,
    /// `--default-certificate`: the `kubernetes.io/tls` Secret served to TLS clients whose
    /// SNI names no Route host (or who send none). `None`: such handshakes fail.
    pub default_certificate: Option<ObjectRef>,
    /// The time certificate validity dates are checked against. Sources set it to the
    /// current time before each compile, so `compile()` itself reads no clock (it stays
    /// pure and testable); `None` checks against the Unix epoch, where every certificate
    /// is "not valid before" its start (an unset clock fails loudly, never silently).
    pub now: Option<std::time::SystemTime>,
}

/// The controller namespace used when [`Index::controller_namespace`] is empty.
pub const DEFAULT_CONTROLLER_NAMESPACE: &str = "weir-system";

impl Index {
    /// The controller's namespace, with the default applied.
    pub fn controller_namespace(&self) -> &str {
        if self.controller_namespace.is_empty() {
            DEFAULT_CONTROLLER_NAMESPACE
        } else {
            &self.controller_namespace
        }
    }

    /// [`Index::now`], or the Unix epoch when unset.
    pub fn now(&self) -> std::time::SystemTime {
        self.now.unwrap_or(std::time::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_in_kind_order_and_names_parse_back() {
        for (i, info) in KINDS.iter().enumerate() {
            assert_eq!(info.kind as usize, i, "{:?}", info.kind);
            assert_eq!(Kind::parse(info.kind.as_str()), Some(info.kind));
        }
        assert_eq!(Kind::parse("Nope"), None);
        assert_eq!(Kind::ReferenceGrant.api_version(), "gateway.networking.k8s.io/v1beta1");
        assert_eq!(Kind::Service.api_version(), "v1");
        assert!(!Kind::Namespace.namespaced() && Kind::Ingress.namespaced());
    }

    #[test]
    fn keys_share_their_namespace_and_order_and_display_as_text() {
        let a = ObjectRef::new("shop", "b");
        let b = ObjectRef::new(String::from("shop"), "a");
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace), "one string per namespace");
        assert!(b < a && ObjectRef::new("a-b", "x") > ObjectRef::new("a", "y"));
        assert_eq!(
            (a.to_string(), ObjectRef::new("", "c").to_string()),
            ("shop/b".into(), "c".into())
        );
        let key = a.object_key();
        assert!(Arc::ptr_eq(&key.name, &a.name) && &*key.namespace == "shop");
        // Namespaces no key uses any more are swept as the table grows; live ones stay shared.
        for i in 0..100 {
            drop(ObjectRef::new(format!("gone-{i}"), "x"));
        }
        assert!(Arc::ptr_eq(&ObjectRef::new("shop", "c").namespace, &a.namespace));
    }

    #[test]
    fn keys_compare_by_content_whether_or_not_they_share_their_strings() {
        use std::cmp::Ordering;
        let a = ObjectRef::new("shop", "a");
        // Same content, separate name allocation (the namespace is interned, so also build
        // one with a separate namespace allocation).
        let a2 = ObjectRef { namespace: Arc::from("shop"), name: Arc::from("a") };
        assert!(!Arc::ptr_eq(&a.name, &a2.name) && !Arc::ptr_eq(&a.namespace, &a2.namespace));
        assert_eq!(a, a2);
        assert_eq!(a.cmp(&a2), Ordering::Equal);
        assert_eq!(a, a.clone());
        let b = ObjectRef::new("shop", "b");
        let other = ObjectRef::new("other", "a");
        for (x, y) in [(&a, &b), (&a2, &b), (&other, &a), (&other, &a2), (&a, &other)] {
            let by_content = (&*x.namespace, &*x.name).cmp(&(&*y.namespace, &*y.name));
            assert_eq!(x.cmp(y), by_content, "{x} vs {y}");
            assert_eq!(x == y, by_content == Ordering::Equal);
        }
        let set: std::collections::BTreeSet<ObjectRef> = [a2, b.clone(), a.clone()].into();
        assert_eq!(set.len(), 2);
        let hashed: std::collections::HashSet<ObjectRef> =
            [a.clone(), ObjectRef::new("shop", "a")].into();
        assert_eq!(hashed.len(), 1);
    }
}
