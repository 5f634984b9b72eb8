//! `drover run` and `drover resume`: take the lock, open the journal, run the engine with a
//! view and a gatekeeper, handle Ctrl-C in two stages, write the report.

use super::out::outln;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::gate::GateKeeper;
use super::view::{self, LiveView, Render};
use super::{Cli, CliError, Output, RunbookInputs, exit};
use crate::engine::events::{RunMode, RunOutcome};
use crate::engine::{
    Approver, AutoApprove, EventSink, ExecuteOptions, Preflight, Resume, RunSummary, StopSignal, execute,
};
use crate::journal::Journal;
use crate::journal::lock::{RunLock, hostname};
use crate::journal::state::{RunState, StateDir};
use crate::registry::Registry;
use crate::report::{Report, render_html};
use crate::runbook::{self, Loaded};

#[derive(Debug, Clone, Args)]
pub struct RunFlags {
    /// Approve every gate (`confirm:` and `approve` steps) without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Steps running at once (default: the runbook's `concurrency`, else 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Take over the run lock even if another host holds it (after making sure it is dead).
    #[arg(long)]
    pub break_lock: bool,
    /// Start changing things without first checking every step against the real systems.
    /// Recorded in the journal and shown in the report.
    #[arg(long)]
    pub skip_preflight: bool,
    /// How long the preflight (every step's read-only checks, before the first change) may take.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub preflight_timeout: std::time::Duration,
}

impl RunFlags {
    /// `--yes`-like flags for a run started by drover itself (the lab).
    pub fn unattended() -> RunFlags {
        RunFlags {
            yes: true,
            concurrency: None,
            break_lock: false,
            skip_preflight: false,
            preflight_timeout: std::time::Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub runbook: PathBuf,
    #[command(flatten)]
    pub inputs: RunbookInputs,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Check every step's preconditions against the real systems and show what would
    /// change; changes nothing. Exits 1 if a precondition fails.
    #[arg(long)]
    pub dry_run: bool,
}

/// `drover failover`, `failback`, `rehearse`: a shipped runbook with `run`'s flags.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// The runbook to run instead of the shipped one (built into drover).
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: RunbookInputs,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Check every step's preconditions and show what would change; changes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `drover rehearse` only: run the live rehearsal (runbooks/rehearsal.yaml: cloned volumes,
    /// isolated namespaces, everything removed afterwards) instead of a dry run of the failover.
    #[arg(long)]
    pub live: bool,
}

/// `drover upgrade`: the blue/green runbook, or `--rollback` to switch users back.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub flow: FlowArgs,
    /// Switch users back to the original cluster (which the upgrade never changed).
    #[arg(long)]
    pub rollback: bool,
}

