//! Site sections: the part of a site's settings one plugin reads (`ontap:`, `kube:`, `dns:`).
//!
//! Each plugin declares the sections it reads with their typed struct, so a sites file is
//! checked when it is loaded — `urll:` under `ontap:` or `ontapp:` instead of `ontap:` is an
//! error with the file's line before anything runs, not a surprise halfway through a failover.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ParamError;

/// One section of a site's settings and how to check it.
#[derive(Clone)]
pub struct SiteSection {
    /// The key under the site, e.g. `ontap`.
    pub name: &'static str,
    /// One line: what it configures.
    pub summary: &'static str,
    /// JSON schema of the section (for `drover actions` and reference checks).
    pub schema: Value,
    check: fn(&Value) -> Result<(), Vec<ParamError>>,
}

impl std::fmt::Debug for SiteSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteSection").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SiteSection {
    /// The section `name`, decoded by `T` (which should deny unknown fields).
    pub fn of<T: DeserializeOwned + JsonSchema>(name: &'static str, summary: &'static str) -> SiteSection {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        SiteSection {
            name,
            summary,
            schema: serde_json::to_value(schema).unwrap_or(Value::Null),
            check: |v| {
                serde_path_to_error::deserialize::<_, T>(v).map(|_| ()).map_err(|e| vec![crate::typed::param_error(e)])
            },
        }
    }

    /// Check a section's settings: every problem with its path inside the section.
    pub fn check(&self, settings: &Value) -> Result<(), Vec<ParamError>> {
        (self.check)(settings)
    }

    /// Whether the section has a field at this dotted path (for `${{ sites.S.SECTION.F }}`);
    /// None when the schema cannot tell (maps with free keys).
    pub fn has_field(&self, path: &[String]) -> Option<bool> {
        let mut node = &self.schema;
        for key in path {
            node = crate::schema::resolve(&self.schema, node);
            let props = node.get("properties").and_then(Value::as_object)?;
            match props.get(key.as_str()) {
                Some(next) => node = next,
                None => return Some(false),
            }
        }
        Some(true)
    }

    /// The names of the settings that hold secrets, at any depth: those the plugin typed as
    /// [`crate::SecretRef`]. Their values must be references and are never echoed.
    pub fn secret_settings(&self) -> Vec<String> {
        fn walk(root: &Value, node: &Value, name: Option<&str>, out: &mut Vec<String>, depth: usize) {
            if depth > 16 {
                return;
            }
            let node = crate::schema::resolve(root, node);
            if node.get("format").and_then(Value::as_str) == Some(crate::secret::SECRET_REF_FORMAT) {
                if let Some(n) = name
                    && !out.iter().any(|o| o == n)
                {
                    out.push(n.to_string());
                }
                return;
            }
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    walk(root, v, Some(k), out, depth + 1);
                }
            }
            // A map of secrets (`secret_headers: {X-Token: env:T}`) is named by its key.
            if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
                walk(root, extra, name, out, depth + 1);
            }
        }
        let mut out = vec![];
        walk(&self.schema, &self.schema, None, &mut out, 0);
        out
    }

    /// The field names of the section's top level.
    pub fn fields(&self) -> Vec<String> {
        crate::schema::resolve(&self.schema, &self.schema)
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Ontap {
        url: String,
        #[serde(default)]
        insecure: bool,
    }

    #[test]
    fn a_typo_in_a_section_is_an_error_at_its_key() {
        let s = SiteSection::of::<Ontap>("ontap", "ONTAP");
        let e = s.check(&serde_json::json!({"urll": "https://x"})).unwrap_err().remove(0);
        assert_eq!(e.message, "unknown parameter `urll`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `url`?"));
    }

    #[test]
    fn fields_are_known_by_path() {
        let s = SiteSection::of::<Ontap>("ontap", "ONTAP");
        assert_eq!(s.has_field(&["url".into()]), Some(true));
        assert_eq!(s.has_field(&["nope".into()]), Some(false));
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Tls {
        key: Option<crate::SecretRef>,
        ca: String,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct WithSecrets {
        credentials: crate::SecretRef,
        token: Option<crate::SecretRef>,
        tls: Tls,
        secret_headers: std::collections::BTreeMap<String, crate::SecretRef>,
        user: String,
    }

    #[test]
    fn the_settings_typed_secret_ref_are_the_secrets_at_any_depth() {
        let s = SiteSection::of::<WithSecrets>("x", "X");
        let mut found = s.secret_settings();
        found.sort();
        assert_eq!(found, ["credentials", "key", "secret_headers", "token"]);
        assert!(SiteSection::of::<Ontap>("ontap", "ONTAP").secret_settings().is_empty());
    }
}
