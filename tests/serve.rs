//! `drover serve`, driven over HTTP as the page's browser would (a real drover run, a real
//! `drover serve` process): the run listed, its page live with the gate that waits, the gate
//! approved from the page and recorded as `drover approve` records it, the journal's growth
//! pushed as server-sent events, and a token required off loopback.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self) -> Command {
        common::command(&self.dir.path().join("state"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `drover serve ARGS` with `env` set; its address, read from its first line.
    fn serve(&self, env: &[(&str, &str)], args: &[&str]) -> (Server, String) {
        let mut child = self
            .cmd()
            .envs(env.iter().copied())
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{first}"));
        (Server(child), url.trim_end_matches('/').to_string())
    }
}

/// Stops the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> (u16, String) {
    let r = reqwest::blocking::get(url).unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

const GATED: &str = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: switch }\nsteps:\n\
  - { id: confirm, uses: log, confirm: \"Switch users to west?\", with: { message: go } }\n\
  - { id: switch, uses: log, needs: [confirm], with: { message: switched } }\n";

#[test]
fn a_gate_is_approved_from_the_live_page_and_journaled_like_drover_approve() {
    let env = Env::new();
    let rb = env.write("rb.yaml", GATED);
    let run =
        env.cmd().args(["run", rb.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (_server, url) = env.serve(&[], &["--listen", "127.0.0.1:0"]);

    // The run appears, and its page shows the gate as a form.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page, id) = loop {
        assert!(Instant::now() < deadline, "the gate never showed on the page");
        let (code, index) = get(&format!("{url}/"));
        assert_eq!(code, 200, "{index}");
        if let Some(id) = index.split("href=\"/runs/").nth(1).and_then(|t| t.split('"').next()) {
            let (_, page) = get(&format!("{url}/runs/{id}"));
            if page.contains("waits for approval") {
                break (page, id.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(page.contains("Step <code>confirm</code> waits for approval: Switch users to west?"), "{page}");
    assert!(page.contains(&format!("action=\"/runs/{id}/gates/confirm\"")), "{page}");
    assert!(page.contains("new EventSource"), "the page follows the run: {page}");

    // The journal's growth is pushed to the page.
    let mut events = reqwest::blocking::Client::new().get(format!("{url}/runs/{id}/events")).send().unwrap();
    assert_eq!(events.status().as_u16(), 200);

    // An answer without a name is refused; then alice approves from the page.
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let refused = client
        .post(format!("{url}/runs/{id}/gates/confirm"))
        .form(&[("by", " "), ("answer", "approve")])
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let approved = client
        .post(format!("{url}/runs/{id}/gates/confirm"))
        .form(&[("by", "alice"), ("answer", "approve")])
        .send()
        .unwrap();
    assert_eq!(approved.status().as_u16(), 303, "back to the run's page");

    let out = run.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("approved by alice"), "{said}");
    let mut pushed = [0u8; 64];
    let n = events.read(&mut pushed).unwrap();
    assert!(String::from_utf8_lossy(&pushed[..n]).contains("data: journal"), "{:?}", &pushed[..n]);

    // The finished run's page is its report, with the approval; the gate is no longer a form.
    let (_, done) = get(&format!("{url}/runs/{id}"));
    assert!(done.contains("<dt>gate confirm</dt><dd>approved by <b>alice</b>"), "{done}");
    assert!(!done.contains("<form"), "{done}");
    let again = client
        .post(format!("{url}/runs/{id}/gates/confirm"))
        .form(&[("by", "bob"), ("answer", "deny")])
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 409, "a finished run has nothing to approve");
    let said = again.text().unwrap();
    assert!(said.contains(&format!("drover status {id}")), "the refusal says where to look: {said}");
}

#[test]
fn off_loopback_the_page_needs_its_token() {
    let env = Env::new();
    let out = env.cmd().args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("without a token") && said.contains("--token env:VARIABLE"), "{said}");

    // A token read from a variable that is not set: the error says what to export.
    let out = env.cmd().args(["serve", "--token", "env:DROVER_TEST_NO_TOKEN"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("export DROVER_TEST_NO_TOKEN"), "{said}");

    // Bound to loopback here (tests talk to 127.0.0.1 only), but with a token: it is required.
    let (_server, url) =
        env.serve(&[("PAGE_TOKEN", "t0k3n-for-the-bridge")], &["--listen", "127.0.0.1:0", "--token", "env:PAGE_TOKEN"]);
    assert_eq!(get(&format!("{url}/")).0, 401);
    assert_eq!(get(&format!("{url}/?token=wrong")).0, 401);
    let client = reqwest::blocking::Client::new();
    let with_query = client.get(format!("{url}/?token=t0k3n-for-the-bridge")).send().unwrap();
    assert_eq!(with_query.status().as_u16(), 200);
    let cookie = with_query.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("drover_token=") && cookie.contains("HttpOnly"), "{cookie}");
    let by_cookie = client.get(format!("{url}/")).header("cookie", cookie.split(';').next().unwrap()).send().unwrap();
    assert_eq!(by_cookie.status().as_u16(), 200);
    let by_bearer = client.get(format!("{url}/")).bearer_auth("t0k3n-for-the-bridge").send().unwrap();
    assert_eq!(by_bearer.status().as_u16(), 200);
}
