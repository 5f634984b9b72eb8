//! Standard output that a closed reader does not break.
//!
//! `drover status | head` closes the pipe after a few lines; `println!` then panics (exit 101).
//! A DR tool must not do that — least of all mid-failover, when whoever reads the live output
//! (a `tee`, a terminal that went away) is gone but the run must go on. Here the first write
//! to a closed stdout is noted and every later line is dropped quietly: a read-only command
//! ends as it would have, a run carries on, its journal and report being the record.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Write formatted text to stdout, or nothing once its reader is gone.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// `println!` for drover's output: quiet once stdout is closed.
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for drover's output: quiet once stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};

/// One document for a machine: a JSON line, or a YAML document (`---` first, so that a stream
/// of them — a run's events — reads as one YAML stream).
pub fn emit(format: super::Output, value: &impl serde::Serialize) {
    write(format_args!("{}", render(format, value)));
}

/// [`emit`]'s text, for a caller writing many documents at once.
pub fn render(format: super::Output, value: &impl serde::Serialize) -> String {
    match format {
        super::Output::Yaml => match serde_yaml::to_string(value) {
            Ok(doc) => format!("---\n{doc}"),
            Err(e) => format!("---\nerror: cannot write this as YAML: {e}\n"),
        },
        _ => match serde_json::to_string(value) {
            Ok(line) => line + "\n",
            Err(e) => format!("{}\n", serde_json::json!({ "error": format!("cannot write this as JSON: {e}") })),
        },
    }
}
