//! The `drover` command line: one module per group of commands, renderers in `view`.

mod approve;
mod gate;
mod info;
#[cfg(feature = "lab")]
mod lab;
mod out;
mod run;
mod signals;
mod view;

use out::outln;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry::Registry;

/// Exit codes, documented in the README and `drover --help`.
pub mod exit {
    /// Everything asked for was done.
    pub const SUCCESS: i32 = 0;
    /// The run (or a dry run's preconditions) failed; the report says which step and why.
    pub const RUN_FAILED: i32 = 1;
    /// Bad input: runbook, params, sites file or arguments. Nothing was changed.
    pub const INVALID_INPUT: i32 = 2;
    /// The operator stopped the run (Ctrl-C). `drover resume` continues it. A run stopped
    /// by SIGTERM or SIGHUP (a supervisor) exits 143 or 129 instead, after the same graceful stop.
    pub const CANCELLED: i32 = 3;
    /// Another run of the same runbook holds the lock.
    pub const LOCK_HELD: i32 = 4;
    /// The state directory cannot be used: corrupt journal, changed runbook, I/O error.
    pub const STATE_ERROR: i32 = 5;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the run failed (or a dry run found failed preconditions)
  2  invalid input (runbook, params, sites file, arguments); nothing was changed
  3  cancelled by the operator; `drover resume RUN_ID` continues
  4  another run of this runbook holds the lock
  5  state error (corrupt journal, runbook changed since the run started, I/O)";

/// drover — cross-site disaster recovery for Kubernetes, as a runbook you can read.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where runs, journals and locks are kept.
    #[arg(long, global = true, env = "DROVER_STATE_DIR", default_value = ".drover")]
    pub state_dir: PathBuf,
    /// Shared state both sites reach, `s3://BUCKET/PREFIX[?path_style=true]`: run locks taken
    /// with conditional writes, journals mirrored there (the state dir stays the local copy).
    /// S3 settings come from the AWS chain (AWS_ENDPOINT_URL, AWS_REGION, credentials).
    #[arg(long, global = true, env = "DROVER_STATE", value_name = "URL")]
    pub state: Option<String>,
    /// `text` for people, `json` for machines (one JSON object per line for runs).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check runbooks without touching anything: syntax, keys, actions, parameters, graph, references.
    Validate(info::ValidateArgs),
    /// Show the step graph: levels, critical path, conditions and gates.
    Plan(info::PlanArgs),
    /// Run a runbook (or, with --dry-run, check every step's preconditions and change nothing).
    Run(run::RunArgs),
    /// Continue an interrupted or failed run from its journal.
    Resume(run::ResumeArgs),
    /// List runs, or show one run's steps.
    Status(info::StatusArgs),
    /// Show the report of a run (text, JSON or a self-contained HTML page).
    Report(info::ReportArgs),
    /// Answer a manual gate of a running run from another terminal.
    Approve(approve::ApproveArgs),
    /// List every action with its parameters and outputs.
    Actions(info::ActionsArgs),
    /// Print the Kubernetes RBAC (ClusterRoles and bindings) a site's drover identity needs,
    /// per family of actions; a missing permission at run time names the family.
    Rbac(info::RbacArgs),
    /// Fail over: run the shipped failover runbook (runbooks/failover.yaml, built in;
    /// `--param mode=unplanned` when the primary is down) with all of `run`'s flags.
    Failover(run::FlowArgs),
    /// Fail back: run the shipped failback runbook (runbooks/failback.yaml, built in) with all of
    /// `run`'s flags.
    Failback(run::FlowArgs),
    /// Rehearse a failover without touching anything: a dry run of runbooks/failover.yaml that
    /// checks every precondition against the real systems and predicts the recovery time;
    /// `--live` runs runbooks/rehearsal.yaml (apps up in isolation from cloned replicas).
    Rehearse(run::FlowArgs),
    /// A planned blue/green cluster upgrade: run runbooks/bluegreen-upgrade.yaml (copy the
    /// apps to the upgraded cluster, verify, approve, switch users); `--rollback` switches back.
    Upgrade(run::UpgradeArgs),
    /// Run simulators of the two sites on this machine (for trying drover and for tests).
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

/// Inputs shared by commands that load a runbook.
#[derive(Debug, Clone, Default, Args)]
pub struct RunbookInputs {
    /// Set a param: `--param mode=planned` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A YAML file of params (`name: value` per line); --param wins over it.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// A sites file (`kind: Sites`) with connection settings; overrides the runbook's sites.
    #[arg(long, value_name = "FILE")]
    pub sites: Option<PathBuf>,
}

impl RunbookInputs {
    pub fn options(&self, require_params: bool) -> crate::runbook::LoadOptions {
        crate::runbook::LoadOptions {
            params: self.params.clone(),
            params_file: self.params_file.clone(),
            sites_file: self.sites.clone(),
            require_params,
            ..Default::default()
        }
    }
}

/// A failure of a command: what happened, what to do, which exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError { code, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<crate::journal::JournalError> for CliError {
    fn from(e: crate::journal::JournalError) -> Self {
        let hint = e.hint();
        CliError::new(exit::STATE_ERROR, e.to_string()).hint(hint)
    }
}

