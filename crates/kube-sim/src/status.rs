//! The API server's errors: each a `Status` object with its HTTP code and reason, worded as
//! kube-apiserver words them (clients and tests match on code and reason).

use serde_json::{Value, json};

use super::types::ResourceType;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn status(&self) -> Value {
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code })
    }

    pub(crate) fn details(t: &ResourceType, name: &str) -> Value {
        json!({ "name": name, "group": t.group, "kind": t.plural })
    }

    pub fn not_found(t: &ResourceType, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", t.group_resource()),
            details: Self::details(t, name),
        }
    }

    pub(crate) fn invalid_service(name: &str, port: usize, why: &str) -> Self {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("Service \"{name}\" is invalid: spec.ports[{port}].nodePort: Internal error: {why}"),
            details: json!({}),
        }
    }

    pub fn unknown_resource() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: json!({}),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { code: 400, reason: "BadRequest", message: message.into(), details: json!({}) }
    }

    pub(crate) fn invalid(t: &ResourceType, name: &str, field: &str, why: &str) -> Self {
        let qualified = if t.group.is_empty() { t.kind.clone() } else { format!("{}.{}", t.kind, t.group) };
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{qualified} \"{name}\" is invalid: {field}: {why}"),
            details: json!({ "name": name, "group": t.group, "kind": t.kind, "causes": [{ "reason": "FieldValueRequired", "message": why, "field": field }] }),
        }
    }
}
