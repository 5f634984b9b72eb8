//! Engine behaviour with mock actions named by what they do (ok, fail, flaky, hang, panic,
//! undoable), under paused tokio time so timeouts and backoff are exact and instant.

mod mocks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use drover::engine::events::{Event, Outcome, RunMode, RunOutcome};
use drover::engine::{
    Approver, AutoApprove, EventSink, ExecuteOptions, GateAnswer, Preflight, Resume, StopSignal, execute,
};
use drover::registry::Registry;
use drover_api::{Action, ActionError, ActionInfo, Outputs, Plan};
use mocks::*;

#[tokio::test(start_paused = true)]
async fn outputs_flow_along_a_diamond_in_dependency_order() {
    let (ran, log) = run(r#"
steps:
  - { id: a, uses: ok, with: { value: 7 } }
  - { id: b, uses: ok, needs: [a], with: { value: "${{ steps.a.outputs.value }}" } }
  - { id: c, uses: ok, needs: [a], with: { value: "c-${{ steps.a.outputs.value }}" } }
  - { id: d, uses: ok, needs: [b, c], with: { value: "${{ steps.b.outputs.value }}/${{ steps.c.outputs.value }}" } }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.summary.outputs["b"]["value"], json!(7), "a whole-string expression keeps its type");
    assert_eq!(ran.summary.outputs["d"]["value"], json!("7/c-7"));
    let order = calls(&log);
    assert_eq!(order.first().unwrap(), "run:a");
    assert_eq!(order.last().unwrap(), "run:d");
}

#[tokio::test(start_paused = true)]
async fn mapping_keys_are_interpolated_too() {
    let (ran, _) = run(r#"
params:
  from: { type: string, default: shop }
steps:
  - { id: a, uses: ok, with: { value: { "${{ params.from }}": "${{ params.from }}-dr", "${{ params.from }}-x": { "k-${{ params.from }}": 1 } } } }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.summary.outputs["a"]["value"], json!({ "shop": "shop-dr", "shop-x": { "k-shop": 1 } }));
}

#[tokio::test(start_paused = true)]
async fn a_failure_halts_blocks_dependents_and_still_runs_cleanup() {
    let (ran, log) = run(r#"
concurrency: 1
steps:
  - { id: broken, uses: fail }
  - { id: after-broken, uses: ok, needs: [broken] }
  - { id: independent, uses: ok }
  - { id: cleanup, uses: ok, needs: [after-broken], always: true }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.outcome("broken"), Outcome::Failed);
    assert_eq!(ran.outcome("after-broken"), Outcome::NotRun);
    assert_eq!(ran.outcome("independent"), Outcome::NotRun, "halt starts nothing new");
    assert_eq!(ran.outcome("cleanup"), Outcome::Succeeded, "always steps run after a failure");
    assert!(!calls(&log).contains(&"run:independent".to_string()));
    let err = ran.error("broken");
    assert_eq!((err.message.as_str(), err.hint.as_deref()), ("it broke", Some("fix it")));
}

