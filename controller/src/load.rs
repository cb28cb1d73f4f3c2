//! YAML → [`Index`]: reads `*.yaml`/`*.yml` files (multi-document), dispatches every
//! document on `apiVersion` + `kind`, and reports each problem with its file and document.
//!
//! Used by standalone mode ([`crate::standalone`]) and by `weir validate`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weir_crds::gateway_api::{self, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use weir_crds::{BackendPolicy, Consumer, Plugin};

use crate::index::{Index, Kind, ObjectRef, RouteObject};

/// A problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The file, as found under the config directory (or as given).
    pub file: String,
    /// Index of the document in the file, from 0 (a leading `---` does not start an
    /// extra document). Problems with the whole file use 0.
    pub document: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}: {}", self.file, self.document, self.reason)
    }
}

/// One typed object read from YAML.
#[derive(Debug, Clone)]
pub enum Object {
    /// weir.dev/v1alpha1 Route, as the controller keeps it (spec and the metadata the
    /// compiler reads).
    Route(Arc<RouteObject>),
    /// weir.dev/v1alpha1 Plugin.
    Plugin(Arc<Plugin>),
    /// weir.dev/v1alpha1 Consumer.
    Consumer(Arc<Consumer>),
    /// weir.dev/v1alpha1 BackendPolicy.
    BackendPolicy(Arc<BackendPolicy>),
    /// v1 Service.
    Service(Arc<Service>),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// v1 Secret.
    Secret(Arc<Secret>),
    /// Gateway API GatewayClass.
    GatewayClass(Arc<GatewayClass>),
    /// Gateway API Gateway.
    Gateway(Arc<Gateway>),
    /// Gateway API HTTPRoute.
    HttpRoute(Arc<HttpRoute>),
    /// Gateway API GRPCRoute.
    GrpcRoute(Arc<GrpcRoute>),
    /// Gateway API ReferenceGrant.
    ReferenceGrant(Arc<ReferenceGrant>),
    /// networking.k8s.io/v1 Ingress.
    Ingress(Arc<Ingress>),
    /// networking.k8s.io/v1 IngressClass.
    IngressClass(Arc<IngressClass>),
    /// v1 Namespace.
    Namespace(Arc<Namespace>),
}

