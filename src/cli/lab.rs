//! `drover lab ...`: start the simulators in the foreground and say where they are.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Cli, CliError, Output, exit};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run the ONTAP REST simulator (two clusters by default) until Ctrl-C.
    Ontap(OntapArgs),
    /// Run a simulated Kubernetes API until Ctrl-C and write a kubeconfig for it.
    Kube(KubeArgs),
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

pub async fn run(cli: &Cli, cmd: &LabCommand) -> Result<i32, CliError> {
    match cmd {
        LabCommand::Kube(a) => {
            let (cluster, kubeconfig) = crate::lab::start_kube(&a.name, a.port, &a.dir)
                .await
                .map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
            if cli.output == Output::Json {
                println!("{}", serde_json::json!({ "kube": cluster.url(), "kubeconfig": kubeconfig }));
            } else {
                println!("Kubernetes API simulator (not a real API server) at {}", cluster.url());
                println!("kubeconfig: {}  (context `{}`)", kubeconfig.display(), a.name);
                println!("Ctrl-C stops it.");
            }
            let _ = tokio::signal::ctrl_c().await;
            Ok(exit::SUCCESS)
        }
        LabCommand::Ontap(a) => {
            let (sim, sites) = crate::lab::start_ontap(&a.topology, &a.dir).await.map_err(|e| {
                CliError::new(exit::INVALID_INPUT, e).hint("check the topology file (see examples/lab/ontap.yaml)")
            })?;
            if cli.output == Output::Json {
                let eps: Vec<_> =
                    sim.endpoints().iter().map(|e| serde_json::json!({ "cluster": e.name, "url": e.url })).collect();
                println!("{}", serde_json::json!({ "ontap": eps, "sites_file": sites }));
            } else {
                println!("ONTAP REST simulator (not a real ONTAP), from {}:", a.topology.display());
                for e in sim.endpoints() {
                    println!("  cluster {:<8} {}", e.name, e.url);
                }
                println!("sites file: {}", sites.display());
                println!("try: drover run examples/storage-failover.yaml --sites {} --yes", sites.display());
                println!("Ctrl-C stops the lab.");
            }
            let _ = tokio::signal::ctrl_c().await;
            drop(sim);
            Ok(exit::SUCCESS)
        }
    }
}
