//! `drover lab ...`: start the simulators in the foreground and say where they are.

use super::out::{out, outln};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Cli, CliError, exit};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start the two-site lab (ONTAP and Kubernetes simulators; BIND, HAProxy and moto when
    /// installed, built-in stand-ins otherwise) in the foreground until Ctrl-C, and write its
    /// sites file.
    #[command(after_help = "Examples:
  drover lab up                                   then run the `try:` command it prints
  drover lab up --config examples/lab/fleet.yaml   a fleet of apps in tiers")]
    Up(UpArgs),
    /// Start the lab, run runbooks/failover.yaml against it with the live view, print the
    /// report and check the end state. Exit 0 when the DR site serves.
    #[command(after_help = "Examples:
  drover lab failover
  drover lab failover --mode unplanned        the primary is lost; apps come from S3 backups
  drover lab failover --failback              and back again")]
    Failover(FailoverArgs),
    /// Run the ONTAP REST simulator (two clusters by default) until Ctrl-C.
    #[command(after_help = "Examples:
  drover lab ontap
  drover lab ontap --topology examples/lab/ontap.yaml --dir /tmp/ontap")]
    Ontap(OntapArgs),
    /// Run a simulated Kubernetes API until Ctrl-C and write a kubeconfig for it.
    #[command(after_help = "Examples:
  drover lab kube --port 6443        then: KUBECONFIG=.drover/lab/kubeconfig-lab kubectl get ns")]
    Kube(KubeArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The lab file: topology, apps and copies, which servers play DNS, LB and S3.
    /// Default: the built-in lab (the files of examples/lab/, inside drover).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the sites file, kubeconfigs, credentials and server files are written.
    #[arg(long, default_value = ".drover/lab")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// `planned` (both sites up, primary fenced) or `unplanned` (the primary is lost first;
    /// apps come from the latest backup in S3).
    #[arg(long, default_value = "planned", value_parser = ["planned", "unplanned"])]
    pub mode: String,
    /// The runbook to run (default: the shipped failover runbook, built in).
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// The lab file (see `drover lab up --help`; default: the built-in lab).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the lab's files are written.
    #[arg(long, default_value = ".drover/lab")]
    pub dir: PathBuf,
    /// After the failover, run runbooks/failback.yaml and check the lab is back where it started.
    #[arg(long)]
    pub failback: bool,
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Context and cluster name in the kubeconfig.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where the kubeconfig is written.
    #[arg(long, default_value = ".drover/lab")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct OntapArgs {
    /// Topology: clusters, SVMs, volumes, peers, relationships, behaviour settings.
    #[arg(long, default_value = "examples/lab/ontap.yaml")]
    pub topology: PathBuf,
    /// Where the sites file and credential files are written.
    #[arg(long, default_value = ".drover/lab")]
    pub dir: PathBuf,
}

async fn start_lab(config: Option<&std::path::Path>, dir: &std::path::Path) -> Result<crate::lab::Lab, CliError> {
    let config = match config {
        Some(file) if !file.is_file() => {
            return Err(CliError::new(exit::INVALID_INPUT, format!("the lab file {} is not here", file.display()))
                .hint("leave out --config for the built-in lab, or give the path of a lab file"));
        }
        Some(file) => crate::lab::LabConfig::load(file),
        None => crate::lab::LabConfig::builtin(dir),
    }
    .map_err(|e| {
        CliError::new(exit::INVALID_INPUT, e).hint("see examples/lab/lab.yaml for every field and its choices")
    })?;
    crate::lab::Lab::up(&config, dir)
        .await
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("the lab did not start: {e}")))
}

/// Print checks as ✓/✗ lines; true when all hold.
fn print_state(title: &str, state: &[(String, bool)]) -> bool {
    outln!("\n{title}:");
    for (line, good) in state {
        outln!("  {} {line}", if *good { "✓" } else { "✗" });
    }
    state.iter().all(|(_, ok)| *ok)
}