/// Applies `$body` to the `Arc` inside any [`Object`] variant, bound as `$o`; with a
/// `Route => $route` arm, `$route` for a Route instead (whose metadata is a [`RouteMeta`](crate::index::RouteMeta),
/// not an `ObjectMeta`).
macro_rules! each_object {
    ($object:expr, $o:ident => $body:expr) => {
        each_object!($object, $o => $body, Route($o) => $body)
    };
    ($object:expr, $o:ident => $body:expr, Route => $route:expr) => {
        each_object!($object, $o => $body, Route(_) => $route)
    };
    ($object:expr, $o:ident => $body:expr, Route($r:pat) => $route:expr) => {
        match $object {
            Object::Route($r) => $route,
            Object::Plugin($o) => $body,
            Object::Consumer($o) => $body,
            Object::BackendPolicy($o) => $body,
            Object::Service($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::Secret($o) => $body,
            Object::GatewayClass($o) => $body,
            Object::Gateway($o) => $body,
            Object::HttpRoute($o) => $body,
            Object::GrpcRoute($o) => $body,
            Object::ReferenceGrant($o) => $body,
            Object::Ingress($o) => $body,
            Object::IngressClass($o) => $body,
            Object::Namespace($o) => $body,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Route(_) => Kind::Route,
            Object::Plugin(_) => Kind::Plugin,
            Object::Consumer(_) => Kind::Consumer,
            Object::BackendPolicy(_) => Kind::BackendPolicy,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    /// The object's metadata; `None` for a Route, which keeps only [`RouteMeta`](crate::index::RouteMeta).
    pub fn meta(&self) -> Option<&ObjectMeta> {
        Some(each_object!(self, o => &o.metadata, Route => return None))
    }

    /// The object's metadata, mutably; `None` for a Route (see [`Object::meta`]).
    pub fn meta_mut(&mut self) -> Option<&mut ObjectMeta> {
        Some(each_object!(self, o => &mut Arc::make_mut(o).metadata, Route => return None))
    }

    /// `metadata.generation`.
    pub fn generation(&self) -> Option<i64> {
        match self {
            Object::Route(r) => r.metadata.generation,
            other => other.meta().and_then(|m| m.generation),
        }
    }

    /// `metadata.creationTimestamp`.
    pub fn creation_timestamp(&self) -> Option<&Time> {
        match self {
            Object::Route(r) => r.metadata.creation_timestamp.as_ref(),
            other => other.meta().and_then(|m| m.creation_timestamp.as_ref()),
        }
    }

    /// Sets `metadata.generation` and `creationTimestamp` where they are missing.
    pub fn stamp(&mut self, generation: i64, created: Option<Time>) {
        let (g, c) = match self {
            Object::Route(r) => {
                let m = &mut Arc::make_mut(r).metadata;
                (&mut m.generation, &mut m.creation_timestamp)
            }
            other => match other.meta_mut() {
                Some(m) => (&mut m.generation, &mut m.creation_timestamp),
                None => return,
            },
        };
        g.get_or_insert(generation);
        if let Some(created) = created {
            c.get_or_insert(created);
        }
    }

    /// True when both have the same metadata (for a Route: what it keeps of it).
    pub fn same_meta(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Route(a), Object::Route(b)) => a.metadata == b.metadata,
            (a, b) => a.meta() == b.meta(),
        }
    }

    /// Namespace and name (the namespace is always set by the loader for namespaced kinds;
    /// cluster-scoped kinds have `""`).
    pub fn key(&self) -> ObjectRef {
        let m = match self {
            Object::Route(r) => return r.metadata.key.clone(),
            other => each_object!(other, o => &o.metadata, Route => return other.key()),
        };
        let namespace = if self.kind().namespaced() {
            m.namespace.clone().unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        };
        ObjectRef::new(namespace, m.name.clone().unwrap_or_default())
    }

    /// True when `self` and `other` are the same kind with equal specs: everything but
    /// `metadata` and `status`, i.e. what bumps `metadata.generation` in Kubernetes.
    pub fn same_spec(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Route(a), Object::Route(b)) => a.spec == b.spec,
            (Object::Plugin(a), Object::Plugin(b)) => a.spec == b.spec,
            (Object::Consumer(a), Object::Consumer(b)) => a.spec == b.spec,
            (Object::BackendPolicy(a), Object::BackendPolicy(b)) => a.spec == b.spec,
            // A Service's status (load-balancer addresses) is what Gateways and Ingresses
            // report for weir's own Service (`--publish-service`).
            (Object::Service(a), Object::Service(b)) => {
                (&a.spec, &a.status) == (&b.spec, &b.status)
            }
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => {
                (&a.address_type, &a.endpoints, &a.ports)
                    == (&b.address_type, &b.endpoints, &b.ports)
            }
            (Object::Secret(a), Object::Secret(b)) => {
                (&a.data, &a.string_data, &a.type_) == (&b.data, &b.string_data, &b.type_)
            }
            (Object::GatewayClass(a), Object::GatewayClass(b)) => a.spec == b.spec,
            (Object::Gateway(a), Object::Gateway(b)) => a.spec == b.spec,
            (Object::HttpRoute(a), Object::HttpRoute(b)) => a.spec == b.spec,
            (Object::GrpcRoute(a), Object::GrpcRoute(b)) => a.spec == b.spec,
            (Object::ReferenceGrant(a), Object::ReferenceGrant(b)) => a.spec == b.spec,
            // Annotations carry Ingress configuration (class, weir.dev/* settings).
            (Object::Ingress(a), Object::Ingress(b)) => {
                (&a.spec, &a.metadata.annotations) == (&b.spec, &b.metadata.annotations)
            }
            (Object::IngressClass(a), Object::IngressClass(b)) => {
                (&a.spec, &a.metadata.annotations) == (&b.spec, &b.metadata.annotations)
            }
            (Object::Namespace(a), Object::Namespace(b)) => a.metadata.labels == b.metadata.labels,
            _ => false,
        }
    }

    /// True when both hold the very same allocation (`Arc::ptr_eq`).
    pub fn ptr_eq(&self, other: &Object) -> bool {
        fn same<T: 'static>(a: &Arc<T>, b: &Object) -> bool {
            let b: &dyn std::any::Any = each_object!(b, o => o);
            b.downcast_ref::<Arc<T>>().is_some_and(|b| Arc::ptr_eq(a, b))
        }
        each_object!(self, o => same(o, other))
    }

    /// True when `index` serves this very object (same `Arc`) under `key`.
    pub fn is_served_by(&self, index: &Index, key: &ObjectRef) -> bool {
        fn same<T>(served: Option<&Arc<T>>, o: &Arc<T>) -> bool {
            served.is_some_and(|s| Arc::ptr_eq(s, o))
        }
        match self {
            Object::Route(o) => same(index.routes.get(key), o),
            Object::Plugin(o) => same(index.plugins.get(key), o),
            Object::Consumer(o) => same(index.consumers.get(key), o),
            Object::BackendPolicy(o) => same(index.backend_policies.get(key), o),
            Object::Service(o) => same(index.services.get(key), o),
            Object::EndpointSlice(o) => same(index.endpoint_slices.get(key), o),
            Object::Secret(o) => same(index.secrets.get(key), o),
            Object::GatewayClass(o) => same(index.gateway_classes.get(key), o),
            Object::Gateway(o) => same(index.gateways.get(key), o),
            Object::HttpRoute(o) => same(index.http_routes.get(key), o),
            Object::GrpcRoute(o) => same(index.grpc_routes.get(key), o),
            Object::ReferenceGrant(o) => same(index.reference_grants.get(key), o),
            Object::Ingress(o) => same(index.ingresses.get(key), o),
            Object::IngressClass(o) => same(index.ingress_classes.get(key), o),
            Object::Namespace(o) => same(index.namespaces.get(key), o),
        }
    }

    /// Adds the object to the index (replacing an object with the same key).
    pub fn insert_into(self, index: &mut Index) {
        let key = self.key();
        match self {
            Object::Route(o) => drop(index.routes.insert(key, o)),
            Object::Plugin(o) => drop(index.plugins.insert(key, o)),
            Object::Consumer(o) => drop(index.consumers.insert(key, o)),
            Object::BackendPolicy(o) => drop(index.backend_policies.insert(key, o)),
            Object::Service(o) => drop(index.services.insert(key, o)),
            Object::EndpointSlice(o) => drop(index.endpoint_slices.insert(key, o)),
            Object::Secret(o) => drop(index.secrets.insert(key, o)),
            Object::GatewayClass(o) => drop(index.gateway_classes.insert(key, o)),
            Object::Gateway(o) => drop(index.gateways.insert(key, o)),
            Object::HttpRoute(o) => drop(index.http_routes.insert(key, o)),
            Object::GrpcRoute(o) => drop(index.grpc_routes.insert(key, o)),
            Object::ReferenceGrant(o) => drop(index.reference_grants.insert(key, o)),
            Object::Ingress(o) => drop(index.ingresses.insert(key, o)),
            Object::IngressClass(o) => drop(index.ingress_classes.insert(key, o)),
            Object::Namespace(o) => drop(index.namespaces.insert(key, o)),
        }
    }
}

