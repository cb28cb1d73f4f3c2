//! The verbs on resource paths: get, list, create, update, patch (merge, strategic as merge,
//! JSON patch, server-side apply), delete and deletecollection. Each runs under the store
//! lock, so a read-modify-write is atomic like an etcd transaction.

use serde_json::{Value, json};

use super::error::ApiError;
use super::kinds::Kind;
use super::managed::{self, Scope};
use super::meta;
use super::paths::{Query, ResourcePath};
use super::selectors::Selectors;
use super::store::{self, ObjKey, State};

/// One request on a resource path, body already read.
#[derive(Debug)]
pub struct Call<'a> {
    /// The resource path.
    pub path: &'a ResourcePath,
    /// Query parameters.
    pub query: &'a Query,
    /// The request body.
    pub body: &'a [u8],
    /// `content-type` without parameters.
    pub content_type: &'a str,
    /// The manager recorded for non-apply writes: `fieldManager`, else the user agent's
    /// product name, like the real server.
    pub manager: String,
    /// Refuse creates in namespaces that do not exist (the real NamespaceLifecycle admission).
    pub require_namespace: bool,
}

impl Call<'_> {
    fn kind(&self) -> &'static Kind {
        self.path.kind
    }

    fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or_default()
    }

    fn name(&self) -> Result<&str, ApiError> {
        self.path
            .name
            .as_deref()
            .ok_or_else(|| ApiError::MethodNotAllowed("a name is required".into()))
    }

    fn key(&self, name: &str) -> ObjKey {
        store::key(self.kind(), self.namespace(), name)
    }

    fn on_status(&self) -> bool {
        self.path.subresource.is_some()
    }

    fn scope(&self) -> Scope {
        if self.on_status() { Scope::Status } else { Scope::Main(self.kind().status) }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.kind().qualified(), name)
    }

    fn existing(&self, state: &State, name: &str) -> Result<Value, ApiError> {
        state.get(&self.key(name)).cloned().ok_or_else(|| self.not_found(name))
    }

    /// The body as a JSON object (YAML accepted for apply patches).
    fn object_body(&self) -> Result<Value, ApiError> {
        let parsed: Value = match serde_json::from_slice(self.body) {
            Ok(v) => v,
            Err(json_err) if self.content_type.contains("yaml") => {
                let text = std::str::from_utf8(self.body)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                serde_saphyr::from_str(text).map_err(|e| {
                    ApiError::BadRequest(format!("error decoding YAML: {e} (as JSON: {json_err})"))
                })?
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!("error decoding request body: {e}")));
            }
        };
        if !parsed.is_object() {
            return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
        }
        Ok(parsed)
    }

    /// Checks `apiVersion`/`kind` (when set, or always when `required`), and that the body's
    /// name and namespace agree with the URL.
    fn check_identity(&self, obj: &Value, required: bool) -> Result<(), ApiError> {
        let kind = self.kind();
        for (field, want) in [("apiVersion", kind.api_version()), ("kind", kind.kind.to_owned())] {
            match obj.get(field).and_then(Value::as_str) {
                Some(got) if got != want => {
                    return Err(ApiError::BadRequest(format!(
                        "{field} {got:?} does not match the expected {want:?}"
                    )));
                }
                None if required => {
                    return Err(ApiError::BadRequest(format!("{field} must be set")));
                }
                _ => {}
            }
        }
        if let (Some(url), Some(body)) = (self.path.name.as_deref(), meta::get_str(obj, "name"))
            && url != body
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body}) does not match the name on the URL ({url})"
            )));
        }
        if let Some(body_ns) = meta::get_str(obj, "namespace").filter(|ns| !ns.is_empty())
            && kind.namespaced
            && body_ns != self.namespace()
        {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        Ok(())
    }

    fn check_rv(
        &self,
        name: &str,
        requested: Option<&str>,
        current: &Value,
    ) -> Result<(), ApiError> {
        match requested.filter(|rv| !rv.is_empty()) {
            Some(rv) if Some(rv) != meta::get_str(current, "resourceVersion") => {
                Err(ApiError::stale(&self.kind().qualified(), name))
            }
            _ => Ok(()),
        }
    }
}

fn set_type(obj: &mut Value, kind: &Kind) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(kind.api_version()));
        m.insert("kind".into(), Value::String(kind.kind.to_owned()));
    }
}

/// `GET` one object (or its status).
pub fn get(state: &State, call: &Call) -> Result<Value, ApiError> {
    call.existing(state, call.name()?)
}

/// `GET` a collection: an `XList` at the current resourceVersion (no paging).
pub fn list(state: &State, call: &Call) -> Result<Value, ApiError> {
    let kind = call.kind();
    let q = call.query;
    let selectors =
        Selectors::parse(q.label_selector.as_deref(), q.field_selector.as_deref(), kind)?;
    let items: Vec<Value> = state
        .list(kind, call.path.namespace.as_deref())
        .into_iter()
        .filter(|o| selectors.matches(o))
        .collect();
    Ok(json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": state.rv().to_string()},
        "items": items,
    }))
}

