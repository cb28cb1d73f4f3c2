//! Label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, `k>1`,
//! `k<1`; comma = AND) and field selectors (`=`, `==`, `!=` on the fields the real server
//! allows for the kind), with the real server's matching rules.

use serde_json::Value;

use super::error::ApiError;
use super::kinds::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

/// A parsed label selector; all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

/// A parsed field selector; all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

fn bad(what: &str, selector: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "unable to parse requirement: {what} selector {selector:?}: {why}"
    ))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn parse_set(rest: &str, selector: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad("label", selector, "expected a parenthesised set of values"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(selector).into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                if key.is_empty() || !key.chars().all(is_key_char) {
                    return Err(bad("label", selector, "invalid key after '!'"));
                }
                reqs.push((key.to_owned(), LabelOp::DoesNotExist));
                continue;
            }
            let end = part.find(|c: char| !is_key_char(c)).unwrap_or(part.len());
            let (key, rest) = part.split_at(end);
            if key.is_empty() {
                return Err(bad("label", selector, "empty key"));
            }
            let rest = rest.trim_start();
            let op = if rest.is_empty() {
                LabelOp::Exists
            } else if let Some(v) = rest.strip_prefix("!=") {
                LabelOp::NotEquals(v.trim().to_owned())
            } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
                LabelOp::Equals(v.trim().to_owned())
            } else if let Some(v) = rest.strip_prefix('>') {
                LabelOp::Greater(
                    v.trim().parse().map_err(|_| bad("label", selector, "'>' needs an integer"))?,
                )
            } else if let Some(v) = rest.strip_prefix('<') {
                LabelOp::Less(
                    v.trim().parse().map_err(|_| bad("label", selector, "'<' needs an integer"))?,
                )
            } else if let Some(v) = rest.strip_prefix("notin") {
                LabelOp::NotIn(parse_set(v, selector)?)
            } else if let Some(v) = rest.strip_prefix("in") {
                LabelOp::In(parse_set(v, selector)?)
            } else {
                return Err(bad("label", selector, "unknown operator"));
            };
            reqs.push((key.to_owned(), op));
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(key, op)| match (op, get(key)) {
            (LabelOp::Exists, v) => v.is_some(),
            (LabelOp::DoesNotExist, v) => v.is_none(),
            (LabelOp::Equals(want), v) => v == Some(want.as_str()),
            (LabelOp::NotEquals(want), v) => v != Some(want.as_str()),
            (LabelOp::In(set), Some(v)) => set.iter().any(|s| s == v),
            (LabelOp::In(_), None) => false,
            (LabelOp::NotIn(set), Some(v)) => !set.iter().any(|s| s == v),
            (LabelOp::NotIn(_), None) => true,
            (LabelOp::Greater(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
            (LabelOp::Less(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
            (LabelOp::Greater(_) | LabelOp::Less(_), None) => false,
        })
    }
}

/// The string value of a dotted field path (`metadata.name`), `""` when absent.
fn field_value(obj: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value, rejecting fields the real server would not
    /// allow for this kind.
    pub fn parse(selector: &str, kind: &Kind) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(bad("field", selector, "expected field=value or field!=value"));
            };
            let field = field.trim();
            let allowed = matches!(field, "metadata.name" | "metadata.namespace")
                || kind.extra_selectable_fields().contains(&field);
            if !allowed {
                return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether an object satisfies the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, want)| (field_value(obj, field) == *want) == *equal)
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses the optional `labelSelector` and `fieldSelector` of a request.
    pub fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        kind: &Kind,
    ) -> Result<Self, ApiError> {
        Ok(Selectors {
            labels: labels.map(LabelSelector::parse).transpose()?.unwrap_or_default(),
            fields: fields.map(|f| FieldSelector::parse(f, kind)).transpose()?.unwrap_or_default(),
        })
    }

    /// Whether an object matches both.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app",
            "!missing",
            "app in (web, db)",
            "tier notin (back)",
            "missing notin (x)",
            "app=web,tier=front",
            "n>4",
            "n<6",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&o), "{s} should match");
        }
        let no = [
            "app=db",
            "app!=web",
            "missing",
            "!app",
            "app in (db)",
            "missing in (x)",
            "app notin (web,db)",
            "app=web,tier=back",
            "n>5",
            "missing>1",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&o), "{s} should not match");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_check_allowed_fields() {
        let kind = Kind::find("", "v1", "secrets").unwrap();
        let o = json!({"metadata": {"name": "a", "namespace": "ns"}, "type": "Opaque"});
        let sel = |s: &str| FieldSelector::parse(s, kind).unwrap().matches(&o);
        assert!(sel("metadata.name=a") && sel("metadata.name==a") && sel("metadata.namespace!=x"));
        assert!(sel("type=Opaque,metadata.name=a") && !sel("metadata.name!=a") && !sel("type=tls"));
        assert!(FieldSelector::parse("spec.foo=1", kind).is_err());
    }
}
