//! The `drover` command line: one module per group of commands, renderers in `view`.

mod approve;
mod gate;
mod info;
#[cfg(feature = "lab")]
mod lab;
mod out;
mod run;
mod serve;
mod signals;
mod view;

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
    /// `text` for people; `json` or `yaml` for machines (a run's events: one JSON object per
    /// line, or one YAML document each).
    #[arg(short, long, global = true, value_enum, value_name = "FORMAT", default_value_t = Output::Text)]
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
    Yaml,
}

impl Output {
    /// For a program to read: JSON or YAML.
    pub fn machine(self) -> bool {
        self != Output::Text
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check runbooks without touching anything: syntax, keys, actions, parameters, graph, references.
    #[command(after_help = "Examples:
  drover validate runbooks/*.yaml
  drover validate runbooks/failover.yaml --params-file inventory.yaml --sites sites.yaml")]
    Validate(info::ValidateArgs),
    /// Show the step graph: levels, critical path, conditions and gates.
    #[command(after_help = "Examples:
  drover plan runbooks/failover.yaml --params-file inventory.yaml
  drover plan runbooks/failover.yaml --format mermaid     a picture for the wiki (or --format dot)
  drover plan runbooks/failover.yaml -o yaml              for a program (or -o json)")]
    Plan(info::PlanArgs),
    /// Run a runbook (or, with --dry-run, check every step's preconditions and change nothing).
    #[command(after_help = "Examples:
  drover run examples/hello.yaml --param who=operator
  drover run my-failover.yaml --params-file inventory.yaml --sites sites.yaml --dry-run
  drover run my-failover.yaml --sites sites.yaml -o json | tee events.jsonl")]
    Run(run::RunArgs),
    /// Continue an interrupted or failed run from its journal.
    #[command(after_help = "Examples:
  drover resume latest
  drover resume 20261202T1414 --param max_lag=4h       a param the finished steps did not use")]
    Resume(run::ResumeArgs),
    /// List runs, or show one run's steps.
    #[command(after_help = "Examples:
  drover status                      every run: state, start, duration, steps ran/skipped/not run
  drover status latest               the last run's steps, and who answered its gates
  drover status 20261202T1414 -o yaml")]
    Status(info::StatusArgs),
    /// Show the report of a run (text, JSON, YAML or a self-contained HTML page).
    #[command(after_help = "Examples:
  drover report                                         the last run, as text
  drover report latest --format html --out failover.html
  drover report 20261202T1414 -o json                   for a program (or -o yaml)")]
    Report(info::ReportArgs),
    /// Answer a manual gate of a running run from another terminal.
    #[command(after_help = "Examples:
  drover approve latest break --by alice
  drover approve 20261202T1414 break --deny --by alice   the step fails and the run halts")]
    Approve(approve::ApproveArgs),
    /// List every action with its parameters and outputs.
    #[command(after_help = "Examples:
  drover actions
  drover actions ontap.snapmirror.break
  drover actions -o yaml")]
    Actions(info::ActionsArgs),
    /// Print the Kubernetes RBAC (ClusterRoles and bindings) a site's drover identity needs,
    /// per family of actions; a missing permission at run time names the family.
    #[command(after_help = "Examples:
  drover rbac | kubectl apply -f -
  drover rbac --family restore --family check --for user:drover-dr
  drover rbac --family workloads --watch carts.shop.example.com   a custom kind kube.wait waits on")]
    Rbac(info::RbacArgs),
    /// Fail over: run the shipped failover runbook (runbooks/failover.yaml, built in;
    /// `--param mode=unplanned` when the primary is down) with all of `run`'s flags.
    #[command(after_help = "Examples:
  drover failover --params-file inventory.yaml --sites sites.yaml --dry-run
  drover failover --params-file inventory.yaml --sites sites.yaml
  drover failover --params-file inventory.yaml --sites sites.yaml --param mode=unplanned")]
    Failover(run::FlowArgs),
    /// Fail back: run the shipped failback runbook (runbooks/failback.yaml, built in) with all of
    /// `run`'s flags.
    #[command(after_help = "Examples:
  drover failback --params-file inventory.yaml --sites sites.yaml --dry-run
  drover failback --params-file inventory.yaml --sites sites.yaml")]
    Failback(run::FlowArgs),
    /// Rehearse a failover without touching anything: a dry run of runbooks/failover.yaml that
    /// checks every precondition against the real systems and predicts the recovery time;
    /// `--live` runs runbooks/rehearsal.yaml (apps up in isolation from cloned replicas).
    #[command(after_help = "Examples:
  drover rehearse --params-file inventory.yaml --sites sites.yaml
  drover rehearse --live --params-file inventory.yaml --sites sites.yaml")]
    Rehearse(run::FlowArgs),
    /// A planned blue/green cluster upgrade: run runbooks/bluegreen-upgrade.yaml (copy the
    /// apps to the upgraded cluster, verify, approve, switch users); `--rollback` switches back.
    #[command(after_help = "Examples:
  drover upgrade --params-file upgrade.yaml --sites sites.yaml
  drover upgrade --params-file upgrade.yaml --sites sites.yaml --rollback")]
    Upgrade(run::UpgradeArgs),
    /// Serve the incident bridge's page: every run, each live as it goes (the same page as its
    /// report), gates answerable from the page. 127.0.0.1 unless told; a token anywhere else.
    #[command(after_help = "Examples:
  drover serve                                         http://127.0.0.1:7070/
  drover serve --listen 0.0.0.0:7070 --token env:DROVER_PAGE_TOKEN
                                          then open http://HOST:7070/?token=… once")]
    Serve(serve::ServeArgs),
    /// Print drover's version (with -o json|yaml: what this build contains).
    #[command(after_help = "Examples:
  drover version
  drover version -o json")]
    Version,
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  source <(drover completion bash)                         this shell
  drover completion bash > /etc/bash_completion.d/drover   every new shell
  drover completion zsh > \"${fpath[1]}/_drover\"
  drover completion fish > ~/.config/fish/completions/drover.fish")]
    Completion(CompletionArgs),
    /// Run simulators of the two sites on this machine (for trying drover and for tests).
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
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
        Command::Serve(a) => serve::serve(&cli, a).await,
        Command::Version => Ok(version(&cli, &registry)),
        Command::Completion(a) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut command, "drover", &mut script);
            out::out!("{}", String::from_utf8_lossy(&script));
            Ok(exit::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Command::Lab(c) => lab::run(&cli, c, &registry).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&cli, e),
    }
}

/// `drover version`: the version, and for a program what this build holds.
fn version(cli: &Cli, registry: &Registry) -> i32 {
    let version = env!("CARGO_PKG_VERSION");
    let platform = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let lab = cfg!(feature = "lab");
    if cli.output.machine() {
        let (actions, _) = registry.all();
        let actions: Vec<&str> = actions.iter().map(|a| a.info().name.as_str()).collect();
        out::emit(
            cli.output,
            &serde_json::json!({ "version": version, "platform": platform, "lab": lab, "actions": actions }),
        );
    } else {
        let lab = if lab { "with the lab" } else { "without the lab" };
        out::outln!("drover {version} ({platform}, {lab})");
    }
    exit::SUCCESS
}

fn report_error(cli: &Cli, e: CliError) -> i32 {
    if cli.output.machine() {
        out::emit(cli.output, &serde_json::json!({ "error": e.message, "hint": e.hint, "exit_code": e.code }));
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
    if !matches!(
        cli.command,
        Command::Status(_) | Command::Report(_) | Command::Resume(_) | Command::Approve(_) | Command::Serve(_)
    ) {
        return Ok(());
    }
    let Some(shared) = shared_state(cli).await? else { return Ok(()) };
    shared
        .pull(&crate::journal::state::StateDir::new(&cli.state_dir))
        .await
        .map(|_| ())
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("cannot fetch runs from {}: {e}", shared.describe())))
}
