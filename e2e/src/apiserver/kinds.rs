//! The table of resources the double serves, and the discovery documents built from it.

use serde_json::{Value, json};

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group; `""` is the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// `kind` of the objects.
    pub kind: &'static str,
    /// Namespaced (`true`) or cluster-scoped.
    pub namespaced: bool,
    /// Has a `status` subresource: main writes ignore `status`, `/status` writes change only it.
    pub status: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Kind {
    Kind { group, version, plural, singular, kind, namespaced, status }
}

/// Every resource the double knows from the start (built-in APIs and weir's CRDs).
/// Anything else is answered 404 until a CustomResourceDefinition registers it
/// ([`Kinds::register_crd`]), as the Gateway API's CRDs do.
pub const KINDS: &[Kind] = &[
    kind("weir.dev", "v1alpha1", "routes", "route", "Route", true, true),
    kind("weir.dev", "v1alpha1", "plugins", "plugin", "Plugin", true, true),
    kind("weir.dev", "v1alpha1", "consumers", "consumer", "Consumer", true, true),
    kind("weir.dev", "v1alpha1", "backendpolicies", "backendpolicy", "BackendPolicy", true, true),
    kind("", "v1", "services", "service", "Service", true, true),
    kind("", "v1", "secrets", "secret", "Secret", true, false),
    kind("", "v1", "configmaps", "configmap", "ConfigMap", true, false),
    kind("", "v1", "namespaces", "namespace", "Namespace", false, true),
    kind("", "v1", "events", "event", "Event", true, false),
    kind("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, false),
    kind("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, false),
    kind("events.k8s.io", "v1", "events", "event", "Event", true, false),
    kind("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, true),
    kind("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, false),
    kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        true,
    ),
];

/// The resources one double serves: [`KINDS`] and those its CustomResourceDefinitions
/// registered.
#[derive(Debug, Default)]
pub struct Kinds {
    registered: std::sync::Mutex<Vec<&'static Kind>>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

impl Kinds {
    /// Every served resource.
    pub fn all(&self) -> Vec<&'static Kind> {
        let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        KINDS.iter().chain(registered.iter().copied()).collect()
    }

    /// Finds a served resource.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
        self.all()
            .into_iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// Finds a served resource by `apiVersion` and `kind`.
    pub fn find_by_type(&self, api_version: &str, kind: &str) -> Option<&'static Kind> {
        self.all().into_iter().find(|k| k.kind == kind && k.api_version() == api_version)
    }

    /// Serves the resources a CustomResourceDefinition (`apiextensions.k8s.io/v1`) defines:
    /// one per served version, namespaced per `spec.scope`, with a status subresource when
    /// the version declares one. A version already served is left as is (the double does
    /// not unregister on delete: a real server keeps serving until the CRD is gone, and the
    /// tests never delete one).
    pub fn register_crd(&self, crd: &Value) {
        let spec = &crd["spec"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let (group, plural, singular, kind_name) = (
            text(&spec["group"]),
            text(&spec["names"]["plural"]),
            text(&spec["names"]["singular"]),
            text(&spec["names"]["kind"]),
        );
        if group.is_empty() || plural.is_empty() || kind_name.is_empty() {
            return;
        }
        let namespaced = spec["scope"] != "Cluster";
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"] == false {
                continue;
            }
            let name = text(&version["name"]);
            if name.is_empty() || self.find(&group, &name, &plural).is_some() {
                continue;
            }
            let status = version["subresources"].get("status").is_some();
            let singular =
                if singular.is_empty() { kind_name.to_lowercase() } else { singular.clone() };
            let k: &'static Kind = Box::leak(Box::new(Kind {
                group: leak(&group),
                version: leak(&name),
                plural: leak(&plural),
                singular: leak(&singular),
                kind: leak(&kind_name),
                namespaced,
                status,
            }));
            self.registered.lock().unwrap_or_else(|p| p.into_inner()).push(k);
        }
    }
}

impl Kind {
    /// Finds a served resource.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// Finds a served resource by `apiVersion` and `kind`.
    pub fn find_by_type(api_version: &str, kind: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|k| k.kind == kind && k.api_version() == api_version)
    }

    /// `apiVersion` of the objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as error messages name it: `services`, `routes.weir.dev`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Fields a field selector may use besides `metadata.name` / `metadata.namespace`,
    /// as the real server allows them for this kind.
    pub fn extra_selectable_fields(&self) -> &'static [&'static str] {
        match (self.group, self.plural) {
            ("", "secrets") => &["type"],
            ("", "namespaces") => &["status.phase"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            ("events.k8s.io", "events") => &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ],
            _ => &[],
        }
    }
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_versions(kinds: &[&'static Kind]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

fn group_doc(kinds: &[&'static Kind], group: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions(kinds)
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// `GET /apis`.
pub fn group_list(kinds: &[&'static Kind]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in group_versions(kinds) {
        if !names.contains(&g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.into_iter().filter_map(|g| group_doc(kinds, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/GROUP`.
pub fn group(kinds: &[&'static Kind], group: &str) -> Option<Value> {
    let mut doc = group_doc(kinds, group)?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("kind".into(), json!("APIGroup"));
        map.insert("apiVersion".into(), json!("v1"));
    }
    Some(doc)
}

/// `GET /api/v1` or `GET /apis/GROUP/VERSION`.
pub fn resource_list(kinds: &[&'static Kind], group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> =
        kinds.iter().copied().filter(|k| k.group == group && k.version == version).collect();
    let first = kinds.first()?;
    let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for k in &kinds {
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": verbs,
        }));
        if k.status {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": resources,
    }))
}

/// `GET /version`: what `kube::Client::apiserver_version` reads.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-weir-apiserver-double",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
