//! One typed parameter struct per action: [`TypedAction`] plus the adapter that turns it into
//! a `dyn Action`, decoding `with:` into the struct and locating every error by path.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Action, ActionError, ActionInfo, Outputs, ParamError, PathSegment, Plan, Prepared, StepContext};

/// An output an action promises.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputDoc {
    pub name: String,
    /// What `${{ steps.ID.outputs.NAME }}` holds, so `validate` can type-check its uses.
    #[serde(default, rename = "type")]
    pub ty: ValueType,
    pub description: String,
}

/// The type of a value an expression yields, as far as it is known before the run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Int,
    Number,
    Bool,
    List,
    Map,
    /// Not declared: anything goes (external plugins, open outputs).
    #[default]
    Any,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "a string",
            ValueType::Int => "a whole number",
            ValueType::Number => "a number",
            ValueType::Bool => "true or false",
            ValueType::List => "a list",
            ValueType::Map => "a mapping",
            ValueType::Any => "any value",
        }
    }

    /// The type of a JSON value.
    pub fn of(v: &Value) -> ValueType {
        match v {
            Value::String(_) => ValueType::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => ValueType::Int,
            Value::Number(_) => ValueType::Number,
            Value::Bool(_) => ValueType::Bool,
            Value::Array(_) => ValueType::List,
            Value::Object(_) => ValueType::Map,
            Value::Null => ValueType::Any,
        }
    }
}

/// The static facts of a typed action.
pub struct ActionSpec {
    pub name: &'static str,
    pub summary: &'static str,
    /// `(name, type, description)` of each output.
    pub outputs: &'static [(&'static str, ValueType, &'static str)],
    pub side_effects: bool,
    pub undo: bool,
    pub open_outputs: bool,
    /// Parameters that name a site, as dotted paths into `with:` (`site`, `from.live.site`):
    /// checked against the defined sites at load time and recorded with each attempt.
    pub sites: &'static [&'static str],
    /// The output that holds the data a failover would lose now, in seconds (the report's RPO).
    pub rpo_output: Option<&'static str>,
}

/// An action with one typed parameter struct. Implement this, register `typed(MyAction)`.
#[async_trait]
pub trait TypedAction: Send + Sync + 'static {
    /// `#[serde(deny_unknown_fields)]` so a typo is an error at load time.
    type Params: DeserializeOwned + JsonSchema + Send + Sync;

    const SPEC: ActionSpec;

    /// What [`TypedAction::prepare`] reads ahead of the step's turn, in a phrase (`drover
    /// actions` shows it; `prepare_after` is refused for actions without one).
    const PREPARES: Option<&'static str> = None;

    /// Pure checks beyond what the types say (ranges, mutually exclusive fields).
    fn check(&self, params: &Self::Params) -> Result<(), Vec<ParamError>> {
        let _ = params;
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, params: Self::Params) -> Result<Plan, ActionError>;

    /// Read-only work `run` begins with, done ahead of the step's turn (see [`Action::prepare`]).
    async fn prepare(&self, ctx: &StepContext, params: Self::Params) -> Result<Option<Prepared>, ActionError> {
        let _ = (ctx, params);
        Ok(None)
    }

    async fn run(&self, ctx: &StepContext, params: Self::Params) -> Result<Outputs, ActionError>;

    async fn undo(&self, ctx: &StepContext, params: Self::Params, outputs: &Outputs) -> Result<(), ActionError> {
        let _ = (ctx, params, outputs);
        Ok(())
    }
}

/// Register a typed action with the engine.
pub fn typed<A: TypedAction>(action: A) -> Arc<dyn Action> {
    let spec = &A::SPEC;
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<A::Params>();
    let info = ActionInfo {
        name: spec.name.to_string(),
        summary: spec.summary.to_string(),
        params: serde_json::to_value(schema).unwrap_or(Value::Null),
        outputs: spec
            .outputs
            .iter()
            .map(|(n, t, d)| OutputDoc { name: n.to_string(), ty: *t, description: d.to_string() })
            .collect(),
        side_effects: spec.side_effects,
        undo: spec.undo,
        open_outputs: spec.open_outputs,
        sites: spec.sites.iter().map(|s| s.to_string()).collect(),
        rpo_output: spec.rpo_output.map(str::to_string),
        prepares: A::PREPARES.map(str::to_string),
    };
    Arc::new(Typed { action, info, _p: PhantomData })
}

struct Typed<A: TypedAction> {
    action: A,
    info: ActionInfo,
    _p: PhantomData<fn() -> A::Params>,
}

impl<A: TypedAction> Typed<A> {
    fn decode(&self, with: &Value) -> Result<A::Params, Vec<ParamError>> {
        let empty = Value::Object(Default::default());
        let with = if with.is_null() { &empty } else { with };
        serde_path_to_error::deserialize::<_, A::Params>(with).map_err(|e| vec![param_error(e)])
    }

    fn decode_for_call(&self, with: &Value) -> Result<A::Params, ActionError> {
        self.decode(with).map_err(|errs| {
            let e = &errs[0];
            let path: String = e.path.iter().map(|p| p.to_string()).collect();
            ActionError::permanent(format!("invalid parameter with{path}: {}", e.message))
                .with_hint(e.hint.clone().unwrap_or_else(|| "fix the step's `with:` in the runbook".into()))
        })
    }
}