fn finalize_create(
    state: &mut State,
    call: &Call,
    name: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let kind = call.kind();
    if !meta::valid_name(name, kind.plural == "namespaces" && kind.group.is_empty()) {
        return Err(ApiError::Invalid(format!(
            "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 \
             subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and \
             end with an alphanumeric character",
            kind.qualified()
        )));
    }
    if kind.namespaced && call.require_namespace {
        let Some(ns_kind) = Kind::find("", "v1", "namespaces") else {
            return Err(ApiError::Internal("namespaces are not served".into()));
        };
        if state.get(&store::key(ns_kind, "", call.namespace())).is_none() {
            return Err(ApiError::not_found("namespaces", call.namespace()));
        }
    }
    if kind.namespaced && !meta::valid_name(call.namespace(), true) {
        return Err(ApiError::Invalid(format!(
            "metadata.namespace: Invalid value: {:?}: a lowercase RFC 1123 label is required",
            call.namespace()
        )));
    }
    set_type(&mut obj, kind);
    meta::normalize(kind.group, kind.plural, &mut obj);
    let m = meta::metadata_mut(&mut obj);
    m.insert("name".into(), json!(name));
    if kind.namespaced {
        m.insert("namespace".into(), json!(call.namespace()));
    } else {
        m.remove("namespace");
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(meta::now()));
    m.insert("generation".into(), json!(1));
    for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(f);
    }
    if call.query.dry_run {
        return Ok(obj);
    }
    Ok(state.put(kind, call.key(name), obj, None))
}

/// `POST` to a collection: 201 with the stored object.
pub fn create(state: &mut State, call: &Call) -> Result<Value, ApiError> {
    let mut obj = call.object_body()?;
    call.check_identity(&obj, false)?;
    let name = match meta::get_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None => {
            let prefix =
                meta::get_str(&obj, "generateName").filter(|p| !p.is_empty()).ok_or_else(|| {
                    ApiError::Invalid(
                        "metadata.name: Required value: name or generateName is required".into(),
                    )
                })?;
            let candidates = (0..16).map(|_| format!("{prefix}{}", meta::random_suffix()));
            let mut free = candidates.filter(|n| state.get(&call.key(n)).is_none());
            free.next().ok_or_else(|| {
                ApiError::AlreadyExists(format!("no free name for prefix {prefix:?}"))
            })?
        }
    };
    if meta::get_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        // The real storage layer refuses this with a plain (500) error.
        return Err(ApiError::Internal(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }
    if state.get(&call.key(&name)).is_some() {
        return Err(ApiError::AlreadyExists(format!(
            "{} \"{name}\" already exists",
            call.kind().qualified()
        )));
    }
    if call.kind().status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    meta::metadata_mut(&mut obj).remove("managedFields");
    managed::record_update(
        None,
        &mut obj,
        &call.manager,
        Scope::Main(call.kind().status),
        &call.kind().api_version(),
    );
    finalize_create(state, call, &name, obj)
}

/// Stores an update of `old` unless it changes nothing; bumps the generation when anything
/// outside metadata and status changed; completes a pending deletion once the finalizers
/// are gone.
fn commit_update(state: &mut State, call: &Call, name: &str, old: &Value, mut new: Value) -> Value {
    let kind = call.kind();
    meta::carry_system_fields(old, &mut new);
    set_type(&mut new, kind);
    meta::normalize(kind.group, kind.plural, &mut new);
    if meta::same_content(old, &new) {
        return old.clone();
    }
    if !call.on_status() && meta::spec_differs(old, &new) {
        meta::metadata_mut(&mut new).insert("generation".into(), json!(meta::generation(old) + 1));
    }
    if call.query.dry_run {
        return new;
    }
    let finalizers_done = meta::get_str(&new, "deletionTimestamp").is_some()
        && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
    let key = call.key(name);
    let stored = state.put(kind, key.clone(), new, Some(old.clone()));
    if finalizers_done {
        return state.remove(kind, &key).unwrap_or(stored);
    }
    stored
}

/// `PUT` an object or its status: 409 on a stale `metadata.resourceVersion`.
pub fn update(state: &mut State, call: &Call) -> Result<Value, ApiError> {
    let name = call.name()?;
    let mut new = call.object_body()?;
    call.check_identity(&new, false)?;
    let old = call.existing(state, name)?;
    call.check_rv(name, meta::get_str(&new, "resourceVersion"), &old)?;
    if let Some(uid) = meta::get_str(&new, "uid").filter(|u| !u.is_empty())
        && Some(uid) != meta::get_str(&old, "uid")
    {
        return Err(ApiError::Conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, \
             UID in object meta: {}",
            call.kind().qualified(),
            meta::get_str(&old, "uid").unwrap_or_default()
        )));
    }
    let old_managed = old.pointer("/metadata/managedFields").cloned();
    let m = meta::metadata_mut(&mut new);
    match old_managed {
        Some(mf) => m.insert("managedFields".into(), mf),
        None => m.remove("managedFields"),
    };
    meta::keep_status_rules(Some(&old), &mut new, call.kind().status, call.on_status());
    managed::record_update(
        Some(&old),
        &mut new,
        &call.manager,
        call.scope(),
        &call.kind().api_version(),
    );
    Ok(commit_update(state, call, name, &old, new))
}