impl From<crate::journal::lock::LockError> for CliError {
    fn from(e: crate::journal::lock::LockError) -> Self {
        let code = match e {
            crate::journal::lock::LockError::Held { .. } => exit::LOCK_HELD,
            crate::journal::lock::LockError::Io { .. } => exit::STATE_ERROR,
        };
        let hint = e.hint();
        CliError::new(code, e.to_string()).hint(hint)
    }
}

/// Run a parsed command line; returns the exit code.
pub async fn main(cli: Cli, registry: Registry) -> i32 {
    if let Err(e) = pull_shared(&cli).await {
        return report_error(&cli, e);
    }
    let result = match &cli.command {
        Command::Validate(a) => info::validate(&cli, a, &registry),
        Command::Plan(a) => info::plan(&cli, a, &registry),
        Command::Run(a) => run::run(&cli, a, &registry).await,
        Command::Resume(a) => run::resume(&cli, a, &registry).await,
        Command::Status(a) => info::status(&cli, a),
        Command::Report(a) => info::report(&cli, a),
        Command::Approve(a) => approve::approve(&cli, a),
        Command::Actions(a) => info::actions(&cli, a, &registry),
        Command::Rbac(a) => info::rbac(&cli, a),
        Command::Failover(a) => run::run(&cli, &a.to_run("failover.yaml", a.dry_run), &registry).await,
        Command::Failback(a) => run::run(&cli, &a.to_run("failback.yaml", a.dry_run), &registry).await,
        Command::Rehearse(a) if a.live => run::run(&cli, &a.to_run("rehearsal.yaml", a.dry_run), &registry).await,
        Command::Rehearse(a) => run::run(&cli, &a.to_run("failover.yaml", true), &registry).await,
        Command::Upgrade(a) => {
            let mut run = a.flow.to_run("bluegreen-upgrade.yaml", a.flow.dry_run);
            if a.rollback {
                run.inputs.params.push("rollback=true".into());
            }
            run::run(&cli, &run, &registry).await
        }
        #[cfg(feature = "lab")]
        Command::Lab(c) => lab::run(&cli, c, &registry).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&cli, e),
    }
}

fn report_error(cli: &Cli, e: CliError) -> i32 {
    if cli.output == Output::Json {
        outln!("{}", serde_json::json!({ "error": e.message, "hint": e.hint, "exit_code": e.code }));
    } else {
        eprintln!("error: {}", e.message);
        if let Some(h) = &e.hint {
            eprintln!("  hint: {h}");
        }
    }
    e.code
}

/// The shared state named by `--state`, connected.
pub async fn shared_state(cli: &Cli) -> Result<Option<crate::journal::shared::SharedState>, CliError> {
    let Some(url) = &cli.state else { return Ok(None) };
    crate::journal::shared::SharedState::connect(url).await.map(Some).map_err(|e| {
        CliError::new(exit::STATE_ERROR, format!("cannot use the shared state: {e}"))
            .hint("check --state and the AWS settings (AWS_ENDPOINT_URL, AWS_REGION, credentials)")
    })
}

/// Commands that read runs see the journals of both sites: fetch what the shared state has.
async fn pull_shared(cli: &Cli) -> Result<(), CliError> {
    if !matches!(cli.command, Command::Status(_) | Command::Report(_) | Command::Resume(_) | Command::Approve(_)) {
        return Ok(());
    }
    let Some(shared) = shared_state(cli).await? else { return Ok(()) };
    shared
        .pull(&crate::journal::state::StateDir::new(&cli.state_dir))
        .await
        .map(|_| ())
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("cannot fetch runs from {}: {e}", shared.describe())))
}
