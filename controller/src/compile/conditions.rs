//! Condition types, reasons and builders shared by every part of the compiler.

use weir_crds::Condition;

/// Condition type `Accepted`.
pub const ACCEPTED: &str = "Accepted";
/// Condition type `ResolvedRefs`.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type `Programmed`.
pub const PROGRAMMED: &str = "Programmed";

/// Why a reference could not be resolved; the `ResolvedRefs=False` reasons of API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefReason {
    /// A backend Service or Service port does not exist.
    BackendNotFound,
    /// A Plugin does not exist or is not accepted.
    PluginNotFound,
    /// A Secret does not exist.
    SecretNotFound,
    /// A Secret exists but does not hold a usable credential.
    InvalidCredential,
    /// A Route's TLS Secret (or client CA) does not hold a usable certificate and key.
    InvalidCertificate,
    /// An older Route serves the same host with a different certificate.
    CertificateConflict,
}

impl RefReason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            RefReason::BackendNotFound => "BackendNotFound",
            RefReason::PluginNotFound => "PluginNotFound",
            RefReason::SecretNotFound => "SecretNotFound",
            RefReason::InvalidCredential => "InvalidCredential",
            RefReason::InvalidCertificate => "InvalidCertificate",
            RefReason::CertificateConflict => "CertificateConflict",
        }
    }
}

/// One unresolved reference: the reason and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefProblem {
    /// Reason.
    pub reason: RefReason,
    /// Message, e.g. `spec.rules[0].backends[1]: service "x" not found in namespace "y"`.
    pub message: String,
}

impl RefProblem {
    /// Builds a problem.
    pub fn new(reason: RefReason, message: impl Into<String>) -> Self {
        RefProblem { reason, message: message.into() }
    }
}

/// Builds a condition without `lastTransitionTime` (the status writer sets it).
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: None,
    }
}

/// `Accepted=True`, or `Accepted=False` reason `Invalid` with the errors joined by `; `.
pub fn accepted(errors: &[String], generation: i64, suffix: &str) -> Condition {
    if errors.is_empty() {
        condition(ACCEPTED, true, "Accepted", "accepted", generation)
    } else {
        condition(ACCEPTED, false, "Invalid", format!("{}{suffix}", errors.join("; ")), generation)
    }
}

/// `Accepted=False` with `reason` (`Invalid`, `Unsupported`) and the errors joined by `; `.
pub fn rejected(reason: &str, errors: &[String], generation: i64, suffix: &str) -> Condition {
    condition(ACCEPTED, false, reason, format!("{}{suffix}", errors.join("; ")), generation)
}

/// `ResolvedRefs=True`, or `False` with the reason of the first problem and every message.
pub fn resolved_refs(problems: &[RefProblem], generation: i64) -> Condition {
    match problems.first() {
        None => {
            condition(RESOLVED_REFS, true, "ResolvedRefs", "all references resolved", generation)
        }
        Some(first) => {
            let message: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            condition(RESOLVED_REFS, false, first.reason.as_str(), message.join("; "), generation)
        }
    }
}
