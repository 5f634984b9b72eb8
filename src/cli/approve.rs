//! `drover approve RUN STEP [--deny]`: answer a gate from any terminal — the one command of the
//! read-mostly group that writes (an answer file the waiting run picks up and journals).

use super::out::outln;
use clap::Args;
use serde_json::json;

use super::{Cli, CliError, exit};
use crate::journal::lock;
use crate::journal::state::{RunState, StateDir};

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The run (unique prefix or suffix, or `latest`).
    pub run: String,
    /// The step whose gate to answer.
    pub step: String,
    /// Refuse instead of approving: the step fails and the run halts.
    #[arg(long)]
    pub deny: bool,
    /// Who answers (default: user@host).
    #[arg(long)]
    pub by: Option<String>,
}

pub fn approve(cli: &Cli, a: &ApproveArgs) -> Result<i32, CliError> {
    let state = StateDir::new(&cli.state_dir);
    let by = a.by.clone().unwrap_or_else(|| {
        format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()), lock::hostname())
    });
    let (id, message) = answer(&state, &a.run, &a.step, &by, a.deny)?;
    let verb = if a.deny { "denied" } else { "approved" };
    if cli.output.machine() {
        super::out::emit(cli.output, &json!({ "run_id": id, "step": a.step, verb: true, "by": by }));
    } else {
        outln!("{verb} `{}` of run {id} ({message}) as {by}", a.step);
    }
    Ok(exit::SUCCESS)
}

/// Answer the gate `step` of a run waiting for it, as `by`: the answer file the running process
/// picks up and journals (`drover approve` and the page of `drover serve` alike). Returns the
/// run's id and what the gate asks.
pub fn answer(state: &StateDir, run: &str, step: &str, by: &str, deny: bool) -> Result<(String, String), CliError> {
    let id = state.resolve(run).map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
    let (s, _) = RunState::load(&state.journal(&id))?;
    let Some(record) = s.steps.get(step) else {
        let ids: Vec<&str> = s.steps.keys().map(String::as_str).collect();
        return Err(CliError::new(exit::INVALID_INPUT, format!("run {id} has no step `{step}`"))
            .hint(format!("steps: {}", ids.join(", "))));
    };
    if s.finished.is_some() {
        return Err(CliError::new(exit::INVALID_INPUT, format!("run {id} has finished; there is nothing to approve"))
            .hint(format!("see how it ended: drover status {id} (or drover report {id})")));
    }
    let Some(message) = &record.gate_waiting else {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!("step `{step}` of run {id} is not waiting for approval"),
        )
        .hint(format!("`drover status {id}` shows which step waits")));
    };
    if by.trim().is_empty() {
        return Err(CliError::new(exit::INVALID_INPUT, "an answer needs the name of who gives it")
            .hint("the journal records who approved each gate"));
    }
    super::gate::write_answer(&state.approvals(&id), step, by.trim(), deny)
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("cannot record the answer: {e}")))?;
    Ok((id, message.clone()))
}
