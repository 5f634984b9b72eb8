//! Hostile ONTAP answers: the client decodes whatever a server (or something pretending to be
//! one) sends — wrong JSON shapes, truncated bodies, odd status codes, jobs that never end —
//! and every action ends with an error that names the cluster, never a panic or a hang.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use drover_api::testing::{self, ScriptedHttp};
use drover_api::{Action, StepContext};

fn action(name: &str) -> Arc<dyn Action> {
    drover_ontap::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

/// Site `dr` on the scripted server, this much time for the step.
fn site(server: &ScriptedHttp, budget: Duration) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_ONTAP_PW", "pw-for-hostile-tests") };
    let sites = BTreeMap::from([(
        "dr".to_string(),
        json!({ "ontap": { "url": server.url(), "username": "admin",
                           "credentials": "env:DROVER_TEST_ONTAP_PW", "request_timeout": "1s", "retries": 1 } }),
    )]);
    testing::context(sites, budget)
}

fn run(script: Vec<(u16, String)>, which: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = ScriptedHttp::start(script).await;
        let ctx = site(&server, Duration::from_millis(800));
        let (name, with) = [
            ("ontap.snapmirror.break", json!({ "site": "dr", "destination": "svm_dr:" })),
            ("ontap.snapmirror.update", json!({ "site": "dr", "destination": "svm_dr:" })),
            ("ontap.svm.start", json!({ "site": "dr", "svm": "svm_dr" })),
            (
                "ontap.snapmirror.wait",
                json!({ "site": "dr", "destination": "svm_dr:", "until": "state", "state": "snapmirrored" }),
            ),
        ][which % 4]
            .clone();
        let result = tokio::time::timeout(Duration::from_secs(10), action(name).run(&ctx, &with)).await;
        let result = result.unwrap_or_else(|_| panic!("{name} did not end within the step's budget"));
        if let Err(e) = result {
            assert!(!e.message.is_empty());
        }
        let _ = action(name).plan(&ctx, &with).await;
    });
}

#[test]
fn a_transition_refused_because_it_already_happened_is_done() {
    // A resumed quiesce reads `snapmirrored`, but its first PATCH (before the crash) went through
    // meanwhile: ONTAP answers 13303818 and the relationship is `paused` — the step is done.
    let rel = |state: &str| {
        format!(
            r#"{{"uuid": "u1", "state": "{state}", "healthy": true, "source": {{"path": "svm1:"}}, "destination": {{"path": "svm_dr:"}}}}"#
        )
    };
    let script = vec![
        // drover reads the cluster's release first.
        (
            200,
            r#"{"name": "dr", "version": {"full": "NetApp Release 9.14.1", "generation": 9, "major": 14, "minor": 1}}"#
                .to_string(),
        ),
        (200, format!(r#"{{"records": [{}], "num_records": 1}}"#, rel("snapmirrored"))),
        (
            400,
            r#"{"error": {"message": "Invalid state transition requested.", "code": "13303818", "target": "state"}}"#
                .to_string(),
        ),
        (200, rel("paused")),
        // The wait for the end of the change reads it with every other wait on the cluster.
        (200, format!(r#"{{"records": [{}], "num_records": 1}}"#, rel("paused"))),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = ScriptedHttp::start(script).await;
        let ctx = site(&server, Duration::from_secs(5));
        let out =
            action("ontap.snapmirror.quiesce").run(&ctx, &json!({ "site": "dr", "destination": "svm_dr:" })).await;
        assert_eq!(out.unwrap()["state"], "paused");
    });
}

/// A scripted server playing a real cluster whose release lacks a field drover asked for
/// (400, code 262197): the error names the release, the field and the supported range, and is
/// permanent — retrying cannot help.
#[test]
fn a_field_the_cluster_lacks_is_named_with_its_release_and_the_supported_range() {
    let script = vec![
        (200, r#"{"name": "dr", "version": {"full": "NetApp Release 9.12.1P4", "generation": 9, "major": 12, "minor": 1}}"#.to_string()),
        (
            400,
            r#"{"error": {"message": "The value \"exported_snapshot\" is invalid for field \"fields\"", "code": "262197", "target": "fields"}}"#
                .to_string(),
        ),
    ];
    let err = break_against(script);
    assert_eq!(err.kind, drover_api::ErrorKind::Permanent);
    assert!(
        err.message.contains("ONTAP 9.12.1 has no field `exported_snapshot`")
            && err.message.contains("drover supports ONTAP 9.10.1 to 9.19.1"),
        "{}",
        err.message
    );
}

/// `ontap.snapmirror.break` of `svm_dr:` against a scripted server; the error it ends with.
fn break_against(script: Vec<(u16, String)>) -> drover_api::ActionError {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = ScriptedHttp::start(script).await;
        let ctx = site(&server, Duration::from_secs(5));
        action("ontap.snapmirror.break")
            .run(&ctx, &json!({ "site": "dr", "destination": "svm_dr:" }))
            .await
            .expect_err("the break cannot succeed against this server")
    })
}

/// A proxy's maintenance page (200, not JSON) where the relationships should be: drover says
/// the answer is not a collection. It used to read it as an empty one — "no relationship",
/// a wrong statement about the cluster.
#[test]
fn a_collection_answered_with_something_else_is_an_error_not_an_empty_collection() {
    let script = vec![
        (
            200,
            r#"{"name": "dr", "version": {"full": "NetApp Release 9.14.1", "generation": 9, "major": 14, "minor": 1}}"#
                .to_string(),
        ),
        (200, "<html><body>Down for maintenance</body></html>".to_string()),
    ];
    let err = break_against(script);
    assert!(
        err.message.contains("the answer to GET /api/snapmirror/relationships?")
            && err.message.contains("is not what drover expects"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("no SnapMirror relationship"), "{}", err.message);
}

/// What a broken or hostile server might send: generic breakage, this API's shapes gone wrong,
/// or any text at all.
fn body() -> impl Strategy<Value = String> {
    let shapes: Vec<&str> = testing::BROKEN_JSON.iter().copied().chain([
        r#"{"records": null}"#,
        r#"{"records": [{}]}"#,
        r#"{"records": [{"uuid": 7, "state": ["x"], "destination": {"path": null}}], "num_records": "1"}"#,
        r#"{"records": [{"uuid": "u1", "state": "snapmirrored", "destination": {"path": "svm_dr:"}, "lag_time": "P99999999999999999999D"}], "num_records": 1}"#,
        r#"{"job": {"uuid": "j1", "_links": {"self": {"href": "/api/cluster/jobs/j1"}}}}"#,
        r#"{"uuid": "j1", "state": "failure", "code": "not-a-number", "message": 12}"#,
        r#"{"uuid": "j1", "state": "running"}"#,
        r#"{"error": {"message": "entry doesn't exist", "code": "4"}}"#,
        r#"{"error": {"code": {"nested": true}}}"#,
    ]).collect();
    prop_oneof![4 => proptest::sample::select(shapes).prop_map(str::to_string), 1 => "\\PC{0,200}"]
}

/// The codes the API documents, or any at all.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![proptest::sample::select(vec![200, 201, 202, 204, 400, 401, 404, 409, 429, 500, 503]), 100u16..600]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn any_answer_ends_in_an_error_or_success_never_a_panic_or_hang(
        script in proptest::collection::vec((status(), body()), 1..6),
        which in 0usize..4,
    ) {
        run(script, which);
    }
}
