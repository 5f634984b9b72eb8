//! The `drover` binary: parse arguments, set up logging, run, map the result to an exit code.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use drover::cli::{self, Cli};
use drover::registry::Registry;

// A fleet's run allocates from thousands of tasks on every worker thread: glibc's malloc was a
// fifth of drover's CPU in the 500-application bench (and twice the memory unless held to two
// arenas); mimalloc is neither (README, Benchmarks). It is built without asking for
// transparent huge pages (`no_thp`): a run's memory comes in bursts and is short-lived, and
// each huge page is zeroed whole (2 MiB) on first touch — on a virtual machine that zeroing was
// most of the first second of a 500-application run and a fifth of its preflight (1.4 s of
// its end-to-end time in the lab bench, the median of alternated runs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Journals, reports, previews and lab secrets hold operator data: 0600 files, 0700 dirs.
    drover_api::procs::private_files();
    let cli = Cli::parse();
    // The Kubernetes client logs every failed request at ERROR; drover reports each failure
    // itself, with what to do, so its own log stays quiet below -vv.
    let default = match cli.verbose {
        0 => "warn,kube_client=off",
        1 => "info,kube_client=off",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(cli::exit::STATE_ERROR);
        }
    };
    let code = runtime.block_on(cli::main(cli, Registry::builtin()));
    // Do not wait for blocked readers (a terminal prompt nobody answered).
    runtime.shutdown_background();
    std::process::exit(code);
}