/// Removes the object of `kind` named `key` from the index, if any.
pub fn remove_from(index: &mut Index, kind: Kind, key: &ObjectRef) {
    match kind {
        Kind::Route => drop(index.routes.remove(key)),
        Kind::Plugin => drop(index.plugins.remove(key)),
        Kind::Consumer => drop(index.consumers.remove(key)),
        Kind::BackendPolicy => drop(index.backend_policies.remove(key)),
        Kind::Service => drop(index.services.remove(key)),
        Kind::EndpointSlice => drop(index.endpoint_slices.remove(key)),
        Kind::Secret => drop(index.secrets.remove(key)),
        Kind::GatewayClass => drop(index.gateway_classes.remove(key)),
        Kind::Gateway => drop(index.gateways.remove(key)),
        Kind::HttpRoute => drop(index.http_routes.remove(key)),
        Kind::GrpcRoute => drop(index.grpc_routes.remove(key)),
        Kind::ReferenceGrant => drop(index.reference_grants.remove(key)),
        Kind::Ingress => drop(index.ingresses.remove(key)),
        Kind::IngressClass => drop(index.ingress_classes.remove(key)),
        Kind::Namespace => drop(index.namespaces.remove(key)),
    }
}

/// An object and the document of its file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The object, with `metadata.namespace` set.
    pub object: Object,
    /// Index of its document in the file.
    pub document: usize,
}