pub async fn run(cli: &Cli, cmd: &LabCommand, registry: &crate::registry::Registry) -> Result<i32, CliError> {
    match cmd {
        LabCommand::Up(a) => {
            // Handlers first: a SIGTERM during start-up stops the lab once it is up.
            let mut stop = super::signals::listen();
            let lab = start_lab(a.config.as_deref(), &a.dir).await?;
            outln!("drover lab: two sites on loopback (east = primary, west = DR)");
            out!("{}", lab.describe());
            outln!("try: drover failover --sites {} --yes", lab.sites_file.display());
            for (k, v) in &lab.params {
                outln!("       --param {k}={v}");
            }
            if let Some(inventory) = &lab.inventory {
                outln!("       --params-file {}", inventory.display());
            }
            outln!("Ctrl-C (or SIGTERM, SIGHUP) stops the lab.");
            let mut lab = lab;
            // A server that dies while the lab is up is said at once, not found by a failing step.
            let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
            let by = loop {
                tokio::select! {
                    by = stop.recv() => break by.unwrap_or("SIGINT"),
                    _ = look.tick() => {
                        for trouble in lab.troubles() {
                            eprintln!("drover lab: {trouble}");
                        }
                    }
                }
            };
            eprintln!("drover lab: stopping ({by}); every server the lab started stops with it");
            drop(lab);
            Ok(exit::SUCCESS)
        }
        LabCommand::Failover(a) => {
            // The runbooks are checked before anything starts: a typo costs no lab start.
            let failover = a.runbook.clone().unwrap_or_else(|| crate::runbook::shipped::path("failover.yaml"));
            let failback = crate::runbook::shipped::path("failback.yaml");
            let mut books = vec![failover.clone()];
            if a.failback {
                books.push(failback.clone());
            }
            for book in &books {
                super::info::load_or_report(cli, book, &super::RunbookInputs::default(), registry, false)?;
            }
            let mut lab = start_lab(a.config.as_deref(), &a.dir).await?;
            eprintln!("drover lab: two sites on loopback (east = primary, west = DR)");
            eprint!("{}", lab.describe());
            if a.mode == "unplanned" {
                if !lab.parts.iter().any(|p| p.name == "S3" && p.kind != "missing") {
                    return Err(CliError::new(
                        exit::INVALID_INPUT,
                        "an unplanned failover restores from the backup in S3, and the lab file switches S3 off",
                    )
                    .hint("set `s3: auto` in the lab file, or run `drover lab failover --mode planned`"));
                }
                lab.lose_primary();
                eprintln!("disaster: the east site is gone (its ONTAP cluster and Kubernetes API stop answering)");
            }
            if a.failback && a.mode == "unplanned" {
                return Err(CliError::new(exit::INVALID_INPUT, "the lab cannot fail back to a site it destroyed")
                    .hint("use `--failback` with `--mode planned`"));
            }
            let run = |runbook: PathBuf, extra: Option<String>| {
                let mut params: Vec<String> = lab.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                params.extend(extra);
                super::run::RunArgs {
                    runbook,
                    inputs: super::RunbookInputs {
                        params,
                        params_file: lab.inventory.clone(),
                        sites: Some(lab.sites_file.clone()),
                    },
                    flags: super::run::RunFlags::unattended(),
                    dry_run: false,
                }
            };
            let code = super::run::run(cli, &run(failover, Some(format!("mode={}", a.mode))), registry).await?;
            let ok = print_state("end state of the lab after the failover", &lab.failover_state().await);
            if code != exit::SUCCESS || !ok || !a.failback {
                return Ok(if code != exit::SUCCESS {
                    code
                } else if ok {
                    exit::SUCCESS
                } else {
                    exit::RUN_FAILED
                });
            }
            let code = super::run::run(cli, &run(failback, None), registry).await?;
            let ok = print_state("end state of the lab after the failback (as it started)", &lab.initial_state().await);
            Ok(if code != exit::SUCCESS {
                code
            } else if ok {
                exit::SUCCESS
            } else {
                exit::RUN_FAILED
            })
        }
        LabCommand::Kube(a) => {
            let mut stop = super::signals::listen();
            let (cluster, kubeconfig) =
                crate::lab::start_kube(&a.name, a.port, &a.dir, drover_kube_sim::Settings::default())
                    .await
                    .map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
            if cli.output.machine() {
                super::out::emit(cli.output, &serde_json::json!({ "kube": cluster.url(), "kubeconfig": kubeconfig }));
            } else {
                outln!("Kubernetes API simulator (not a real API server) at {}", cluster.url());
                outln!("kubeconfig: {}  (context `{}`)", kubeconfig.display(), a.name);
                outln!("Ctrl-C (or SIGTERM, SIGHUP) stops it.");
            }
            stop.recv().await;
            Ok(exit::SUCCESS)
        }
        LabCommand::Ontap(a) => {
            let mut stop = super::signals::listen();
            let topology = crate::lab::load_topology(&a.topology, None).map_err(|e| {
                CliError::new(exit::INVALID_INPUT, e).hint("check the topology file (see examples/lab/ontap.yaml)")
            })?;
            let (sim, sites) = crate::lab::start_ontap(&topology, &a.dir).await.map_err(|e| {
                CliError::new(exit::INVALID_INPUT, e).hint("check the topology file (see examples/lab/ontap.yaml)")
            })?;
            if cli.output.machine() {
                let eps: Vec<_> =
                    sim.endpoints().iter().map(|e| serde_json::json!({ "cluster": e.name, "url": e.url })).collect();
                super::out::emit(cli.output, &serde_json::json!({ "ontap": eps, "sites_file": sites }));
            } else {
                outln!("ONTAP REST simulator (not a real ONTAP), from {}:", a.topology.display());
                for e in sim.endpoints() {
                    outln!("  cluster {:<8} {}", e.name, e.url);
                }
                outln!("sites file: {}", sites.display());
                outln!("try: drover run examples/storage-failover.yaml --sites {} --yes", sites.display());
                outln!("Ctrl-C (or SIGTERM, SIGHUP) stops the lab.");
            }
            stop.recv().await;
            drop(sim);
            Ok(exit::SUCCESS)
        }
    }
}
