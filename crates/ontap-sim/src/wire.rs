//! How the API speaks: its error answers, a request's query, and the time formats ONTAP writes.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// An error the API answers with: HTTP status, ONTAP code, message, target field.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: message.into(), target: None }
    }

    pub fn target(mut self, t: &str) -> Self {
        self.target = Some(t.to_string());
        self
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "4", "entry doesn't exist").target("uuid")
    }

    pub fn body(&self) -> Value {
        let mut e = json!({ "message": self.message, "code": self.code });
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        json!({ "error": e })
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace('Z', "+00:00")
}

/// ISO-8601 duration as ONTAP writes lag_time: `PT8H35M42S`.
pub fn iso_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    out.push_str(&format!("{sec}S"));
    out
}

/// Query parameters of a request.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean query flag; NetApp's Python client sends `True`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
