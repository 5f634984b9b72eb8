//! The `drover` command as an operator uses it: exit codes, plan output, reports, gates
//! answered from another terminal, locks, resume after a failure, journal corruption.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
        c.env("DROVER_STATE_DIR", self.path("state"))
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn last_run_id(&self) -> String {
        let mut ids: Vec<String> = std::fs::read_dir(self.path("state/runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        ids.sort();
        ids.pop().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn runbook(steps: &str) -> String {
    format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\nsteps:\n{steps}")
}

#[test]
fn plan_shows_levels_gates_and_the_critical_path() {
    let env = Env::new();
    let out = env.run(&["plan", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
    let out = env.run(&["plan", "examples/hello.yaml", "--format", "mermaid"]);
    insta::assert_snapshot!("hello_mermaid", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn validate_exits_2_and_names_every_problem() {
    let env = Env::new();
    let out = env.run(&["validate", "tests/fixtures/broken.yaml", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("ok: examples/hello.yaml"), "{t}");
    assert!(t.contains("tests/fixtures/broken.yaml:19:11: error: step `break`: unknown action `exce`"), "{t}");
    assert!(t.contains("16 problems found; nothing was run"), "{t}");
}

#[test]
fn a_run_reports_and_is_listed_by_status() {
    let env = Env::new();
    let out = env.run(&["run", "examples/hello.yaml", "--param", "who=tester"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("greeted tester on"), "{}", text(&out));
    let id = env.last_run_id();
    let status = env.run(&["status"]);
    assert!(text(&status).contains(&id) && text(&status).contains("succeeded"), "{}", text(&status));
    let json = env.run(&["report", &id, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["steps"].as_array().unwrap().len(), 4);
    assert_eq!(report["critical_path"][0], "greet");
    let html = env.run(&["report", "latest", "--format", "html"]);
    let page = String::from_utf8_lossy(&html.stdout);
    assert!(
        page.starts_with("<!DOCTYPE html>")
            && page.contains("<svg")
            && !page.contains("http-equiv")
            && !page.contains("src=\"")
    );
}

#[test]
fn a_failed_run_resumes_without_rerunning_what_succeeded() {
    let env = Env::new();
    let log = env.path("ran.log");
    let flag = env.path("fixed");
    let rb = env.write(
        "rb.yaml",
        &runbook(&format!(
            "  - {{ id: first, uses: exec, with: {{ shell: 'echo first >> {log}' }} }}\n  - {{ id: second, uses: exec, needs: [first], with: {{ shell: 'echo second >> {log}; test -f {flag}' }} }}\n",
            log = log.display(),
            flag = flag.display()
        )),
    );
    let out = env.run(&["run", rb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("drover resume"), "the failure says how to continue: {}", text(&out));
    std::fs::write(&flag, "").unwrap();
    let id = env.last_run_id();
    let out = env.run(&["resume", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\nsecond\n");
    let out = env.run(&["resume", &id]);
    assert!(text(&out).contains("already succeeded"));
}

#[test]
fn resume_refuses_a_changed_runbook_unless_forced() {
    let env = Env::new();
    let rb = env.write("rb.yaml", &runbook("  - { id: a, uses: exec, with: { command: \"false\" } }\n"));
    assert_eq!(env.run(&["run", rb.to_str().unwrap()]).status.code(), Some(1));
    env.write("rb.yaml", &runbook("  - { id: a, uses: exec, with: { command: \"true\" } }\n"));
    let id = env.last_run_id();
    let out = env.run(&["resume", &id]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("changed since it started") && text(&out).contains("--force"));
    let out = env.run(&["resume", &id, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_gate_is_answered_from_another_terminal() {
    let env = Env::new();
    let rb = env.write("rb.yaml", &runbook("  - { id: flip-dns, uses: log, confirm: \"Primary is down. Switch DNS to west?\", with: { message: flipped } }\n"));
    let child =
        env.cmd().args(["run", rb.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the gate never showed up in status");
        if env.path("state/runs").exists() {
            let id = env.last_run_id();
            let st = env.run(&["status", &id]);
            if text(&st).contains("waiting for approval") {
                assert!(text(&st).contains(&format!("drover approve {id} flip-dns")), "{}", text(&st));
                let out = env.run(&["approve", &id, "flip-dns", "--by", "alice"]);
                assert_eq!(out.status.code(), Some(0), "{}", text(&out));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("approved by alice"), "{}", text(&out));
}

#[test]
fn a_second_run_of_the_same_runbook_is_refused_while_the_first_holds_the_lock() {
    let env = Env::new();
    let rb = env.write("rb.yaml", &runbook("  - { id: slow, uses: sleep, with: { duration: 30s } }\n"));
    let mut first =
        env.cmd().args(["run", rb.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let lock = env.path("state/locks/t.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lock.exists() {
        assert!(Instant::now() < deadline, "first run never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = env.run(&["run", rb.to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("is in progress on host"), "{}", text(&out));
    // The killed holder left a stale lock behind; the next run takes it over.
    let rb2 = env.write("rb.yaml", &runbook("  - { id: quick, uses: log, with: { message: hi } }\n"));
    let out = env.run(&["run", rb2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("taking over the run lock") && said.contains("is no longer running"), "{said}");
    assert!(!said.contains("LockInfo") && !said.contains("Some("), "a sentence, not a debug dump: {said}");
    assert!(!said.contains('\u{1b}'), "no colour codes in a pipe: {said:?}");
}

#[test]
fn a_corrupt_journal_is_refused_with_the_record_number() {
    let env = Env::new();
    let rb = env.write("rb.yaml", &runbook("  - { id: a, uses: exec, with: { command: \"false\" } }\n"));
    env.run(&["run", rb.to_str().unwrap()]);
    let id = env.last_run_id();
    let journal = env.path(&format!("state/runs/{id}/journal.jsonl"));
    let mut lines: Vec<String> = std::fs::read_to_string(&journal).unwrap().lines().map(String::from).collect();
    lines[1] = "{not json".into();
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let out = env.run(&["resume", &id]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("is corrupt at record 2"), "{}", text(&out));
}

#[test]
fn dry_run_reports_failed_preconditions_and_changes_nothing() {
    let env = Env::new();
    let marker = env.path("touched");
    let rb = env.write(
        "rb.yaml",
        &runbook(&format!(
            "  - {{ id: touch, uses: exec, with: {{ command: touch, args: ['{}'] }} }}\n  - {{ id: missing-tool, uses: exec, with: {{ command: surely-not-installed-xyz }} }}\n",
            marker.display()
        )),
    );
    let out = env.run(&["run", rb.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("precondition failed: command found: `surely-not-installed-xyz` is not on PATH"),
        "{}",
        text(&out)
    );
    assert!(!marker.exists(), "a dry run must not run the command");
}

#[test]
fn an_external_plugin_provides_actions_and_undo() {
    let env = Env::new();
    let path = format!("{}/examples/plugins:{}", env!("CARGO_MANIFEST_DIR"), std::env::var("PATH").unwrap());
    let out_file = env.path("greeting.txt");
    let out = env
        .cmd()
        .env("PATH", &path)
        .args(["run", "examples/plugin.yaml", "--param", &format!("out={}", out_file.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "HELLO, OPERATOR\n");

    // A failing step after it makes `on_failure: rollback` call the plugin's undo.
    let rb = env.write(
        "rb.yaml",
        &format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\non_failure: rollback\nsteps:\n  - {{ id: write, uses: greet.file, with: {{ path: '{}', text: hi }} }}\n  - {{ id: boom, uses: exec, needs: [write], with: {{ command: \"false\" }} }}\n",
            out_file.display()
        ),
    );
    let out = env.cmd().env("PATH", &path).args(["run", rb.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!out_file.exists(), "the plugin's undo removed the file: {}", text(&out));

    let bad = env.write("bad.yaml", "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: t }\nsteps:\n  - { id: g, uses: greet.hello, with: { nme: x } }\n");
    let out = env.cmd().env("PATH", &path).args(["validate", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("5:41: error: step `g`: unknown parameter `nme`"), "{}", text(&out));
}

#[test]
fn json_output_is_one_object_per_line() {
    let env = Env::new();
    let out = env.run(&["--output", "json", "run", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let objects: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.first().unwrap()["event"]["type"], "run_started");
    assert_eq!(objects.last().unwrap()["summary"]["outcome"], "succeeded");
}

/// The report printed at a run's end is built from the records the run kept in memory; it is
/// the one `drover report` reads back from the journal, and the one written beside it.
#[test]
fn the_report_at_the_end_of_a_run_is_the_one_its_journal_gives() {
    let env = Env::new();
    let out = env.run(&["--output", "json", "run", "examples/hello.yaml", "--param", "who=tester"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let at_the_end: serde_json::Value = serde_json::from_str(&last).unwrap();
    let read_back = env.run(&["report", &env.last_run_id(), "--format", "json"]);
    let read_back: serde_json::Value = serde_json::from_slice(&read_back.stdout).unwrap();
    assert_eq!(at_the_end["summary"], read_back);
    assert_eq!(read_back["steps"].as_array().unwrap().len(), 4);
}

/// A wait that polls every 20 ms for 1.5 s reports each poll; the JSON stream carries its
/// progress at most once a second (a fleet's thousand waits would flood it otherwise).
#[test]
fn json_output_carries_a_steps_progress_at_most_once_a_second() {
    let env = Env::new();
    let book = env.write(
        "poll.yaml",
        &runbook(
            "  - id: poll\n    uses: wait.http\n    with: { url: \"http://127.0.0.1:1/\", interval: 20ms }\n    timeout: 1500ms\n    continue_on_error: true\n",
        ),
    );
    let out = env.run(&["--output", "json", "run", book.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let objects: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let progress = objects.iter().filter(|o| o["event"]["type"] == "step_progress").count();
    assert!((1..=2).contains(&progress), "{progress} progress events in:\n{stdout}");
}

/// `drover plan … | head -1`, `drover run … | tee` whose tee died: the reader of stdout is
/// gone. A read-only command ends as it would have and a run carries on to its end — no panic,
/// no exit 101.
#[test]
fn a_closed_stdout_ends_a_command_quietly_and_never_stops_a_run() {
    let env = Env::new();
    let closed = |args: &[&str]| {
        let mut child = env.cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    let out = closed(&["plan", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));

    let out = closed(&["--output", "json", "run", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0), "the run went on: {}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    let status = env.run(&["--output", "json", "status", &env.last_run_id()]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("succeeded"), "{}", text(&status));
}

#[test]
fn every_shipped_runbook_and_example_validates() {
    let env = Env::new();
    let mut files = vec![];
    for dir in ["runbooks", "examples"] {
        collect_yaml(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).as_path(), &mut files);
    }
    assert!(files.len() >= 2, "{files:?}");
    let path = format!("{}/examples/plugins:{}", env!("CARGO_MANIFEST_DIR"), std::env::var("PATH").unwrap());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if !text.contains("kind: Runbook") {
            continue;
        }
        let out = env.cmd().env("PATH", &path).arg("validate").arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Stop a run at its long step with `signal`; it stops gracefully, exits `code`, and the report
/// says which signal stopped it; `drover resume` finishes it.
fn a_signal_stops_gracefully_and_resume_finishes_the_run(signal: i32, name: &str, code: i32) {
    let env = Env::new();
    let rb = env.write(
        "rb.yaml",
        &runbook("  - { id: long-wait, uses: sleep, with: { duration: 4s } }\n  - { id: after, uses: log, needs: [long-wait], with: { message: done } }\n"),
    );
    let child =
        env.cmd().args(["run", rb.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the step never started");
        if env.path("state/runs").exists() {
            let st = env.run(&["status", &env.last_run_id()]);
            if text(&st).contains("running (attempt 1)") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, signal) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{name}: {}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(3), "a graceful stop does not wait out the sleep");
    assert!(text(&out).contains("drover resume"), "{}", text(&out));
    assert!(text(&out).contains(&format!("stopped by {name}: no step started after it")), "{}", text(&out));
    let report = env.run(&["report", "latest", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(r["outcome"], "cancelled");
    assert_eq!(r["stopped_by"], name);
    assert_eq!(r["steps"][1]["outcome"], "not_run");
    let out = env.run(&["resume", "latest"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("after: done"), "{}", text(&out));
}

#[test]
fn ctrl_c_stops_gracefully_with_exit_3_and_resume_finishes_the_run() {
    a_signal_stops_gracefully_and_resume_finishes_the_run(libc::SIGINT, "SIGINT", 3);
}

/// What systemd and Kubernetes send: it used to kill drover at once (exit 143, steps cut off).
#[test]
fn sigterm_stops_gracefully_with_exit_143_and_resume_finishes_the_run() {
    a_signal_stops_gracefully_and_resume_finishes_the_run(libc::SIGTERM, "SIGTERM", 143);
}

#[test]
fn sighup_stops_gracefully_with_exit_129_and_resume_finishes_the_run() {
    a_signal_stops_gracefully_and_resume_finishes_the_run(libc::SIGHUP, "SIGHUP", 129);
}

/// The journal, the reports and the copied runbook hold operator data: readable by their owner only.
#[test]
fn every_file_of_a_run_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let rb = env.write("rb.yaml", &runbook("  - { id: hello, uses: log, with: { message: hi } }\n"));
    let out = env.run(&["run", rb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut seen = 0;
    let mut stack = vec![env.path("state")];
    while let Some(path) = stack.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "journal, reports, runbook: {seen} files");
}

#[test]
fn resume_may_change_a_param_no_finished_step_has_used() {
    let env = Env::new();
    let log = env.path("ran.log");
    let rb = env.write(
        "rb.yaml",
        &format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: t }}\nparams: {{ who: ops, limit: 1 }}\nsteps:\n  - {{ id: first, uses: exec, with: {{ shell: 'echo first $WHO >> {log}', env: {{ WHO: \"${{{{ params.who }}}}\" }} }} }}\n  - {{ id: second, needs: [first], uses: exec, with: {{ shell: 'echo second $N >> {log}; test $N -gt 1', env: {{ N: \"${{{{ params.limit }}}}\" }} }} }}\n",
            log = log.display()
        ),
    );
    let out = env.run(&["run", rb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = env.last_run_id();
    // `who` was used by a finished step: its result came from the old value.
    let out = env.run(&["resume", &id, "--param", "who=dba"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("param `who` was already used by finished step(s) first"), "{}", text(&out));
    // `limit` was read only by the step that failed: changing it is the fix.
    let out = env.run(&["resume", &id, "--param", "limit=5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("run resumed with limit=5"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first ops\nsecond 1\nsecond 5\n");
    let report = text(&env.run(&["report", &id, "--format", "json"]));
    assert!(report.contains("\"limit\": 5"), "the report shows the params the run finished with: {report}");
}

#[test]
fn plan_shows_only_the_steps_the_params_let_run() {
    let env = Env::new();
    let out = env.run(&["plan", "builtin:failover.yaml", "--param", "mode=unplanned"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    let path = t.lines().find(|l| l.starts_with("critical path")).unwrap_or_else(|| panic!("{t}"));
    for planned_only in
        ["fence[shop]", "final-update", "stop-source-svm", "restore-from-primary[shop]", "check-replication"]
    {
        assert!(!path.contains(&format!(" {planned_only} ")), "{planned_only} on the unplanned path: {path}");
        assert!(!t.contains(&format!("\n  {planned_only} ")), "{planned_only} listed for an unplanned run:\n{t}");
    }
    assert!(path.contains("break") && path.contains("restore-from-backup"), "{path}");
    assert!(
        t.contains("not run with these params (their `if:` is false): check-replication, confirm-planned, fence"),
        "{t}"
    );
    assert!(t.contains("until `break` (the point of no return) has begun"), "{t}");
}

#[test]
fn a_failed_preflight_exits_1_lists_every_failure_and_changes_nothing() {
    let env = Env::new();
    let marker = env.path("changed");
    let rb = env.write(
        "rb.yaml",
        &runbook(&format!(
            "  - {{ id: change, uses: exec, with: {{ shell: 'touch {m}' }} }}\n  - {{ id: lb, uses: http, needs: [change], with: {{ url: 'http://127.0.0.1:9/', secret_headers: {{ Authorization: env:DROVER_TEST_UNSET_TOKEN }} }} }}\n",
            m = marker.display()
        )),
    );
    let out = env.run(&["run", rb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!marker.exists(), "the preflight stopped the run before its first change");
    let t = text(&out);
    assert!(t.contains("preflight: FAILED — 1 of 2 step(s) cannot work; nothing was changed"), "{t}");
    assert!(t.contains("✗ lb: precondition failed: secret for header Authorization readable"), "{t}");

    // --skip-preflight runs anyway, and says so in the report.
    let out = env.run(&["run", rb.to_str().unwrap(), "--skip-preflight"]);
    assert!(marker.exists());
    assert!(text(&out).contains("preflight: SKIPPED by"), "{}", text(&out));
}

#[test]
fn rbac_prints_a_role_and_binding_per_family_for_the_named_identity() {
    let env = Env::new();
    let out = env.run(&["rbac", "--family", "workloads", "--family", "restore", "--for", "serviceaccount:ops/drover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| format!("{} {}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole drover-workloads",
            "ClusterRoleBinding drover-workloads",
            "ClusterRole drover-restore",
            "ClusterRoleBinding drover-restore"
        ]
    );
    assert_eq!(
        docs[1]["subjects"][0],
        serde_json::json!({ "kind": "ServiceAccount", "namespace": "ops", "name": "drover" })
    );
    let out = env.run(&["rbac", "--family", "everything"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("families: check, workloads, restore"), "{}", text(&out));
}

#[test]
fn rbac_lets_the_workloads_family_watch_the_custom_kinds_named() {
    let env = Env::new();
    let out = env.run(&["rbac", "--family", "workloads", "--watch", "carts.shop.example.com", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = docs["items"][0]["rules"].as_array().unwrap();
    assert_eq!(
        rules.last().unwrap(),
        &serde_json::json!({ "apiGroups": ["shop.example.com"], "resources": ["carts"], "verbs": ["get", "list", "watch"] })
    );

    let out = env.run(&["rbac", "--family", "workloads", "--watch", "Cart"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--watch `Cart`: write the custom resource as PLURAL.GROUP"), "{}", text(&out));
    let out = env.run(&["rbac", "--family", "restore", "--watch", "carts.shop.example.com"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("add --family workloads"), "{}", text(&out));
}

#[test]
fn the_fleet_example_plans_each_step_once_with_its_items_and_runs_tier_by_tier() {
    let env = Env::new();
    let args = ["examples/fleet/fleet.yaml", "--params-file", "examples/fleet/inventory.yaml"];
    let plan = env.run(&[&["plan"][..], &args].concat());
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{out}");
    assert!(out.contains("params: apps=[6 items], tiers=[3 items]"), "{out}");
    assert!(out.contains("fence ×2  exec  (tier 1;"), "{out}");
    assert!(out.contains("items: postgres, kafka"), "{out}");
    assert!(out.contains("tier[1]  drover.tier  (needs verify (2 items);"), "{out}");
    assert!(out.contains("move ×2  sleep  (needs fence (same item); tier 2;"), "{out}");
    let run = env.run(&[&["run", "--yes"][..], &args].concat());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report = env.run(&["report", &env.last_run_id(), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let ended = |id: &str| json["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap()["outcome"].clone();
    assert_eq!(ended("verify[wiki]"), "succeeded");
    assert_eq!(ended("tier[2]"), "succeeded");
}

#[test]
fn a_fleet_report_says_per_application_what_happened_and_what_to_do() {
    let env = Env::new();
    let example = std::fs::read_to_string("examples/fleet/fleet.yaml").unwrap();
    // payments cannot be moved; the other applications go on, tier by tier.
    let broken = example.replace(
        "    uses: sleep\n    with: { duration: \"${{ item.takes }}\" }",
        "    uses: exec\n    with: { shell: 'test \"$APP\" != payments || { echo \"no capacity for $APP\" >&2; exit 1; }', env: { APP: \"${{ item.name }}\" } }",
    );
    assert_ne!(broken, example);
    let rb = env.write("fleet.yaml", &broken);
    let run = env.run(&["run", "--yes", rb.to_str().unwrap(), "--params-file", "examples/fleet/inventory.yaml"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let out = text(&run);
    assert!(out.contains("6 items of params.apps: 5 recovered, 1 failed, 0 rolled back"), "{out}");
    assert!(out.contains("tier 2  payments  failed       at move[payments]:"), "{out}");
    assert!(out.contains("RTO not reached (not every item recovered)"), "{out}");
    let report = env.run(&["report", &env.last_run_id(), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let items = json["fleet"]["items"].as_array().unwrap();
    let payments = items.iter().find(|i| i["key"] == "payments").unwrap();
    assert_eq!(payments["outcome"], "failed");
    assert!(payments["next"].as_str().unwrap().contains("drover resume"), "{payments}");
    let wiki = items.iter().find(|i| i["key"] == "wiki").unwrap();
    assert_eq!((wiki["outcome"].as_str(), wiki["tier"].as_str()), (Some("recovered"), Some("3")));
    assert!(wiki["rto_ms"].as_u64().is_some(), "{wiki}");
}

#[test]
fn resuming_a_fleet_runs_only_the_application_that_did_not_finish() {
    let env = Env::new();
    let example = std::fs::read_to_string("examples/fleet/fleet.yaml").unwrap();
    let (log, fixed) = (env.path("moved.log"), env.path("capacity-added"));
    // payments moves once capacity has been added; every move is logged.
    let fleet = example.replace(
        "    uses: sleep\n    with: { duration: \"${{ item.takes }}\" }",
        &format!(
            "    uses: exec\n    with: {{ shell: 'echo \"$APP\" >> {}; test \"$APP\" != payments || test -f {}', env: {{ APP: \"${{{{ item.name }}}}\" }} }}",
            log.display(),
            fixed.display()
        ),
    );
    let rb = env.write("fleet.yaml", &fleet);
    let run = env.run(&["run", "--yes", rb.to_str().unwrap(), "--params-file", "examples/fleet/inventory.yaml"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    std::fs::write(&fixed, "").unwrap();
    let resumed = env.run(&["resume", "--yes", &env.last_run_id()]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let moved = std::fs::read_to_string(&log).unwrap();
    assert_eq!(moved.lines().filter(|l| *l == "payments").count(), 2, "{moved}");
    assert_eq!(moved.lines().filter(|l| *l == "orders").count(), 1, "the others are not moved again: {moved}");
    assert!(text(&resumed).contains("6 items of params.apps: 6 recovered, 0 failed"), "{}", text(&resumed));
}

/// kubectl's manners: `-o json|yaml|text` on the commands that show things; a file is
/// `--out FILE` (`report -o json` once wrote a file named `json`).
#[test]
fn status_report_plan_and_actions_speak_json_and_yaml_with_dash_o() {
    let env = Env::new();
    let out = env.run(&["run", "examples/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cwd = env.path("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let run_in = |args: &[&str]| env.cmd().current_dir(&cwd).args(args).output().unwrap();
    for (args, key) in [
        (vec!["status"], "runs"),
        (vec!["status", "latest"], "counts"),
        (vec!["report"], "critical_path"),
        (vec!["plan", "examples/hello.yaml"], "critical_path"),
    ] {
        let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello.yaml");
        let args: Vec<&str> =
            args.iter().map(|a| if *a == "examples/hello.yaml" { hello.to_str().unwrap() } else { a }).collect();
        let json = run_in(&[&["-o", "json"], &args[..]].concat());
        assert_eq!(json.status.code(), Some(0), "{args:?}: {}", text(&json));
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(json.get(key).is_some(), "{args:?}: {json}");
        let yaml = run_in(&[&args[..], &["--output", "yaml"]].concat());
        let yaml: serde_json::Value = serde_yaml::from_slice(&yaml.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(yaml, json, "{args:?}: the same document in YAML");
    }
    let actions = run_in(&["actions", "-o", "yaml"]);
    let actions: Vec<serde_json::Value> = serde_yaml::from_slice(&actions.stdout).unwrap();
    assert!(actions.iter().any(|a| a["name"] == "ontap.snapmirror.break"));
    assert!(std::fs::read_dir(&cwd).unwrap().next().is_none(), "`-o json` writes no file named json");

    let page = env.path("report.html");
    let out = run_in(&["report", "latest", "--format", "html", "--out", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::read_to_string(&page).unwrap().starts_with("<!DOCTYPE html>"));
    assert!(text(&out).contains("wrote the report of run"), "{}", text(&out));
}

/// `status` counts what ran, what was skipped and what never ran (it once said 14/14 for a run
/// whose first step failed), and shows the start, the duration and who answered each gate.
#[test]
fn status_counts_steps_that_never_ran_and_names_the_approver() {
    let env = Env::new();
    let rb = env.write(
        "rb.yaml",
        &runbook(
            "  - { id: ask, uses: log, confirm: \"Go on?\", with: { message: asked } }\n\
             \x20 - { id: off, uses: log, needs: [ask], if: \"false\", with: { message: never } }\n\
             \x20 - { id: fail, uses: exec, needs: [ask], with: { command: \"false\" } }\n\
             \x20 - { id: after, uses: log, needs: [fail], with: { message: never } }\n\
             \x20 - { id: last, uses: log, needs: [after], with: { message: never } }\n",
        ),
    );
    let out = env.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let list = text(&env.run(&["status"]));
    assert!(list.contains("2 ran (1 failed), 1 skipped, 2 not run of 5"), "{list}");
    assert!(list.contains("started (UTC)") && list.contains("took"), "{list}");
    let one = text(&env.run(&["status", "latest"]));
    assert!(one.contains("a real run, started 20") && one.contains("UTC, took "), "{one}");
    assert!(one.contains("steps: 2 ran (1 failed), 1 skipped, 2 not run of 5"), "{one}");
    assert!(one.contains("gate `ask` approved by --yes"), "{one}");
    let json: serde_json::Value = serde_json::from_slice(&env.run(&["status", "latest", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["counts"]["not_run"], 2, "{json}");
    assert_eq!(json["approvals"][0]["step"], "ask", "{json}");
    assert!(json["duration_ms"].is_u64() && json["started"].is_string(), "{json}");
}

#[test]
fn version_completion_and_examples_in_every_help() {
    let env = Env::new();
    let out = env.run(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).starts_with(&format!("drover {}", env!("CARGO_PKG_VERSION"))), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&env.run(&["version", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("failover") && script.contains("rehearse"), "{shell}: {script}");
    }
    let out = env.run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad input: {}", text(&out));

    // Every command a person can type has examples in its --help.
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            path.push(sub.get_name().to_string());
            if sub.has_subcommands() {
                walk(sub, path, missing);
            } else if !sub.get_after_help().is_some_and(|h| h.to_string().contains("Examples:")) {
                missing.push(path.join(" "));
            }
            path.pop();
        }
    }
    let mut missing = vec![];
    walk(&<drover::cli::Cli as clap::CommandFactory>::command(), &mut vec![], &mut missing);
    assert!(missing.is_empty(), "no examples in the --help of: {missing:?}");
    let help = text(&env.run(&["failover", "--help"]));
    assert!(help.contains("Examples:\n  drover failover --params-file"), "{help}");
}

/// The live view (a terminal: run under `script`, a pseudo-terminal) ends with a status line:
/// steps done of all, and the time elapsed against the runbook's RTO target.
#[test]
fn the_live_view_shows_steps_done_of_all_and_the_time_against_the_rto_target() {
    let env = Env::new();
    let rb = env.write(
        "rb.yaml",
        "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: t }\n\
         params:\n  rto_target: { type: duration, default: 15m }\nsteps:\n\
         \x20 - { id: first, uses: sleep, with: { duration: 300ms } }\n\
         \x20 - { id: second, uses: log, needs: [first], with: { message: done } }\n",
    );
    let command = format!("{} run {}", env!("CARGO_BIN_EXE_drover"), rb.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DROVER_STATE_DIR", env.path("state"))
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) gives the run a terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains("0 of 2 steps done, 1 running"), "{screen}");
    assert!(screen.contains("1 of 2 steps done"), "{screen}");
    assert!(screen.contains("elapsed of the 15m RTO target"), "{screen}");
}

/// The HTML report one attaches to the incident: a banner for the kind of run and its end (on
/// failure the failed step, its error and the exact next command), the facts a review asks for
/// (mode, params, approvals, crashes and resumes), and nothing wider than a 1400 px window.
#[test]
fn the_html_report_says_what_kind_of_run_it_was_how_it_ended_and_what_to_do_next() {
    let env = Env::new();
    let page = |id: &str| String::from_utf8_lossy(&env.run(&["report", id, "--format", "html"]).stdout).to_string();

    // A dry run.
    let out = env.run(&["run", "examples/hello.yaml", "--dry-run", "--param", "who=ops"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dry = page("latest");
    assert!(dry.contains("DRY RUN — nothing was changed"), "{dry}");
    assert!(dry.contains("dry run (read-only)") && dry.contains("<code>who=ops</code>"), "{dry}");

    // A failed run after an approved gate, then resumed to success.
    let flag = env.path("fixed");
    let rb = env.write(
        "rb.yaml",
        &runbook(&format!(
            "  - {{ id: ask, uses: log, confirm: \"Go on?\", with: {{ message: asked }} }}\n\
             \x20 - {{ id: switch, uses: exec, needs: [ask], with: {{ shell: 'test -f {} || {{ echo \"dns refused the change\" >&2; exit 3; }}' }} }}\n",
            flag.display()
        )),
    );
    assert_eq!(env.run(&["run", rb.to_str().unwrap(), "--yes"]).status.code(), Some(1));
    let id = env.last_run_id();
    let failed = page(&id);
    assert!(failed.contains("<div class=\"banner bad\">Run failed"), "{failed}");
    assert!(
        failed.contains("failed step <code>switch</code>: ") && failed.contains("dns refused the change"),
        "{failed}"
    );
    assert!(failed.contains(&format!("then: drover resume {id}</code>")), "the exact next command: {failed}");
    assert!(failed.contains("<dt>gate ask</dt><dd>approved by <b>--yes"), "{failed}");
    assert!(failed.contains("real run (changes the world)"), "{failed}");

    std::fs::write(&flag, "").unwrap();
    assert_eq!(env.run(&["resume", &id]).status.code(), Some(0));
    let resumed = page(&id);
    assert!(resumed.contains("<div class=\"banner ok\">Run succeeded"), "{resumed}");
    assert!(resumed.contains("<dt>crashes and resumes</dt><dd>1 resume(s)"), "{resumed}");
    assert!(resumed.contains(">resumed (2)</text>"), "the resume is marked on the timeline: {resumed}");

    for p in [&dry, &failed, &resumed] {
        assert!(p.contains("max-width:1360px") && p.contains("viewBox="), "fits a 1400 px window");
        assert!(!p.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width="), "no fixed-width picture");
        assert!(!p.contains("src=\"") && !p.contains("href=\"http"), "self-contained");
    }
}
