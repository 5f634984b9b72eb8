//! Mock actions named by what they do (ok, fail, flaky, wait, hang, panic, undoable), and
//! running a runbook of them: what the engine and fan-out tests share.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use drover::engine::events::{Event, Outcome, RunMode};
use drover::engine::{
    Approver, AutoApprove, EventSink, ExecuteOptions, Preflight, Resume, RunSummary, StopSignal, execute,
};
use drover::registry::Registry;
use drover::runbook::{LoadOptions, Loaded, load_source};
use drover_api::{Action, ActionError, ActionInfo, Outputs, ParamError, Plan, StepContext};

/// Calls made to mock actions, in order: "run:STEP", "undo:STEP".
pub type Log = Arc<Mutex<Vec<String>>>;

pub struct Mock {
    pub info: ActionInfo,
    pub log: Log,
    pub behaviour: fn(&StepContext, &Value, u32) -> Behaviour,
    /// What its read-only `plan()` finds.
    pub plan: fn(&Value) -> Result<Plan, ActionError>,
    pub calls: Mutex<HashMap<String, u32>>,
}

pub fn plan_ok(_: &Value) -> Result<Plan, ActionError> {
    Ok(Plan::new("mock"))
}

pub enum Behaviour {
    Ok(Outputs),
    Err(ActionError),
    Sleep(Duration),
    Hang,
    Panic,
}

impl Mock {
    /// What a mock declares: no typed parameters, any outputs.
    pub fn info(name: &str, side_effects: bool, undo: bool) -> ActionInfo {
        ActionInfo {
            name: name.into(),
            summary: "test".into(),
            params: json!({}),
            outputs: vec![],
            side_effects,
            undo,
            open_outputs: true,
            sites: vec![],
            rpo_output: None,
            prepares: None,
        }
    }

    pub fn boxed(
        name: &str,
        log: &Log,
        undo: bool,
        behaviour: fn(&StepContext, &Value, u32) -> Behaviour,
    ) -> Arc<dyn Action> {
        Arc::new(Mock {
            info: Mock::info(name, true, undo),
            log: log.clone(),
            behaviour,
            plan: plan_ok,
            calls: Mutex::default(),
        })
    }

    /// A mock whose plan finds what `plan` says; it changes the world when run, with an undo.
    pub fn planned(name: &str, log: &Log, plan: fn(&Value) -> Result<Plan, ActionError>) -> Arc<dyn Action> {
        Arc::new(Mock {
            info: Mock::info(name, true, true),
            log: log.clone(),
            behaviour: echo,
            plan,
            calls: Mutex::default(),
        })
    }
}

#[async_trait]
impl Action for Mock {
    fn info(&self) -> &ActionInfo {
        &self.info
    }
    fn check_params(&self, _: &Value) -> Result<(), Vec<ParamError>> {
        Ok(())
    }
    async fn plan(&self, ctx: &StepContext, with: &Value) -> Result<Plan, ActionError> {
        self.log.lock().unwrap().push(format!("plan:{}", ctx.step_id));
        (self.plan)(with)
    }
    async fn run(&self, ctx: &StepContext, with: &Value) -> Result<Outputs, ActionError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let c = calls.entry(ctx.step_id.clone()).or_default();
            *c += 1;
            *c
        };
        self.log.lock().unwrap().push(format!("run:{}", ctx.step_id));
        match (self.behaviour)(ctx, with, n) {
            Behaviour::Ok(o) => Ok(o),
            Behaviour::Err(e) => Err(e),
            Behaviour::Sleep(d) => {
                tokio::time::sleep(d).await;
                self.log.lock().unwrap().push(format!("done:{}", ctx.step_id));
                Ok(Outputs::new())
            }
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Panic => panic!("mock action exploded"),
        }
    }
    async fn undo(&self, ctx: &StepContext, _: &Value, _: &Outputs) -> Result<(), ActionError> {
        self.log.lock().unwrap().push(format!("undo:{}", ctx.step_id));
        Ok(())
    }
}

