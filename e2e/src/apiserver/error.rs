//! The double's errors and their one rendering: a `meta/v1` `Status` with the real server's
//! reasons and codes.

use serde_json::{Value, json};

/// An error answered to a client, rendered as a `Status` object by [`ApiError::to_status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: the object, resource or path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: create of an existing name.
    #[error("{0}")]
    AlreadyExists(String),
    /// 409: stale `resourceVersion`, failed precondition, or a server-side apply conflict.
    #[error("{0}")]
    Conflict(String),
    /// 422: the object is not acceptable (missing name, failed JSON patch, ...).
    #[error("{0}")]
    Invalid(String),
    /// 400: the request cannot be understood (bad body, bad selector, missing field manager).
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 415: unsupported patch content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410: the requested resourceVersion is older than the retained history.
    #[error("{0}")]
    Expired(String),
    /// 500: what the real server answers as an internal error (e.g. a create that carries a
    /// resourceVersion).
    #[error("{0}")]
    Internal(String),
    /// 503: the double was switched off with `set_available(false)`.
    #[error("{0}")]
    ServiceUnavailable(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::AlreadyExists(_) | ApiError::Conflict(_) => 409,
            ApiError::Invalid(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Expired(_) => 410,
            ApiError::Internal(_) => 500,
            ApiError::ServiceUnavailable(_) => 503,
        }
    }

    /// The `reason` field, as the real API server spells it.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "NotFound",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Invalid(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired(_) => "Expired",
            ApiError::Internal(_) => "InternalError",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` object sent as the response body (or as a watch `ERROR` event's object).
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        })
    }

    /// `NotFound` for one object, worded like the real server: `routes.weir.dev "x" not found`.
    pub fn not_found(qualified_resource: &str, name: &str) -> Self {
        ApiError::NotFound(format!("{qualified_resource} \"{name}\" not found"))
    }

    /// The real server's optimistic-concurrency conflict message.
    pub fn stale(qualified_resource: &str, name: &str) -> Self {
        ApiError::Conflict(format!(
            "Operation cannot be fulfilled on {qualified_resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        ))
    }
}