/// One document of a file: its index, the line it starts on (0-based) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    /// Index of the document, from 0.
    pub index: usize,
    /// Line of the file where the document's text starts (0-based).
    pub line: usize,
    /// The document's text, without its `---` marker line.
    pub text: &'a str,
}

/// True for a line that is a document marker (`---` or `...` at column 0).
fn marker(line: &str) -> Option<&str> {
    for m in ["---", "..."] {
        if let Some(rest) = line.strip_prefix(m)
            && (rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
        {
            return Some(if m == "---" { rest } else { "" });
        }
    }
    None
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

/// Splits a multi-document YAML text on `---`/`...` markers at column 0 (YAML forbids them
/// inside content there). Text after `---` on the marker line belongs to the new document.
/// A blank prelude before the first `---` is not counted as a document.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document's text
    let mut start_line = 0usize;
    let mut offset = 0usize;
    let mut seen_marker = false;
    let mut ended = false; // after `...`, text until the next `---` is ignored
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = marker(content) {
            let is_end = content.starts_with("...");
            let body = &text[start..offset];
            if !ended && (seen_marker || !is_blank(body)) {
                docs.push(Document { index: docs.len(), line: start_line, text: body });
            }
            seen_marker = true;
            ended = is_end;
            // The document text starts after the `---`, on the same line.
            let marker_len = content.len() - rest.len();
            start = offset + marker_len;
            start_line = line_no;
        }
        offset += line.len();
    }
    let body = &text[start..];
    if !ended && (seen_marker || !is_blank(body)) {
        // `a: 1\n---\n` ends with an empty document: skipped later, like any empty one.
        docs.push(Document { index: docs.len(), line: start_line, text: body });
    }
    docs
}