#[tokio::test(start_paused = true)]
async fn dependents_of_a_failure_are_blocked_while_in_flight_steps_finish() {
    let (ran, log) = run(r#"
steps:
  - { id: slow, uses: wait, with: { ms: 5000 } }
  - { id: broken, uses: fail }
  - { id: child, uses: ok, needs: [broken] }
"#)
    .await;
    assert_eq!(ran.outcome("slow"), Outcome::Succeeded, "in-flight steps finish under halt");
    assert!(calls(&log).contains(&"done:slow".to_string()));
    assert!(matches!(ran.outcome("child"), Outcome::NotRun | Outcome::Blocked));
}

#[tokio::test(start_paused = true)]
async fn flaky_step_is_retried_with_backoff_then_succeeds() {
    let start = tokio::time::Instant::now();
    let (ran, _) = run(r#"
steps:
  - id: flaky
    uses: flaky
    with: { failures: 2 }
    retry: { attempts: 3, backoff: 10s, max_backoff: 1m }
"#)
    .await;
    assert_eq!(ran.outcome("flaky"), Outcome::Succeeded);
    let retries: Vec<u64> = ran
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StepRetrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert!((5_000..=10_000).contains(&retries[0]) && (10_000..=20_000).contains(&retries[1]), "{retries:?}");
    let waited = start.elapsed().as_millis() as u64;
    let slept: u64 = retries.iter().sum();
    assert!(waited >= slept && waited <= slept + 2, "time passes only in backoff: {waited} vs {slept}");
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let (ran, log) = run("steps:\n  - { id: broken, uses: fail, retry: { attempts: 5, backoff: 1s } }\n").await;
    assert_eq!(ran.outcome("broken"), Outcome::Failed);
    assert_eq!(calls(&log), vec!["run:broken"]);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_time_budget_runs_out() {
    let (ran, log) = run(r#"
steps:
  - { id: flaky, uses: flaky, with: { failures: 100 }, timeout: 30s, retry: { attempts: 50, backoff: 10s, max_backoff: 10s } }
"#)
    .await;
    assert_eq!(ran.outcome("flaky"), Outcome::Failed);
    let n = calls(&log).len();
    assert!((3..=6).contains(&n), "attempts bounded by the 30s budget, got {n}");
    assert!(ran.error("flaky").message.contains("no time left"), "{}", ran.error("flaky").message);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_action_times_out() {
    let start = tokio::time::Instant::now();
    let (ran, _) = run("steps:\n  - { id: stuck, uses: hang, timeout: 5m }\n").await;
    assert_eq!(ran.outcome("stuck"), Outcome::Failed);
    assert_eq!(ran.error("stuck").message, "timed out after 5m");
    assert_eq!(start.elapsed(), Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_action_fails_its_step_not_the_engine() {
    let (ran, _) = run("steps:\n  - { id: boom, uses: panic }\n  - { id: next, uses: ok, needs: [boom] }\n").await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.outcome("boom"), Outcome::Failed);
    assert!(ran.error("boom").message.contains("panicked: mock action exploded"));
}

#[tokio::test(start_paused = true)]
async fn false_condition_skips_and_dependents_still_run() {
    let (ran, log) = run(r#"
params:
  primary_reachable: { type: bool, default: false }
steps:
  - { id: fence-primary, uses: ok, if: "params.primary_reachable" }
  - { id: restore, uses: ok, needs: [fence-primary] }
  - { id: report-skip, uses: ok, needs: [fence-primary], if: "steps.fence-primary.outcome == 'skipped'" }
"#)
    .await;
    assert_eq!(ran.outcome("fence-primary"), Outcome::Skipped);
    assert_eq!(ran.outcome("restore"), Outcome::Succeeded);
    assert_eq!(ran.outcome("report-skip"), Outcome::Succeeded);
    assert!(!calls(&log).contains(&"run:fence-primary".to_string()));
}

#[tokio::test(start_paused = true)]
async fn continue_on_error_lets_dependents_go_on() {
    let (ran, _) = run("steps:\n  - { id: optional, uses: fail, continue_on_error: true }\n  - { id: next, uses: ok, needs: [optional] }\n").await;
    assert_eq!(ran.outcome("optional"), Outcome::FailedContinued);
    assert_eq!(ran.outcome("next"), Outcome::Succeeded);
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn concurrency_and_lock_limits_are_respected() {
    let start = tokio::time::Instant::now();
    let mut yaml = String::from("concurrency: 3\nsteps:\n");
    for i in 0..9 {
        yaml.push_str(&format!("  - {{ id: s{i}, uses: wait, with: {{ ms: 1000 }} }}\n"));
    }
    let _ = run(&yaml).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3), "9 one-second steps, 3 at a time");

    let start = tokio::time::Instant::now();
    let mut yaml = String::from("locks: { ontap-west: 2 }\nsteps:\n");
    for i in 0..6 {
        yaml.push_str(&format!("  - {{ id: s{i}, uses: wait, lock: ontap-west, with: {{ ms: 1000 }} }}\n"));
    }
    yaml.push_str("  - { id: free, uses: wait, with: { ms: 1000 } }\n");
    let _ = run(&yaml).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3), "6 steps under a lock of 2; the free one runs alongside");
}

#[tokio::test(start_paused = true)]
async fn rollback_undoes_completed_steps_in_reverse_order() {
    let (ran, log) = run(r#"
on_failure: rollback
steps:
  - { id: first, uses: ok }
  - { id: second, uses: ok, needs: [first] }
  - { id: third, uses: fail, needs: [second] }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::RolledBack);
    let undo: Vec<String> = calls(&log).into_iter().filter(|c| c.starts_with("undo:")).collect();
    assert_eq!(undo, vec!["undo:second", "undo:first"]);
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_lets_running_steps_finish_and_starts_nothing_new() {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(
        "steps:\n  - { id: running, uses: wait, with: { ms: 10000 } }\n  - { id: later, uses: ok, needs: [running] }\n",
        &reg,
    );
    let (tx, stop) = StopSignal::new();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.request(1, "SIGINT");
        std::mem::forget(tx);
    });
    let ran = run_with(&loaded, stop, None, Arc::new(AutoApprove("t".into()))).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Cancelled);
    assert_eq!(ran.outcome("running"), Outcome::Succeeded);
    assert_eq!(ran.outcome("later"), Outcome::NotRun);
}

#[tokio::test(start_paused = true)]
async fn second_stop_aborts_running_steps_as_interrupted() {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load("steps:\n  - { id: stuck, uses: hang }\n", &reg);
    let (tx, stop) = StopSignal::new();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.request(1, "SIGINT");
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.request(2, "SIGINT");
        std::mem::forget(tx);
    });
    let ran = run_with(&loaded, stop, None, Arc::new(AutoApprove("t".into()))).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Cancelled);
    assert_eq!(ran.outcome("stuck"), Outcome::Interrupted);
}

