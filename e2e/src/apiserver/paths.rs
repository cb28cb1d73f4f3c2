//! Request routing: URL path to endpoint (discovery or a resource path), query parameters,
//! and the Kubernetes verb of a request.

use super::error::ApiError;
use super::kinds::{Kind, Kinds};

/// What a URL path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/version`.
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/GROUP`.
    Group(String),
    /// `/api/v1`, `/apis/GROUP/VERSION`.
    Resources {
        /// API group (`""` = core).
        group: String,
        /// Version.
        version: String,
    },
    /// A collection, an object or an object's subresource.
    Resource(ResourcePath),
}

/// A resource URL: `/apis/G/V[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// The resource.
    pub kind: &'static Kind,
    /// Namespace from the path; `None` for cluster-scoped kinds and all-namespace collections.
    pub namespace: Option<String>,
    /// Object name; `None` for a collection.
    pub name: Option<String>,
    /// `status`, the only subresource served.
    pub subresource: Option<String>,
}

fn no_such_path() -> ApiError {
    ApiError::NotFound("the server could not find the requested resource".into())
}

/// Parses a URL path (without query).
pub fn parse_path(path: &str, kinds: &Kinds) -> Result<Endpoint, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Ok(Endpoint::Version),
        ["api"] => Ok(Endpoint::CoreVersions),
        ["api", v] => Ok(Endpoint::Resources { group: String::new(), version: (*v).into() }),
        ["api", v, rest @ ..] => resource_path(kinds, "", v, rest).map(Endpoint::Resource),
        ["apis"] => Ok(Endpoint::Groups),
        ["apis", g] => Ok(Endpoint::Group((*g).into())),
        ["apis", g, v] => Ok(Endpoint::Resources { group: (*g).into(), version: (*v).into() }),
        ["apis", g, v, rest @ ..] => resource_path(kinds, g, v, rest).map(Endpoint::Resource),
        _ => Err(no_such_path()),
    }
}

fn resource_path(
    kinds: &Kinds,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<ResourcePath, ApiError> {
    // `/namespaces/NS/PLURAL...` addresses a namespaced resource; `/namespaces/NS[/status]`
    // is the Namespace object itself.
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(kind) = kinds.find(group, version, plural).filter(|k| k.namespaced)
    {
        let (name, subresource) = name_and_sub(kind, tail)?;
        return Ok(ResourcePath { kind, namespace: Some((*ns).into()), name, subresource });
    }
    let [plural, tail @ ..] = rest else {
        return Err(no_such_path());
    };
    let kind = kinds.find(group, version, plural).ok_or_else(no_such_path)?;
    let (name, subresource) = name_and_sub(kind, tail)?;
    if kind.namespaced && name.is_some() {
        // A namespaced object must be addressed through its namespace.
        return Err(no_such_path());
    }
    Ok(ResourcePath { kind, namespace: None, name, subresource })
}

fn name_and_sub(kind: &Kind, tail: &[&str]) -> Result<(Option<String>, Option<String>), ApiError> {
    match tail {
        [] => Ok((None, None)),
        [name] => Ok((Some((*name).into()), None)),
        [name, "status"] if kind.status => Ok((Some((*name).into()), Some("status".into()))),
        _ => Err(no_such_path()),
    }
}

/// The query parameters the double understands. Others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `watch=true` / `watch=1`.
    pub watch: bool,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `timeoutSeconds` (watch).
    pub timeout_seconds: Option<u64>,
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `allowWatchBookmarks=true`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true` (streaming lists).
    pub send_initial_events: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force=true` (server-side apply).
    pub force: bool,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl Query {
    /// Parses a URL query string (without `?`).
    pub fn parse(query: &str) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "watch" => q.watch = truthy(&value),
                "resourceVersion" => q.resource_version = Some(value),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(value.parse().map_err(|_| {
                        ApiError::BadRequest(format!("invalid timeoutSeconds {value:?}"))
                    })?)
                }
                "labelSelector" => q.label_selector = Some(value).filter(|v| !v.is_empty()),
                "fieldSelector" => q.field_selector = Some(value).filter(|v| !v.is_empty()),
                "allowWatchBookmarks" => q.allow_bookmarks = truthy(&value),
                "sendInitialEvents" => q.send_initial_events = truthy(&value),
                "fieldManager" => q.field_manager = Some(value).filter(|v| !v.is_empty()),
                "force" => q.force = truthy(&value),
                "dryRun" => q.dry_run = value == "All",
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The Kubernetes verb of a request on a resource path.
pub fn verb(
    method: &http::Method,
    path: &ResourcePath,
    query: &Query,
) -> Result<&'static str, ApiError> {
    use http::Method;
    let collection = path.name.is_none();
    let verb = match (method, collection) {
        (&Method::GET, true) if query.watch => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, true) if path.subresource.is_none() => "create",
        (&Method::PUT, false) => "update",
        (&Method::PATCH, false) => "patch",
        (&Method::DELETE, false) if path.subresource.is_none() => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
    };
    if path.kind.namespaced && path.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(no_such_path());
    }
    Ok(verb)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse_path(path, &Kinds::default()).unwrap() {
            Endpoint::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_namespaced_cluster_and_subresource_paths() {
        let r = res("/apis/weir.dev/v1alpha1/namespaces/ns/routes/r1/status");
        assert_eq!((r.kind.kind, r.namespace.as_deref()), ("Route", Some("ns")));
        assert_eq!((r.name.as_deref(), r.subresource.as_deref()), (Some("r1"), Some("status")));
        let all = res("/apis/coordination.k8s.io/v1/leases");
        assert_eq!((all.namespace, all.name), (None, None));
        let ns = res("/api/v1/namespaces/team-a");
        assert_eq!((ns.kind.kind, ns.name.as_deref()), ("Namespace", Some("team-a")));
        let ns_status = res("/api/v1/namespaces/team-a/status");
        assert_eq!(ns_status.subresource.as_deref(), Some("status"));
        let svc = res("/api/v1/namespaces/team-a/services");
        assert_eq!((svc.kind.kind, svc.namespace.as_deref()), ("Service", Some("team-a")));
        assert!(parse_path("/api/v1/namespaces/ns/pods", &Kinds::default()).is_err());
        assert!(parse_path("/api/v1/namespaces/ns/secrets/s/status", &Kinds::default()).is_err());
        assert!(parse_path("/apis/weir.dev/v1alpha1/routes/r1", &Kinds::default()).is_err());
        assert_eq!(parse_path("/version", &Kinds::default()).unwrap(), Endpoint::Version);
    }

    #[test]
    fn parses_query_the_way_kube_sends_it() {
        let q = Query::parse("&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=0&labelSelector=app%3Dweb")
            .unwrap();
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!(q.timeout_seconds, Some(290));
        assert_eq!(q.resource_version.as_deref(), Some("0"));
        assert_eq!(q.label_selector.as_deref(), Some("app=web"));
        assert!(Query::parse("watch=1").unwrap().watch);
    }
}
