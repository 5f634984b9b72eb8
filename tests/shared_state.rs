//! Shared state on S3 (`--state s3://…`), against two real S3 servers started here — moto and
//! s3s-fs (which also checks signatures): two drover processes racing for the same scope —
//! exactly one runs; a run failed at one site is seen and resumed from the other site's empty
//! state dir without re-running what succeeded; a lock left by a dead host needs `--break-lock`
//! and a confirmation; wrong credentials stop drover before it runs anything.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use drover_api::testing::{Moto, S3S_ACCESS_KEY, S3S_SECRET_KEY, S3sFs};

enum Server {
    Moto(Moto),
    S3sFs(S3sFs),
}

struct Site {
    server: Server,
    dir: tempfile::TempDir,
}

const STATE: &str = "s3://drover-state/dr?path_style=true";

async fn site(moto: bool) -> Site {
    let server = if moto { Server::Moto(Moto::start().unwrap()) } else { Server::S3sFs(S3sFs::start().unwrap()) };
    let site = Site { server, dir: tempfile::tempdir().unwrap() };
    site.s3().create_bucket().bucket("drover-state").send().await.unwrap();
    site
}

impl Site {
    fn s3(&self) -> aws_sdk_s3::Client {
        match &self.server {
            Server::Moto(m) => m.s3(),
            Server::S3sFs(s) => s.s3(),
        }
    }

    fn url(&self) -> &str {
        match &self.server {
            Server::Moto(m) => m.url(),
            Server::S3sFs(s) => s.url(),
        }
    }

    /// drover as run at one site: its own state dir, the shared state in S3.
    fn drover(&self, local: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
        c.args(["--state", STATE])
            .args(args)
            .env("DROVER_STATE_DIR", self.dir.path().join(local))
            .env("AWS_ENDPOINT_URL", self.url())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", S3S_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3S_SECRET_KEY)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn runbook(&self, name: &str, steps: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: {name} }}\nsteps:\n{steps}"),
        )
        .unwrap();
        path
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn blocking(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

/// Each scenario as its own test against each server.
macro_rules! on_moto_and_s3s_fs {
    ($($scenario:ident),* $(,)?) => {
        mod moto {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::site(true).await).await })*
        }
        mod s3s_fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::site(false).await).await })*
        }
    };
}

on_moto_and_s3s_fs!(
    two_sites_racing_to_fail_over_exactly_one_runs,
    a_run_failed_at_one_site_is_resumed_from_the_other,
    a_lock_left_by_a_dead_site_needs_break_lock_and_a_confirmation,
    the_bridge_page_at_one_site_follows_a_run_at_the_other,
);

async fn two_sites_racing_to_fail_over_exactly_one_runs(s: Site) {
    let rb = s.runbook("failover-shop", "  - { id: work, uses: exec, with: { command: sleep, args: ['1.5'] } }\n");
    let rb = rb.to_str().unwrap().to_string();
    let (a, b) = (s.drover("east", &["run", &rb, "--yes"]), s.drover("west", &["run", &rb, "--yes"]));
    let (a, b) = tokio::join!(blocking(a), blocking(b));
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(4)), "{codes:?}\n{}\n{}", text(&a), text(&b));
    let loser = if a.status.code() == Some(4) { &a } else { &b };
    let t = text(loser);
    assert!(t.contains("of `failover-shop` is in progress on host") && t.contains("since"), "{t}");
    // The winner released the lock: a third run goes ahead.
    let again = blocking(s.drover("west", &["run", &rb, "--yes"])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

async fn a_run_failed_at_one_site_is_resumed_from_the_other(s: Site) {
    let log = s.dir.path().join("ran.log");
    let ready = s.dir.path().join("dr-ready");
    let steps = format!(
        "  - {{ id: first, uses: exec, with: {{ shell: 'echo first >> {log}' }} }}\n  - {{ id: second, needs: [first], uses: exec, with: {{ shell: 'test -e {ready} && echo second >> {log}' }} }}\n",
        log = log.display(),
        ready = ready.display()
    );
    let rb = s.runbook("move-shop", &steps);
    let failed = blocking(s.drover("east", &["run", rb.to_str().unwrap(), "--yes"])).await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));

    // The other site starts with an empty state dir: the run comes from S3.
    let status = blocking(s.drover("west", &["status"])).await;
    assert!(text(&status).contains("move-shop"), "{}", text(&status));
    std::fs::write(&ready, "").unwrap();
    let resumed = blocking(s.drover("west", &["resume", "latest", "--yes"])).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\n", "first ran once");
    // And the first site sees how it ended.
    let report = blocking(s.drover("east", &["report", "latest", "--format", "json"])).await;
    assert!(text(&report).contains("\"outcome\": \"succeeded\""), "{}", text(&report));
}

