//! Errors actions return, marked retryable or permanent at the source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether the engine may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A passing fault (connection refused, 5xx, 429, a busy resource): retry with backoff.
    Retryable,
    /// Retrying cannot help (bad credentials, refused precondition, invalid parameters).
    Permanent,
}

/// What went wrong in an action, and what the operator should do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub kind: ErrorKind,
    /// What happened, short and lowercase, naming the target.
    pub message: String,
    /// What to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The server asked us to wait this long before trying again (429 `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub retry_after: Option<Duration>,
}

impl ActionError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ActionError { kind: ErrorKind::Retryable, message: message.into(), hint: None, retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError { kind: ErrorKind::Permanent, message: message.into(), hint: None, retry_after: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// An error and its causes, outermost first. HTTP clients say "error sending request" and keep
/// what went wrong (a refused connection, an untrusted certificate) in the causes.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether `causes` tell of a TLS handshake that failed over certificates (ours or theirs):
/// not a passing fault, and worth its own message.
pub fn is_certificate_failure(causes: &str) -> bool {
    let lower = causes.to_lowercase();
    lower.contains("invalid peer certificate")
        || lower.contains("unknownissuer")
        || lower.contains("certificate verify failed")
        || (lower.contains("fatal alert") && lower.contains("certificate"))
}
