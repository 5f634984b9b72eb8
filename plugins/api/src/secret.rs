//! Credentials by reference only. A runbook says where a secret lives (`env:VAR`,
//! `file:PATH`); the value is read at the moment of use and never printed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ActionError;

/// Where a secret lives. The reference itself is safe to print; the value is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    Env(String),
    File(String),
}

/// The `format` a [`SecretRef`]'s schema carries: how a site section declares which of its
/// settings are secrets (they must be references, and are never echoed).
pub const SECRET_REF_FORMAT: &str = "secret-ref";

impl schemars::JsonSchema for SecretRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": SECRET_REF_FORMAT,
            "description": "where the secret lives: `env:VARIABLE` or `file:/path`"
        })
    }
}

impl SecretRef {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(var) = text.strip_prefix("env:") {
            if var.is_empty() {
                return Err("`env:` needs a variable name, e.g. `env:ONTAP_PASSWORD`".into());
            }
            Ok(SecretRef::Env(var.to_string()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. `file:/etc/drover/ontap-west`".into());
            }
            Ok(SecretRef::File(path.to_string()))
        } else {
            Err("credentials must be a reference (`env:VAR` or `file:PATH`), never the secret itself".into())
        }
    }

    /// Read the secret of a site's setting now; errors name the site and the field
    /// (`site `west`: ontap.credentials: ...`), never the value.
    pub fn resolve_for(&self, site: &str, field: &str) -> Result<Secret, ActionError> {
        self.resolve().map_err(|e| ActionError { message: format!("site `{site}`: {field}: {}", e.message), ..e })
    }

    /// Read the secret now. Errors name the reference, never the value.
    pub fn resolve(&self) -> Result<Secret, ActionError> {
        match self {
            SecretRef::Env(var) => std::env::var(var).map(Secret).map_err(|_| {
                ActionError::permanent(format!("credential reference `{self}` is not set"))
                    .with_hint(format!("export {var} in drover's environment"))
            }),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    ActionError::permanent(format!("credential reference `{self}` cannot be read: {e}"))
                        .with_hint(format!("check that {path} exists and is readable by drover"))
                }),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SecretRef::parse(&s)
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        r.to_string()
    }
}

/// A secret value. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (an Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secret_is_refused_with_a_fix() {
        let err = SecretRef::parse("hunter2").unwrap_err();
        assert!(err.contains("env:VAR"), "{err}");
    }

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn missing_env_names_the_reference_not_a_value() {
        let err = SecretRef::parse("env:DROVER_TEST_SURELY_UNSET").unwrap().resolve().unwrap_err();
        assert!(err.message.contains("env:DROVER_TEST_SURELY_UNSET"));
    }
}
