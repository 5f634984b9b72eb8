//! `notify:` webhooks, against a local HTTP receiver (a plain TCP server in this file that
//! records each request and answers as told): a gate waiting and a failed run reach the bridge
//! in drover's JSON and in Slack's format, a refused delivery is retried, a webhook that is down
//! never fails the run, and no secret ever leaves in a body. The report says who was told what,
//! and who was not and why (each message's fate is journaled).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// A webhook receiver on 127.0.0.1: answers 500 to the first `failures` requests, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = got.clone();
        std::thread::spawn(move || {
            let mut answered = 0;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = vec![];
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                let length: usize =
                    headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = if answered < failures { "500 Internal Server Error" } else { "200 OK" };
                answered += 1;
                record.lock().unwrap().push(Received {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        Receiver { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn cmd(&self) -> Command {
        common::command(&self.dir.path().join("state"))
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const SECRET: &str = "tok-7c41e9-never-in-a-body";

/// The runbook an operator writes: a gate, then a step that fails and quotes the token in its
/// error (as a real tool's error might).
fn runbook(notify: &str) -> String {
    format!(
        "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: switch }}\n{notify}steps:\n\
         \x20 - {{ id: confirm, uses: log, confirm: \"Switch users to west?\", with: {{ message: go }} }}\n\
         \x20 - id: switch\n    needs: [confirm]\n    uses: exec\n\
         \x20   with: {{ shell: 'echo \"token $BRIDGE_TOKEN was refused\" >&2; exit 3' }}\n"
    )
}

/// Run until its gate waits, approve it from "another terminal", let it end.
fn run_with_gate(env: &Env, rb: &std::path::Path) -> Output {
    let child = env
        .cmd()
        .env("BRIDGE_TOKEN", SECRET)
        .args(["run", rb.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the gate never waited");
        let st = env.cmd().args(["status", "latest"]).output().unwrap();
        if text(&st).contains("waiting for approval") {
            let out = env.cmd().args(["approve", "latest", "confirm", "--by", "alice"]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_waiting_gate_and_a_failed_run_reach_the_bridge_with_no_secret_in_any_body() {
    let env = Env::new();
    let generic = Receiver::start(0);
    let slack = Receiver::start(1); // refuses once: the message is sent again
    let url_file = env.write("slack-url", &format!("{}/services/T0/B0\n", slack.url));
    let rb = env.write(
        "rb.yaml",
        &runbook(&format!(
            "notify:\n\
             \x20 - {{ name: bridge, url: \"{}/drover\", headers: {{ Authorization: env:BRIDGE_TOKEN }}, link: \"http://127.0.0.1:7070\" }}\n\
             \x20 - {{ name: chat, url: \"file:{}\", format: slack, on: [failure] }}\n",
            generic.url,
            url_file.display()
        )),
    );
    let out = run_with_gate(&env, &rb);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let got = generic.received();
    let events: Vec<&str> = got.iter().map(|r| r.body["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["gate_waiting", "run_failed"], "{got:#?}");
    let gate = &got[0].body;
    let run_id = gate["run_id"].as_str().unwrap();
    assert_eq!(gate["step"], "confirm");
    assert!(gate["message"].as_str().unwrap().contains("waits for approval: Switch users to west?"), "{gate}");
    assert_eq!(gate["next"], format!("drover approve {run_id} confirm --by YOUR_NAME"));
    assert_eq!(gate["link"], format!("http://127.0.0.1:7070/runs/{run_id}"));
    let failed = &got[1].body;
    assert_eq!(failed["step"], "switch");
    assert!(failed["message"].as_str().unwrap().contains("failed at step `switch`"), "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("token *** was refused"), "masked: {failed}");
    assert!(got.iter().all(|r| r.path == "/drover"));
    assert!(
        got.iter().all(|r| r.headers.contains(&("authorization".into(), SECRET.into()))),
        "the secret header is sent as a header: {got:#?}"
    );

    let chat = slack.received();
    assert_eq!(chat.len(), 2, "refused once, then delivered: {chat:#?}");
    assert_eq!(chat[0].body, chat[1].body, "the same message again");
    assert_eq!(chat[1].path, "/services/T0/B0");
    let said = chat[1].body["text"].as_str().unwrap();
    assert!(said.starts_with("*drover*: the run ") && said.contains("failed at step `switch`"), "{said}");
    assert!(said.contains(&format!("next: `drover status {run_id}; drover resume {run_id}`")), "{said}");

    for r in got.iter().chain(&chat) {
        assert!(!r.body.to_string().contains(SECRET), "a secret left in a body: {}", r.body);
    }

    // The report says who was told what, from the journal.
    let told = notifications(&env);
    let line = |n: &serde_json::Value| {
        format!("{} {} {} {} {}", n["webhook"], n["about"], n["step"], n["delivered"], n["attempts"])
    };
    let mut lines: Vec<String> = told.iter().map(line).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#""bridge" "gate_waiting" "confirm" true 1"#,
            r#""bridge" "run_failed" "switch" true 1"#,
            r#""chat" "run_failed" "switch" true 2"#
        ],
        "{told:#?}"
    );
    let report = env.cmd().args(["report", "latest"]).output().unwrap();
    assert!(
        text(&report).contains("webhook `chat` told of run_failed (`switch`) (2 attempts): it answered 200 OK"),
        "{}",
        text(&report)
    );
}

/// The report's `notifications`, as `drover report --format json` gives them.
fn notifications(env: &Env) -> Vec<serde_json::Value> {
    let out = env.cmd().args(["report", "latest", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["notifications"].as_array().cloned().unwrap_or_default()
}

fn report_json(env: &Env) -> serde_json::Value {
    let out = env.cmd().args(["report", "latest", "--format", "json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_webhook_that_is_down_never_fails_the_run() {
    let env = Env::new();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // bound, then freed
    let rb = env.write(
        "rb.yaml",
        &format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: quiet }}\n\
             notify:\n  - {{ name: bridge, url: \"http://{closed}/hook\" }}\n\
             steps:\n  - {{ id: hello, uses: log, with: {{ message: hi }} }}\n"
        ),
    );
    let started = Instant::now();
    let out = env.cmd().args(["run", rb.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("webhook `bridge` was not told after 3 attempts: it could not be reached"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(15), "the grace for notifications is bounded");

    // Recorded as not told, with why; the retries are not the run's time.
    let report = report_json(&env);
    let told = &report["notifications"][0];
    assert_eq!(told["webhook"], "bridge");
    assert_eq!(told["about"], "run_succeeded");
    assert_eq!(told["delivered"], false);
    assert_eq!(told["attempts"], 3);
    assert!(told["detail"].as_str().unwrap().starts_with("it could not be reached"), "{told}");
    assert!(!told.to_string().contains(&closed.to_string()), "never its URL: {told}");
    assert!(report["wall_ms"].as_u64().unwrap() < 2_000, "the run's time: {}", report["wall_ms"]);
    let said = text(&env.cmd().args(["report", "latest"]).output().unwrap());
    assert!(
        said.contains("webhook `bridge` NOT told of run_succeeded (3 attempts): it could not be reached"),
        "{said}"
    );
}

#[test]
fn a_message_still_on_its_way_when_the_run_ends_is_recorded_as_not_told() {
    let env = Env::new();
    // Accepts connections and never answers: each attempt waits out its 5 s.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.incoming().take(3).filter_map(Result::ok).collect::<Vec<_>>());
    let rb = env.write(
        "rb.yaml",
        &format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: quiet }}\n\
             notify:\n  - {{ name: bridge, url: \"{url}\" }}\n\
             steps:\n  - {{ id: hello, uses: log, with: {{ message: hi }} }}\n"
        ),
    );
    let started = Instant::now();
    let out = env.cmd().args(["run", rb.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(15), "the grace for notifications is bounded");
    let told = notifications(&env);
    assert_eq!(told.len(), 1, "{told:#?}");
    assert_eq!(told[0]["delivered"], false);
    assert_eq!(told[0]["about"], "run_succeeded");
    assert_eq!(told[0]["detail"], "still being sent when the run ended; dropped after 10s", "{told:#?}");
    drop(held);
}

#[test]
fn a_webhook_whose_secret_cannot_be_read_is_left_out_and_the_report_says_so() {
    let env = Env::new();
    let bridge = Receiver::start(0);
    let rb = env.write(
        "rb.yaml",
        &format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: quiet }}\n\
             notify:\n\
             \x20 - {{ name: bridge, url: \"{}/hook\" }}\n\
             \x20 - {{ name: pager, url: env:DROVER_TEST_PAGER_URL_NEVER_SET }}\n\
             steps:\n  - {{ id: hello, uses: log, with: {{ message: hi }} }}\n",
            bridge.url
        ),
    );
    let out =
        env.cmd().env_remove("DROVER_TEST_PAGER_URL_NEVER_SET").args(["run", rb.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a courtesy, never a condition of the run: {}", text(&out));
    assert_eq!(bridge.received().len(), 1, "the other webhook is told");
    let told = notifications(&env);
    let pager = told.iter().find(|n| n["webhook"] == "pager").expect("the pager's fate is recorded");
    assert_eq!(pager["delivered"], false);
    assert_eq!(pager["about"], "none");
    let why = pager["detail"].as_str().unwrap();
    assert!(why.contains("left out of this run (") && why.contains("rb.yaml:6)"), "where it is written: {why}");
    assert!(why.contains("env:DROVER_TEST_PAGER_URL_NEVER_SET` is not set"), "{why}");
    assert!(told.iter().any(|n| n["webhook"] == "bridge" && n["delivered"] == true), "{told:#?}");
}

#[test]
fn a_bad_notify_in_a_sites_file_is_refused_at_its_line_and_nothing_runs() {
    let env = Env::new();
    let sites = env.write(
        "sites.yaml",
        "apiVersion: drover/v1\nkind: Sites\nsites: {}\nnotify:\n  - url: https://hooks.slack.com/services/T0/B0/abc123secret\n",
    );
    let out = env.cmd().args(["run", "examples/hello.yaml", "--sites", sites.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("sites.yaml:5:10: error: notify item 1: this webhook URL is a credential written inline"),
        "{said}"
    );
    assert!(said.contains("url: env:BRIDGE_WEBHOOK"), "{said}");
    assert!(!said.contains("abc123secret"), "never echoed: {said}");
    assert!(!env.dir.path().join("state/runs").exists(), "nothing ran");
}
