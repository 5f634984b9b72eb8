//! The built-in actions against the real thing: local processes and a real HTTP server on a
//! loopback port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use drover_api::{Action, ErrorKind, StepContext};

fn ctx(timeout: Duration) -> StepContext {
    drover_api::testing::context(Default::default(), timeout)
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_core_actions::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

#[tokio::test]
async fn exec_captures_output_and_dollar_drover_output() {
    let out = action("exec")
        .run(&ctx(Duration::from_secs(10)), &json!({ "shell": "echo hi; echo oops >&2; echo 'snapshot=snap-42' >> \"$DROVER_OUTPUT\"; echo \"step=$DROVER_STEP_ID\" >> \"$DROVER_OUTPUT\"" }))
        .await
        .unwrap();
    assert_eq!(out["stdout"], "hi");
    assert_eq!(out["stderr"], "oops");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["snapshot"], "snap-42");
    assert_eq!(out["step"], "step-1");
}

#[tokio::test]
async fn exec_exit_codes_are_permanent_unless_listed_as_retryable() {
    let a = action("exec");
    let err =
        a.run(&ctx(Duration::from_secs(10)), &json!({ "shell": "echo bad input >&2; exit 3" })).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.message, "`sh -c \"echo bad input >&2; exit 3\"` exited with 3: bad input");
    let err = a
        .run(&ctx(Duration::from_secs(10)), &json!({ "shell": "exit 75", "retry_exit_codes": [75] }))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    let ok = a
        .run(
            &ctx(Duration::from_secs(10)),
            &json!({ "command": "sh", "args": ["-c", "exit 2"], "accept_exit_codes": [0, 2] }),
        )
        .await
        .unwrap();
    assert_eq!(ok["exit_code"], 2);
}

#[tokio::test]
async fn exec_output_is_capped() {
    let out = action("exec")
        .run(
            &ctx(Duration::from_secs(10)),
            &json!({ "shell": "head -c 100000 /dev/zero | tr '\\0' x", "output_limit": 1000 }),
        )
        .await
        .unwrap();
    let s = out["stdout"].as_str().unwrap();
    assert!(s.starts_with(&"x".repeat(1000)) && s.contains("99000 more bytes not kept"), "{}", &s[990..]);
}

#[tokio::test]
async fn exec_kills_its_process_group_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("late");
    let a = action("exec");
    let c = ctx(Duration::from_secs(10));
    let with = json!({ "shell": format!("(sleep 1; touch {}) & wait", marker.display()) });
    let _ = tokio::time::timeout(Duration::from_millis(200), a.run(&c, &with)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "a timed-out command's children are killed too");
}

#[tokio::test]
async fn exec_params_are_checked_before_running() {
    let errs = action("exec").check_params(&json!({ "command": "ls", "shell": "ls" })).unwrap_err();
    assert!(errs[0].message.contains("either `command` or `shell`"));
    let errs = action("exec").check_params(&json!({ "comand": "ls" })).unwrap_err();
    assert_eq!(errs[0].hint.as_deref(), Some("did you mean `command`?"));
}

#[tokio::test]
async fn exec_secret_env_reaches_the_command_but_not_the_plan() {
    // SAFETY: tests in this binary do not read this variable concurrently.
    unsafe { std::env::set_var("DROVER_TEST_SECRET", "s3cr3t") };
    let with = json!({ "shell": "echo \"len=${#PASSWORD}\" >> \"$DROVER_OUTPUT\"", "secret_env": { "PASSWORD": "env:DROVER_TEST_SECRET" } });
    let out = action("exec").run(&ctx(Duration::from_secs(10)), &with).await.unwrap();
    assert_eq!(out["len"], "6");
    let plan = action("exec").plan(&ctx(Duration::from_secs(10)), &with).await.unwrap();
    assert!(!serde_json::to_string(&plan).unwrap().contains("s3cr3t"));
}

/// A real HTTP/1.1 server on loopback answering from a script of (status, body).
async fn server(script: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(0));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                *h.lock().unwrap() += 1;
                let (status, body) = {
                    let mut s = script.lock().unwrap();
                    if s.len() > 1 { s.pop_front().unwrap() } else { *s.front().unwrap() }
                };
                let extra = if status == 429 { "Retry-After: 7\r\n" } else { "" };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn http_checks_status_and_json_field() {
    let (url, _) = server(vec![(200, r#"{"status":"ok","site":"west"}"#)]).await;
    let out = action("http")
        .run(
            &ctx(Duration::from_secs(10)),
            &json!({ "url": url, "expect_json": { "pointer": "/site", "equals": "west" } }),
        )
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["json"]["site"], "west");
    let err = action("http")
        .run(
            &ctx(Duration::from_secs(10)),
            &json!({ "url": url, "expect_json": { "pointer": "/site", "equals": "east" } }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.ends_with("/site is \"west\" (expected \"east\")"), "{}", err.message);
}

#[tokio::test]
async fn http_5xx_and_refused_connections_are_retryable_429_carries_retry_after() {
    let (url, _) = server(vec![(503, "{}")]).await;
    let err = action("http").run(&ctx(Duration::from_secs(10)), &json!({ "url": url })).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    let (url, _) = server(vec![(429, "{}")]).await;
    let err = action("http").run(&ctx(Duration::from_secs(10)), &json!({ "url": url })).await.unwrap_err();
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = action("http")
        .run(&ctx(Duration::from_secs(10)), &json!({ "url": format!("http://{free}/") }))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

#[tokio::test]
async fn wait_http_polls_until_the_expectation_holds() {
    let (url, hits) = server(vec![(503, "{}"), (200, r#"{"ready":false}"#), (200, r#"{"ready":true}"#)]).await;
    let out = action("wait.http")
        .run(
            &ctx(Duration::from_secs(30)),
            &json!({ "url": url, "interval": "50ms", "expect_json": { "pointer": "/ready", "equals": true } }),
        )
        .await
        .unwrap();
    assert_eq!(out["polls"], 3);
    assert_eq!(*hits.lock().unwrap(), 3);
}

#[tokio::test]
async fn wait_http_gives_up_before_the_deadline_with_the_last_observation() {
    let (url, _) = server(vec![(503, "{}")]).await;
    let err = action("wait.http")
        .run(&ctx(Duration::from_millis(400)), &json!({ "url": url, "interval": "100ms" }))
        .await
        .unwrap_err();
    assert!(err.message.contains("did not answer as expected in time; last: status 503"), "{}", err.message);
}

#[tokio::test]
async fn log_and_approve_and_sleep() {
    let out = action("log").run(&ctx(Duration::from_secs(1)), &json!({ "message": "hello" })).await.unwrap();
    assert_eq!(out["message"], "hello");
    let out = action("approve").run(&ctx(Duration::from_secs(1)), &json!({ "message": "go?" })).await.unwrap();
    assert_eq!(out["approved_by"], "tester");
    let start = std::time::Instant::now();
    action("sleep").run(&ctx(Duration::from_secs(1)), &json!({ "duration": "100ms" })).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100));
    let errs = action("sleep").check_params(&json!({ "duration": "5" })).unwrap_err();
    assert!(errs[0].message.contains("invalid duration"), "{}", errs[0].message);
}