/// `drover serve` at west, started before east's run exists, follows it through S3: listed,
/// shown running with its gate (answered at east, where the run works), then how it ended.
async fn the_bridge_page_at_one_site_follows_a_run_at_the_other(s: Site) {
    use std::io::BufRead;
    let mut serve = s.drover("west", &["serve", "--listen", "127.0.0.1:0"]);
    let mut serve = serve.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("following s3://drover-state/dr"), "{first}");
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_string();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Stop(serve);

    let rb = s.runbook(
        "switch-shop",
        "  - { id: confirm, uses: log, confirm: \"Switch users to west?\", with: { message: go } }\n  - { id: switch, needs: [confirm], uses: log, with: { message: switched } }\n",
    );
    let run = s.drover("east", &["run", rb.to_str().unwrap()]);
    let run = tokio::task::spawn_blocking(move || {
        let mut run = run;
        run.output().unwrap()
    });
    let page_until = |what: &'static str, wanted: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let index = reqwest::get(format!("{url}/")).await.unwrap().text().await.unwrap();
                if let Some(id) = index.split("href=\"/runs/").nth(1).and_then(|t| t.split('"').next()) {
                    let page = reqwest::get(format!("{url}/runs/{id}")).await.unwrap().text().await.unwrap();
                    if wanted.iter().all(|w| page.contains(w)) {
                        return (id.to_string(), page);
                    }
                    assert!(std::time::Instant::now() < deadline, "{what}: not on west's page:\n{page}");
                } else {
                    assert!(std::time::Instant::now() < deadline, "{what}: the run never listed:\n{index}");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let (id, page) = page_until("the gate waiting at east", &["waits for approval: Switch users to west?"]).await;
    assert!(page.contains("Running — each step turns green"), "east's lock says it runs: {page}");
    assert!(page.contains(&format!("answer there with <code>drover approve {id} confirm</code>")), "{page}");
    assert!(!page.contains("<form"), "west cannot answer a gate of east's process: {page}");

    let approved = blocking(s.drover("east", &["approve", &id, "confirm", "--by", "carol"])).await;
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    page_until("how the run ended", &["Run succeeded", "approved by <b>carol</b>"]).await;
}

async fn a_lock_left_by_a_dead_site_needs_break_lock_and_a_confirmation(s: Site) {
    let holder = r#"{ "run_id": "20261123T010000Z-failover-shop-dead", "host": "east-bastion", "pid": 4242, "since": "2026-11-23T01:00:00Z" }"#;
    s.s3()
        .put_object()
        .bucket("drover-state")
        .key("dr/locks/failover-shop.json")
        .body(holder.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let rb = s.runbook("failover-shop", "  - { id: work, uses: log, with: { message: ok } }\n");
    let rb = rb.to_str().unwrap();
    let held = blocking(s.drover("west", &["run", rb, "--yes"])).await;
    assert_eq!(held.status.code(), Some(4), "{}", text(&held));
    assert!(text(&held).contains("run 20261123T010000Z-failover-shop-dead of `failover-shop` is in progress on host east-bastion (pid 4242) since 2026-11-23T01:00:00Z"), "{}", text(&held));
    // --break-lock without a terminal to confirm at and without --yes: refused.
    let mut unconfirmed = s.drover("west", &["run", rb, "--break-lock"]);
    unconfirmed.stdin(Stdio::null());
    let refused = blocking(unconfirmed).await;
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(text(&refused).contains("Take it over?"), "{}", text(&refused));
    let taken = blocking(s.drover("west", &["run", rb, "--break-lock", "--yes"])).await;
    assert_eq!(taken.status.code(), Some(0), "{}", text(&taken));
    let left = s.s3().get_object().bucket("drover-state").key("dr/locks/failover-shop.json").send().await;
    assert!(left.is_err(), "the lock is released after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_stop_drover_before_it_runs_anything() {
    let s = site(false).await;
    let marker = s.dir.path().join("ran");
    let rb = s.runbook(
        "failover-shop",
        &format!("  - {{ id: work, uses: exec, with: {{ shell: 'touch {}' }} }}\n", marker.display()),
    );
    let mut c = s.drover("west", &["run", rb.to_str().unwrap(), "--yes"]);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-8c1e");
    let out = blocking(c).await;
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(!marker.exists(), "nothing ran: {t}");
    assert_eq!(out.status.code(), Some(5), "a state error: {t}");
    assert!(
        t.contains("cannot use the shared state: the state bucket s3://drover-state: access denied (HTTP 403"),
        "{t}"
    );
    assert!(t.contains("hint: check --state and the AWS settings"), "{t}");
    assert!(!t.contains("not-the-secret-8c1e"), "the secret is never shown: {t}");
}

/// The journal's last records reach S3 even when S3 answers slowly: records written while a
/// copy was in flight are copied when the run ends (they were lost — the other site then
/// resumed from a journal without the run's last steps). Against moto behind a slow link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_records_reach_a_slow_s3_when_the_run_ends() {
    use drover::journal::shared::SharedState;
    use drover_api::testing::SlowLink;

    let s = site(true).await;
    let slow = SlowLink::to(s.url(), std::time::Duration::from_millis(800)).await;
    let shared = SharedState::new(drover_api::testing::s3_client(&slow.url(), "test", "test"), "drover-state", "dr");
    let journal = s.dir.path().join("journal.jsonl");
    std::fs::write(&journal, "first\n").unwrap();

    let mirror = shared.mirror("run-1", &journal);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // the first copy is in flight
    let mut f = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    std::io::Write::write_all(&mut f, b"second\n").unwrap();
    drop(f);
    assert!(mirror.finish().await, "the final copy is reported taken");

    let copy = s.s3().get_object().bucket("drover-state").key("dr/runs/run-1/journal.jsonl").send().await.unwrap();
    let copy = copy.body.collect().await.unwrap().into_bytes();
    assert_eq!(String::from_utf8_lossy(&copy), "first\nsecond\n");
}
