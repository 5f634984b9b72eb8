//! What the end-to-end flow tests share: running the `drover` binary from the repository root.

use std::process::{Command, Output, Stdio};

/// `drover ARGS` with its state in `state`, from the repository root, no stdin.
pub fn drover(state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env("DROVER_STATE_DIR", state)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
