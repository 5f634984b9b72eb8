//! Telling people: a webhook call when a gate waits for an answer and when a run ends.
//!
//! A notification is a courtesy to the bridge, never a condition of the run: each is sent in
//! the background, retried a few times, and a webhook that cannot be reached costs the run a
//! warning, nothing more. Before the run ends drover waits a little for the last message to
//! leave. Secrets never leave in a body: every secret the run can read (the sites' credentials,
//! the webhooks' own) is masked in each message, since an error text may quote one.
//!
//! Each message's fate is journaled (`notified`: told, refused, unreachable, still on its way
//! when the run ended, or a webhook left out for a secret it could not read), so the report
//! says who on the bridge was told what — and who was not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::engine::EventSink;
use crate::engine::events::{Event, Outcome, RunMode, RunOutcome, now_rfc3339};
use crate::runbook::Loaded;
use crate::runbook::notify::{Notify, NotifyFormat, NotifyOn, Setting};

/// Attempts per message, and the pause before each retry.
const PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// One attempt's limit: a webhook slower than this is treated as down.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook with its secrets read.
struct Hook {
    name: String,
    url: String,
    format: NotifyFormat,
    on: Vec<NotifyOn>,
    headers: Vec<(String, String)>,
    link: Option<String>,
}

/// What one notification says.
#[derive(Debug, Clone)]
struct Message {
    on: NotifyOn,
    /// `gate_waiting`, `run_succeeded`, `run_failed`, `run_rolled_back`, `run_stopped`.
    event: &'static str,
    step: Option<String>,
    /// A sentence: what happened.
    text: String,
    /// The command that continues.
    next: Option<String>,
}

/// A message on its way: what its journal record will say it was about.
#[derive(Clone)]
struct Pending {
    webhook: String,
    about: &'static str,
    step: Option<String>,
}

/// How one message went.
struct Delivery {
    delivered: bool,
    detail: String,
    attempts: u32,
}

impl Pending {
    fn record(self, d: Delivery) -> Event {
        Event::Notified {
            webhook: self.webhook,
            about: self.about.into(),
            step: self.step,
            delivered: d.delivered,
            detail: d.detail,
            attempts: d.attempts,
        }
    }
}

/// Watches a run's events and tells the webhooks.
pub struct Notifier {
    hooks: Vec<Arc<Hook>>,
    /// Where each message's fate is recorded: the journal, and the view downstream of the
    /// notifier (never the notifier's own input).
    sink: EventSink,
    /// Webhooks left out of the run (name, why), recorded once the run has begun.
    left_out: Vec<(String, String)>,
    /// Messages on their way, by number: whoever removes one records it.
    pending: Arc<Mutex<BTreeMap<u64, Pending>>>,
    next: u64,
    client: reqwest::Client,
    run_id: String,
    runbook: String,
    dry_run: bool,
    /// Every secret value the run can read, longest first: masked in bodies.
    secrets: Arc<Vec<String>>,
    /// The first step that failed, for the failure message.
    failed: Option<(String, String)>,
    sending: JoinSet<()>,
}

impl Notifier {
    /// The webhooks of this run, their secrets read now. A webhook whose secret cannot be read
    /// is left out with a warning (and a journal record): the run goes on.
    pub fn new(loaded: &Loaded, run_id: &str, mode: RunMode, sink: EventSink) -> Option<Notifier> {
        if loaded.runbook.notify.is_empty() {
            return None;
        }
        let mut secrets = site_secrets(loaded);
        let mut hooks = vec![];
        let mut left_out = vec![];
        for n in &loaded.runbook.notify {
            match read_hook(n, &mut secrets) {
                Ok(hook) => hooks.push(Arc::new(hook)),
                Err(why) => left_out.push((n.name.clone(), why)),
            }
        }
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().ok()?;
        Some(Notifier {
            hooks,
            sink,
            left_out,
            pending: Arc::default(),
            next: 0,
            client,
            run_id: run_id.to_string(),
            runbook: loaded.runbook.name.clone(),
            dry_run: mode == RunMode::DryRun,
            secrets: Arc::new(secrets),
            failed: None,
            sending: JoinSet::new(),
        })
    }

