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
    let id = state.resolve(&a.run).map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
    let (s, _) = RunState::load(&state.journal(&id))?;
    let Some(step) = s.steps.get(&a.step) else {
        let ids: Vec<&str> = s.steps.keys().map(String::as_str).collect();
        return Err(CliError::new(exit::INVALID_INPUT, format!("run {id} has no step `{}`", a.step))
            .hint(format!("steps: {}", ids.join(", "))));
    };
    if s.finished.is_some() {
        return Err(CliError::new(exit::INVALID_INPUT, format!("run {id} has finished; there is nothing to approve")));
    }
    let Some(message) = &step.gate_waiting else {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!("step `{}` of run {id} is not waiting for approval", a.step),
        )
        .hint(format!("`drover status {id}` shows which step waits")));
    };
    let by = a.by.clone().unwrap_or_else(|| {
        format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()), lock::hostname())
    });
    super::gate::write_answer(&state.approvals(&id), &a.step, &by, a.deny)
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("cannot record the answer: {e}")))?;
    let verb = if a.deny { "denied" } else { "approved" };
    if cli.output.machine() {
        super::out::emit(cli.output, &json!({ "run_id": id, "step": a.step, verb: true, "by": by }));
    } else {
        outln!("{verb} `{}` of run {id} ({message}) as {by}", a.step);
    }
    Ok(exit::SUCCESS)
}
