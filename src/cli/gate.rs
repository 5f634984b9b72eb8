//! Manual gates on the command line: answered at the terminal, by `--yes`, or by
//! `drover approve RUN STEP` from another terminal (a file in the run directory that the
//! running process watches — works the same whether drover runs on a TTY or under nohup).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use drover_api::ActionError;

use super::view::LiveView;
use crate::engine::{Approver, GateAnswer};

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    by: String,
    #[serde(default)]
    denied: bool,
    at: String,
}

/// Record an operator's answer for the running process to pick up.
pub fn write_answer(dir: &Path, step: &str, by: &str, denied: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let answer = Answer { by: by.to_string(), denied, at: crate::engine::events::now_rfc3339() };
    let tmp = dir.join(format!(".{step}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&answer).expect("serializes"))?;
    std::fs::rename(tmp, dir.join(format!("{step}.json")))
}

fn take_answer(dir: &Path, step: &str) -> Option<Answer> {
    let path = dir.join(format!("{step}.json"));
    let answer = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let _ = std::fs::remove_file(path);
    Some(answer)
}

pub struct GateKeeper {
    approvals: PathBuf,
    terminal: Option<Mutex<mpsc::UnboundedReceiver<String>>>,
    view: Option<LiveView>,
    quiet: bool,
}

impl GateKeeper {
    /// `terminal`: also ask on this process's terminal.
    pub fn new(approvals: PathBuf, terminal: bool, view: Option<LiveView>, quiet: bool) -> Self {
        let terminal = terminal.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.send(line.trim().to_string()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
            Mutex::new(rx)
        });
        GateKeeper { approvals, terminal, view, quiet }
    }

    fn say(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.view {
            Some(v) => v.println(text),
            None => eprintln!("{text}"),
        }
    }
}

#[async_trait]
impl Approver for GateKeeper {
    fn discard_stale(&self, step: &str) {
        // A stale answer from an earlier attempt must not approve this one. Not in `approve`:
        // by then the gate is journaled as waiting and `drover approve` may already have answered.
        let _ = take_answer(&self.approvals, step);
    }

    async fn approve(&self, run_id: &str, step: &str, message: &str) -> Result<GateAnswer, ActionError> {
        let mut prompt = self.terminal.as_ref().and_then(|m| m.try_lock().ok());
        self.say(&format!(
            "\n⏸  gate `{step}`: {message}\n   answer from any terminal: drover approve {run_id} {step}   (or --deny){}",
            if prompt.is_some() { "\n   or here: approve? [y/N] " } else { "" }
        ));
        if let Some(v) = &self.view {
            v.pause();
        }
        let result = loop {
            if let Some(a) = take_answer(&self.approvals, step) {
                break Ok(if a.denied { GateAnswer::Denied(a.by) } else { GateAnswer::Approved(a.by) });
            }
            let typed = match prompt.as_mut() {
                Some(rx) => tokio::time::timeout(Duration::from_millis(250), rx.recv()).await.ok().flatten(),
                None => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    None
                }
            };
            match typed.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some(answer @ ("y" | "yes" | "n" | "no")) => {
                    let by = format!(
                        "{}@{} (terminal)",
                        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
                        crate::journal::lock::hostname()
                    );
                    break Ok(if answer.starts_with('y') { GateAnswer::Approved(by) } else { GateAnswer::Denied(by) });
                }
                Some(_) => self.say("   please answer y or n"),
                None => {}
            }
        };
        if let Some(v) = &self.view {
            v.resume();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `drover approve` answered in the instant between the gate being journaled as waiting
    /// and the gate keeper starting to listen: the answer counts (it used to be discarded as
    /// stale, and the run waited out its timeout).
    #[tokio::test]
    async fn an_answer_given_as_soon_as_the_gate_waits_is_not_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = GateKeeper { approvals: dir.path().to_path_buf(), terminal: None, view: None, quiet: true };
        write_answer(dir.path(), "confirm", "early@host", true).unwrap();
        keeper.discard_stale("confirm");
        write_answer(dir.path(), "confirm", "the-manager", true).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), keeper.approve("run", "confirm", "go?")).await;
        assert!(matches!(answer, Ok(Ok(GateAnswer::Denied(by))) if by == "the-manager"));
    }
}
