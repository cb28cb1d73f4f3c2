//! weir's custom resources — `Route`, `Plugin`, `Consumer` and `BackendPolicy` in group `weir.dev`,
//! version `v1alpha1` — and the generation of their CustomResourceDefinitions.

pub mod backend_policy;
pub mod common;
pub mod consumer;
pub mod duration;
pub mod gateway_api;
pub mod generate;
pub mod plugin;
pub mod plugin_kind;
pub mod route;

pub use backend_policy::{BackendPolicy, BackendPolicySpec};
pub use common::{ByteSize, Condition, HeaderValue, LocalObjectReference, ObjectStatus};
pub use consumer::{Consumer, ConsumerSpec, Credential, SecretCredential};
pub use duration::{DurationError, parse_duration};
pub use plugin::*;
pub use plugin_kind::{PluginConfig, PluginKind};
pub use route::*;

/// The API group of every weir kind.
pub const GROUP: &str = "weir.dev";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every weir object.
pub const API_VERSION: &str = "weir.dev/v1alpha1";