pub fn echo(_: &StepContext, with: &Value, _: u32) -> Behaviour {
    let mut o = Outputs::new();
    o.insert("value".into(), with.get("value").cloned().unwrap_or(json!("ok")));
    Behaviour::Ok(o)
}

pub fn registry(log: &Log) -> Registry {
    Registry::empty()
        .with(Mock::boxed("ok", log, true, echo))
        .with(Mock::boxed("fail", log, false, |_, _, _| {
            Behaviour::Err(ActionError::permanent("it broke").with_hint("fix it"))
        }))
        .with(Mock::boxed("flaky", log, false, |_, w, n| {
            let failures = w.get("failures").and_then(Value::as_u64).unwrap_or(2) as u32;
            if n <= failures {
                Behaviour::Err(ActionError::retryable(format!("transient {n}")))
            } else {
                echo(&dummy_ctx(), w, n)
            }
        }))
        .with(Mock::boxed("wait", log, false, |_, w, _| {
            Behaviour::Sleep(Duration::from_millis(w.get("ms").and_then(Value::as_u64).unwrap_or(1000)))
        }))
        .with(Mock::boxed("hang", log, false, |_, _, _| Behaviour::Hang))
        .with(Mock::boxed("panic", log, false, |_, _, _| Behaviour::Panic))
        .with(Mock::planned("unreachable", log, |_| {
            Err(ActionError::retryable("cannot reach ontap-west: connection refused").with_hint("check the network"))
        }))
        .with(Mock::planned("wrong-state", log, |_| {
            Ok(Plan::new("break").check("relationship snapmirrored", false, "it is paused"))
        }))
        .with(Mock::planned("locked-out", log, |_| {
            Ok(Plan::new("break").access_check("credentials accepted", false, "HTTP 401"))
        }))
}

pub fn dummy_ctx() -> StepContext {
    struct NoHost;
    #[async_trait]
    impl drover_api::StepHost for NoHost {
        fn progress(&self, _: &str, _: drover_api::Progress) {}
        fn note(&self, _: &str, _: &str) {}
        async fn checkpoint(&self, _: &str, _: Value) {}
        async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
            Ok("x".into())
        }
    }
    StepContext::new(
        "r",
        "s",
        1,
        drover_api::Mode::Run,
        None,
        Arc::default(),
        Default::default(),
        Arc::new(NoHost),
        None,
    )
}

pub fn load(yaml: &str, reg: &Registry) -> Loaded {
    let text = format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\n{yaml}");
    match load_source(Path::new("test.yaml"), &text, reg, &LoadOptions::default()) {
        Ok(l) => l,
        Err(d) => panic!("{d}"),
    }
}

pub struct Ran {
    pub summary: RunSummary,
    pub events: Vec<Event>,
}

impl Ran {
    pub fn outcome(&self, step: &str) -> Outcome {
        self.summary.steps.iter().find(|(s, _)| s == step).map(|(_, o)| *o).unwrap()
    }
    pub fn error(&self, step: &str) -> ActionError {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::StepFinished { step: s, error: Some(err), .. } if s == step => Some(err.clone()),
                _ => None,
            })
            .unwrap()
    }
}

pub async fn run_with(loaded: &Loaded, stop: StopSignal, resume: Option<Resume>, approver: Arc<dyn Approver>) -> Ran {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = ExecuteOptions {
        run_id: "test-run".into(),
        mode: RunMode::Run,
        concurrency: loaded.runbook.concurrency.unwrap_or(8),
        approver,
        sink: EventSink::observer_only(Some(tx)),
        stop,
        resume,
        preflight: Preflight::Check { timeout: Duration::from_secs(60) },
    };
    let summary = execute(loaded, opts).await;
    let mut events = vec![];
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    Ran { summary, events }
}

pub async fn run(yaml: &str) -> (Ran, Log) {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(yaml, &reg);
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(AutoApprove("test".into()))).await;
    (ran, log)
}

/// Calls that do something: runs and undos (not the preflight's plans).
pub fn calls(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().filter(|c| !c.starts_with("plan:")).cloned().collect()
}

/// The steps whose `plan()` was called.
pub fn plans(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().filter_map(|c| c.strip_prefix("plan:").map(String::from)).collect()
}
