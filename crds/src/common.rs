//! Types shared by every weir custom resource: conditions, status, references, durations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A standard Kubernetes condition (the shape of `metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition: `Accepted`, `ResolvedRefs`, `Programmed`, or (Routes whose
    /// match is identical to an older Route's) `Conflicted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase machine-readable reason for the condition's last transition.
    pub reason: String,
    /// A human-readable message; for failures it names the field and the problem.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the condition last changed status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The status block shared by Plugin and Consumer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Accepted`, and `ResolvedRefs` for Consumers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A reference to an object in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the referencing object's namespace.
    pub name: String,
}

/// A header name and value, used by header transforms.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HeaderValue {
    /// Header name (case-insensitive).
    pub name: String,
    /// Header value; may use `${request_id}`, `${consumer}`, `${client_ip}`, `${route}`, `${uuid}`.
    pub value: String,
}

/// A size in bytes: an integer, or a Kubernetes quantity string such as `10Mi`, `512Ki`,
/// `1M` or `1500` (binary suffixes Ki, Mi, Gi, Ti; decimal k, M, G, T).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum ByteSize {
    /// A number of bytes.
    Bytes(u64),
    /// A quantity string.
    Quantity(String),
}

impl Default for ByteSize {
    fn default() -> Self {
        ByteSize::Bytes(0)
    }
}

impl ByteSize {
    /// The size in bytes, or why the quantity is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Quantity(s) => parse_byte_quantity(s),
        }
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByteSize::Bytes(n) => write!(f, "{n}"),
            ByteSize::Quantity(s) => f.write_str(s),
        }
    }
}

/// Parses `10Mi`, `512Ki`, `1M`, `1500`: digits, then an optional binary (Ki, Mi, Gi, Ti)
/// or decimal (k, M, G, T) suffix.
pub fn parse_byte_quantity(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = s.split_at(digits);
    let invalid = || format!("{s:?} is not a size (e.g. 1500, 512Ki, 10Mi, 1M)");
    if number.is_empty() {
        return Err(invalid());
    }
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is too large"))?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    n.checked_mul(factor).ok_or_else(|| format!("{s:?} is too large"))
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a number of bytes, or a quantity such as 512Ki, 10Mi or 1M.",
            "x-kubernetes-int-or-string": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities() {
        assert_eq!(parse_byte_quantity("10Mi"), Ok(10 << 20));
        assert_eq!(parse_byte_quantity("1Ki"), Ok(1024));
        assert_eq!(parse_byte_quantity("1M"), Ok(1_000_000));
        assert_eq!(parse_byte_quantity("1500"), Ok(1500));
        assert!(parse_byte_quantity("").is_err());
        assert!(parse_byte_quantity("Mi").is_err());
        assert!(parse_byte_quantity("1.5Mi").is_err());
        assert!(parse_byte_quantity("10MB").is_err());
        assert!(parse_byte_quantity("99999999999999999999").is_err());
        assert!(parse_byte_quantity("18446744073709551615Ki").is_err());
        let b: ByteSize = serde_json::from_str("2048").unwrap_or(ByteSize::Bytes(0));
        assert_eq!(b.bytes(), Ok(2048));
        let q: ByteSize = serde_json::from_str("\"2Ki\"").unwrap_or(ByteSize::Bytes(0));
        assert_eq!(q.bytes(), Ok(2048));
    }
}