impl FlowArgs {
    /// `shipped` names a runbook built into drover (`failover.yaml`).
    pub fn to_run(&self, shipped: &str, dry_run: bool) -> RunArgs {
        RunArgs {
            runbook: self.runbook.clone().unwrap_or_else(|| crate::runbook::shipped::path(shipped)),
            inputs: self.inputs.clone(),
            flags: self.flags.clone(),
            dry_run,
        }
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (unique prefix or suffix, or `latest`).
    pub run: String,
    /// Resume even though the runbook or sites file changed since the run started, or a
    /// `--param` changes a value a finished step already used.
    #[arg(long)]
    pub force: bool,
    /// Change a param for the rest of the run: `--param max_lag=4h` (repeatable). Refused for
    /// a param a finished step used, unless --force.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// The run lock: a file in the state dir, or an object in the shared state.
enum HeldLock {
    None,
    Local(RunLock),
    Shared(crate::journal::shared::SharedLock),
}

impl HeldLock {
    async fn release(self) {
        match self {
            HeldLock::Shared(l) => l.release().await,
            HeldLock::Local(l) => drop(l),
            HeldLock::None => {}
        }
    }
}

/// Take the lock of `scope`. Breaking a shared lock — held from any host — is confirmed at a
/// terminal unless `--yes`, and refused without one.
async fn take_lock(
    state: &StateDir,
    shared: Option<&crate::journal::shared::SharedState>,
    scope: &str,
    run_id: &str,
    flags: &RunFlags,
) -> Result<HeldLock, CliError> {
    let Some(shared) = shared else {
        return Ok(HeldLock::Local(RunLock::acquire(&state.locks(), scope, run_id, flags.break_lock)?));
    };
    match shared.lock(scope, run_id, false).await {
        Ok(l) => Ok(HeldLock::Shared(l)),
        Err(crate::journal::lock::LockError::Held { holder, .. }) if flags.break_lock => {
            let question = format!(
                "run {} of `{scope}` holds the shared lock from host {} (pid {}) since {}. Take it over?",
                holder.run_id, holder.host, holder.pid, holder.since
            );
            if !flags.yes {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::new(exit::LOCK_HELD, question)
                        .hint("answer at a terminal, or add --yes once you are sure that run is dead"));
                }
                eprint!("{question} [y/N] ");
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(CliError::new(exit::CANCELLED, "the lock was left to its holder"));
                }
            }
            Ok(HeldLock::Shared(shared.lock(scope, run_id, true).await?))
        }
        Err(e) => Err(e.into()),
    }
}

fn new_run_id(name: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = stamp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{name}-{:04x}", rand::random::<u16>())
}

