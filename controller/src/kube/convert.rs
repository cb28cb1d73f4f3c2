//! Per-object conversion of watched `DynamicObject`s into the typed objects of the index.
//!
//! Every kind is watched untyped so that one object that does not deserialize cannot fail
//! the whole watch stream: it is converted here, alone, and reported `Invalid` with the
//! serde error and the path of the offending field.

use std::sync::Arc;

use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use weir_crds::RouteStatus;

use crate::index::{Kind, ObjectRef, StatusWrite};
use crate::load::Object;

/// The API resource (group, version, plural) watched for a kind, from the registry.
pub fn api_resource(kind: Kind) -> ApiResource {
    let info = kind.info();
    ApiResource {
        group: info.group.to_owned(),
        version: info.version.to_owned(),
        api_version: kind.api_version(),
        kind: kind.as_str().to_owned(),
        plural: info.plural.to_owned(),
    }
}

/// True for the kinds whose status this controller writes (weir's, and the front-end
/// kinds' status documents).
pub fn has_status(kind: Kind) -> bool {
    kind.info().status != StatusWrite::Never
}

/// What the API server holds for a weir object: what the status writer compares with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Existing {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: i64,
    /// The status on the object (read leniently: a malformed status reads as empty).
    /// weir kinds only.
    pub status: RouteStatus,
    /// The status on the object as raw JSON (kinds whose status document weir writes:
    /// Gateway API and Ingress); `None` when it has none.
    pub document: Option<serde_json::Value>,
}

/// An object that does not convert: its generation and the reason, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `metadata.generation`.
    pub generation: i64,
    /// The serde error with the path of the field, e.g. `spec.rateLimit.limit: invalid type`.
    pub message: String,
}

/// One watched object after conversion.
#[derive(Debug, Clone)]
pub struct Item {
    /// The kind.
    pub kind: Kind,
    /// Namespace and name.
    pub key: ObjectRef,
    /// The typed object, stripped of what never affects compile() (status,
    /// resourceVersion, managedFields); `None` when it did not convert.
    pub object: Option<Object>,
    /// Set when the object did not convert.
    pub invalid: Option<Invalid>,
    /// Weir kinds only: what the status writer compares with.
    pub existing: Option<Existing>,
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })
}

fn convert(kind: Kind, value: serde_json::Value) -> Result<Object, String> {
    Ok(match kind {
        Kind::Route => Object::Route(Arc::new(typed(value)?)),
        Kind::Plugin => Object::Plugin(Arc::new(typed(value)?)),
        Kind::Consumer => Object::Consumer(Arc::new(typed(value)?)),
        Kind::BackendPolicy => Object::BackendPolicy(Arc::new(typed(value)?)),
        Kind::Service => Object::Service(Arc::new(typed(value)?)),
        Kind::EndpointSlice => Object::EndpointSlice(Arc::new(typed(value)?)),
        Kind::Secret => Object::Secret(Arc::new(typed(value)?)),
        Kind::GatewayClass => Object::GatewayClass(Arc::new(typed(value)?)),
        Kind::Gateway => Object::Gateway(Arc::new(typed(value)?)),
        Kind::HttpRoute => Object::HttpRoute(Arc::new(typed(value)?)),
        Kind::GrpcRoute => Object::GrpcRoute(Arc::new(typed(value)?)),
        Kind::ReferenceGrant => Object::ReferenceGrant(Arc::new(typed(value)?)),
        Kind::Ingress => Object::Ingress(Arc::new(typed(value)?)),
        Kind::IngressClass => Object::IngressClass(Arc::new(typed(value)?)),
        Kind::Namespace => Object::Namespace(Arc::new(typed(value)?)),
    })
}

/// Removes what changes without changing the configuration (a status write bumps
/// `resourceVersion`), so that such writes do not recompile anything.
fn strip(object: &mut Object) {
    if let Some(meta) = object.meta_mut() {
        meta.resource_version = None;
        meta.managed_fields = None;
    }
    match object {
        // A Route keeps neither (only its spec and key, generation, creation time).
        Object::Route(_) => {}
        Object::Plugin(o) => Arc::make_mut(o).status = None,
        Object::Consumer(o) => Arc::make_mut(o).status = None,
        Object::BackendPolicy(o) => Arc::make_mut(o).status = None,
        // weir's own Service (`--publish-service`) reports its load-balancer addresses in
        // Gateway and Ingress statuses: the status of Services is kept.
        Object::GatewayClass(o) => Arc::make_mut(o).status = None,
        Object::Gateway(o) => Arc::make_mut(o).status = None,
        Object::HttpRoute(o) => Arc::make_mut(o).status = None,
        Object::GrpcRoute(o) => Arc::make_mut(o).status = None,
        Object::ReferenceGrant(o) => Arc::make_mut(o).status = None,
        Object::Ingress(o) => Arc::make_mut(o).status = None,
        Object::Service(_)
        | Object::EndpointSlice(_)
        | Object::Secret(_)
        | Object::IngressClass(_) => {}
        Object::Namespace(o) => Arc::make_mut(o).status = None,
    }
}

