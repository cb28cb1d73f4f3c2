//! Every Kubernetes API call the controller makes, for the chart's RBAC rules.
//!
//! The e2e test `kube_controller::api_calls_are_all_listed` runs the controller against the
//! API server double and fails when a call it sees is missing here, so the list follows the
//! behaviour. Besides these, the controller reads `GET /version` once at startup (a
//! non-resource URL every authenticated user may read).

/// One RBAC rule: API group (`""` = core), resource (`resource/subresource`), verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// API group; `""` is the core group.
    pub group: &'static str,
    /// Plural resource, with `/subresource` when one is used.
    pub resource: &'static str,
    /// Verbs used.
    pub verbs: &'static [&'static str],
    /// Namespace-scoped only in the controller's namespace (true) or in every watched
    /// namespace (false).
    pub own_namespace_only: bool,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> ApiCall {
    ApiCall { group, resource, verbs, own_namespace_only: false }
}

/// Every call the controller makes.
pub const API_CALLS: &[ApiCall] = &[
    call("weir.dev", "routes", &["list", "watch"]),
    call("weir.dev", "plugins", &["list", "watch"]),
    call("weir.dev", "consumers", &["list", "watch"]),
    call("weir.dev", "backendpolicies", &["list", "watch"]),
    call("weir.dev", "routes/status", &["patch"]),
    call("weir.dev", "plugins/status", &["patch"]),
    call("weir.dev", "consumers/status", &["patch"]),
    call("weir.dev", "backendpolicies/status", &["patch"]),
    call("", "services", &["list", "watch"]),
    call("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    // Ingress front end, and Namespaces (their labels, for Gateway listeners'
    // allowedRoutes selectors): always watched.
    call("networking.k8s.io", "ingresses", &["list", "watch"]),
    call("networking.k8s.io", "ingressclasses", &["list", "watch"]),
    call("networking.k8s.io", "ingresses/status", &["patch"]),
    call("", "namespaces", &["list", "watch"]),
    // Gateway API: watched once API discovery shows the CRDs are served (discovery itself
    // reads `/apis/gateway.networking.k8s.io/...`, non-resource URLs every authenticated
    // user may read).
    call("gateway.networking.k8s.io", "gatewayclasses", &["list", "watch"]),
    call("gateway.networking.k8s.io", "gateways", &["list", "watch"]),
    call("gateway.networking.k8s.io", "httproutes", &["list", "watch"]),
    call("gateway.networking.k8s.io", "grpcroutes", &["list", "watch"]),
    call("gateway.networking.k8s.io", "referencegrants", &["list", "watch"]),
    call("gateway.networking.k8s.io", "gatewayclasses/status", &["patch"]),
    call("gateway.networking.k8s.io", "gateways/status", &["patch"]),
    call("gateway.networking.k8s.io", "httproutes/status", &["patch"]),
    call("gateway.networking.k8s.io", "grpcroutes/status", &["patch"]),
    // Only Secrets labelled `weir.dev/secret=true` or named by a weir object (field selector).
    call("", "secrets", &["list", "watch"]),
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        own_namespace_only: true,
    },
    call("events.k8s.io", "events", &["create", "patch"]),
];

/// Whether `(group, resource, verb)` is in [`API_CALLS`].
pub fn allowed(group: &str, resource: &str, verb: &str) -> bool {
    API_CALLS.iter().any(|c| c.group == group && c.resource == resource && c.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_match_exactly() {
        assert!(allowed("weir.dev", "routes/status", "patch"));
        assert!(!allowed("weir.dev", "routes", "patch"));
        assert!(!allowed("", "secrets", "get"));
        assert!(allowed("coordination.k8s.io", "leases", "update"));
    }

    #[test]
    fn every_watched_kind_is_listed_and_watched_and_every_status_written_is_patched() {
        use crate::index::{KINDS, StatusWrite};
        for info in &KINDS {
            for verb in ["list", "watch"] {
                assert!(allowed(info.group, info.plural, verb), "{:?} {verb}", info.kind);
            }
            let status = format!("{}/status", info.plural);
            assert_eq!(
                allowed(info.group, &status, "patch"),
                info.status != StatusWrite::Never,
                "{:?}",
                info.kind
            );
        }
    }
}