pub async fn run(cli: &Cli, a: &RunArgs, registry: &Registry) -> Result<i32, CliError> {
    let mut loaded = super::info::load_or_report(cli, &a.runbook, &a.inputs, registry, true)?;
    // `resume` may be run from another directory: record where the files really are.
    loaded.runbook.path = std::fs::canonicalize(&loaded.runbook.path).unwrap_or(loaded.runbook.path);
    loaded.sites_file = loaded.sites_file.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let state = StateDir::new(&cli.state_dir);
    let shared = super::shared_state(cli).await?;
    let run_id = new_run_id(&loaded.runbook.name);
    let mode = if a.dry_run { RunMode::DryRun } else { RunMode::Run };
    // A dry run changes nothing, so it may run beside a real one.
    let lock = if a.dry_run {
        HeldLock::None
    } else {
        take_lock(&state, shared.as_ref(), &loaded.runbook.name, &run_id, &a.flags).await?
    };
    let prepared = (|| -> Result<Journal, CliError> {
        let dir = state.run_dir(&run_id);
        std::fs::create_dir_all(&dir).map_err(|e| {
            CliError::new(exit::STATE_ERROR, format!("cannot create {}: {e}", dir.display())).hint("check --state-dir")
        })?;
        let text = match crate::runbook::shipped::text(&a.runbook) {
            Some(t) => Some(t.as_bytes().to_vec()),
            None => std::fs::read(&a.runbook).ok(),
        };
        if let Some(text) = text {
            let _ = std::fs::write(dir.join("runbook.yaml"), text);
        }
        Ok(Journal::create(&state.journal(&run_id))?)
    })();
    let journal = match prepared {
        Ok(j) => j,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let mirror = shared.as_ref().map(|s| s.mirror(&run_id, &state.journal(&run_id)));
    journal.keep_records();
    let written = journal.clone();
    let summary = drive(cli, &loaded, &state, &run_id, mode, &a.flags, journal, None).await;
    settle(shared.as_ref(), mirror, lock).await;
    // The report is built from the journal: the expanded runbook (a fleet's thousands of
    // instances) need not be held beside it.
    drop(loaded);
    finish(cli, &state, &run_id, summary?, written.kept())
}

/// After a run, whatever its end: the journal's last records go to the shared state, then the
/// lock is released.
async fn settle(
    shared: Option<&crate::journal::shared::SharedState>,
    mirror: Option<crate::journal::shared::Mirror>,
    lock: HeldLock,
) {
    if let (Some(shared), Some(mirror)) = (shared, mirror)
        && !mirror.finish().await
    {
        eprintln!(
            "warning: the journal's last records did not reach {}; this host's state dir has them",
            shared.describe()
        );
    }
    lock.release().await;
}

pub async fn resume(cli: &Cli, a: &ResumeArgs, registry: &Registry) -> Result<i32, CliError> {
    let state = StateDir::new(&cli.state_dir);
    let run_id =
        state.resolve(&a.run).map_err(|e| CliError::new(exit::INVALID_INPUT, e).hint("`drover status` lists runs"))?;
    let path = state.journal(&run_id);
    let (previous, read) = RunState::load(&path)?;
    if previous.finished == Some(RunOutcome::Succeeded) {
        outln!("run {run_id} already succeeded; nothing to resume");
        return Ok(exit::SUCCESS);
    }
    let start = &previous.start;
    let sites_file = start.sites_file.as_ref().map(PathBuf::from);
    let inputs = RunbookInputs { params: a.params.clone(), params_file: None, sites: sites_file.clone() };
    let rb_path = PathBuf::from(&start.runbook_path);
    // The run's own params: a fanned step's items are the ones the run started with.
    let options = runbook::LoadOptions { recorded: previous.params.clone(), ..inputs.options(false) };
    let mut loaded: Loaded = runbook::load(&rb_path, registry, &options).map_err(|d| {
        eprintln!("{d}");
        CliError::new(exit::STATE_ERROR, format!("the runbook of run {run_id} ({}) no longer loads", rb_path.display()))
            .hint("restore the runbook as it was, or start a new run")
    })?;
    let changed_params = changed_params(&a.params, &loaded, &previous, a.force)?;
    let changed = loaded.runbook.digest != start.runbook_digest || loaded.sites_digest != start.sites_digest;
    if changed && !a.force {
        return Err(CliError::new(
            exit::STATE_ERROR,
            format!("the runbook or sites file of run {run_id} changed since it started"),
        )
        .hint("resume --force runs the changed runbook, reusing journaled results of steps with the same id"));
    }
    let ids: Vec<&str> = loaded.runbook.steps.iter().map(|s| s.id.as_str()).collect();
    if changed && start.steps.iter().any(|s| !ids.contains(&s.id.as_str())) {
        return Err(CliError::new(exit::STATE_ERROR, "steps of the original run are missing from the changed runbook")
            .hint("a changed runbook must keep every step id of the run it resumes; start a new run instead"));
    }
    // The run keeps its params, but for those changed now.
    loaded.params = previous.params.clone();
    loaded.params.extend(changed_params.clone());
    if previous.torn_tail {
        tracing::warn!(journal = %path.display(), "the journal's last record was cut off by a crash; dropping it");
    }
    let shared = super::shared_state(cli).await?;
    let lock = if start.mode == RunMode::DryRun {
        HeldLock::None
    } else {
        take_lock(&state, shared.as_ref(), &start.runbook, &run_id, &a.flags).await?
    };
    let journal = match Journal::reopen(&path, &read) {
        Ok(j) => j,
        Err(e) => {
            lock.release().await;
            return Err(e.into());
        }
    };
    let mut resume = previous.resume(changed);
    resume.changed_params = changed_params;
    if cli.output == Output::Text {
        outln!("resuming run {run_id}: {} step(s) already done will not run again", resume.done.len());
    }
    let mirror = shared.as_ref().map(|s| s.mirror(&run_id, &path));
    let summary = drive(cli, &loaded, &state, &run_id, start.mode, &a.flags, journal, Some(resume)).await;
    settle(shared.as_ref(), mirror, lock).await;
    drop(loaded);
    finish(cli, &state, &run_id, summary?, None)
}

/// The params `resume --param` changes, checked: declared and typed (the runbook load did that),
/// and not read by a step that already finished — its result came from the old value.
fn changed_params(
    args: &[String],
    loaded: &Loaded,
    previous: &RunState,
    force: bool,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, CliError> {
    let mut out = std::collections::BTreeMap::new();
    for arg in args {
        let name = arg.split_once('=').map(|(k, _)| k.trim()).unwrap_or(arg);
        let Some(value) = loaded.params.get(name) else { continue };
        if previous.params.get(name) == Some(value) {
            continue;
        }
        let used_by: Vec<&str> = loaded
            .runbook
            .steps
            .iter()
            .filter(|s| previous.steps.get(&s.id).is_some_and(|r| r.outcome.is_some_and(|o| o.satisfies())))
            .filter(|s| s.params_read().contains(name))
            .map(|s| s.id.as_str())
            .collect();
        if !used_by.is_empty() && !force {
            return Err(CliError::new(
                exit::INVALID_INPUT,
                format!("param `{name}` was already used by finished step(s) {}", used_by.join(", ")),
            )
            .hint("their results came from the old value; start a new run, or add --force to change it anyway"));
        }
        out.insert(name.to_string(), value.clone());
    }
    Ok(out)
}

/// How long a finished run waits for its last notifications to leave.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
async fn drive(
    cli: &Cli,
    loaded: &Loaded,
    state: &StateDir,
    run_id: &str,
    mode: RunMode,
    flags: &RunFlags,
    journal: Journal,
    resume: Option<Resume>,
) -> Result<RunSummary, CliError> {
    let tty = std::io::stderr().is_terminal() && cli.output == Output::Text;
    let render = match (cli.output, tty) {
        (Output::Json | Output::Yaml, _) => Render::Machine(cli.output),
        (Output::Text, true) => Render::Live(LiveView::new()),
        (Output::Text, false) => Render::Lines,
    };
    let live = if let Render::Live(v) = &render { Some(v.clone()) } else { None };
    let approver: Arc<dyn Approver> = if flags.yes {
        Arc::new(AutoApprove(format!(
            "--yes ({}@{})",
            std::env::var("USER").unwrap_or_else(|_| "operator".into()),
            hostname()
        )))
    } else {
        let ask_here = std::io::stdin().is_terminal() && cli.output == Output::Text;
        Arc::new(GateKeeper::new(state.approvals(run_id), ask_here, live, cli.output.machine()))
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let uses: HashMap<String, String> =
        loaded.runbook.steps.iter().map(|s| (s.id.clone(), s.call.uses.clone())).collect();
    let rto_target = loaded
        .params
        .get("rto_target")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| humantime::parse_duration(t).ok());
    let done = resume.iter().flat_map(|r| r.done.keys().cloned());
    let tally = view::Tally::new(loaded.runbook.steps.len(), done, rto_target);
    let viewer = view::spawn(render, rx, uses, tally);
    // Webhooks see the events on their way to the view.
    // Each message's fate goes to the journal and on to the view, not back to the notifier.
    let told = EventSink::new(Some(journal.clone()), Some(tx.clone()));
    let (tx, notifying) = match crate::notify::Notifier::new(loaded, run_id, mode, told) {
        Some(mut notifier) => {
            let (tee, mut events) = tokio::sync::mpsc::unbounded_channel::<crate::engine::events::Event>();
            let task = tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    notifier.observe(&ev);
                    let _ = tx.send(ev);
                }
                notifier
            });
            (tee, Some(task))
        }
        None => (tx, None),
    };
    let (stop_tx, stop) = StopSignal::new();
    let mut signals = super::signals::listen();
    let stop_requests = tokio::spawn(async move {
        let mut level = 0u8;
        while let Some(name) = signals.recv().await {
            level = (level + 1).min(2);
            stop_tx.request(level, name);
        }
    });
    let concurrency = flags.concurrency.map(|c| c as usize).or(loaded.runbook.concurrency).unwrap_or(8);
    let preflight = if flags.skip_preflight {
        Preflight::Skip {
            by: format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()), hostname()),
        }
    } else {
        Preflight::Check { timeout: flags.preflight_timeout }
    };
    let opts = ExecuteOptions {
        run_id: run_id.to_string(),
        mode,
        concurrency,
        approver,
        sink: EventSink::new(Some(journal.clone()), Some(tx)),
        stop,
        resume,
        preflight,
    };
    let summary = execute(loaded, opts).await;
    stop_requests.abort();
    if let Some(task) = notifying
        && let Ok(notifier) = task.await
    {
        notifier.finish(NOTIFY_GRACE).await;
    }
    let _ = viewer.await;
    journal.close()?;
    if let Some(e) = &summary.journal_error {
        return Err(CliError::new(exit::STATE_ERROR, format!("the journal could not be written: {e}"))
            .hint("check free space and permissions of the state directory; `drover status` shows what was recorded"));
    }
    Ok(summary)
}