/// Namespace and name of a watched object of `kind` (namespace `""` for cluster-scoped
/// kinds).
pub fn key_of(kind: Kind, obj: &DynamicObject) -> ObjectRef {
    let namespace = if kind.namespaced() {
        obj.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned())
    } else {
        String::new()
    };
    ObjectRef::new(namespace, obj.metadata.name.clone().unwrap_or_default())
}

/// Converts one watched object.
pub fn item(kind: Kind, obj: DynamicObject) -> Item {
    let key = key_of(kind, &obj);
    let generation = obj.metadata.generation.unwrap_or(0);
    let raw = obj.data.get("status");
    let existing = has_status(kind).then(|| match kind.info().status {
        StatusWrite::Document => Existing {
            uid: obj.metadata.uid.clone(),
            generation,
            status: RouteStatus::default(),
            document: raw.filter(|s| !s.is_null()).cloned(),
        },
        _ => Existing {
            uid: obj.metadata.uid.clone(),
            generation,
            status: raw.and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default(),
            document: None,
        },
    });
    let mut value = match serde_json::to_value(&obj) {
        Ok(v) => v,
        Err(e) => {
            let invalid = Some(Invalid { generation, message: e.to_string() });
            return Item { kind, key, object: None, invalid, existing };
        }
    };
    if kind != Kind::Service
        && let Some(map) = value.as_object_mut()
    {
        // A malformed status must not make the object invalid: only the spec is the user's.
        // Services keep theirs: weir's own Service (`--publish-service`) reports its
        // load-balancer addresses in Gateway and Ingress statuses.
        map.remove("status");
    }
    match convert(kind, value) {
        Ok(mut object) => {
            strip(&mut object);
            Item { kind, key, object: Some(object), invalid: None, existing }
        }
        Err(message) => Item {
            kind,
            key,
            object: None,
            invalid: Some(Invalid { generation, message }),
            existing,
        },
    }
}

/// The `apiVersion` of a kind (for status patches and event references).
pub fn api_version(kind: Kind) -> String {
    kind.api_version()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn converts_a_route_and_strips_status_and_resource_version() {
        let obj = dynamic(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "r", "namespace": "ns", "generation": 3, "resourceVersion": "7"},
            "spec": {"rules": [{"backends": [{"service": "s", "port": 80}]}]},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Accepted",
                "status": "True", "reason": "Accepted", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
        }));
        let item = item(Kind::Route, obj);
        assert_eq!(item.key, ObjectRef::new("ns", "r"));
        assert!(item.invalid.is_none());
        let Some(Object::Route(route)) = &item.object else { panic!("not a route") };
        // The kept Route has no status or resourceVersion at all: only its key, generation
        // and creation time besides the spec.
        assert_eq!(route.metadata.key, ObjectRef::new("ns", "r"));
        assert_eq!(route.metadata.generation, Some(3));
        assert_eq!(route.spec.rules[0].backends[0].service, "s");
        let existing = item.existing.unwrap();
        assert_eq!(existing.generation, 3);
        assert_eq!(existing.status.observed_generation, Some(2));
        assert_eq!(existing.status.conditions.len(), 1);
    }

    #[test]
    fn an_object_that_does_not_convert_is_invalid_with_the_field_path() {
        let obj = dynamic(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "p", "namespace": "ns", "generation": 1},
            "spec": {"rateLimit": {"limit": "lots", "window": "1m"}}
        }));
        let item = item(Kind::Plugin, obj);
        assert!(item.object.is_none());
        let invalid = item.invalid.unwrap();
        assert!(invalid.message.starts_with("spec.rateLimit.limit: invalid type"), "{invalid:?}");
        assert_eq!(invalid.generation, 1);
    }

    #[test]
    fn a_malformed_status_does_not_invalidate_the_object() {
        let obj = dynamic(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Consumer",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {}, "status": {"conditions": "nope"}
        }));
        let item = item(Kind::Consumer, obj);
        assert!(item.object.is_some());
        assert_eq!(item.existing.unwrap().status, RouteStatus::default());
    }
}
