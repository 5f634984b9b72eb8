//! The state directory, and a run's state rebuilt from its journal — what `status`,
//! `resume` and `report` read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use drover_api::Outputs;

use super::{JournalError, JournalRead, read};
use drover_model::Resume;
use drover_model::events::{Event, Outcome, Record, RunOutcome, RunStart};

/// `--state-dir`: where runs and locks live.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs().join(run_id)
    }

    pub fn journal(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }

    pub fn approvals(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("approvals")
    }

    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Run ids, oldest first: by the time of each journal's first record (milliseconds; ids
    /// carry whole seconds and a random suffix, so two runs started in one second would
    /// otherwise sort at random), then by id.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<(String, String)> = std::fs::read_dir(self.runs())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("journal.jsonl").is_file())
                    .map(|e| (first_record_at(&e.path().join("journal.jsonl")), e.file_name().to_string_lossy().into()))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Accept a unique prefix of a run id, or `latest` (the run started last).
    pub fn resolve(&self, wanted: &str) -> Result<String, String> {
        let ids = self.list();
        if wanted == "latest" {
            return ids.last().cloned().ok_or_else(|| format!("no runs in {}", self.root.display()));
        }
        if ids.iter().any(|i| i == wanted) {
            return Ok(wanted.to_string());
        }
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(wanted) || i.ends_with(wanted)).collect();
        match matches.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(format!("no run `{wanted}` in {}", self.root.display())),
            many => Err(format!(
                "`{wanted}` matches {} runs: {}",
                many.len(),
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// The RFC 3339 time of a journal's first record (empty when unreadable: sorts first).
fn first_record_at(journal: &Path) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let read = std::fs::File::open(journal).map(|f| std::io::BufReader::new(f).read_line(&mut line));
    match read {
        Ok(Ok(_)) => serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("at").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// What is known about one step from the journal.
#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    pub outcome: Option<Outcome>,
    pub outputs: Outputs,
    pub attempts: u32,
    pub in_flight: bool,
    pub approved_by: Option<String>,
    pub gate_waiting: Option<String>,
    pub checkpoint: Option<Value>,
    pub undone: bool,
}

/// A run's state as the journal tells it.
#[derive(Debug, Clone)]
pub struct RunState {
    pub start: RunStart,
    pub records: Vec<Record>,
    pub steps: BTreeMap<String, StepRecord>,
    pub finished: Option<RunOutcome>,
    pub torn_tail: bool,
    pub resumes: usize,
    /// The params the run goes on with: those it started with, and changes made at resumes.
    pub params: BTreeMap<String, Value>,
}

impl RunState {
    /// What a resumed run starts from: every finished step's outcome and outputs, approvals
    /// given, checkpoints, and which steps an earlier process began.
    pub fn resume(&self, forced: bool) -> Resume {
        Resume {
            forced,
            done: self
                .done()
                .map(|(id, s)| (id.to_string(), (s.outcome.expect("done has an outcome"), s.outputs.clone())))
                .collect(),
            approved: self.steps.iter().filter_map(|(id, s)| s.approved_by.clone().map(|b| (id.clone(), b))).collect(),
            checkpoints: self
                .steps
                .iter()
                .filter_map(|(id, s)| s.checkpoint.clone().map(|c| (id.clone(), c)))
                .collect(),
            started: self.steps.iter().filter(|(_, s)| s.attempts > 0).map(|(id, _)| id.clone()).collect(),
            changed_params: BTreeMap::new(),
        }
    }

    /// The run as its journal at `path` tells it; the read (without its records, which the
    /// state holds) says where a resumed run appends.
    pub fn load(path: &Path) -> Result<(RunState, JournalRead), JournalError> {
        let mut read = read(path)?;
        let records = std::mem::take(&mut read.records);
        let state = Self::from_records(path, records, read.torn_tail)?;
        Ok((state, read))
    }

    /// The run as these records of the journal at `path` tell it.
    pub fn from_records(path: &Path, records: Vec<Record>, torn_tail: bool) -> Result<RunState, JournalError> {
        let start = match records.first().map(|r| &r.event) {
            Some(Event::RunStarted(s)) => (**s).clone(),
            _ => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    record: 1,
                    reason: "the first record is not `run_started`".into(),
                });
            }
        };
        let mut steps: BTreeMap<String, StepRecord> =
            start.steps.iter().map(|s| (s.id.clone(), StepRecord::default())).collect();
        let mut finished = None;
        let mut resumes = 0;
        let mut params = start.params.clone();
        for (n, r) in records.iter().enumerate().skip(1) {
            let step = |id: &str, steps: &mut BTreeMap<String, StepRecord>| -> Result<(), JournalError> {
                if steps.contains_key(id) {
                    Ok(())
                } else {
                    Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        record: n + 1,
                        reason: format!("unknown step `{id}`"),
                    })
                }
            };
            if let Some(id) = r.event.step() {
                step(id, &mut steps)?;
            }
            match &r.event {
                Event::RunStarted(_) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        record: n + 1,
                        reason: "a second `run_started`".into(),
                    });
                }
                Event::RunResumed { params: changed, .. } => {
                    resumes += 1;
                    finished = None;
                    params.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Event::StepStarted { step, attempt, .. } => {
                    let s = steps.get_mut(step).expect("checked");
                    s.in_flight = true;
                    s.outcome = None;
                    s.attempts = s.attempts.max(*attempt);
                }
                Event::StepFinished { step, outcome, outputs, attempts, .. } => {
                    let s = steps.get_mut(step).expect("checked");
                    s.in_flight = false;
                    s.outcome = Some(*outcome);
                    s.outputs = outputs.clone();
                    s.attempts = s.attempts.max(*attempts);
                }
                Event::GateWaiting { step, message } => {
                    steps.get_mut(step).expect("checked").gate_waiting = Some(message.clone())
                }
                Event::GateApproved { step, by } => {
                    let s = steps.get_mut(step).expect("checked");
                    s.gate_waiting = None;
                    s.approved_by = Some(by.clone());
                }
                Event::GateDenied { step, .. } => steps.get_mut(step).expect("checked").gate_waiting = None,
                Event::StepCheckpoint { step, value } => {
                    steps.get_mut(step).expect("checked").checkpoint = Some(value.clone())
                }
                Event::UndoFinished { step, error: None } => steps.get_mut(step).expect("checked").undone = true,
                Event::RunFinished { outcome } => finished = Some(*outcome),
                _ => {}
            }
        }
        Ok(RunState { start, records, steps, finished, torn_tail, resumes, params })
    }

    /// Steps whose success is journaled: `resume` reuses their outputs and never runs them again.
    pub fn done(&self) -> impl Iterator<Item = (&str, &StepRecord)> {
        self.steps
            .iter()
            .filter(|(_, s)| {
                matches!(s.outcome, Some(Outcome::Succeeded | Outcome::Skipped | Outcome::FailedContinued))
            })
            .map(|(k, v)| (k.as_str(), v))
    }

    /// A short state word for `status`.
    pub fn state_label(&self, live: bool) -> &'static str {
        match self.finished {
            Some(o) => o.label(),
            None if live => "running",
            None => "interrupted (resume it)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write a journal whose first record is at `at`.
    fn run(state: &StateDir, id: &str, at: &str) {
        std::fs::create_dir_all(state.run_dir(id)).unwrap();
        std::fs::write(state.journal(id), format!("{{\"seq\":0,\"at\":\"{at}\",\"event\":{{}}}}\n")).unwrap();
    }

    #[test]
    fn latest_is_the_run_started_last_even_within_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        // A dry run, then the real run 400 ms later: the second's random suffix sorts first.
        run(&state, "20261202T192203Z-move-orders-f00d", "2026-12-02T19:22:03.100Z");
        run(&state, "20261202T192203Z-move-orders-0bad", "2026-12-02T19:22:03.500Z");
        run(&state, "20261202T192101Z-move-orders-ffff", "2026-12-02T19:21:01.900Z");
        assert_eq!(
            state.list(),
            [
                "20261202T192101Z-move-orders-ffff",
                "20261202T192203Z-move-orders-f00d",
                "20261202T192203Z-move-orders-0bad"
            ]
        );
        assert_eq!(state.resolve("latest").unwrap(), "20261202T192203Z-move-orders-0bad");
    }
}