/// Print and store the report; map the outcome to an exit code.
/// A finished run's report on standard output.
fn show(cli: &Cli, report: &Report, run_id: &str, dir: &std::path::Path) {
    match cli.output {
        // Written as it is serialized: no JSON tree of the whole report in between.
        Output::Json | Output::Yaml => {
            super::out::emit(cli.output, &std::collections::BTreeMap::from([("summary", report)]))
        }
        Output::Text => {
            outln!("\n{}", report.to_text());
            outln!("report: {}  (drover report {run_id} --format html)", dir.join("report.html").display());
        }
    }
}

/// The report of a finished run, from its journal: the records this process wrote (`written`,
/// when it wrote all of them), else the file read back.
fn finish(
    cli: &Cli,
    state: &StateDir,
    run_id: &str,
    summary: RunSummary,
    written: Option<Vec<crate::model::events::Record>>,
) -> Result<i32, CliError> {
    // Every step's outputs are in the journal too.
    let RunSummary { outcome, preflight_failed, .. } = summary;
    // The run's state is dropped once the report is built, before the report is rendered
    // three times (file, page, output): a fleet's end is its peak of memory.
    let report = {
        let path = state.journal(run_id);
        let run_state = match written {
            Some(records) => RunState::from_records(&path, records, false)?,
            None => RunState::load(&path)?.0,
        };
        let report = Report::from_state(&run_state);
        if report.mode == crate::engine::events::RunMode::DryRun {
            let history: Vec<Report> = state
                .list()
                .iter()
                .filter(|id| id.as_str() != run_id)
                .filter_map(|id| RunState::load(&state.journal(id)).ok())
                .map(|(s, _)| Report::from_state(&s))
                .collect();
            report.with_forecast(&run_state, &history)
        } else {
            report
        }
    };
    let dir = state.run_dir(run_id);
    // The report's files are written beside its output (a fleet's are megabytes each).
    // Each on its own thread: the run is over, the cores are free, and the operator waits.
    std::thread::scope(|scope| {
        scope.spawn(|| std::fs::write(dir.join("report.json"), report.to_json()));
        scope.spawn(|| std::fs::write(dir.join("report.html"), render_html(&report)));
        show(cli, &report, run_id, &dir);
    });
    Ok(match outcome {
        RunOutcome::Succeeded => exit::SUCCESS,
        RunOutcome::Failed | RunOutcome::RolledBack => {
            if cli.output == Output::Text && !preflight_failed.is_empty() {
                eprintln!(
                    "the preflight found {} step(s) that cannot work ({}); nothing was changed. Fix the cause, then `drover resume {run_id}`",
                    preflight_failed.len(),
                    preflight_failed.join(", ")
                );
            } else if cli.output == Output::Text {
                eprintln!("the run failed; fix the cause shown above, then `drover resume {run_id}`");
            }
            exit::RUN_FAILED
        }
        RunOutcome::Cancelled => {
            if cli.output == Output::Text {
                eprintln!("the run was stopped; `drover resume {run_id}` continues it");
            }
            report.stopped_by.as_deref().map(super::signals::exit_code).unwrap_or(exit::CANCELLED)
        }
    })
}
