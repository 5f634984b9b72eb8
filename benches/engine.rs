//! Engine overhead on generated 10,000-step runbooks: validate + plan, and a run of no-op
//! steps with the journal on disk (durable), for a chain, a wide fan-out/fan-in, a random
//! DAG with three needs per step on average, and a fleet: four steps with `for_each` over an
//! inventory of 2,500 items (10,000 instances, each item's steps paired).
//!
//! The same runs' HTML reports, and the first paint of `drover serve`'s page of the fleet run in
//! headless Chromium.
//!
//!   cargo bench --bench engine
//!
//! Targets on a 2-core machine: validate + plan < 100 ms; run < 2 s; report < 1 s and < 5 MB;
//! the page's first paint < 1 s.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

mod common;
use common::median;

use drover::engine::events::{RunMode, RunOutcome};
use drover::engine::{AutoApprove, EventSink, ExecuteOptions, StopSignal, execute};
use drover::journal::Journal;
use drover::journal::state::{RunState, StateDir};
use drover::registry::Registry;
use drover::report::{Report, render_html};
use drover::runbook::{LoadOptions, load_source};
use drover_api::{Action, ActionError, ActionInfo, Outputs, ParamError, Plan, StepContext};

const STEPS: usize = 10_000;

fn main() {
    divan::main();
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Chain,
    FanOutIn,
    RandomDag,
    Fleet,
}

/// A step that does nothing; `side_effects` decides whether its start must be durable first.
struct Noop(ActionInfo);

#[async_trait]
impl Action for Noop {
    fn info(&self) -> &ActionInfo {
        &self.0
    }
    fn check_params(&self, _: &Value) -> Result<(), Vec<ParamError>> {
        Ok(())
    }
    async fn plan(&self, _: &StepContext, _: &Value) -> Result<Plan, ActionError> {
        Ok(Plan::default())
    }
    async fn run(&self, _: &StepContext, _: &Value) -> Result<Outputs, ActionError> {
        Ok(Outputs::new())
    }
}

fn registry() -> Registry {
    let noop = |name: &str, side_effects| {
        Arc::new(Noop(ActionInfo {
            name: name.into(),
            summary: String::new(),
            params: json!({}),
            outputs: vec![],
            side_effects,
            undo: false,
            open_outputs: true,
            sites: vec![],
            rpo_output: None,
            prepares: None,
        })) as Arc<dyn Action>
    };
    Registry::builtin().with(noop("noop", true)).with(noop("noop.pure", false))
}

/// Four steps fanned out over 2,500 items: 10,000 instances.
fn fleet(action: &str) -> String {
    let mut s = String::from(
        "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: bench }\nconcurrency: 64\nparams:\n  apps:\n    type: list\n    default:\n",
    );
    for i in 0..STEPS / 4 {
        s.push_str(&format!("      - {{ name: app{i:04}, tier: {}, volume: vol{i:04} }}\n", i % 3 + 1));
    }
    s.push_str("steps:\n");
    let mut before: Option<&str> = None;
    for id in ["break", "restore", "verify", "switch"] {
        let needs = before.map(|b| format!(", needs: [{b}]")).unwrap_or_default();
        s.push_str(&format!(
            "  - {{ id: {id}, for_each: \"${{{{ params.apps }}}}\", uses: {action}{needs}, with: {{ value: \"${{{{ item.volume }}}}\" }} }}\n"
        ));
        before = Some(id);
    }
    s
}

