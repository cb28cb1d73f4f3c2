//! Consumer validation: credentials (exactly one kind each), their Secrets, and the
//! Consumer's plugins; and the usable credentials, turned into data-plane form (API keys as
//! SHA-256 hashes, JWT keys parsed). Messages name fields and Secrets, never secret values.
//!
//! A credential whose Secret is missing or malformed makes the Consumer `ResolvedRefs=False`
//! and is simply not usable; the Consumer's other credentials keep working (key rotation:
//! a new credential whose Secret does not exist yet never locks out the old one).

use k8s_openapi::api::core::v1::Secret;
use weir_crds::ConsumerSpec;
use weir_dataplane::filter::consumers::{KeyHash, hash_api_key};
use weir_dataplane::filter::jwt::JwtKey;

use super::conditions::{RefProblem, RefReason};
use super::plugins::{JWT_ALGORITHMS, PluginCatalog};
use crate::index::{Index, ObjectRef};

/// The value of a Secret entry: `data` (already decoded bytes) or `stringData`.
pub fn secret_value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes());
    }
    secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice())
}

/// The outcome of validating a Consumer: spec errors (`Accepted`) and unresolved
/// references (`ResolvedRefs`).
#[derive(Debug, Default)]
pub(crate) struct ConsumerCheck {
    pub(crate) errors: Vec<String>,
    pub(crate) problems: Vec<RefProblem>,
    /// Hashes of the usable API keys.
    pub(crate) api_keys: Vec<KeyHash>,
    /// Usable JWT credentials: the `key` value (matched against `keyClaim`) and the key.
    pub(crate) jwt_keys: Vec<(String, JwtKey)>,
}

fn non_empty(secret: &Secret, key: &str) -> bool {
    secret_value(secret, key).is_some_and(|v| !v.is_empty())
}

/// Validates a Consumer in `namespace`.
pub(crate) fn check_consumer(
    index: &Index,
    namespace: &str,
    spec: &ConsumerSpec,
    catalog: &PluginCatalog,
) -> ConsumerCheck {
    let mut out = ConsumerCheck::default();
    if let Some(u) = &spec.username
        && (u.is_empty() || u.chars().any(|c| c.is_control()))
    {
        out.errors.push(format!("spec.username: {u:?} is not a valid username"));
    }
    for (i, cred) in spec.credentials.iter().enumerate() {
        let at = format!("spec.credentials[{i}]");
        let (kind, secret_ref) = match (&cred.api_key, &cred.jwt) {
            (Some(a), None) => ("apiKey", &a.secret_ref),
            (None, Some(j)) => ("jwt", &j.secret_ref),
            (Some(_), Some(_)) => {
                out.errors
                    .push(format!("{at}: exactly one of apiKey or jwt must be set, found both"));
                continue;
            }
            (None, None) => {
                out.errors
                    .push(format!("{at}: exactly one of apiKey or jwt must be set, found none"));
                continue;
            }
        };
        let at = format!("{at}.{kind}.secretRef");
        if secret_ref.name.is_empty() {
            out.errors.push(format!("{at}.name: must not be empty"));
            continue;
        }
        let sref = ObjectRef::new(namespace, &secret_ref.name);
        let Some(secret) = index.secrets.get(&sref) else {
            out.problems.push(RefProblem::new(
                RefReason::SecretNotFound,
                format!("{at}: secret {sref} not found"),
            ));
            continue;
        };
        let problems_before = out.problems.len();
        let mut missing = Vec::new();
        if !non_empty(secret, "key") {
            missing.push("key");
        }
        if kind == "jwt" {
            match secret_value(secret, "algorithm")
                .map(|a| String::from_utf8_lossy(a).trim().to_owned())
            {
                None => missing.push("algorithm"),
                Some(a) if !JWT_ALGORITHMS.contains(&a.as_str()) => {
                    out.problems.push(RefProblem::new(
                        RefReason::InvalidCredential,
                        format!(
                            "{at}: secret {sref} entry `algorithm` is not a supported algorithm"
                        ),
                    ));
                }
                Some(a) => {
                    let need = if a.starts_with("HS") { "secret" } else { "publicKey" };
                    if !non_empty(secret, need) {
                        missing.push(need);
                    }
                }
            }
        }
        if !missing.is_empty() {
            out.problems.push(RefProblem::new(
                RefReason::InvalidCredential,
                format!("{at}: secret {sref} has no (or an empty) entry {}", missing.join(", ")),
            ));
            continue;
        }
        let Some(key) = secret_value(secret, "key") else { continue };
        if out.problems.len() > problems_before {
            continue;
        }
        if kind == "apiKey" {
            out.api_keys.push(hash_api_key(key));
            continue;
        }
        let algorithm = secret_value(secret, "algorithm")
            .map(|a| String::from_utf8_lossy(a).trim().to_owned())
            .unwrap_or_default();
        let material_key = if algorithm.starts_with("HS") { "secret" } else { "publicKey" };
        let material = secret_value(secret, material_key).unwrap_or_default();
        match JwtKey::from_credential(&algorithm, material) {
            Ok(jwt_key) => {
                out.jwt_keys.push((String::from_utf8_lossy(key).trim().to_owned(), jwt_key))
            }
            Err(e) => out.problems.push(RefProblem::new(
                RefReason::InvalidCredential,
                format!("{at}: secret {sref} entry `{material_key}`: {e}"),
            )),
        }
    }
    for (i, name) in spec.plugins.iter().enumerate() {
        match catalog.resolve(namespace, name, &super::routes::At::Root("spec.plugins", i)) {
            Ok(kind) if !super::plugins::consumer_level(kind) => out.errors.push(format!(
                "spec.plugins[{i}]: plugin {namespace}/{name} is a {kind} plugin, which cannot apply per consumer \
                 (consumer plugins: rateLimit, requestHeaders, responseHeaders, compression)"
            )),
            Ok(_) => {}
            Err(p) => out.problems.push(p),
        }
    }
    out
}
