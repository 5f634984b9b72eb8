//! SIGINT, SIGTERM and SIGHUP: what a terminal, systemd, Kubernetes and CI runners send to stop
//! a process. Every long-running command treats the first as a graceful stop (no new step
//! starts; running steps reach a safe point; the journal stays resumable) and a second as an
//! abort. The exit code says which signal stopped a run.

use tokio::signal::unix::{SignalKind, signal};

use super::exit;

/// A stop signal's name and how tokio names its kind.
type Stop = (&'static str, fn() -> SignalKind);

const STOPS: [Stop; 3] =
    [("SIGINT", SignalKind::interrupt), ("SIGTERM", SignalKind::terminate), ("SIGHUP", SignalKind::hangup)];

/// Every stop signal, by name, as it arrives. Installing the handlers replaces the default
/// action (dying at once) for as long as the process runs.
pub fn listen() -> tokio::sync::mpsc::UnboundedReceiver<&'static str> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (name, kind) in STOPS {
        let Ok(mut stream) = signal(kind()) else {
            tracing::warn!(signal = name, "cannot handle this signal; it stops drover at once");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(name).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// The exit code of a run a signal stopped: Ctrl-C keeps `exit::CANCELLED` (3), as documented
/// before SIGTERM was handled; SIGTERM and SIGHUP give 128 + the signal's number (143, 129), what
/// a shell reports for a process that signal ended, so supervisors read it as they expect.
pub fn exit_code(name: &str) -> i32 {
    match name {
        "SIGTERM" => 128 + libc::SIGTERM,
        "SIGHUP" => 128 + libc::SIGHUP,
        _ => exit::CANCELLED,
    }
}