#[async_trait]
impl<A: TypedAction> Action for Typed<A> {
    fn info(&self) -> &ActionInfo {
        &self.info
    }

    fn check_params(&self, with: &Value) -> Result<(), Vec<ParamError>> {
        let params = self.decode(with)?;
        self.action.check(&params)
    }

    async fn plan(&self, ctx: &StepContext, with: &Value) -> Result<Plan, ActionError> {
        let params = self.decode_for_call(with)?;
        self.action.plan(ctx, params).await
    }

    async fn prepare(&self, ctx: &StepContext, with: &Value) -> Result<Option<Prepared>, ActionError> {
        let params = self.decode_for_call(with)?;
        self.action.prepare(ctx, params).await
    }

    async fn run(&self, ctx: &StepContext, with: &Value) -> Result<Outputs, ActionError> {
        let params = self.decode_for_call(with)?;
        self.action.run(ctx, params).await
    }

    async fn undo(&self, ctx: &StepContext, with: &Value, outputs: &Outputs) -> Result<(), ActionError> {
        let params = self.decode_for_call(with)?;
        self.action.undo(ctx, params, outputs).await
    }
}

/// Turn serde's message into a located error with a fix.
pub(crate) fn param_error(err: serde_path_to_error::Error<serde_json::Error>) -> ParamError {
    let mut path: Vec<PathSegment> = err
        .path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(PathSegment::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let message = err.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_string();
    let mut hint = None;
    if let Some((field, expected)) = unknown_field(&message) {
        // serde reports the struct; point at the offending key itself.
        if path.last() != Some(&PathSegment::Key(field.clone())) {
            path.push(PathSegment::Key(field.clone()));
        }
        hint = Some(match closest(&field, &expected) {
            Some(best) => format!("did you mean `{best}`?"),
            None if expected.is_empty() => "this action takes no parameters here".to_string(),
            None => format!("valid keys: {}", expected.join(", ")),
        });
        return ParamError { path, message: format!("unknown parameter `{field}`"), hint };
    }
    if let Some(field) = between(&message, "missing field `", "`") {
        hint = Some(format!("add `{field}:` to the step's `with:`"));
        return ParamError { path, message: format!("missing parameter `{field}`"), hint };
    }
    ParamError { path, message, hint }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(start)?;
    rest.split(end).next()
}

fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let field = between(message, "unknown field `", "`")?.to_string();
    // serde: "expected one of `a`, `b`, `c`", "expected `a` or `b`", "expected `a`".
    let expected = message
        .split_once("expected one of ")
        .map(|(_, list)| list.split(", ").map(|s| s.trim_matches('`').to_string()).collect())
        .or_else(|| {
            message
                .split_once("expected `")
                .map(|(_, rest)| rest.split("` or `").map(|s| s.trim_end_matches('`').to_string()).collect())
        })
        .unwrap_or_default();
    Some((field, expected))
}

/// The candidate nearest to `word`, when it is near enough to be a plausible typo.
pub fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c.as_ref()), c.as_ref()))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Helpers for plugin tests and simple actions.
impl ParamError {
    pub fn at(path: &[&str], message: impl Into<String>) -> Self {
        ParamError {
            path: path.iter().map(|k| PathSegment::Key(k.to_string())).collect(),
            message: message.into(),
            hint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        site: String,
        destination: String,
        #[serde(default)]
        count: u32,
    }

    struct A;
    #[async_trait]
    impl TypedAction for A {
        type Params = P;
        const SPEC: ActionSpec = ActionSpec {
            name: "t.a",
            summary: "test",
            outputs: &[],
            side_effects: true,
            undo: false,
            open_outputs: false,
            sites: &["site"],
            rpo_output: None,
        };
        async fn plan(&self, _: &StepContext, _: P) -> Result<Plan, ActionError> {
            Ok(Plan::default())
        }
        async fn run(&self, _: &StepContext, _: P) -> Result<Outputs, ActionError> {
            Ok(Outputs::new())
        }
    }

    fn check(v: Value) -> ParamError {
        typed(A).check_params(&v).unwrap_err().remove(0)
    }

    #[test]
    fn typo_points_at_the_key_and_suggests_the_field() {
        let e = check(serde_json::json!({"site": "w", "destinaton": "x"}));
        assert_eq!(e.path, vec![PathSegment::Key("destinaton".into())]);
        assert_eq!(e.message, "unknown parameter `destinaton`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `destination`?"));
    }

    #[test]
    fn missing_field_is_named() {
        let e = check(serde_json::json!({"site": "w"}));
        assert_eq!(e.message, "missing parameter `destination`");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = check(serde_json::json!({"site": "w", "destination": "d", "count": "many"}));
        assert_eq!(e.path, vec![PathSegment::Key("count".into())]);
        assert!(e.message.contains("expected u32"), "{}", e.message);
    }

    #[test]
    fn closest_ignores_far_words() {
        assert_eq!(closest("destinaton", &["site", "destination"]), Some("destination"));
        assert_eq!(closest("zzz", &["site", "destination"]), None);
    }
}