#[tokio::test(start_paused = true)]
async fn resume_reuses_journaled_results_and_runs_the_rest() {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(
        "steps:\n  - { id: a, uses: ok, with: { value: 1 } }\n  - { id: b, uses: ok, needs: [a], with: { value: \"${{ steps.a.outputs.value }}\" } }\n",
        &reg,
    );
    let mut done = std::collections::BTreeMap::new();
    let mut out = Outputs::new();
    out.insert("value".into(), json!(41));
    done.insert("a".to_string(), (Outcome::Succeeded, out));
    let resume = Resume { done, ..Resume::default() };
    let ran = run_with(&loaded, StopSignal::never(), Some(resume), Arc::new(AutoApprove("t".into()))).await;
    assert_eq!(calls(&log), vec!["run:b"], "a succeeded before the crash and must not run again");
    assert_eq!(ran.summary.outputs["b"]["value"], json!(41), "b reads a's journaled output");
}

struct Deny;
#[async_trait]
impl Approver for Deny {
    async fn approve(&self, _: &str, _: &str, _: &str) -> Result<GateAnswer, ActionError> {
        Ok(GateAnswer::Denied("test".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn gates_are_asked_with_the_interpolated_message_and_a_refusal_halts() {
    let yaml = "params: { target: west }\nsteps:\n  - { id: flip, uses: ok, confirm: \"Switch traffic to ${{ params.target }}?\" }\n";
    let (plain, _) = run("steps:\n  - { id: flip, uses: ok, confirm: Switch traffic? }\n").await;
    assert!(
        plain.events.iter().any(|e| matches!(e, Event::GateWaiting { message, .. } if message == "Switch traffic?")),
        "a plain message gates too"
    );
    let (ran, _) = run(yaml).await;
    assert!(
        ran.events
            .iter()
            .any(|e| matches!(e, Event::GateWaiting { message, .. } if message == "Switch traffic to west?"))
    );
    assert!(ran.events.iter().any(|e| matches!(e, Event::GateApproved { by, .. } if by == "test")));

    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(yaml, &reg);
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(Deny)).await;
    assert_eq!(ran.outcome("flip"), Outcome::Failed);
    assert!(calls(&log).is_empty(), "a denied step never runs");
}

// --- Preflight: nothing changes until every step that will run has been checked -----------

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_changes_nothing_and_lists_every_failure() {
    let (ran, log) = run(r#"
steps:
  - { id: check-dr, uses: ok }
  - { id: fence, uses: ok, needs: [check-dr] }
  - { id: dr-storage, uses: unreachable }
  - { id: replication, uses: wrong-state }
"#)
    .await;
    assert!(calls(&log).is_empty(), "nothing may run after a failed preflight: {:?}", calls(&log));
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.summary.preflight_failed, vec!["dr-storage", "replication"]);
    let failed = ran.events.iter().find_map(|e| match e {
        Event::PreflightFinished { failed, .. } => Some(failed.clone()),
        _ => None,
    });
    assert_eq!(failed.unwrap(), vec!["dr-storage", "replication"]);
}

#[tokio::test(start_paused = true)]
async fn a_state_check_behind_a_change_is_checked_again_when_the_step_runs() {
    let (ran, log) = run(r#"
steps:
  - { id: quiesce, uses: ok }
  - { id: break, uses: wrong-state, needs: [quiesce] }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(calls(&log), vec!["run:quiesce", "run:break"]);
    let deferred = ran.events.iter().find_map(|e| match e {
        Event::PreflightChecked { step, deferred, .. } if step == "break" => Some(deferred.clone()),
        _ => None,
    });
    assert_eq!(deferred.unwrap(), vec!["relationship snapmirrored: it is paused"]);
}

#[tokio::test(start_paused = true)]
async fn an_access_failure_stops_the_preflight_wherever_the_step_is() {
    let (ran, log) = run(r#"
steps:
  - { id: fence, uses: ok }
  - { id: final-update, uses: locked-out, needs: [fence] }
  - { id: break, uses: unreachable, needs: [final-update] }
"#)
    .await;
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));
    assert_eq!(ran.summary.preflight_failed, vec!["final-update", "break"]);
}

#[tokio::test(start_paused = true)]
async fn the_preflight_checks_only_the_steps_that_will_run() {
    let (ran, log) = run(r#"
params: { mode: planned }
steps:
  - { id: planned-only, uses: ok, if: "params.mode == 'planned'" }
  - { id: unplanned-only, uses: unreachable, if: "params.mode == 'unplanned'" }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(plans(&log), vec!["planned-only"], "a step its `if:` skips is not probed (a site declared down)");
}

#[tokio::test(start_paused = true)]
async fn a_step_allowed_to_fail_does_not_stop_the_preflight() {
    let (ran, log) = run("steps:
  - { id: lag, uses: unreachable, continue_on_error: true }
  - { id: next, uses: ok }
")
    .await;
    assert!(ran.summary.preflight_failed.is_empty());
    assert!(calls(&log).contains(&"run:next".to_string()));
}

/// A plan that takes a second (paused time) and predicts `value`; `access: false` makes its
/// credentials check fail. Logs "plan:STEP" when it starts and "planned:STEP" when it ends.
struct SlowPlan(Log);

#[async_trait]
impl Action for SlowPlan {
    fn info(&self) -> &ActionInfo {
        static INFO: std::sync::LazyLock<ActionInfo> = std::sync::LazyLock::new(|| Mock::info("slow-plan", true, true));
        &INFO
    }
    fn check_params(&self, _: &serde_json::Value) -> Result<(), Vec<drover_api::ParamError>> {
        Ok(())
    }
    async fn plan(&self, ctx: &drover_api::StepContext, with: &serde_json::Value) -> Result<Plan, ActionError> {
        self.0.lock().unwrap().push(format!("plan:{}", ctx.step_id));
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.0.lock().unwrap().push(format!("planned:{}={}", ctx.step_id, with["value"]));
        let mut plan =
            Plan::new("slow").access_check("credentials accepted", with["access"] != json!(false), "HTTP 401");
        plan.outputs.insert("value".into(), with["value"].clone());
        Ok(plan)
    }
    async fn run(&self, ctx: &drover_api::StepContext, with: &serde_json::Value) -> Result<Outputs, ActionError> {
        self.0.lock().unwrap().push(format!("run:{}", ctx.step_id));
        let mut outputs = Outputs::new();
        outputs.insert("value".into(), with["value"].clone());
        Ok(outputs)
    }
}

async fn run_slow_plans(yaml: &str) -> (Ran, Log, Duration) {
    let log: Log = Arc::default();
    let reg = registry(&log).with(Arc::new(SlowPlan(log.clone())));
    let loaded = load(yaml, &reg);
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(AutoApprove("test".into()))).await;
    let took = ran.events.iter().find_map(|e| match e {
        Event::PreflightFinished { duration_ms, .. } => Some(Duration::from_millis(*duration_ms)),
        _ => None,
    });
    (ran, log, took.expect("a preflight"))
}

fn checked(ran: &Ran, step: &str) -> Outcome {
    ran.events
        .iter()
        .find_map(|e| match e {
            Event::PreflightChecked { step: s, outcome, .. } if s == step => Some(*outcome),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no preflight check of {step}"))
}

#[tokio::test(start_paused = true)]
async fn tiers_are_planned_at_once_when_no_step_reads_an_earlier_plan() {
    let (ran, log, took) = run_slow_plans(
        "steps:
  - { id: tier-1, uses: slow-plan, with: { value: 1 } }
  - { id: tier-2, uses: slow-plan, needs: [tier-1], with: { value: 2 } }
  - { id: tier-3, uses: slow-plan, needs: [tier-2], with: { value: 3 } }
",
    )
    .await;
    assert_eq!(took, Duration::from_secs(1), "three one-second plans, none waiting for another");
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(calls(&log)[3..], ["run:tier-1", "run:tier-2", "run:tier-3"], "the run keeps the graph's order");
}

#[tokio::test(start_paused = true)]
async fn a_step_reading_an_earlier_plans_outputs_is_planned_after_it() {
    let (ran, log, took) = run_slow_plans(
        r#"steps:
  - { id: find, uses: slow-plan, with: { value: 7 } }
  - { id: use, uses: slow-plan, needs: [find], with: { value: "${{ steps.find.outputs.value }}" } }
"#,
    )
    .await;
    assert_eq!(took, Duration::from_secs(2));
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let log = log.lock().unwrap().clone();
    assert_eq!(log[..4], ["plan:find", "planned:find=7", "plan:use", "planned:use=7"], "use saw find's prediction");
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_if_reads_an_earlier_step_is_not_probed_before_the_if_is_decided() {
    let (ran, log, _) = run_slow_plans(
        r#"steps:
  - { id: state, uses: slow-plan, with: { value: broken_off } }
  - { id: update, uses: unreachable, needs: [state], if: "steps.state.outputs.value != 'broken_off'" }
"#,
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(checked(&ran, "update"), Outcome::Skipped);
    assert_eq!(plans(&log), vec!["state"], "a site the `if:` rules out is not probed");
}

/// A fleet's volume steps: `update` is decided by `state`'s plan, then waits in the graph behind
/// a slow `check`. Once `state` has settled, `update` is planned alongside `check`, not after it.
#[tokio::test(start_paused = true)]
async fn a_step_whose_if_reads_an_earlier_step_is_planned_once_that_step_settles() {
    let (ran, log, took) = run_slow_plans(
        r#"steps:
  - { id: state, uses: slow-plan, with: { value: snapmirrored } }
  - { id: check, uses: slow-plan, needs: [state], if: "steps.state.outputs.value != 'broken_off'", with: { value: 1 } }
  - { id: update, uses: slow-plan, needs: [check], if: "steps.state.outputs.value != 'broken_off'", with: { value: 2 } }
"#,
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(took, Duration::from_secs(2), "state, then check and update side by side");
    assert_eq!(checked(&ran, "update"), Outcome::Planned);
    assert_eq!(calls(&log)[3..], ["run:state", "run:check", "run:update"], "the run keeps the graph's order");
}

#[tokio::test(start_paused = true)]
async fn a_skipped_preflight_is_journaled_and_the_run_goes_on() {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(
        "steps:
  - { id: break, uses: wrong-state }
",
        &reg,
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = ExecuteOptions {
        run_id: "skip".into(),
        mode: RunMode::Run,
        concurrency: 4,
        approver: Arc::new(AutoApprove("t".into())),
        sink: EventSink::observer_only(Some(tx)),
        stop: StopSignal::never(),
        resume: None,
        preflight: Preflight::Skip { by: "ops@host".into() },
    };
    let summary = execute(&loaded, opts).await;
    assert_eq!(summary.outcome, RunOutcome::Succeeded);
    assert!(plans(&log).is_empty());
    let mut skipped = false;
    while let Ok(e) = rx.try_recv() {
        skipped |= matches!(e, Event::PreflightSkipped { by } if by == "ops@host");
    }
    assert!(skipped, "the skip is recorded with who asked");
}

// --- Rollback up to the point of no return ----------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_point_of_no_return_is_rolled_back() {
    let (ran, log) = run(r#"
on_failure: rollback
steps:
  - { id: fence, uses: ok }
  - { id: final-update, uses: fail, needs: [fence] }
  - { id: break, uses: ok, needs: [final-update], point_of_no_return: true }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::RolledBack);
    assert_eq!(calls(&log), vec!["run:fence", "run:final-update", "undo:fence"]);
}

#[tokio::test(start_paused = true)]
async fn after_the_point_of_no_return_the_run_halts_instead_of_rolling_back() {
    let (ran, log) = run(r#"
on_failure: rollback
steps:
  - { id: fence, uses: ok }
  - { id: break, uses: ok, needs: [fence], point_of_no_return: true }
  - { id: restore, uses: fail, needs: [break] }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert!(calls(&log).iter().all(|c| !c.starts_with("undo:")), "{:?}", calls(&log));
    assert!(ran.events.iter().any(|e| matches!(e, Event::RollbackRefused { past } if past == "break")));
}

#[tokio::test(start_paused = true)]
async fn a_step_that_failed_part_way_is_undone_with_the_rest() {
    let log: Log = Arc::default();
    let reg = registry(&log).with(Mock::boxed("half", &log, true, |_, _, _| {
        Behaviour::Err(ActionError::permanent("scaled 2 of 5 workloads, then lost the API server"))
    }));
    let loaded = load(
        "on_failure: rollback
steps:
  - { id: a, uses: ok }
  - { id: fence, uses: half, needs: [a] }
",
        &reg,
    );
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(AutoApprove("t".into()))).await;
    assert_eq!(ran.summary.outcome, RunOutcome::RolledBack);
    assert_eq!(calls(&log), vec!["run:a", "run:fence", "undo:fence", "undo:a"]);
}

#[tokio::test(start_paused = true)]
async fn a_denied_gate_before_any_change_leaves_everything_as_it_was() {
    let log: Log = Arc::default();
    let reg = registry(&log);
    let loaded = load(
        "on_failure: rollback
steps:
  - { id: go, uses: ok, confirm: Fail over? }
  - { id: fence, uses: ok, needs: [go] }
",
        &reg,
    );
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(Deny)).await;
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));
    assert!(ran.events.iter().any(|e| matches!(e, Event::GateDenied { step, by } if step == "go" && by == "test")));
    assert_ne!(ran.summary.outcome, RunOutcome::Succeeded);
}

/// The report's RPO is the output each action declares as its RPO, whatever its name: core
/// names no plugin's output. A step that outputs `rpo_seconds` without declaring it is not one.
#[tokio::test(start_paused = true)]
async fn the_rpo_in_the_report_is_the_output_the_action_declares() {
    let log: Log = Arc::default();
    let declares: Arc<dyn Action> = Arc::new(Mock {
        info: ActionInfo { rpo_output: Some("behind_seconds".into()), ..Mock::info("lagging", false, false) },
        log: log.clone(),
        behaviour: echo,
        plan: |_| {
            let mut plan = Plan::new("lagging");
            plan.outputs.insert("behind_seconds".into(), json!(42.5));
            Ok(plan)
        },
        calls: Mutex::default(),
    });
    let silent = Mock::planned("silent", &log, |_| {
        let mut plan = Plan::new("silent");
        plan.outputs.insert("rpo_seconds".into(), json!(99));
        Ok(plan)
    });
    let reg = Registry::empty().with(declares).with(silent);
    let loaded = load("steps:\n  - { id: check, uses: lagging }\n  - { id: other, uses: silent }\n", &reg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let journal = drover::journal::Journal::create(&path).unwrap();
    let opts = ExecuteOptions {
        run_id: "rpo".into(),
        mode: RunMode::DryRun,
        concurrency: 2,
        approver: Arc::new(AutoApprove("t".into())),
        sink: EventSink::new(Some(journal.clone()), None),
        stop: StopSignal::never(),
        resume: None,
        preflight: Preflight::Check { timeout: Duration::from_secs(60) },
    };
    assert_eq!(execute(&loaded, opts).await.outcome, RunOutcome::Succeeded);
    journal.close().unwrap();
    let (state, _) = drover::journal::state::RunState::load(&path).unwrap();
    let report = drover::report::Report::from_state(&state).with_forecast(&state, &[]);
    assert_eq!(report.forecast.unwrap().rpo_seconds, vec![("check".to_string(), 42.5)]);
}

/// A restore-like action (mock): its preparation reads for two seconds (paused time) and
/// fails while `with.prepare_fails`; its run says whether it used what was read ahead, and
/// fails its first attempt retryably while `with.flaky`.
struct ReadAhead(Log);

#[async_trait]
impl Action for ReadAhead {
    fn info(&self) -> &ActionInfo {
        static INFO: std::sync::LazyLock<ActionInfo> = std::sync::LazyLock::new(|| ActionInfo {
            prepares: Some("reads its source".into()),
            ..Mock::info("read-ahead", true, false)
        });
        &INFO
    }
    fn check_params(&self, _: &serde_json::Value) -> Result<(), Vec<drover_api::ParamError>> {
        Ok(())
    }
    async fn plan(&self, _: &drover_api::StepContext, _: &serde_json::Value) -> Result<Plan, ActionError> {
        Ok(Plan::new("read, then write"))
    }
    async fn prepare(
        &self,
        ctx: &drover_api::StepContext,
        with: &serde_json::Value,
    ) -> Result<Option<drover_api::Prepared>, ActionError> {
        self.0.lock().unwrap().push(format!("prepare:{}", ctx.step_id));
        tokio::time::sleep(Duration::from_secs(2)).await;
        if with["prepare_fails"] == json!(true) {
            return Err(ActionError::retryable("the source did not answer"));
        }
        self.0.lock().unwrap().push(format!("prepared:{}", ctx.step_id));
        Ok(Some(Box::new(format!("read ahead for {}", with["value"]))))
    }
    async fn run(&self, ctx: &drover_api::StepContext, with: &serde_json::Value) -> Result<Outputs, ActionError> {
        let read = match ctx.take_prepared::<String>() {
            Some(read) => read,
            None => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                format!("read at its turn for {}", with["value"])
            }
        };
        self.0.lock().unwrap().push(format!("run:{}:{read}", ctx.step_id));
        if with["flaky"] == json!(true) && ctx.attempt == 1 {
            return Err(ActionError::retryable("the write was refused, transiently"));
        }
        let mut outputs = Outputs::new();
        outputs.insert("read".into(), json!(read));
        Ok(outputs)
    }
}

async fn run_read_ahead(yaml: &str) -> (Ran, Log) {
    let log: Log = Arc::default();
    let reg = registry(&log).with(Arc::new(ReadAhead(log.clone())));
    let loaded = load(yaml, &reg);
    let ran = run_with(&loaded, StopSignal::never(), None, Arc::new(AutoApprove("test".into()))).await;
    (ran, log)
}

fn read_of(ran: &Ran, step: &str) -> String {
    ran.summary.outputs[step]["read"].as_str().unwrap().to_string()
}

#[tokio::test(start_paused = true)]
async fn a_restore_reads_while_the_volumes_transfer_once_the_fence_is_done() {
    let started = tokio::time::Instant::now();
    let (ran, log) = run_read_ahead(
        "steps:
  - { id: fence, uses: ok }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - { id: restore, uses: read-ahead, needs: [transfer], prepare_after: [fence], with: { value: shop } }
",
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(read_of(&ran, "restore"), "read ahead for \"shop\"");
    let calls = calls(&log);
    let at = |c: &str| calls.iter().position(|x| x.starts_with(c)).unwrap_or_else(|| panic!("no {c} in {calls:?}"));
    assert!(at("prepare:restore") < at("done:transfer"), "the read began during the transfer: {calls:?}");
    assert!(at("prepared:restore") < at("done:transfer"), "and ended during it: {calls:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(3), "the restore's read is off the critical path");
}

#[tokio::test(start_paused = true)]
async fn without_prepare_after_the_restore_reads_at_its_turn() {
    let started = tokio::time::Instant::now();
    let (ran, log) = run_read_ahead(
        "steps:
  - { id: fence, uses: ok }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - { id: restore, uses: read-ahead, needs: [transfer], with: { value: shop } }
",
    )
    .await;
    assert_eq!(read_of(&ran, "restore"), "read at its turn for \"shop\"");
    assert!(!calls(&log).iter().any(|c| c.starts_with("prepare:")));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_failed_preparation_is_noted_and_the_run_reads_at_its_turn() {
    let (ran, _) = run_read_ahead(
        "steps:
  - { id: fence, uses: ok }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - { id: restore, uses: read-ahead, needs: [transfer], prepare_after: [fence], with: { value: shop, prepare_fails: true } }
",
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(read_of(&ran, "restore"), "read at its turn for \"shop\"");
    let note = ran.events.iter().find_map(|e| match e {
        Event::StepNote { step, message } if step == "restore" => Some(message.clone()),
        _ => None,
    });
    assert!(note.is_some_and(|n| n.contains("the source did not answer")), "the operator is told why it read late");
}

#[tokio::test(start_paused = true)]
async fn a_retry_reads_again_rather_than_reuse_what_was_read_ahead() {
    let (ran, log) = run_read_ahead(
        "steps:
  - { id: fence, uses: ok }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - id: restore
    uses: read-ahead
    needs: [transfer]
    prepare_after: [fence]
    retry: { attempts: 2, backoff: 1s }
    with: { value: shop, flaky: true }
",
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let runs: Vec<String> = calls(&log).into_iter().filter(|c| c.starts_with("run:restore")).collect();
    assert_eq!(runs, ["run:restore:read ahead for \"shop\"", "run:restore:read at its turn for \"shop\""]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fence_prepares_nothing() {
    let (ran, log) = run_read_ahead(
        "on_failure: halt
steps:
  - { id: fence, uses: fail }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - { id: restore, uses: read-ahead, needs: [transfer], prepare_after: [fence], with: { value: shop } }
",
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.outcome("restore"), Outcome::NotRun, "the run halted at the failed fence");
    assert!(!calls(&log).iter().any(|c| c.starts_with("prepare:")), "{:?}", calls(&log));
}

#[tokio::test(start_paused = true)]
async fn a_step_its_if_rules_out_is_not_prepared() {
    let (ran, log) = run_read_ahead(
        "steps:
  - { id: fence, uses: ok }
  - { id: transfer, uses: wait, needs: [fence], with: { ms: 3000 } }
  - { id: restore, uses: read-ahead, needs: [transfer], prepare_after: [fence], if: false, with: { value: shop } }
",
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.outcome("restore"), Outcome::Skipped);
    assert!(!calls(&log).iter().any(|c| c.starts_with("prepare:")), "{:?}", calls(&log));
}

#[tokio::test(start_paused = true)]
async fn fanned_restores_read_ahead_after_their_own_apps_fence() {
    let started = tokio::time::Instant::now();
    let (ran, log) = run_read_ahead(
        r#"params:
  apps: { type: list, default: [{ name: a, transfer: 1000 }, { name: b, transfer: 4000 }] }
steps:
  - { id: fence, for_each: "${{ params.apps }}", uses: ok }
  - { id: transfer, for_each: "${{ params.apps }}", uses: wait, needs: [fence], with: { ms: "${{ item.transfer }}" } }
  - id: restore
    for_each: ${{ params.apps }}
    uses: read-ahead
    needs: [transfer]
    prepare_after: [fence]
    with: { value: "${{ item.name }}" }
"#,
    )
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(read_of(&ran, "restore[a]"), "read ahead for \"a\"");
    assert_eq!(read_of(&ran, "restore[b]"), "read ahead for \"b\"");
    let calls = calls(&log);
    let at = |c: &str| calls.iter().position(|x| x.starts_with(c)).unwrap();
    assert!(at("prepare:restore[b]") < at("done:transfer[a]"), "b reads once its own fence is done: {calls:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(4), "a waits for its read (2 s), b for its transfer (4 s)");
}