fn yaml_error(e: serde_saphyr::Error) -> String {
    // The first line says where and what; the rest is a source snippet.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML");
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Parses a document's text. Only on failure is it parsed again, padded with the lines
/// before it, so the error carries file line numbers without making every parse cost
/// O(lines before it).
fn parse_at<T: DeserializeOwned>(doc: &Document<'_>) -> Result<T, String> {
    serde_saphyr::from_str::<T>(doc.text).map_err(|first| {
        let mut padded = "\n".repeat(doc.line);
        padded.push_str(doc.text);
        match serde_saphyr::from_str::<T>(&padded) {
            Err(e) => yaml_error(e),
            Ok(_) => yaml_error(first),
        }
    })
}

/// The typed object of a document already parsed into `value`: converted from the value
/// (no second YAML parse); only if that fails is the text parsed again as `T`, which gives
/// the error its line and field path (or accepts what YAML typing allows, such as an
/// unquoted number where a string is expected).
fn from_value<T: DeserializeOwned>(doc: &Document<'_>, value: &Value) -> Result<Arc<T>, String> {
    match <T as serde::Deserialize>::deserialize(value) {
        Ok(typed) => Ok(Arc::new(typed)),
        Err(_) => parse_at::<T>(doc).map(Arc::new),
    }
}

/// Parses one document (see [`split_documents`]). `Ok(None)` for an empty document;
/// errors carry file line numbers.
pub fn parse_document(doc: &Document<'_>) -> Result<Option<Object>, String> {
    if is_blank(doc.text) {
        return Ok(None);
    }
    let value: Value = parse_at(doc)?;
    let map = match &value {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        _ => return Err("the document is not a mapping (expected a Kubernetes object)".into()),
    };
    let field = |name: &str| map.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let api_version = field("apiVersion").ok_or("missing apiVersion")?;
    let kind = field("kind").ok_or("missing kind")?;
    let name = match map.get("metadata").and_then(|m| m.get("name")) {
        None | Some(Value::Null) => return Err(format!("{kind}: missing metadata.name")),
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(Value::String(_)) => return Err(format!("{kind}: empty metadata.name")),
        Some(other) => {
            return Err(format!(
                "{kind}: metadata.name must be a string (quote it), found {other}"
            ));
        }
    };
    let typed =
        |r: Result<Object, String>| r.map_err(|e| format!("{kind} {}: {e}", name.unwrap_or("")));
    let mut object = match (api_version, kind) {
        (weir_crds::API_VERSION, "Route") => typed(from_value(doc, &value).map(Object::Route))?,
        (weir_crds::API_VERSION, "Plugin") => typed(from_value(doc, &value).map(Object::Plugin))?,
        (weir_crds::API_VERSION, "Consumer") => {
            typed(from_value(doc, &value).map(Object::Consumer))?
        }
        (weir_crds::API_VERSION, "BackendPolicy") => {
            typed(from_value(doc, &value).map(Object::BackendPolicy))?
        }
        ("v1", "Service") => typed(from_value(doc, &value).map(Object::Service))?,
        ("v1", "Secret") => typed(from_value(doc, &value).map(Object::Secret))?,
        ("v1", "Namespace") => typed(from_value(doc, &value).map(Object::Namespace))?,
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            typed(from_value(doc, &value).map(Object::EndpointSlice))?
        }
        (gateway_api::API_VERSION, "GatewayClass") => {
            typed(from_value(doc, &value).map(Object::GatewayClass))?
        }
        (gateway_api::API_VERSION, "Gateway") => {
            typed(from_value(doc, &value).map(Object::Gateway))?
        }
        (gateway_api::API_VERSION, "HTTPRoute") => {
            typed(from_value(doc, &value).map(Object::HttpRoute))?
        }
        (gateway_api::API_VERSION, "GRPCRoute") => {
            typed(from_value(doc, &value).map(Object::GrpcRoute))?
        }
        (gateway_api::API_VERSION_BETA, "ReferenceGrant") => {
            typed(from_value(doc, &value).map(Object::ReferenceGrant))?
        }
        ("networking.k8s.io/v1", "Ingress") => typed(from_value(doc, &value).map(Object::Ingress))?,
        ("networking.k8s.io/v1", "IngressClass") => {
            typed(from_value(doc, &value).map(Object::IngressClass))?
        }
        _ => {
            return Err(format!(
                "unknown kind {kind} (apiVersion {api_version}): expected Route, Plugin, \
                 Consumer or BackendPolicy ({}), Service, Secret or Namespace (v1), EndpointSlice \
                 (discovery.k8s.io/v1), GatewayClass, Gateway, HTTPRoute or GRPCRoute ({}), \
                 ReferenceGrant ({}), or Ingress or IngressClass (networking.k8s.io/v1)",
                weir_crds::API_VERSION,
                gateway_api::API_VERSION,
                gateway_api::API_VERSION_BETA,
            ));
        }
    };
    let namespaced = object.kind().namespaced();
    // (A Route's namespace is set when it is built: `RouteObject::from`.)
    if let Some(meta) = object.meta_mut() {
        if !namespaced {
            meta.namespace = None;
        } else if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".to_owned());
        }
    }
    Ok(Some(object))
}

/// Parses every document of a file. A file with any error yields its errors (the caller
/// decides whether to keep the file's last good objects); duplicates inside the file are
/// errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Loaded>, Vec<LoadError>> {
    parse_file_with(file, text, parse_document)
}