/// `PATCH`: returns the status code (201 when an apply created the object) and the object.
pub fn patch(state: &mut State, call: &Call) -> Result<(u16, Value), ApiError> {
    let name = call.name()?;
    let kind = call.kind();
    if call.content_type == "application/apply-patch+yaml" {
        return apply(state, call, name);
    }
    let old = call.existing(state, name)?;
    let mut new = old.clone();
    match call.content_type {
        // Strategic merge is served as a JSON merge patch: no patchStrategy directives.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
            json_patch::merge(&mut new, &patch);
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding JSON patch: {e}")))?;
            json_patch::patch(&mut new, &ops.0)
                .map_err(|e| ApiError::Invalid(format!("the JSON patch failed: {e}")))?;
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml (got {other:?})"
            )));
        }
    }
    call.check_rv(name, meta::get_str(&new, "resourceVersion"), &old)?;
    call.check_identity(&new, false)?;
    meta::keep_status_rules(Some(&old), &mut new, kind.status, call.on_status());
    managed::record_update(Some(&old), &mut new, &call.manager, call.scope(), &kind.api_version());
    Ok((200, commit_update(state, call, name, &old, new)))
}

fn apply(state: &mut State, call: &Call, name: &str) -> Result<(u16, Value), ApiError> {
    let kind = call.kind();
    let manager = call.query.field_manager.as_deref().ok_or_else(|| {
        ApiError::BadRequest("fieldManager is required for apply requests".into())
    })?;
    let applied = call.object_body()?;
    call.check_identity(&applied, true)?;
    let old = state.get(&call.key(name)).cloned();
    let requested_rv = meta::get_str(&applied, "resourceVersion").filter(|rv| !rv.is_empty());
    match old {
        None if call.on_status() => Err(call.not_found(name)),
        None if requested_rv.is_some() => Err(call.not_found(name)),
        None => {
            let new = managed::apply(
                None,
                &applied,
                manager,
                call.query.force,
                call.scope(),
                &kind.api_version(),
            )?;
            Ok((201, finalize_create(state, call, name, new)?))
        }
        Some(old) => {
            call.check_rv(name, requested_rv, &old)?;
            let mut new = managed::apply(
                Some(&old),
                &applied,
                manager,
                call.query.force,
                call.scope(),
                &kind.api_version(),
            )?;
            meta::keep_status_rules(Some(&old), &mut new, kind.status, call.on_status());
            Ok((200, commit_update(state, call, name, &old, new)))
        }
    }
}

/// Deletes one object (or starts its deletion when it has finalizers).
fn delete_one(
    state: &mut State,
    call: &Call,
    name: &str,
    options: &Value,
) -> Result<Value, ApiError> {
    let kind = call.kind();
    let old = call.existing(state, name)?;
    let pre = |f: &str| options.pointer(&format!("/preconditions/{f}")).and_then(Value::as_str);
    for (field, label) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
        if let Some(want) = pre(field)
            && Some(want) != meta::get_str(&old, field)
        {
            return Err(ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": the {label} in the precondition ({want}) \
                 does not match the {label} in record ({}). The object might have been modified",
                kind.qualified(),
                meta::get_str(&old, field).unwrap_or_default()
            )));
        }
    }
    let dry = call.query.dry_run
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if dry || (has_finalizers && meta::get_str(&old, "deletionTimestamp").is_some()) {
        return Ok(old);
    }
    if has_finalizers {
        let mut new = old.clone();
        let m = meta::metadata_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(meta::now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        m.insert("generation".into(), json!(meta::generation(&old) + 1));
        return Ok(state.put(kind, call.key(name), new, Some(old)));
    }
    state.remove(kind, &call.key(name)).ok_or_else(|| call.not_found(name))
}

fn delete_options(call: &Call) -> Result<Value, ApiError> {
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(call.body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding DeleteOptions: {e}")))
}

/// `DELETE` one object: 200 with the object (its last state, or with `deletionTimestamp`
/// while finalizers remain).
pub fn delete(state: &mut State, call: &Call) -> Result<Value, ApiError> {
    let options = delete_options(call)?;
    delete_one(state, call, call.name()?, &options)
}

/// `DELETE` a collection: deletes every object matching the selectors; 200 with the list.
pub fn delete_collection(state: &mut State, call: &Call) -> Result<Value, ApiError> {
    let options = delete_options(call)?;
    let listed = list(state, call)?;
    let names: Vec<String> = listed["items"]
        .as_array()
        .map(|items| {
            items.iter().filter_map(|o| meta::get_str(o, "name").map(str::to_owned)).collect()
        })
        .unwrap_or_default();
    let mut deleted = Vec::new();
    for name in names {
        deleted.push(delete_one(state, call, &name, &options)?);
    }
    let kind = call.kind();
    Ok(json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": state.rv().to_string()},
        "items": deleted,
    }))
}
