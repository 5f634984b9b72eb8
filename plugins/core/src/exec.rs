//! `exec`: run a local command. The escape hatch for everything drover has no action for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, SecretRef, StepContext, TypedAction, ValueType};

pub struct Exec;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// The program to run (looked up on PATH). Give either `command` or `shell`.
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments for `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// A script for `sh -c`, instead of `command`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables read from credential references (`env:VAR`, `file:PATH`);
    /// their values are never logged.
    #[serde(default)]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Text written to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Exit codes that count as success.
    #[serde(default = "zero")]
    pub accept_exit_codes: Vec<i32>,
    /// Exit codes that mean "try again later" (retried under the step's `retry:`).
    #[serde(default)]
    pub retry_exit_codes: Vec<i32>,
    /// Most bytes of stdout/stderr kept in the outputs.
    #[serde(default = "default_limit")]
    pub output_limit: usize,
}

fn zero() -> Vec<i32> {
    vec![0]
}

fn default_limit() -> usize {
    64 * 1024
}

impl ExecParams {
    fn program(&self) -> (String, Vec<String>) {
        match (&self.command, &self.shell) {
            (Some(c), _) => (c.clone(), self.args.clone()),
            (None, Some(script)) => ("sh".into(), vec!["-c".into(), script.clone()]),
            (None, None) => (String::new(), vec![]),
        }
    }

    fn describe(&self) -> String {
        match (&self.command, &self.shell) {
            (Some(c), _) if self.args.is_empty() => c.clone(),
            (Some(c), _) => format!("{c} {}", self.args.join(" ")),
            (None, Some(s)) => format!("sh -c {s:?}"),
            (None, None) => String::new(),
        }
    }
}

#[async_trait]
impl TypedAction for Exec {
    type Params = ExecParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "exec",
        summary: "Run a local command; stdout, stderr and `key=value` lines written to $DROVER_OUTPUT become outputs",
        outputs: &[
            ("exit_code", ValueType::Int, "the command's exit code"),
            ("stdout", ValueType::String, "standard output (capped)"),
            ("stderr", ValueType::String, "standard error (capped)"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: true,
        sites: &[],
        rpo_output: None,
    };

    fn check(&self, p: &ExecParams) -> Result<(), Vec<ParamError>> {
        match (&p.command, &p.shell) {
            (Some(_), Some(_)) => Err(vec![ParamError::at(&["shell"], "give either `command` or `shell`, not both")]),
            (None, None) => Err(vec![ParamError::at(&[], "missing parameter `command` (or `shell`)")]),
            (None, Some(_)) if !p.args.is_empty() => {
                Err(vec![ParamError::at(&["args"], "`args` goes with `command`, not `shell`")])
            }
            _ => Ok(()),
        }
    }

    async fn plan(&self, _: &StepContext, p: ExecParams) -> Result<Plan, ActionError> {
        let (program, _) = p.program();
        let found = drover_api::procs::on_path(&program);
        let mut plan = Plan::new(format!("run `{}`", p.describe())).change(format!("run `{}`", p.describe())).check(
            "command found",
            found.is_some(),
            found.map(|f| f.display().to_string()).unwrap_or_else(|| format!("`{program}` is not on PATH")),
        );
        if let Some(dir) = &p.working_dir {
            plan = plan.check("working directory exists", dir.is_dir(), dir.display().to_string());
        }
        for (var, r) in &p.secret_env {
            let ok = r.resolve().is_ok();
            plan = plan.access_check(format!("secret for {var} readable"), ok, r.to_string());
        }
        Ok(plan.output("exit_code", 0).output("stdout", "<stdout>"))
    }

    async fn run(&self, ctx: &StepContext, p: ExecParams) -> Result<Outputs, ActionError> {
        let (program, args) = p.program();
        // Unique per call: two steps (or two runs in one process) never share the file.
        let output_file = std::env::temp_dir().join(format!(
            "drover-output-{}-{}-{}-{:016x}",
            std::process::id(),
            ctx.step_id,
            ctx.attempt,
            rand_u64()
        ));
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .envs(&p.env)
            .env("DROVER_RUN_ID", &ctx.run_id)
            .env("DROVER_STEP_ID", &ctx.step_id)
            .env("DROVER_ATTEMPT", ctx.attempt.to_string())
            .env("DROVER_OUTPUT", &output_file)
            .stdin(if p.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // The operator's command creates files as it would from their shell, not 0600 as
        // drover's own files are.
        if let Some(mask) = drover_api::procs::operator_umask() {
            // SAFETY: umask is async-signal-safe, as `pre_exec` requires.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        for (var, r) in &p.secret_env {
            cmd.env(var, r.resolve()?.expose());
        }
        if let Some(dir) = &p.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            ActionError::permanent(format!("cannot start `{}`: {e}", p.describe()))
                .with_hint("check the command name, PATH and working_dir")
        })?;
        // Kill the whole process group if this step is timed out or aborted.
        let _group = GroupGuard(child.id());
        if let (Some(text), Some(mut stdin)) = (&p.stdin, child.stdin.take()) {
            let _ = stdin.write_all(text.as_bytes()).await;
        }
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (status, out, err) =
            tokio::join!(child.wait(), read_capped(stdout, p.output_limit), read_capped(stderr, p.output_limit));
        let status =
            status.map_err(|e| ActionError::retryable(format!("waiting for `{}` failed: {e}", p.describe())))?;
        let code = status.code().unwrap_or(-1);
        let mut outputs = Outputs::new();
        outputs.insert("exit_code".into(), code.into());
        outputs.insert("stdout".into(), Value::String(out.trim_end_matches('\n').to_string()));
        outputs.insert("stderr".into(), Value::String(err.trim_end_matches('\n').to_string()));
        if let Ok(text) = std::fs::read_to_string(&output_file) {
            for line in text.lines().take(1000) {
                if let Some((k, v)) = line.split_once('=')
                    && !k.trim().is_empty()
                {
                    outputs.insert(k.trim().to_string(), Value::String(v.to_string()));
                }
            }
            let _ = std::fs::remove_file(&output_file);
        }
        if p.accept_exit_codes.contains(&code) {
            return Ok(outputs);
        }
        let tail = last_line(&err).or_else(|| last_line(&out)).unwrap_or_default();
        let message = match status.code() {
            Some(c) => format!(
                "`{}` exited with {c}{}",
                p.describe(),
                if tail.is_empty() { String::new() } else { format!(": {tail}") }
            ),
            None => format!("`{}` was killed by a signal", p.describe()),
        };
        if p.retry_exit_codes.contains(&code) {
            Err(ActionError::retryable(message))
        } else {
            Err(ActionError::permanent(message)
                .with_hint("see the step's stderr in the report; fix the cause, then `drover resume`"))
        }
    }
}

struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: signalling a process group we created; harmless if it already exited.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

fn last_line(s: &str) -> Option<String> {
    s.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.chars().take(300).collect())
}

/// Read a stream to the end, keeping at most `limit` bytes (the rest is drained).
async fn read_capped(mut r: impl AsyncRead + Unpin, limit: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut dropped = 0usize;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n… ({dropped} more bytes not kept)"));
    }
    s
}

/// A random number from the OS-seeded hasher: enough to make temporary names unique.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}
