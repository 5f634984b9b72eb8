//! Hostile ONTAP answers: the client decodes whatever a server (or something pretending to be
//! one) sends — wrong JSON shapes, truncated bodies, odd status codes, jobs that never end —
//! and every action ends with an error that names the cluster, never a panic or a hang.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use drover_api::{Action, testing};

/// A server answering every request with the next (status, body) of a script, the last one
/// forever after.
async fn server(script: Vec<(u16, String)>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Mutex::new(script));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = vec![0u8; 65536];
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    let (status, body) = {
                        let mut s = script.lock().unwrap();
                        if s.len() > 1 { s.remove(0) } else { s[0].clone() }
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_ontap::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

fn run(script: Vec<(u16, String)>, which: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (port, task) = server(script).await;
        // SAFETY: every test sets the same value.
        unsafe { std::env::set_var("DROVER_TEST_ONTAP_PW", "pw-for-hostile-tests") };
        let sites = BTreeMap::from([(
            "dr".to_string(),
            json!({ "ontap": { "url": format!("http://127.0.0.1:{port}"), "username": "admin",
                               "credentials": "env:DROVER_TEST_ONTAP_PW", "request_timeout": "1s", "retries": 1 } }),
        )]);
        let ctx = testing::context(sites, Duration::from_millis(800));
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
        task.abort();
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
        (200, format!(r#"{{"records": [{}], "num_records": 1}}"#, rel("snapmirrored"))),
        (
            400,
            r#"{"error": {"message": "Invalid state transition requested.", "code": "13303818", "target": "state"}}"#
                .to_string(),
        ),
        (200, rel("paused")),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (port, task) = server(script).await;
        // SAFETY: every test sets the same value.
        unsafe { std::env::set_var("DROVER_TEST_ONTAP_PW", "pw-for-hostile-tests") };
        let sites = BTreeMap::from([(
            "dr".to_string(),
            json!({ "ontap": { "url": format!("http://127.0.0.1:{port}"), "username": "admin",
                               "credentials": "env:DROVER_TEST_ONTAP_PW", "request_timeout": "1s", "retries": 1 } }),
        )]);
        let ctx = testing::context(sites, Duration::from_secs(5));
        let out =
            action("ontap.snapmirror.quiesce").run(&ctx, &json!({ "site": "dr", "destination": "svm_dr:" })).await;
        assert_eq!(out.unwrap()["state"], "paused");
        task.abort();
    });
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("{".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just(r#"{"records": null}"#.to_string()),
        Just(r#"{"records": [{}]}"#.to_string()),
        Just(r#"{"records": [{"uuid": 7, "state": ["x"], "destination": {"path": null}}], "num_records": "1"}"#.to_string()),
        Just(r#"{"records": [{"uuid": "u1", "state": "snapmirrored", "destination": {"path": "svm_dr:"}, "lag_time": "P99999999999999999999D"}], "num_records": 1}"#.to_string()),
        Just(r#"{"job": {"uuid": "j1", "_links": {"self": {"href": "/api/cluster/jobs/j1"}}}}"#.to_string()),
        Just(r#"{"uuid": "j1", "state": "failure", "code": "not-a-number", "message": 12}"#.to_string()),
        Just(r#"{"uuid": "j1", "state": "running"}"#.to_string()),
        Just(r#"{"error": {"message": "entry doesn't exist", "code": "4"}}"#.to_string()),
        Just(r#"{"error": {"code": {"nested": true}}}"#.to_string()),
        "\\PC{0,200}",
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(201),
        Just(202),
        Just(204),
        Just(400),
        Just(401),
        Just(404),
        Just(409),
        Just(429),
        Just(500),
        Just(503),
        100u16..600
    ]
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
