//! The incident bridge's page in a real browser: headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`, which `bash .ci/run` installs) with the
//! fantoccini WebDriver client. The live page follows a lab failover (`drover lab up`: the ONTAP
//! simulator, real Kubernetes, BIND, HAProxy and moto) and its gate is approved from the page;
//! the frozen reports of a rehearsal, a success, a failure, a dry run and a resumed run are
//! opened from disk and read as the bridge would read them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

mod common;

/// A process stopped when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first so a lab stops the servers it started; then make sure.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ChromeDriver on a free loopback port, and a headless Chromium session through it.
async fn browser() -> (Guard, Client) {
    common::require_on_path(
        &["chromium", "chromedriver"],
        "apt-get install chromium chromium-driver; bash .ci/run installs them",
    );
    let started = drover_api::procs::start_on_free_ports(1, Duration::from_secs(30), |port| {
        let mut chromedriver = Command::new("chromedriver");
        chromedriver.arg(format!("--port={}", port[0])).stdout(Stdio::null()).stderr(Stdio::null());
        chromedriver
    });
    let (driver, port) = started.unwrap_or_else(|e| panic!("{e}"));
    let (driver, port) = (Guard(driver), port[0]);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--no-proxy-server"]
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() > deadline => panic!("ChromeDriver did not start a browser: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Wait until `script` (a JavaScript expression) is true in the page, or fail saying `what`.
async fn until(c: &Client, what: &str, script: &str, within: Duration) {
    if let Err(e) = wait_for(c, what, script, within).await {
        panic!("{e}");
    }
}

/// `until`, returning the failure (with what the page reads) for the caller to add to.
async fn wait_for(c: &Client, what: &str, script: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let v = c.execute(&format!("return !!({script});"), vec![]).await.unwrap();
        if v.as_bool() == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let body = c.execute("return document.body.innerText", vec![]).await.unwrap();
            return Err(format!(
                "{what}: not seen within {within:?}; the page reads:\n{}",
                body.as_str().unwrap_or("")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// The state one box of the graph shows: succeeded, running, failed, pending…
async fn box_state(c: &Client, step: &str) -> String {
    let v = c
        .execute(
            "const n=document.querySelector(`g.node[data-step=\"${arguments[0]}\"]`);return n?n.dataset.state:null;",
            vec![serde_json::json!(step)],
        )
        .await
        .unwrap();
    v.as_str().unwrap_or_else(|| panic!("no box for step `{step}` in the graph")).to_string()
}

/// `drover lab up` in the background: the sites file and the params its `try:` line prints.
fn lab_up(state: &Path, dir: &Path) -> (Guard, Vec<String>) {
    common::require_on_path(&["named", "haproxy", "moto_server"], "the full lab; bash .ci/run installs it");
    // Its log goes to a file, so a lab that does not come up says why.
    std::fs::create_dir_all(state).unwrap();
    let log = state.join("lab-up.stderr");
    let mut child = common::command(state)
        .args(["lab", "up", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let guard = Guard(child);
    let mut args = vec![];
    for line in lines.by_ref() {
        let line = line.unwrap();
        let line = line.trim();
        if let Some(try_line) = line.strip_prefix("try: drover failover ") {
            args.extend(try_line.split_whitespace().filter(|w| *w != "--yes").map(str::to_string));
        } else if line.starts_with("--param") {
            args.extend(line.split_whitespace().map(str::to_string));
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(
        args.iter().any(|a| a == "--sites"),
        "drover lab up did not say how to use it; it wrote:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (guard, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_watches_a_lab_failover_and_approves_its_gate_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_lab, lab_args) = lab_up(&state, &dir.path().join("lab"));
    let (_driver, c) = browser().await;

    // A live rehearsal first: its report says it is one, and that every step succeeded.
    let mut rehearse = vec!["rehearse", "--live", "--yes"];
    rehearse.extend(lab_args.iter().map(String::as_str));
    let out = common::drover(&state, &rehearse);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = state.join("rehearsal.html");
    let out = common::drover(&state, &["report", "--format", "html", "--out", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    c.goto(&format!("file://{}", report.display())).await.unwrap();
    assert!(text(&c, ".banner.dry").await.starts_with("REHEARSAL — production was not touched"));
    assert!(text(&c, ".banner.ok").await.contains("Rehearsal succeeded"));
    let states: Vec<String> = serde_json::from_value(
        c.execute("return [...document.querySelectorAll('g.node')].map(n=>n.dataset.state)", vec![]).await.unwrap(),
    )
    .unwrap();
    assert!(!states.is_empty() && states.iter().all(|s| s == "succeeded" || s == "pending"), "{states:?}");

    // The failover, with no one at its terminal: its gate waits for an answer.
    let (_server, url) = serve(&state);
    let log = dir.path().join("failover.log");
    let mut failover = common::command(&state);
    failover
        .arg("failover")
        .args(&lab_args)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap());
    let mut failover = Guard(failover.spawn().unwrap());

    c.goto(&format!("{url}/")).await.unwrap();
    // The index reloads itself: the failover's run appears first.
    until(
        &c,
        "the failover in the list of runs",
        "document.querySelector('a[href^=\"/runs/\"]')&&document.body.innerText.includes('failover')",
        Duration::from_secs(60),
    )
    .await;
    let href = c
        .execute("return [...document.querySelectorAll('a[href^=\"/runs/\"]')].map(a=>a.getAttribute('href')).find(h=>h.includes('failover'))", vec![])
        .await
        .unwrap();
    c.goto(&format!("{url}{}", href.as_str().unwrap())).await.unwrap();
    c.execute("window.sameDocument = true", vec![]).await.unwrap();

    // The checks before the gate turn green while we watch; then the gate shows as a form.
    until(&c, "the gate's form", "document.querySelector('form.banner input.who')", Duration::from_secs(120)).await;
    assert_eq!(box_state(&c, "check-dr").await, "succeeded");
    assert_eq!(box_state(&c, "break").await, "pending", "nothing past the gate ran before it was answered");
    assert!(text(&c, "form.banner").await.contains("Planned failover of"));
    assert_eq!(
        c.execute("return window.sameDocument === true", vec![]).await.unwrap(),
        serde_json::json!(true),
        "the page updated in place (server-sent events), it was not reloaded"
    );
    let ticking = text(&c, "#elapsed").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_ne!(text(&c, "#elapsed").await, ticking, "the elapsed time ticks while the run waits");

    // alice approves from the page; the run goes on, step by step, on the same page.
    // The form posts and the answer redirects to the run's page: a new document. Marked only
    // once it has loaded — a click returns before the navigation it starts, and on a loaded
    // machine the mark once landed on the old document.
    c.find(Locator::Css("form.banner input.who")).await.unwrap().send_keys("alice").await.unwrap();
    c.execute("window.beforeAnswer = true", vec![]).await.unwrap();
    c.find(Locator::Css("form.banner button[value=approve]")).await.unwrap().click().await.unwrap();
    until(
        &c,
        "the run's page after the answer",
        "window.beforeAnswer === undefined && document.readyState === 'complete'",
        Duration::from_secs(60),
    )
    .await;
    c.execute("window.sameDocument = true", vec![]).await.unwrap();
    let failed =
        |e: String| panic!("{e}\n\nthe failover's output:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    wait_for(
        &c,
        "the break step turning green",
        "document.querySelector('g.node[data-step=\"break\"][data-state=\"succeeded\"]')",
        Duration::from_secs(180),
    )
    .await
    .unwrap_or_else(failed);
    wait_for(&c, "the run's end", "document.querySelector('.banner.ok')", Duration::from_secs(180))
        .await
        .unwrap_or_else(failed);
    assert_eq!(c.execute("return window.sameDocument === true", vec![]).await.unwrap(), serde_json::json!(true));
    assert!(text(&c, ".banner.ok").await.contains("Run succeeded"));
    assert!(c.find(Locator::Css("form.banner")).await.is_err(), "an answered gate is no longer a form");
    let facts = text(&c, "dl").await;
    assert!(facts.contains("approved by alice"), "{facts}");
    assert!(facts.contains("RPO at the break"), "{facts}");
    assert!(text(&c, "#log").await.contains("break: succeeded"));

    let status = failover.0.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("approved by alice"), "{said}");
    c.close().await.unwrap();
}

/// `drover serve` on a free loopback port.
fn serve(state: &Path) -> (Guard, String) {
    let mut child = common::command(state)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{first}"));
    (Guard(child), url.trim_end_matches('/').to_string())
}

const FLAKY: &str = "apiVersion: drover/v1
kind: Runbook
metadata: { name: move-orders }
params:
  apps:
    type: list
    default: [{ name: orders }, { name: payments }, { name: shop }]
steps:
  - { id: check, uses: log, with: { message: checked } }
  - id: restore
    for_each: ${{ params.apps }}
    needs: [check]
    uses: exec
    with: { shell: \"test ${{ item.name }} != payments || test -f ready\" }
  - { id: switch, uses: log, needs: [restore], with: { message: switched } }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_of_a_failed_a_dry_and_a_resumed_run_read_right_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = dir.path().join("move.yaml");
    std::fs::write(&rb, FLAKY).unwrap();
    let work = dir.path().to_str().unwrap();
    let (_driver, c) = browser().await;
    let open = |name: &str| {
        let file = dir.path().join(name);
        let out = common::drover(&state, &["report", "--format", "html", "--out", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        format!("file://{}", file.display())
    };

    // A dry run: the banner says nothing was changed.
    let out = common::command(&state).current_dir(work).args(["run", "move.yaml", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    c.goto(&open("dry.html")).await.unwrap();
    assert!(text(&c, ".banner.dry").await.starts_with("DRY RUN — nothing was changed"));

    // A failure: payments is not ready. The banner names the step, its error and what to run.
    let out = common::command(&state).current_dir(work).args(["run", "move.yaml", "--yes"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    c.goto(&open("failed.html")).await.unwrap();
    let banner = text(&c, ".banner.bad").await;
    assert!(banner.contains("failed step restore[payments]"), "{banner}");
    assert!(banner.contains("drover resume"), "{banner}");
    assert_eq!(box_state(&c, "restore").await, "failed");
    assert_eq!(box_state(&c, "switch").await, "pending");
    assert!(text(&c, "#step-restore").await.contains("restore ×3"), "a fanned step is one row");
    let visible = c.find(Locator::Css("tr.fan + tr")).await.unwrap().text().await.unwrap();
    assert!(visible.contains("restore[payments]"), "the failed instance is shown in full: {visible}");
    // The graph's box links to the step's row.
    c.find(Locator::Css("g.node[data-step=\"restore\"]")).await.unwrap().click().await.unwrap();
    until(&c, "the step's row in view", "location.hash === '#step-restore'", Duration::from_secs(5)).await;

    // Fixed and resumed: the report marks the resume and ends green.
    std::fs::write(dir.path().join("ready"), "").unwrap();
    let out = common::command(&state).current_dir(work).args(["resume", "latest", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    c.goto(&open("resumed.html")).await.unwrap();
    assert!(text(&c, ".banner.ok").await.contains("Run succeeded"));
    assert!(text(&c, "dl").await.contains("crashes and resumes"));
    assert!(text(&c, "svg[aria-label=timeline]").await.contains("resumed (2)"));
    for step in ["check", "restore", "switch"] {
        assert_eq!(box_state(&c, step).await, "succeeded", "{step}");
    }
    // It fits a 1400 px window: nothing wider than the page.
    let wide = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(wide, serde_json::json!(true), "the report scrolls sideways at 1400 px");
    c.close().await.unwrap();
}
