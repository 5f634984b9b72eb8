//! External plugins: an executable `drover-plugin-NAME` on PATH provides actions `NAME.*`.
//!
//! One process per call, one JSON request on stdin, one JSON answer on stdout; stderr is the
//! plugin's log. The protocol is documented in `plugins/README.md`. A process per call keeps
//! plugins trivial to write in any language and means a crashed plugin cannot wedge drover.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use drover_api::{Action, ActionError, ActionInfo, ErrorKind, Outputs, ParamError, Plan, StepContext};

pub const PROTOCOL: u32 = 1;
/// How long `describe` and `validate` may take: they must be pure and quick.
const QUICK_VERB_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a plugin's answer we read; a larger one is a plugin bug.
const MAX_ANSWER: usize = 16 << 20;

#[derive(Deserialize)]
struct Describe {
    #[serde(default)]
    protocol: Option<u32>,
    actions: Vec<ActionInfo>,
}

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    errors: Vec<ParamError>,
    #[serde(default)]
    plan: Option<Plan>,
    #[serde(default)]
    outputs: Option<Outputs>,
    #[serde(default)]
    error: Option<PluginError>,
}

#[derive(Deserialize)]
struct PluginError {
    message: String,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    hint: Option<String>,
}

/// Ask a plugin which actions it provides.
pub fn describe(exe: &Path) -> Result<Vec<ActionInfo>, String> {
    let out = call_blocking(exe, &json!({ "protocol": PROTOCOL, "verb": "describe" }))?;
    let d: Describe =
        serde_json::from_slice(&out).map_err(|e| format!("its answer is not valid JSON for `describe`: {e}"))?;
    if let Some(p) = d.protocol
        && p != PROTOCOL
    {
        return Err(format!("it speaks protocol {p}; this drover speaks {PROTOCOL}"));
    }
    let prefix = plugin_prefix(exe);
    for a in &d.actions {
        if !a.name.starts_with(&format!("{prefix}.")) {
            return Err(format!("action `{}` must be named `{prefix}.…`", a.name));
        }
    }
    Ok(d.actions)
}

fn plugin_prefix(exe: &Path) -> String {
    exe.file_name().map(|n| n.to_string_lossy().trim_start_matches("drover-plugin-").to_string()).unwrap_or_default()
}

fn call_blocking(exe: &Path, request: &Value) -> Result<Vec<u8>, String> {
    let mut child = std::process::Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request.to_string().as_bytes());
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > QUICK_VERB_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", QUICK_VERB_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() && out.stdout.is_empty() {
        return Err(format!("exited with {}: {}", out.status, tail(&out.stderr)));
    }
    Ok(out.stdout)
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// One action of an external plugin.
pub struct ExternalAction {
    exe: PathBuf,
    info: ActionInfo,
}

impl ExternalAction {
    pub fn new(exe: PathBuf, info: ActionInfo) -> Self {
        ExternalAction { exe, info }
    }

    async fn call(
        &self,
        ctx: &StepContext,
        verb: &str,
        with: &Value,
        outputs: Option<&Outputs>,
    ) -> Result<Answer, ActionError> {
        let sites: serde_json::Map<String, Value> =
            ctx.site_names().filter_map(|n| ctx.site(n).ok().map(|v| (n.to_string(), v.clone()))).collect();
        let mut request = json!({
            "protocol": PROTOCOL,
            "verb": verb,
            "action": self.info.name,
            "with": with,
            "context": {
                "run_id": ctx.run_id,
                "step_id": ctx.step_id,
                "attempt": ctx.attempt,
                "mode": ctx.mode,
                "sites": sites,
                "checkpoint": ctx.resumed_from(),
            },
        });
        if let Some(o) = outputs {
            request["outputs"] = Value::Object(o.clone());
        }
        let name = self.exe.display().to_string();
        let mut child = tokio::process::Command::new(&self.exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ActionError::permanent(format!("cannot start plugin {name}: {e}"))
                    .with_hint("check that it is executable")
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(request.to_string().as_bytes())
                .await
                .map_err(|e| ActionError::retryable(format!("plugin {name} closed its input early: {e}")))?;
        }
        let out =
            child.wait_with_output().await.map_err(|e| ActionError::retryable(format!("plugin {name} failed: {e}")))?;
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            tracing::info!(plugin = %name, step = %ctx.step_id, "{line}");
        }
        if out.stdout.len() > MAX_ANSWER {
            return Err(ActionError::permanent(format!("plugin {name} answered with more than {MAX_ANSWER} bytes")));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(ActionError::permanent(format!(
                "plugin {name} gave no answer to `{verb}` (exit {}): {}",
                out.status,
                tail(&out.stderr)
            ))
            .with_hint("a plugin must print one JSON object on stdout; see plugins/README.md"));
        }
        let answer: Answer = serde_json::from_slice(&out.stdout).map_err(|e| {
            ActionError::permanent(format!("plugin {name} answered `{verb}` with invalid JSON: {e}"))
                .with_hint("see plugins/README.md for the answer format")
        })?;
        if let Some(err) = answer.error {
            let kind = if err.retryable { ErrorKind::Retryable } else { ErrorKind::Permanent };
            return Err(ActionError { kind, message: err.message, hint: err.hint, retry_after: None });
        }
        Ok(answer)
    }
}

#[async_trait]
impl Action for ExternalAction {
    fn info(&self) -> &ActionInfo {
        &self.info
    }

    fn check_params(&self, with: &Value) -> Result<(), Vec<ParamError>> {
        let request = json!({ "protocol": PROTOCOL, "verb": "validate", "action": self.info.name, "with": with });
        let out = call_blocking(&self.exe, &request)
            .map_err(|e| vec![ParamError::at(&[], format!("plugin could not validate: {e}"))])?;
        let answer: Answer = serde_json::from_slice(&out)
            .map_err(|e| vec![ParamError::at(&[], format!("plugin answered `validate` with invalid JSON: {e}"))])?;
        if let Some(e) = answer.error {
            return Err(vec![ParamError { path: vec![], message: e.message, hint: e.hint }]);
        }
        if answer.errors.is_empty() { Ok(()) } else { Err(answer.errors) }
    }

    async fn plan(&self, ctx: &StepContext, with: &Value) -> Result<Plan, ActionError> {
        let answer = self.call(ctx, "plan", with, None).await?;
        Ok(answer.plan.unwrap_or_else(|| Plan::new(format!("{} (the plugin described no change)", self.info.name))))
    }

    async fn run(&self, ctx: &StepContext, with: &Value) -> Result<Outputs, ActionError> {
        Ok(self.call(ctx, "run", with, None).await?.outputs.unwrap_or_default())
    }

    async fn undo(&self, ctx: &StepContext, with: &Value, outputs: &Outputs) -> Result<(), ActionError> {
        self.call(ctx, "undo", with, Some(outputs)).await.map(|_| ())
    }
}
