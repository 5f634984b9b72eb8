//! What the end-to-end tests share: running the `drover` binary from the repository root.
// Each test file includes this module and uses a part of it.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// `drover` with its state in `state`, from the repository root, no stdin, no RUST_LOG.
pub fn command(state: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.env("DROVER_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    c
}

/// Fail the test at once, saying how to get them, when `programs` are not on PATH: a test of a
/// real server must not pass without it.
pub fn require_on_path(programs: &[&str], how: &str) {
    for program in programs {
        assert!(drover_api::procs::on_path(program).is_some(), "{program} is needed for this test ({how})");
    }
}

/// `drover ARGS`, run to its end.
pub fn drover(state: &std::path::Path, args: &[&str]) -> Output {
    command(state).args(args).output().unwrap()
}
