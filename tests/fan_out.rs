//! Fan-out: a step with `for_each` runs once per item, each instance a step of its own, and
//! two steps fanned over the same list pair their instances by item. Engine runs use mock
//! actions under paused tokio time (no servers); load errors use the built-in actions and a
//! params file on disk, as an operator's inventory would be.

mod mocks;

use std::path::Path;

use serde_json::json;

use drover::engine::events::{Event, Outcome, RunOutcome};
use drover::registry::Registry;
use drover::runbook::{LoadOptions, load_source};
use mocks::*;

const APPS: &str = r#"
params:
  apps:
    type: list
    default:
      - { name: orders, ms: 100 }
      - { name: payments, ms: 5000 }
      - { name: shop, ms: 200 }
"#;

/// Where `what` appears in the call log.
fn at(log: &[String], what: &str) -> usize {
    log.iter().position(|c| c == what).unwrap_or_else(|| panic!("`{what}` not in {log:?}"))
}

#[tokio::test(start_paused = true)]
async fn each_app_restores_as_soon_as_its_own_break_is_done() {
    let (ran, log) = run(&format!(
        r#"{APPS}
steps:
  - id: break
    for_each: ${{{{ params.apps }}}}
    uses: wait
    with: {{ ms: "${{{{ item.ms }}}}" }}
  - id: restore
    for_each: ${{{{ params.apps }}}}
    needs: [break]
    uses: ok
    with: {{ value: "${{{{ item.name }}}}" }}
  - id: announce
    needs: [restore]
    uses: ok
"#
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let ids: Vec<&str> = ran.summary.steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        ids,
        [
            "break[orders]",
            "break[payments]",
            "break[shop]",
            "restore[orders]",
            "restore[payments]",
            "restore[shop]",
            "announce"
        ]
    );
    let log = calls(&log);
    // orders does not wait for payments' slow break; the step that runs once waits for all.
    assert!(at(&log, "run:restore[orders]") < at(&log, "done:break[payments]"), "{log:?}");
    assert!(at(&log, "run:restore[payments]") > at(&log, "done:break[payments]"), "{log:?}");
    assert!(at(&log, "run:announce") > at(&log, "run:restore[payments]"), "{log:?}");
    assert_eq!(ran.summary.outputs["restore[shop]"]["value"], json!("shop"));
}

#[tokio::test(start_paused = true)]
async fn an_instance_reads_the_outputs_of_its_own_items_earlier_step() {
    let (ran, _) = run(&format!(
        r#"{APPS}
steps:
  - id: discover
    for_each: ${{{{ params.apps }}}}
    uses: ok
    with: {{ value: "vol_${{{{ item.name }}}}" }}
  - id: mount
    for_each: ${{{{ params.apps }}}}
    needs: [discover]
    uses: ok
    with: {{ value: "${{{{ steps.discover.outputs.value }}}} for ${{{{ item.name }}}}" }}
"#
    ))
    .await;
    assert_eq!(ran.summary.outputs["mount[orders]"]["value"], json!("vol_orders for orders"));
    assert_eq!(ran.summary.outputs["mount[payments]"]["value"], json!("vol_payments for payments"));
}

#[tokio::test(start_paused = true)]
async fn a_lock_limits_how_many_instances_run_at_once() {
    let (ran, log) = run(r#"
locks: { ontap-west: 2 }
steps:
  - id: quiesce
    for_each: [vol1, vol2, vol3, vol4, vol5]
    lock: ontap-west
    uses: wait
    with: { ms: 1000 }
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let mut running = 0usize;
    let mut most = 0;
    for c in calls(&log) {
        if c.starts_with("run:") {
            running += 1;
        } else if c.starts_with("done:") {
            running -= 1;
        }
        most = most.max(running);
    }
    assert_eq!(most, 2, "no more than the lock's limit at once");
}

#[tokio::test(start_paused = true)]
async fn a_failure_rolls_back_every_instance_that_ran() {
    let (ran, log) = run(r#"
on_failure: rollback
steps:
  - id: fence
    for_each: [orders, shop]
    uses: ok
  - id: verify
    needs: [fence]
    uses: fail
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::RolledBack);
    let log = calls(&log);
    assert!(log.contains(&"undo:fence[orders]".to_string()) && log.contains(&"undo:fence[shop]".to_string()));
}

#[tokio::test(start_paused = true)]
async fn instances_are_journaled_with_the_step_and_item_they_come_from() {
    let (ran, _) = run(r#"
steps:
  - id: fence
    for_each: [orders]
    uses: ok
"#)
    .await;
    let Some(Event::RunStarted(start)) = ran.events.first() else { panic!("no start") };
    let fanned = start.steps[0].fanned.as_ref().expect("instance");
    assert_eq!((fanned.step.as_str(), fanned.key.as_str()), ("fence", "orders"));
    assert_eq!(ran.outcome("fence[orders]"), Outcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn an_empty_list_runs_nothing_and_its_dependents_go_on() {
    let (ran, _) = run(r#"
params:
  apps: { type: list, default: [] }
steps:
  - id: fence
    for_each: ${{ params.apps }}
    uses: ok
  - id: done
    needs: [fence]
    uses: ok
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.summary.steps.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_list_of_items_belonging_to_another_list_runs_nothing() {
    // Found by the hostile-runbook test: with no items, finding their owner list indexed an
    // empty list (a panic at load).
    let (ran, _) = run(r#"
params:
  volumes: { type: list, default: [] }
steps:
  - id: break
    for_each: { items: "${{ params.volumes }}", key: path, belongs_to: app }
    uses: ok
  - id: done
    needs: [break]
    uses: ok
"#)
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.summary.steps.len(), 1);
}

// --- Bad input: errors at load, at the item's own file and line. -------------------------

const RUNBOOK: &str = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
params:
  apps: { type: list, required: true }
steps:
  - id: settle
    for_each: ${{ params.apps }}
    uses: sleep
    with: { duration: "${{ item.wait }}" }
"#;

/// Load `RUNBOOK` (or `runbook`) with `inventory` as its params file; the errors, or "ok".
fn load_with_inventory(runbook: &str, inventory: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inventory.yaml");
    std::fs::write(&file, inventory).unwrap();
    let opts = LoadOptions { params_file: Some(file), require_params: true, ..LoadOptions::default() };
    match load_source(Path::new("fleet.yaml"), runbook, &Registry::builtin(), &opts) {
        Ok(_) => "ok".into(),
        Err(d) => d.to_string().replace(&dir.path().display().to_string(), "DIR"),
    }
}

#[test]
fn an_inventory_that_fits_loads() {
    let out = load_with_inventory(RUNBOOK, "apps:\n  - { name: orders, wait: 1s }\n  - { name: shop, wait: 2s }\n");
    assert_eq!(out, "ok");
}

#[test]
fn an_item_missing_a_field_the_step_reads_is_named_at_its_line() {
    let out = load_with_inventory(RUNBOOK, "apps:\n  - { name: orders, wait: 1s }\n  - { name: shop }\n");
    assert!(out.contains("DIR/inventory.yaml:3:5: error: step `settle`: item `shop` has no `wait`"), "{out}");
    assert!(out.contains("fleet.yaml:7"), "the hint points at the step: {out}");
}

#[test]
fn a_field_only_a_switched_off_step_reads_may_be_missing() {
    let text = RUNBOOK
        .replace("steps:", "  settle_all: { type: bool, default: true }\nsteps:")
        .replace("    uses: sleep", "    if: params.settle_all\n    uses: sleep");
    let out = load_with_inventory(&text, "apps:\n  - { name: shop }\n");
    assert!(out.contains("item `shop` has no `wait`, which the step reads"), "{out}");
    let out = load_with_inventory(&text, "settle_all: false\napps:\n  - { name: shop }\n");
    assert_eq!(out, "ok");
}

#[test]
fn two_items_with_the_same_key_are_refused() {
    let out = load_with_inventory(RUNBOOK, "apps:\n  - { name: shop, wait: 1s }\n  - { name: shop, wait: 2s }\n");
    assert!(out.contains("inventory.yaml:3:5: error: step `settle`: two items have the key `shop`"), "{out}");
    assert!(out.contains("the first at DIR/inventory.yaml:2"), "{out}");
}

#[test]
fn an_item_without_a_name_is_refused() {
    let out = load_with_inventory(RUNBOOK, "apps:\n  - { app: shop, wait: 1s }\n");
    assert!(out.contains("inventory.yaml:2:5: error: step `settle`: item 1 of for_each has no `name`"), "{out}");
    let keyed =
        RUNBOOK.replace("for_each: ${{ params.apps }}", "for_each: { items: \"${{ params.apps }}\", key: app }");
    assert_eq!(load_with_inventory(&keyed, "apps:\n  - { app: shop, wait: 1s }\n"), "ok");
}

#[test]
fn a_field_of_the_wrong_type_is_named_with_what_the_action_takes() {
    let out = load_with_inventory(RUNBOOK, "apps:\n  - { name: shop, wait: [1s] }\n");
    assert!(
        out.contains("inventory.yaml:2:5: error: step `settle`: item `shop`: `wait` is a list, but with.duration of `sleep` takes a string"),
        "{out}"
    );
}

#[test]
fn for_each_over_something_that_is_not_a_list_is_refused() {
    let text = RUNBOOK.replace("apps: { type: list, required: true }", "apps: { type: string, default: shop }");
    let out = load_with_inventory(&text, "{}\n");
    assert!(
        out.contains("fleet.yaml:8:15: error: step `settle`: for_each `${{ params.apps }}` is a string, not a list"),
        "{out}"
    );
    let text = RUNBOOK.replace("${{ params.apps }}\n", "shop\n");
    let out = load_with_inventory(&text, "apps: []\n");
    assert!(
        out.contains("fleet.yaml:8:15: error: step `settle`: for_each must be a list, found the string `shop`"),
        "{out}"
    );
}

#[test]
fn item_is_read_only_in_a_fanned_step_and_fanned_outputs_only_by_item() {
    let text = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
steps:
  - id: fence
    for_each: [orders, shop]
    uses: log
    with: { message: "fencing ${{ item }}" }
  - id: tell
    needs: [fence]
    uses: log
    with: { message: "${{ item }} ${{ steps.fence.outcome }}" }
"#;
    let out = load_with_inventory(text, "{}\n");
    assert!(out.contains("fleet.yaml:12:22: error: step `tell`: reads `item`, but runs once"), "{out}");
    let out = load_with_inventory(&text.replace("${{ item }} ", ""), "{}\n");
    assert!(
        out.contains("fleet.yaml:12:22: error: step `tell` reads `steps.fence.outcome`, but step `fence` runs once for each item of"),
        "{out}"
    );
}

#[test]
fn a_list_from_an_output_of_a_step_that_does_not_come_first_is_refused() {
    let text = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
steps:
  - id: list
    uses: log
    with: { message: hi }
  - id: fence
    for_each: ${{ steps.list.outputs.message }}
    uses: log
    with: { message: "${{ item }}" }
"#;
    let out = load_with_inventory(text, "{}\n");
    assert!(
        out.contains("fleet.yaml:9:15: error: step `fence`: reads `steps.list.outputs.message`, but does not depend on step `list`"),
        "{out}"
    );
}

// --- Tiers and failures that stop only their own item. -----------------------------------

const FLEET: &str = r#"
params:
  apps:
    type: list
    default:
      - { name: db, tier: 1, ms: 3000, failures: 0 }
      - { name: api, tier: 1, ms: 100, failures: 5 }
      - { name: web, tier: 2, ms: 100, failures: 0 }
"#;

#[tokio::test(start_paused = true)]
async fn tier_two_starts_once_every_app_of_tier_one_has_finished() {
    let (ran, log) = run(&format!(
        r#"{FLEET}
steps:
  - id: restore
    for_each: {{ items: "${{{{ params.apps }}}}", tier: tier }}
    uses: wait
    with: {{ ms: "${{{{ item.ms }}}}" }}
  - id: verify
    for_each: ${{{{ params.apps }}}}
    needs: [restore]
    uses: ok
"#
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let log = calls(&log);
    assert!(at(&log, "run:restore[web]") > at(&log, "run:verify[db]"), "{log:?}");
    assert!(at(&log, "run:restore[api]") < at(&log, "done:restore[db]"), "one tier runs in parallel: {log:?}");
    assert_eq!(ran.outcome("tier[1]"), Outcome::Succeeded);
    assert!(ran.summary.steps.iter().all(|(s, _)| s != "tier[2]"), "the last tier gates nothing");
}

/// One shared break (SVM-DR replicates every app at once): every app is fenced before it,
/// and the apps recover tier by tier after it.
const SHARED_BREAK: &str = r#"
steps:
  - id: fence
    for_each: { items: "${{ params.apps }}", before_tiers: true }
    uses: ok
    with: { value: "${{ item.name }}" }
  - id: break
    needs: [fence]
    uses: ok
  - id: restore
    for_each: { items: "${{ params.apps }}", tier: tier }
    needs: [break]
    uses: wait
    with: { ms: "${{ item.ms }}" }
"#;

#[tokio::test(start_paused = true)]
async fn steps_before_the_tiers_run_for_every_app_before_a_shared_break() {
    let (ran, log) = run(&format!("{FLEET}{SHARED_BREAK}")).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let log = calls(&log);
    assert!(at(&log, "run:fence[web]") < at(&log, "run:break"), "tier 2 is fenced before the break: {log:?}");
    assert!(at(&log, "run:restore[web]") > at(&log, "done:restore[db]"), "tier 2 recovers after tier 1: {log:?}");
    assert_eq!(ran.outcome("tier[1]"), Outcome::Succeeded);
}

#[test]
fn without_before_tiers_a_shared_break_between_tiers_is_a_cycle_named_with_the_way_out() {
    let text = format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\n{FLEET}{SHARED_BREAK}")
        .replace("before_tiers: true", "tier: tier");
    let err = load_source(Path::new("fleet.yaml"), &text, &registry(&Log::default()), &LoadOptions::default())
        .map(|_| ())
        .expect_err("a cycle");
    let err = err.to_string();
    assert!(err.contains("fleet.yaml:14:7: error: the items' steps wait for each other in a circle: fence[web] -> break -> restore[db] -> tier[1] -> fence[web]"), "{err}");
    assert!(err.contains("before_tiers: true"), "{err}");
}

/// A clean-up after the whole fleet (a rehearsal's shared namespaces gone): each app's own
/// part of it runs after every tier, and no tier waits for it.
const SHARED_CLEANUP: &str = r#"
steps:
  - id: restore
    for_each: { items: "${{ params.apps }}", tier: tier }
    uses: wait
    with: { ms: "${{ item.ms }}" }
  - id: remove-all
    needs: [restore]
    always: true
    uses: ok
  - id: remove-own
    for_each: { items: "${{ params.apps }}", after_tiers: true }
    needs: [remove-all]
    always: true
    uses: ok
    with: { value: "${{ item.name }}" }
"#;

#[tokio::test(start_paused = true)]
async fn steps_after_the_tiers_run_for_every_app_after_a_shared_cleanup() {
    let (ran, log) = run(&format!("{FLEET}{SHARED_CLEANUP}")).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    let log = calls(&log);
    assert!(at(&log, "run:restore[web]") > at(&log, "done:restore[db]"), "tier 2 after tier 1: {log:?}");
    assert!(at(&log, "run:remove-own[db]") > at(&log, "run:remove-all"), "{log:?}");
    assert!(at(&log, "run:remove-all") > at(&log, "done:restore[web]"), "{log:?}");
}

#[test]
fn without_after_tiers_a_per_app_cleanup_after_a_shared_one_is_a_cycle() {
    let text = format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\n{FLEET}{SHARED_CLEANUP}")
        .replace(", after_tiers: true", "");
    let err = load_source(Path::new("fleet.yaml"), &text, &registry(&Log::default()), &LoadOptions::default())
        .map(|_| ())
        .expect_err("a cycle");
    assert!(err.to_string().contains("the items' steps wait for each other in a circle"), "{err}");
}

#[test]
fn a_step_before_the_tiers_cannot_come_after_a_tiered_one() {
    let text = format!(
        "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\n{FLEET}{}",
        r#"
steps:
  - id: restore
    for_each: { items: "${{ params.apps }}", tier: tier }
    uses: sleep
    with: { duration: 1s }
  - id: fence
    for_each: { items: "${{ params.apps }}", before_tiers: true }
    needs: [restore]
    uses: sleep
    with: { duration: 1s }
"#
    );
    let err = load_source(Path::new("fleet.yaml"), &text, &Registry::builtin(), &LoadOptions::default())
        .map(|_| ())
        .expect_err("refused");
    assert!(
        err.to_string().contains(
            "step `fence` runs before the tiers, but it comes after `restore`, which runs in its item's tier"
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_app_failing_stops_only_that_app_and_rolls_back_only_its_changes() {
    let (ran, log) = run(&format!(
        r#"{FLEET}
on_failure: rollback
steps:
  - id: fence
    for_each: {{ items: "${{{{ params.apps }}}}", tier: tier, isolate: true }}
    uses: ok
  - id: move
    for_each: ${{{{ params.apps }}}}
    needs: [fence]
    uses: flaky
    with: {{ failures: "${{{{ item.failures }}}}" }}
  - id: switch
    for_each: ${{{{ params.apps }}}}
    needs: [move]
    uses: ok
"#
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed, "an app failed");
    assert_eq!(ran.outcome("move[api]"), Outcome::Failed);
    assert_eq!(ran.outcome("switch[api]"), Outcome::Blocked);
    for done in ["switch[db]", "tier[1]", "switch[web]"] {
        assert_eq!(ran.outcome(done), Outcome::Succeeded, "{done}");
    }
    let log = calls(&log);
    assert!(log.contains(&"undo:fence[api]".to_string()), "{log:?}");
    assert!(!log.iter().any(|c| c == "undo:fence[db]" || c == "undo:fence[web]"), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn an_app_past_its_point_of_no_return_is_not_rolled_back_and_the_others_are_untouched() {
    let (ran, log) = run(&format!(
        r#"{FLEET}
on_failure: rollback
steps:
  - id: fence
    for_each: {{ items: "${{{{ params.apps }}}}", isolate: true }}
    uses: ok
  - id: break
    for_each: ${{{{ params.apps }}}}
    needs: [fence]
    uses: flaky
    with: {{ failures: "${{{{ item.failures }}}}" }}
    point_of_no_return: true
"#
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert!(ran.events.iter().any(|e| matches!(e, Event::RollbackRefused { past } if past == "break[api]")));
    assert!(!calls(&log).iter().any(|c| c.starts_with("undo:")), "{:?}", calls(&log));
}

#[tokio::test(start_paused = true)]
async fn in_an_all_or_nothing_tier_one_failure_stops_the_fleet() {
    let (ran, _) = run(&format!(
        r#"{FLEET}
steps:
  - id: move
    for_each:
      items: "${{{{ params.apps }}}}"
      tier: tier
      tiers: [{{ name: 1, all_or_nothing: true }}, 2]
      isolate: true
    uses: flaky
    with: {{ failures: "${{{{ item.failures }}}}" }}
"#
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.outcome("move[api]"), Outcome::Failed);
    assert_eq!(ran.outcome("move[web]"), Outcome::NotRun);
}

#[test]
fn an_item_in_an_undeclared_tier_is_named_at_its_line() {
    let text = RUNBOOK.replace(
        "for_each: ${{ params.apps }}",
        "for_each: { items: \"${{ params.apps }}\", tier: tier, tiers: [core, business] }",
    );
    let out = load_with_inventory(
        &text,
        "apps:\n  - { name: shop, wait: 1s, tier: core }\n  - { name: wiki, wait: 1s, tier: busines }\n",
    );
    assert!(
        out.contains(
            "inventory.yaml:3:5: error: step `settle`: item `wiki` names tier `busines`, which is not declared"
        ),
        "{out}"
    );
    assert!(out.contains("did you mean `business`?"), "{out}");
    let out = load_with_inventory(&text, "apps:\n  - { name: shop, wait: 1s }\n");
    assert!(out.contains("inventory.yaml:2:5: error: step `settle`: item `shop` has no `tier`"), "{out}");
}

#[test]
fn an_item_naming_an_unknown_site_is_named_at_its_line() {
    let text = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
params:
  apps: { type: list, required: true }
sites:
  west: { kube: { kubeconfig: /dev/null } }
steps:
  - id: check
    for_each: ${{ params.apps }}
    uses: kube.check
    with: { site: "${{ item.site }}" }
"#;
    let out = load_with_inventory(text, "apps:\n  - { name: shop, site: west }\n  - { name: wiki, site: wets }\n");
    assert!(
        out.contains("inventory.yaml:3:5: error: step `check`: item `wiki` names site `wets`, which is not defined"),
        "{out}"
    );
    assert!(out.contains("did you mean `west`?"), "{out}");
}

// --- Lists a step finds at run time (discovery). -------------------------------------------

/// `discover`: reads only; its plan and its run both find `with.items` (the run finds
/// `with.items_at_run` instead when given: the estate changed in between).
fn with_discovery(log: &Log) -> Registry {
    fn found(with: &serde_json::Value, key: &str) -> drover_api::Outputs {
        let mut o = drover_api::Outputs::new();
        o.insert("items".into(), with.get(key).or(with.get("items")).cloned().unwrap_or(json!([])));
        o
    }
    let discover = std::sync::Arc::new(Mock {
        info: Mock::info("discover", false, false),
        log: log.clone(),
        behaviour: |_, with, _| Behaviour::Ok(found(with, "items_at_run")),
        plan: |with| {
            let mut plan = drover_api::Plan::new("found");
            plan.outputs = found(with, "items");
            Ok(plan)
        },
        calls: Default::default(),
    });
    registry(log).with(discover)
}

async fn run_discovering(yaml: &str) -> (Ran, Log) {
    let log: Log = Default::default();
    let reg = with_discovery(&log);
    let loaded = load(yaml, &reg);
    let approve = std::sync::Arc::new(drover::engine::AutoApprove("test".into()));
    (run_with(&loaded, drover::engine::StopSignal::never(), None, approve).await, log)
}

const DISCOVERED: &str = r#"
steps:
  - id: discover
    uses: discover
    with: { items: [{ name: vol_a }, { name: vol_b }] }
  - id: break
    needs: [discover]
    for_each: ${{ steps.discover.outputs.items }}
    uses: ok
    with: { value: "${{ item.name }}" }
  - id: done
    needs: [break]
    uses: ok
"#;

#[tokio::test(start_paused = true)]
async fn a_list_a_step_finds_is_fanned_out_and_every_instance_planned_before_the_first_change() {
    let (ran, log) = run_discovering(DISCOVERED).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(ran.outcome("break[vol_a]"), Outcome::Succeeded);
    assert_eq!(ran.summary.outputs["break[vol_b]"]["value"], json!("vol_b"));
    let planned = plans(&log);
    assert!(planned.contains(&"break[vol_a]".to_string()) && planned.contains(&"break[vol_b]".to_string()));
    let first_run = log.lock().unwrap().iter().position(|c| c.starts_with("run:")).unwrap();
    let last_plan = log.lock().unwrap().iter().rposition(|c| c.starts_with("plan:")).unwrap();
    assert!(last_plan < first_run, "every plan before any run: {:?}", log.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_list_that_changed_since_it_was_planned_stops_the_run_before_any_item() {
    let yaml = DISCOVERED.replace(
        "with: { items: [{ name: vol_a }, { name: vol_b }] }",
        "with: { items: [{ name: vol_a }, { name: vol_b }], items_at_run: [{ name: vol_a }] }",
    );
    let (ran, log) = run_discovering(&yaml).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert!(ran.error("discover").message.contains("changed since the run was planned (2 items then, 1 now)"));
    assert_eq!(ran.outcome("break[vol_a]"), Outcome::NotRun);
    assert!(!calls(&log).iter().any(|c| c.starts_with("run:break")), "{:?}", calls(&log));
}

#[tokio::test(start_paused = true)]
async fn a_field_no_step_reads_may_move_between_the_plan_and_the_run() {
    // A relationship's lag moves every second: the list found at run time differs only there.
    let yaml = DISCOVERED.replace(
        "with: { items: [{ name: vol_a }, { name: vol_b }] }",
        "with: { items: [{ name: vol_a, lag: 7 }, { name: vol_b, lag: 7 }], \
         items_at_run: [{ name: vol_a, lag: 8 }, { name: vol_b, lag: 8 }] }",
    );
    let (ran, _) = run_discovering(&yaml).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Succeeded, "{:?}", ran.summary);
    assert_eq!(ran.summary.outputs["break[vol_b]"]["value"], json!("vol_b"));
}

#[tokio::test(start_paused = true)]
async fn a_field_a_step_reads_that_changed_since_the_plan_stops_the_run_before_any_item() {
    let yaml = DISCOVERED
        .replace(
            "with: { items: [{ name: vol_a }, { name: vol_b }] }",
            "with: { items: [{ name: vol_a, path: \"svm:a\" }, { name: vol_b, path: \"svm:b\" }], \
             items_at_run: [{ name: vol_a, path: \"svm:a\" }, { name: vol_b, path: \"svm2:b\" }] }",
        )
        .replace("with: { value: \"${{ item.name }}\" }", "with: { value: \"${{ item.path }}\" }");
    let (ran, log) = run_discovering(&yaml).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert!(ran.error("discover").message.contains("changed since the run was planned (2 items then, 2 now)"));
    assert!(!calls(&log).iter().any(|c| c.starts_with("run:break")), "{:?}", calls(&log));
}

#[tokio::test(start_paused = true)]
async fn items_found_at_run_time_are_checked_before_anything_changes() {
    let yaml = DISCOVERED.replace("{ name: vol_b }", "{ volume: vol_b }");
    let (ran, log) = run_discovering(&yaml).await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.summary.preflight_failed, ["discover"]);
    let error = ran
        .events
        .iter()
        .find_map(|e| match e {
            Event::PreflightChecked { error: Some(e), .. } => Some(e.message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(error.contains("item 2 of for_each has no `name`"), "{error}");
    assert!(calls(&log).is_empty(), "nothing ran: {:?}", calls(&log));
}

#[test]
fn a_list_must_be_read_before_the_first_change() {
    let log: Log = Default::default();
    let reg = with_discovery(&log);
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: t }\n".to_string()
        + &DISCOVERED.replace("uses: discover", "uses: ok");
    let err = load_source(Path::new("t.yaml"), &text, &reg, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("for_each reads step `discover`, but step `discover` (ok) before it changes the world"),
        "{err}"
    );
}

// --- Items that belong to another list's items: an application's volumes. -----------------

const APPS_AND_VOLUMES: &str = r#"
on_failure: rollback
params:
  apps:
    type: list
    default: [{ name: orders, tier: 1 }, { name: shop, tier: 2 }]
  volumes:
    type: list
    default:
      - { path: "svm_dr:orders_db", app: orders, failures: 0 }
      - { path: "svm_dr:orders_logs", app: orders, failures: 0 }
      - { path: "svm_dr:shop_data", app: shop, failures: 0 }
steps:
  - id: fence
    for_each: { items: "${{ params.apps }}", tier: tier, isolate: true }
    uses: ok
  - id: break
    for_each: { items: "${{ params.volumes }}", key: path, belongs_to: app }
    needs: [fence]
    uses: flaky
    with: { failures: "${{ item.failures }}", value: "${{ steps.fence.outputs.value }}" }
  - id: restore
    for_each: ${{ params.apps }}
    needs: [break]
    uses: ok
    with: { value: "${{ item.name }}" }
"#;

#[test]
fn a_volume_pairs_with_its_application_both_ways_and_shares_its_tier() {
    let log: Log = Default::default();
    let loaded = load(APPS_AND_VOLUMES, &registry(&log));
    let step = |id: &str| loaded.runbook.step(id).unwrap_or_else(|| panic!("no step {id}"));
    assert_eq!(step("break[svm_dr:orders_db]").needs, ["fence[orders]"]);
    assert_eq!(step("restore[orders]").needs, ["break[svm_dr:orders_db]", "break[svm_dr:orders_logs]"]);
    assert_eq!(step("tier[1]").needs, ["restore[orders]"]);
    assert_eq!(step("fence[shop]").needs, ["tier[1]"]);
    let shop_data = step("break[svm_dr:shop_data]").instance.as_ref().unwrap();
    assert_eq!((shop_data.tier.as_deref(), shop_data.unit()), (Some("2"), ("params.apps", "shop")));
    assert_eq!(shop_data.pair("fence").as_deref(), Some("fence[shop]"), "a volume reads its application's outputs");
}

#[tokio::test(start_paused = true)]
async fn a_failed_volume_stops_and_rolls_back_only_its_application() {
    let (ran, log) = run(&APPS_AND_VOLUMES.replace(
        "{ path: \"svm_dr:orders_logs\", app: orders, failures: 0 }",
        "{ path: \"svm_dr:orders_logs\", app: orders, failures: 5 }",
    ))
    .await;
    assert_eq!(ran.summary.outcome, RunOutcome::Failed);
    assert_eq!(ran.outcome("restore[orders]"), Outcome::Blocked);
    assert_eq!(ran.outcome("restore[shop]"), Outcome::Succeeded, "tier 2 went on");
    let log = calls(&log);
    assert!(log.contains(&"undo:fence[orders]".to_string()), "{log:?}");
    assert!(!log.contains(&"undo:fence[shop]".to_string()), "{log:?}");
}

#[test]
fn a_volume_of_an_unknown_application_is_named_at_its_line() {
    let text = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
params:
  apps: { type: list, required: true }
  volumes: { type: list, required: true }
steps:
  - id: fence
    for_each: ${{ params.apps }}
    uses: log
    with: { message: "${{ item.name }}" }
  - id: break
    for_each: { items: "${{ params.volumes }}", key: path, belongs_to: app }
    needs: [fence]
    uses: log
    with: { message: "${{ item.path }}" }
"#;
    let inventory =
        "apps:\n  - { name: orders }\nvolumes:\n  - { path: a, app: orders }\n  - { path: b, app: ordres }\n";
    let out = load_with_inventory(text, inventory);
    assert!(out.contains("inventory.yaml:5:5: error: step `break`: item `b` belongs to `ordres`, which is not an item of any other fanned list"), "{out}");
}

#[test]
fn tiers_are_declared_on_the_owner_list_not_on_the_items_that_belong_to_it() {
    let text = r#"apiVersion: drover/v1
kind: Runbook
metadata: { name: fleet }
params:
  apps: { type: list, required: true }
  volumes: { type: list, required: true }
steps:
  - id: fence
    for_each: ${{ params.apps }}
    uses: log
    with: { message: "${{ item.name }}" }
  - id: break
    for_each: { items: "${{ params.volumes }}", key: path, belongs_to: app, tier: tier }
    needs: [fence]
    uses: log
    with: { message: "${{ item.path }}" }
"#;
    let inventory = "apps:\n  - { name: orders }\nvolumes:\n  - { path: a, app: orders, tier: 1 }\n";
    let out = load_with_inventory(text, inventory);
    assert!(
        out.contains("fleet.yaml:13:24: error: step `break`: its items belong to the items of `params.apps`"),
        "{out}"
    );
}