    /// Note an event; send what it calls for.
    pub fn observe(&mut self, ev: &Event) {
        // The journal begins with the run's start: what was left out is recorded after it.
        for (webhook, why) in std::mem::take(&mut self.left_out) {
            let pending = Pending { webhook, about: "none", step: None };
            let _ = self.sink.emit(pending.record(Delivery { delivered: false, detail: why, attempts: 0 }));
        }
        let run = format!("{} run {} of `{}`", if self.dry_run { "dry" } else { "the" }, self.run_id, self.runbook);
        let message = match ev {
            Event::GateWaiting { step, message } => Message {
                on: NotifyOn::Gate,
                event: "gate_waiting",
                step: Some(step.clone()),
                text: format!("{run}: step `{step}` waits for approval: {message}"),
                next: Some(format!("drover approve {} {step} --by YOUR_NAME", self.run_id)),
            },
            Event::StepFinished { step, outcome: Outcome::Failed, error, .. } => {
                if self.failed.is_none() {
                    let why = error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "it failed".into());
                    self.failed = Some((step.clone(), why));
                }
                return;
            }
            Event::RunFinished { outcome: RunOutcome::Succeeded } => Message {
                on: NotifyOn::Success,
                event: "run_succeeded",
                step: None,
                text: format!("{run} succeeded"),
                next: Some(format!("drover report {}", self.run_id)),
            },
            Event::RunFinished { outcome } => {
                let (event, said) = match outcome {
                    RunOutcome::RolledBack => ("run_rolled_back", "failed and was rolled back"),
                    RunOutcome::Cancelled => ("run_stopped", "was stopped"),
                    _ => ("run_failed", "failed"),
                };
                let cause = match &self.failed {
                    Some((step, why)) => format!(" at step `{step}`: {why}"),
                    None => String::new(),
                };
                Message {
                    on: NotifyOn::Failure,
                    event,
                    step: self.failed.as_ref().map(|(s, _)| s.clone()),
                    text: format!("{run} {said}{cause}"),
                    next: Some(format!("drover status {0}; drover resume {0}", self.run_id)),
                }
            }
            _ => return,
        };
        for hook in self.hooks.iter().filter(|h| h.on.contains(&message.on)) {
            let body = mask(body(hook, &message, &self.run_id, &self.runbook, self.dry_run), &self.secrets);
            let (hook, client, sink, pending) =
                (hook.clone(), self.client.clone(), self.sink.clone(), self.pending.clone());
            let id = self.next;
            self.next += 1;
            let on_its_way = Pending { webhook: hook.name.clone(), about: message.event, step: message.step.clone() };
            pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, on_its_way);
            self.sending.spawn(async move {
                let delivery = deliver(&client, &hook, body).await;
                let mine = pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(p) = mine {
                    let _ = sink.emit(p.record(delivery));
                }
            });
        }
    }

    /// Wait, at most `within`, for messages still being sent; those still on their way are
    /// dropped and recorded as not told.
    pub async fn finish(mut self, within: Duration) {
        let all = async { while self.sending.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("some notifications were still being sent after {}; they are dropped", fmt(within));
        }
        let left = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for p in left.into_values() {
            let detail = format!("still being sent when the run ended; dropped after {}", fmt(within));
            let _ = self.sink.emit(p.record(Delivery { delivered: false, detail, attempts: 0 }));
        }
    }
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Read a webhook's secrets; note them to mask. `Err`: why it is left out of the run.
fn read_hook(n: &Notify, secrets: &mut Vec<String>) -> Result<Hook, String> {
    let read = |s: &Setting, what: &str, secrets: &mut Vec<String>| match s {
        Setting::Plain(v) => Ok(v.clone()),
        Setting::Secret(r) => match r.resolve() {
            Ok(v) => {
                secrets.push(v.expose().to_string());
                Ok(v.expose().to_string())
            }
            Err(e) => {
                let why = format!("left out of this run ({}:{}): its {what} {}", n.file.display(), n.line, e.message);
                tracing::warn!("webhook `{}` is {why}", n.name);
                Err(why)
            }
        },
    };
    let url = read(&n.url, "url", secrets)?;
    let mut headers = vec![];
    for (name, value) in &n.headers {
        headers.push((name.clone(), read(value, &format!("header {name}"), secrets)?));
    }
    Ok(Hook { name: n.name.clone(), url, format: n.format, on: n.on.clone(), headers, link: n.link.clone() })
}

/// The values of every secret reference in the sites' settings (`env:…`, `file:…`).
fn site_secrets(loaded: &Loaded) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with("env:") || s.starts_with("file:") => {
                if let Ok(r) = drover_api::SecretRef::parse(s)
                    && let Ok(secret) = r.resolve()
                {
                    out.push(secret.expose().to_string());
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    for site in loaded.sites.values() {
        walk(&site.settings, &mut out);
    }
    out
}

fn body(hook: &Hook, m: &Message, run_id: &str, runbook: &str, dry_run: bool) -> Value {
    let link = hook.link.as_ref().map(|l| format!("{l}/runs/{run_id}"));
    match hook.format {
        NotifyFormat::Json => json!({
            "event": m.event, "run_id": run_id, "runbook": runbook, "dry_run": dry_run, "step": m.step,
            "message": m.text, "next": m.next, "link": link, "at": now_rfc3339(),
        }),
        NotifyFormat::Slack => {
            let mut text = format!("*drover*: {}", m.text);
            if let Some(next) = &m.next {
                text.push_str(&format!("\nnext: `{next}`"));
            }
            if let Some(link) = &link {
                text.push_str(&format!("\n<{link}|the run's page>"));
            }
            json!({ "text": text })
        }
    }
}

/// Every secret value in the body's strings replaced by `***`.
fn mask(v: Value, secrets: &[String]) -> Value {
    match v {
        Value::String(mut s) => {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    s = s.replace(secret.as_str(), "***");
                }
            }
            Value::String(s)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|i| mask(i, secrets)).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, mask(v, secrets))).collect()),
        other => other,
    }
}

/// POST the body; retry a refusal the webhook may get over (5xx, 429, no answer).
async fn deliver(client: &reqwest::Client, hook: &Hook, body: Value) -> Delivery {
    let mut last = String::new();
    for attempt in 0..=PAUSES.len() {
        if attempt > 0 {
            tokio::time::sleep(PAUSES[attempt - 1]).await;
        }
        let attempts = attempt as u32 + 1;
        let mut request = client.post(&hook.url).json(&body);
        for (name, value) in &hook.headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                return Delivery { delivered: true, detail: format!("it answered {}", r.status()), attempts };
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                last = format!("it answered {}", r.status());
            }
            Ok(r) => {
                let detail = format!("refused: it answered {}; check its url and headers", r.status());
                tracing::warn!("webhook `{}` {detail}", hook.name);
                return Delivery { delivered: false, detail, attempts };
            }
            // Without the URL: it may hold the webhook's token.
            Err(e) => last = format!("it could not be reached ({})", describe(&e)),
        }
    }
    tracing::warn!("webhook `{}` was not told after {} attempts: {last}", hook.name, PAUSES.len() + 1);
    Delivery { delivered: false, detail: last, attempts: PAUSES.len() as u32 + 1 }
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "connection refused or no route"
    } else {
        "request failed"
    }
}
