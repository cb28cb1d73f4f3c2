//! The Gateway API kinds weir reads (`gateway.networking.k8s.io`): GatewayClass, Gateway,
//! HTTPRoute, GRPCRoute (v1) and ReferenceGrant (v1beta1).
//!
//! Input types only: weir does not own these CRDs (the user installs them) and never
//! generates their YAML. The `gateway-api` crate has them, but its releases follow an older
//! kube/k8s-openapi than ours (0.22: kube 4, k8s-openapi 0.28), so these are written from
//! the v1.2 specification. Fields weir does not model are kept in `other` maps, so the
//! compiler can reject them by name (a field weir cannot execute is never silently
//! ignored).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// `apiVersion` of GatewayClass, Gateway, HTTPRoute and GRPCRoute.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// `apiVersion` of ReferenceGrant.
pub const API_VERSION_BETA: &str = "gateway.networking.k8s.io/v1beta1";
/// The `controllerName` of GatewayClasses weir serves.
pub const CONTROLLER_NAME: &str = "weir.dev/gateway-controller";

/// Fields of an object this module does not model, by name.
pub type Other = BTreeMap<String, Value>;

macro_rules! object {
    ($(#[$doc:meta])* $name:ident, $spec:ty) => {
        $(#[$doc])*
        #[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
        pub struct $name {
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The desired state.
            #[serde(default)]
            pub spec: $spec,
            /// The status as the API server holds it (stripped by sources before compile).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<Value>,
        }
    };
}

object!(
    /// `GatewayClass`: a class of Gateways served by one controller.
    GatewayClass,
    GatewayClassSpec
);
object!(
    /// `Gateway`: listeners (port, protocol, hostname, TLS) Routes attach to.
    Gateway,
    GatewaySpec
);
object!(
    /// `HTTPRoute`.
    HttpRoute,
    HttpRouteSpec
);
object!(
    /// `GRPCRoute`.
    GrpcRoute,
    GrpcRouteSpec
);
object!(
    /// `ReferenceGrant` (v1beta1): lets objects of other namespaces refer to this one's.
    ReferenceGrant,
    ReferenceGrantSpec
);

/// GatewayClass spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that serves Gateways of this class.
    #[serde(default)]
    pub controller_name: String,
    /// Implementation-specific parameters (weir takes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<Value>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Gateway spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass.
    #[serde(default)]
    pub gateway_class_name: String,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses (weir serves on its own Service's addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Value>,
    /// Fields not modelled (`infrastructure`, `backendTLS`, ...).
    #[serde(flatten)]
    pub other: Other,
}

/// One Gateway listener.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Unique within the Gateway (`sectionName` of a parentRef).
    #[serde(default)]
    pub name: String,
    /// Host name (may start with `*.`); none = every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` (weir: HTTP and HTTPS).
    #[serde(default)]
    pub protocol: String,
    /// TLS (HTTPS listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Which Routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's TLS.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` (default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Certificates (Secrets of type `kubernetes.io/tls`).
    #[serde(default)]
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Implementation-specific options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Fields not modelled (`frontendValidation`, ...).
    #[serde(flatten)]
    pub other: Other,
}

/// A reference to a Secret (or another object) that may name a namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretObjectReference {
    /// API group (`""` = core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default `Secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (default: the referring object's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which Routes may attach to a listener.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// Namespaces (default: the Gateway's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Route kinds (default: the protocol's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

/// Namespaces Routes may attach from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct RouteNamespaces {
    /// `All`, `Same` (default) or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Namespace label selector (with `Selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A Route kind.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteGroupKind {
    /// API group (default `gateway.networking.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// A Route's reference to its parent (a Gateway, or a listener of it).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group (default `gateway.networking.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace (default: the Route's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// A listener name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// HTTPRoute spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Gateways (or listeners) this Route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names (may start with `*.`); none = the listeners'.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules (none = one rule matching `/` with no backend: 404).
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// One HTTPRoute rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, OR-ed (none = prefix `/`).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Backends.
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts (`request`, `backendRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Fields not modelled (`retry`, `sessionPersistence`, ...).
    #[serde(flatten)]
    pub other: Other,
}

/// An HTTPRoute match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path (default: prefix `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header conditions, AND-ed.
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    /// Query conditions, AND-ed.
    #[serde(default)]
    pub query_params: Vec<HttpHeaderMatch>,
    /// Method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A header or query-parameter condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Header or parameter name.
    #[serde(default)]
    pub name: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// An HTTPRoute filter (rule level or backend level).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite`,
    /// `RequestMirror`, `ExtensionRef`, `CORS`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// RequestHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// ResponseHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// RequestRedirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// URLRewrite.
    #[serde(default, rename = "urlRewrite", skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// ExtensionRef: a weir Plugin (`group: weir.dev`, `kind: Plugin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
    /// Filters not modelled (`requestMirror`, `cors`, ...).
    #[serde(flatten)]
    pub other: Other,
}

/// Header set/add/remove.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HeaderModifier {
    /// Set (replace).
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    /// Add (append).
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpHeader {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// RequestRedirect.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path modifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// 301 or 302 (default 302).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
}

/// URLRewrite.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct UrlRewrite {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path modifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path modifier.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// With `ReplaceFullPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// With `ReplacePrefixMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// A local reference by group, kind and name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// A backend of an HTTPRoute or GRPCRoute rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpBackendRef {
    /// API group (default core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default `Service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (default: the Route's; another needs a ReferenceGrant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port (required for Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Weight (default 1; 0 = no traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Backend-level filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// HTTPRoute rule timeouts (Gateway API durations, e.g. `10s`, `500ms`, `1h`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Whole request, gateway to client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One upstream attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// GRPCRoute spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// Parents.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

/// One GRPCRoute rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, OR-ed.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters (the HTTPRoute header modifiers and ExtensionRef).
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Backends.
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Fields not modelled (`sessionPersistence`, ...).
    #[serde(flatten)]
    pub other: Other,
}

/// A GRPCRoute match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct GrpcRouteMatch {
    /// Service and method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
}

/// A gRPC method condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fully qualified service, e.g. `helloworld.Greeter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method, e.g. `SayHello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// ReferenceGrant spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to (in the grant's namespace).
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// A referrer allowed by a ReferenceGrant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceGrantFrom {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
}

/// A target allowed by a ReferenceGrant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceGrantTo {
    /// API group (`""` = core).
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// One object, or every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