/// [`parse_file`] with `parse` turning each document into its object (`Ok(None)` for an
/// empty document), e.g. reusing the objects of documents that did not change. `parse` is
/// called once per document, in order.
pub fn parse_file_with(
    file: &str,
    text: &str,
    mut parse: impl FnMut(&Document<'_>) -> Result<Option<Object>, String>,
) -> Result<Vec<Loaded>, Vec<LoadError>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(Kind, ObjectRef), usize> = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for doc in split_documents(text) {
        let error =
            |reason: String| LoadError { file: file.to_owned(), document: doc.index, reason };
        match parse(&doc) {
            Ok(None) => {}
            Ok(Some(object)) => {
                let id = (object.kind(), object.key());
                if let Some(first) = seen.get(&id) {
                    errors.push(error(format!(
                        "duplicate {} {}: already defined in document {first} of this file",
                        id.0.as_str(),
                        id.1
                    )));
                    continue;
                }
                seen.insert(id, doc.index);
                objects.push(Loaded { object, document: doc.index });
            }
            Err(reason) => errors.push(error(reason)),
        }
    }
    if errors.is_empty() { Ok(objects) } else { Err(errors) }
}

pub(crate) fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

pub(crate) fn hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, sorted. Hidden entries (names
/// starting with `.`, such as editor swap files and ConfigMap `..data` links) are skipped.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > 100_000 {
            break; // a symlink loop: stop rather than spin
        }
        // The root must be readable; a subdirectory that cannot be read (or vanished
        // mid-scan) is skipped so it does not block reloads of every other file.
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "skipping unreadable directory");
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if hidden(&path) {
                continue;
            }
            let meta = std::fs::metadata(&path);
            match meta {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() && is_yaml(&path) => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Merges the objects of several files, in the given order, into an index. An object
/// defined again in a later file is an error of that later document; the first wins.
pub fn merge<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [Loaded])>,
    controller_namespace: &str,
) -> (Index, Vec<LoadError>) {
    let mut index =
        Index { controller_namespace: controller_namespace.to_owned(), ..Index::default() };
    let mut errors = Vec::new();
    let mut origin = HashMap::new();
    for (file, objects) in files {
        for loaded in objects {
            if first_definition(&mut origin, &mut errors, file, loaded) {
                loaded.object.clone().insert_into(&mut index);
            }
        }
    }
    (index, errors)
}

/// Records where `loaded` is defined; false (with a duplicate error) when an earlier file
/// or document already defined the same kind and key.
fn first_definition<'a>(
    origin: &mut HashMap<(Kind, ObjectRef), (&'a str, usize)>,
    errors: &mut Vec<LoadError>,
    file: &'a str,
    loaded: &Loaded,
) -> bool {
    let id = (loaded.object.kind(), loaded.object.key());
    if let Some((first_file, first_doc)) = origin.get(&id) {
        errors.push(LoadError {
            file: file.to_owned(),
            document: loaded.document,
            reason: format!(
                "duplicate {} {}: already defined in {first_file} document {first_doc}",
                id.0.as_str(),
                id.1
            ),
        });
        return false;
    }
    origin.insert(id, (file, loaded.document));
    true
}

/// Offline load for `weir validate`: files and directories (recursively), every object
/// with `metadata.generation` 1 unless set.
pub fn load_paths(paths: &[PathBuf], controller_namespace: &str) -> (Index, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let shown = p.display().to_string();
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match yaml_files(p) {
                Ok(found) => files.extend(found),
                Err(e) => {
                    errors.push(LoadError { file: shown, document: 0, reason: e.to_string() })
                }
            },
            Ok(_) => files.push(p.clone()),
            Err(e) => errors.push(LoadError { file: shown, document: 0, reason: e.to_string() }),
        }
    }
    let mut parsed: Vec<(String, Vec<Loaded>)> = Vec::new();
    for f in files {
        let shown = f.display().to_string();
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(LoadError { file: shown, document: 0, reason: e.to_string() });
                continue;
            }
        };
        match parse_file(&shown, &text) {
            Ok(mut objects) => {
                for o in &mut objects {
                    o.object.stamp(1, None);
                }
                parsed.push((shown, objects));
            }
            Err(e) => errors.extend(e),
        }
    }
    let (index, merge_errors) =
        merge(parsed.iter().map(|(f, o)| (f.as_str(), o.as_slice())), controller_namespace);
    errors.extend(merge_errors);
    (index, errors)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
