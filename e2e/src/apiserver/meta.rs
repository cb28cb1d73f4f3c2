//! Object metadata the server owns: resourceVersion, uid, creationTimestamp, generation,
//! and the comparisons that decide whether a write is a no-op or bumps the generation.

use serde_json::{Map, Value};

/// Now, as the API server writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata`, created when missing (and replacing a non-object).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else { unreachable!("made an object above") };
    let entry = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Sets `metadata.<field>` to a string.
pub fn set_str(obj: &mut Value, field: &str, value: &str) {
    metadata_mut(obj).insert(field.into(), Value::String(value.into()));
}

/// `metadata.<field>` as a string.
pub fn get_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.generation` (0 when unset).
pub fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
}

/// Whether anything outside `metadata` and `status` differs: the generation rule.
pub fn spec_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(a) != strip(b)
}

/// Whether two states of an object are the same write-wise: equal once resourceVersion and
/// the managedFields timestamps are ignored. A write that changes nothing is not stored.
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        let m = metadata_mut(&mut v);
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Carries the server-owned metadata of `old` onto `new` (uid, creationTimestamp,
/// generation, deletion fields, name, namespace, resourceVersion), as an update does.
pub fn carry_system_fields(old: &Value, new: &mut Value) {
    const FIELDS: &[&str] = &[
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
        "resourceVersion",
    ];
    let old_meta = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    let m = metadata_mut(new);
    for f in FIELDS {
        match old_meta.get(*f) {
            Some(v) => m.insert((*f).into(), v.clone()),
            None => m.remove(*f),
        };
    }
}

/// Top-level fields kept from the request for a resource: with a status subresource, the
/// main resource's writes never change `status`, and status writes change nothing else.
pub fn keep_status_rules(old: Option<&Value>, new: &mut Value, has_status: bool, on_status: bool) {
    let Some(map) = new.as_object_mut() else { return };
    let old_status = old.and_then(|o| o.get("status")).cloned();
    if on_status {
        let status = map.remove("status");
        let managed = map.get("metadata").and_then(|m| m.get("managedFields")).cloned();
        let mut rebuilt = old.cloned().unwrap_or(Value::Object(Map::new()));
        if let Some(m) = rebuilt.as_object_mut() {
            m.remove("status");
            if let Some(s) = status {
                m.insert("status".into(), s);
            }
        }
        if let Some(mf) = managed {
            metadata_mut(&mut rebuilt).insert("managedFields".into(), mf);
        }
        *new = rebuilt;
    } else if has_status {
        map.remove("status");
        if let Some(s) = old_status {
            map.insert("status".into(), s);
        }
    }
}

/// Whether `name` is a lowercase RFC 1123 subdomain (object names) or, with `label_only`,
/// an RFC 1123 label (namespace names).
pub fn valid_name(name: &str, label_only: bool) -> bool {
    let max = if label_only { 63 } else { 253 };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= max
        && (if label_only { label_ok(name) } else { name.split('.').all(label_ok) })
}

/// Kind-specific normalisation the real server does on every write: a Secret's
/// `stringData` is merged into `data` (base64) and dropped.
pub fn normalize(kind_group: &str, plural: &str, obj: &mut Value) {
    use base64::Engine as _;
    if (kind_group, plural) != ("", "secrets") {
        return;
    }
    let Some(map) = obj.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = map.remove("stringData") else { return };
    let data = map.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        for (k, v) in string_data {
            let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

/// 5 random characters for `generateName`, from the real server's alphabet.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
