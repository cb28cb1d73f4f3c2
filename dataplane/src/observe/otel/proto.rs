//! The OTLP trace messages weir sends, from the `opentelemetry-proto` crate (its prost
//! messages only: no gRPC transport, no SDK on the request path), with the few helpers
//! the span builder uses.

pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
pub use opentelemetry_proto::tonic::resource::v1::Resource;
pub use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// `Span.kind` values.
pub mod kind {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    /// `SPAN_KIND_INTERNAL`.
    pub const INTERNAL: i32 = SpanKind::Internal as i32;
    /// `SPAN_KIND_SERVER`.
    pub const SERVER: i32 = SpanKind::Server as i32;
    /// `SPAN_KIND_CLIENT`.
    pub const CLIENT: i32 = SpanKind::Client as i32;
}

/// `STATUS_CODE_ERROR`.
pub const STATUS_ERROR: i32 =
    opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32;

/// A string attribute.
pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..KeyValue::default()
    }
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::IntValue(value)) }),
        ..KeyValue::default()
    }
}