fn runbook(shape: Shape, action: &str) -> String {
    if let Shape::Fleet = shape {
        return fleet(action);
    }
    let mut s =
        String::from("apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: bench }\nconcurrency: 64\nsteps:\n");
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut rand = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for i in 0..STEPS {
        let needs: Vec<usize> = match shape {
            Shape::Chain if i > 0 => vec![i - 1],
            Shape::FanOutIn if i > 0 && i < STEPS - 1 => vec![0],
            Shape::FanOutIn if i == STEPS - 1 => (1..STEPS - 1).collect(),
            Shape::RandomDag if i > 0 => {
                let mut v: Vec<usize> = (0..3.min(i)).map(|_| rand(i)).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            _ => vec![],
        };
        let needs: Vec<String> = needs.iter().map(|n| format!("s{n}")).collect();
        s.push_str(&format!("  - {{ id: s{i}, uses: {action}, needs: [{}] }}\n", needs.join(", ")));
    }
    s
}

const SHAPES: [Shape; 4] = [Shape::Chain, Shape::FanOutIn, Shape::RandomDag, Shape::Fleet];

#[divan::bench(args = SHAPES, sample_count = 10)]
fn validate_and_plan(bencher: divan::Bencher, shape: Shape) {
    let reg = registry();
    let text = runbook(shape, "noop");
    bencher.bench_local(|| {
        let loaded = load_source(Path::new("bench.yaml"), &text, &reg, &LoadOptions::default()).expect("valid");
        assert_eq!(loaded.runbook.steps.len(), STEPS);
        let levels = loaded.dag.levels();
        let path = loaded.dag.critical_path(|_| 1.0);
        divan::black_box((levels, path));
    });
}

/// Run `loaded` with its journal at `journal`; it must succeed.
async fn run_to_the_end(loaded: &drover::runbook::Loaded, journal: &Path, run_id: &str) {
    let journal = Journal::create(journal).unwrap();
    let opts = ExecuteOptions {
        run_id: run_id.into(),
        mode: RunMode::Run,
        concurrency: 64,
        approver: Arc::new(AutoApprove("bench".into())),
        sink: EventSink::new(Some(journal.clone()), None),
        stop: StopSignal::never(),
        resume: None,
        preflight: drover::engine::Preflight::Check { timeout: std::time::Duration::from_secs(600) },
    };
    let summary = execute(loaded, opts).await;
    journal.close().unwrap();
    assert_eq!(summary.outcome, RunOutcome::Succeeded);
}

fn run_steps(bencher: divan::Bencher, shape: Shape, action: &str) {
    let reg = registry();
    let text = runbook(shape, action);
    let loaded = load_source(Path::new("bench.yaml"), &text, &reg, &LoadOptions::default()).expect("valid");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    bencher.with_inputs(|| tempfile::tempdir().unwrap()).bench_local_values(|dir| {
        rt.block_on(run_to_the_end(&loaded, &dir.path().join("journal.jsonl"), "bench"));
        dir
    });
}

/// Steps that change the world: each start is on disk before the step proceeds.
#[divan::bench(args = SHAPES, sample_count = 5)]
fn run_durable_starts(bencher: divan::Bencher, shape: Shape) {
    run_steps(bencher, shape, "noop");
}

/// Read-only steps (waits, checks): their starts are group-committed with the next record.
#[divan::bench(args = SHAPES, sample_count = 5)]
fn run_read_only_steps(bencher: divan::Bencher, shape: Shape) {
    run_steps(bencher, shape, "noop.pure");
}

/// A finished run of `shape` (no-op steps) in a state directory at `root`, as `drover run`
/// leaves it: the journal under runs/ID/. Its id.
fn finished_run(shape: Shape, root: &Path) -> String {
    let reg = registry();
    let loaded = load_source(Path::new("bench.yaml"), &runbook(shape, "noop.pure"), &reg, &LoadOptions::default())
        .expect("valid");
    let id = format!("20261202T000000Z-bench-{shape:?}").to_lowercase();
    let state = StateDir::new(root);
    std::fs::create_dir_all(state.run_dir(&id)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run_to_the_end(&loaded, &state.journal(&id), &id));
    id
}

/// What `drover report --format html` does: read the journal, build the report, render it.
fn report_page(journal: &Path) -> String {
    let (state, _) = RunState::load(journal).unwrap();
    render_html(&Report::from_state(&state))
}

/// The HTML report of a finished 10,000-step run. Targets: < 1 s, < 5 MB (its size is printed).
#[divan::bench(args = SHAPES, sample_count = 5)]
fn report_html(bencher: divan::Bencher, shape: Shape) {
    let dir = tempfile::tempdir().unwrap();
    let id = finished_run(shape, dir.path());
    let journal = StateDir::new(dir.path()).journal(&id);
    eprintln!("report of {shape:?}: {} KB of HTML", report_page(&journal).len() / 1000);
    bencher.bench_local(|| report_page(&journal).len());
}

/// `drover serve` over a state directory, and a headless Chromium (through ChromeDriver) to
/// open its pages; both stopped on drop. None, with a word, without chromium and chromedriver.
struct Page {
    rt: tokio::runtime::Runtime,
    client: fantoccini::Client,
    url: String,
    /// Runs a bench has already used.
    seen: Vec<String>,
    serve: std::process::Child,
    driver: std::process::Child,
}

impl Page {
    fn open(root: &Path) -> Option<Page> {
        let found = |bin: &str| drover_api::procs::on_path(bin).is_some();
        if !found("chromium") || !found("chromedriver") {
            eprintln!(
                "skipped: the page benches need chromium and chromedriver (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (page_port, driver_port) = (port(), port());
        let serve = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["serve", "--listen", &format!("127.0.0.1:{page_port}"), "--state-dir"])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let client = rt.block_on(async {
            let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
                "goog:chromeOptions": { "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000"] }
            }))
            .unwrap();
            for _ in 0..100 {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                if let Ok(c) = fantoccini::ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{driver_port}"))
                    .await
                {
                    return c;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            panic!("chromedriver did not start a browser");
        });
        Some(Page { rt, client, url: format!("http://127.0.0.1:{page_port}"), seen: vec![], serve, driver })
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.client.clone().close());
        for child in [&mut self.serve, &mut self.driver] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `drover serve`'s page of a finished 10,000-step fleet run (2,500 apps × 4 steps), opened in
/// headless Chromium: the time to its load event (the bench's figure) and its first contentful
/// paint (printed, median). Target: first paint < 1 s.
#[divan::bench(sample_count = 5)]
fn page_first_paint(bencher: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let id = finished_run(Shape::Fleet, dir.path());
    let Some(page) = Page::open(dir.path()) else { return };
    let url = format!("{}/runs/{id}", page.url);
    let mut paints = vec![];
    bencher.bench_local(|| {
        page.rt.block_on(async {
            page.client.goto(&url).await.unwrap();
            let fcp = page
                .client
                .execute(
                    "const p=performance.getEntriesByName('first-contentful-paint')[0];return p?p.startTime:null",
                    vec![],
                )
                .await
                .unwrap();
            paints.push(fcp.as_f64().expect("a first contentful paint"));
        })
    });
    if !paints.is_empty() {
        let count = paints.len();
        eprintln!("page of a 10,000-step run: first contentful paint {:.0} ms (median of {count})", median(paints));
    }
}

const GATED: &str = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: gated }\nsteps:\n\
  - { id: confirm, uses: log, confirm: \"Go?\", with: { message: go } }\n\
  - { id: switch, uses: log, needs: [confirm], with: { message: switched } }\n";

/// How soon the live page shows a journal record: a run waits at its gate with its page open in
/// headless Chromium; `drover approve` answers; the delay from the approval's journal record to
/// the page's body being replaced (a MutationObserver's clock, the same machine's) is printed,
/// median of the samples. Target: < 200 ms. Needs chromium and chromedriver.
#[divan::bench(sample_count = 5)]
fn page_update_latency(bencher: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut page) = Page::open(dir.path()) else { return };
    let rb = dir.path().join("gated.yaml");
    std::fs::write(&rb, GATED).unwrap();
    let drover = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        c.args(args).arg("--state-dir").arg(dir.path()).stdin(std::process::Stdio::null());
        c
    };
    let mut delays = vec![];
    bencher.bench_local(|| {
        let mut run = drover(&["run", rb.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let id = loop {
            if let Some(id) = StateDir::new(dir.path()).list().into_iter().find(|id| !page.seen.contains(id)) {
                break id;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        page.seen.push(id.clone());
        let client = &page.client;
        page.rt.block_on(async {
            client.goto(&format!("{}/runs/{id}", page.url)).await.unwrap();
            while client.find(fantoccini::Locator::Css("form.banner")).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                client.refresh().await.unwrap();
            }
            client
                .execute(
                    "window.swaps=[];new MutationObserver(()=>swaps.push(Date.now())).observe(document.documentElement,{childList:true})",
                    vec![],
                )
                .await
                .unwrap();
        });
        let approved = drover(&["approve", &id, "confirm", "--by", "bench"]).output().unwrap();
        assert!(approved.status.success());
        run.wait().unwrap();
        let swaps = page.rt.block_on(async {
            while client.find(fantoccini::Locator::Css(".banner.ok")).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            client.execute("return swaps", vec![]).await.unwrap()
        });
        let (state, _) = RunState::load(&StateDir::new(dir.path()).journal(&id)).unwrap();
        let at = state
            .records
            .iter()
            .find(|r| matches!(r.event, drover::engine::events::Event::GateApproved { .. }))
            .map(|r| humantime::parse_rfc3339_weak(&r.at).unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        let first = swaps.as_array().unwrap().iter().filter_map(Value::as_f64).find(|&t| t >= at);
        delays.push(first.expect("the page changed after the approval") - at);
    });
    if !delays.is_empty() {
        delays.sort_by(f64::total_cmp);
        eprintln!(
            "live page: a journal record shown {:.0} ms after it was written (median of {}; all: {delays:?})",
            median(delays.clone()),
            delays.len()
        );
    }
}
