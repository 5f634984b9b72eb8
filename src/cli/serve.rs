//! `drover serve`: the incident bridge's page. Every run of the state directory, and for one
//! run the same page as its report — live: it follows the journal as the run writes it — with
//! the gates that wait answerable from the page, recorded exactly as `drover approve` records
//! them. Bound to 127.0.0.1 unless told otherwise; anywhere else a token is required, since the
//! page shows the runs and answers their gates. Everything the page needs is in the page.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clap::Args;
use serde::Deserialize;

use super::out::outln;
use super::{Cli, CliError, exit};
use crate::journal::lock;
use crate::journal::state::{RunState, StateDir};
use crate::report::{Report, render_html};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The token a browser must present (`?token=`, then a cookie; or `Authorization: Bearer`),
    /// as a reference: `env:VAR` or `file:PATH`. Required when not bound to a loopback address.
    #[arg(long, value_name = "REF")]
    pub token: Option<String>,
}

struct Ctx {
    state: StateDir,
    root: PathBuf,
    token: Option<String>,
    /// With `--state`: the runs in progress at any site, as the shared locks say (refreshed
    /// with the journals every second).
    elsewhere: std::sync::Mutex<Vec<lock::LockInfo>>,
}

/// Where a run is being worked on.
enum Live {
    /// A process on this machine holds its lock: its gates can be answered from the page.
    Here,
    /// Another site's process holds its shared lock.
    Elsewhere(String),
    No,
}

impl Ctx {
    fn live(&self, id: &str, runbook: &str) -> Live {
        if lock::holder(&self.state.locks(), runbook).is_some_and(|h| h.run_id == id) {
            return Live::Here;
        }
        let elsewhere = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        match elsewhere.iter().find(|h| h.run_id == id) {
            Some(h) => Live::Elsewhere(h.host.clone()),
            None => Live::No,
        }
    }
}

/// Follow the shared state: fetch the journals that grew and who holds the locks, every second.
/// A failure is logged and retried; the page shows what was fetched last.
fn follow_shared(ctx: Arc<Ctx>, shared: crate::journal::shared::SharedState) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let fetched = async { Ok::<_, String>((shared.pull(&ctx.state).await?, shared.holders().await?)) }.await;
            match fetched {
                Ok((_, holders)) => {
                    *ctx.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) = holders;
                    if failing {
                        tracing::info!("{} answers again", shared.describe());
                    }
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!("cannot follow the runs of {}: {e}; retrying every second", shared.describe());
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

pub async fn serve(cli: &Cli, a: &ServeArgs) -> Result<i32, CliError> {
    let token = match &a.token {
        Some(r) => {
            let r = drover_api::SecretRef::parse(r).map_err(|e| {
                CliError::new(exit::INVALID_INPUT, format!("--token: {e}")).hint("write --token env:VARIABLE")
            })?;
            Some(r.resolve().map_err(|e| {
                let error = CliError::new(exit::INVALID_INPUT, format!("--token: {}", e.message));
                match e.hint {
                    Some(hint) => error.hint(hint),
                    None => error,
                }
            })?)
        }
        None => None,
    };
    if !a.listen.ip().is_loopback() && token.is_none() {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!("listening on {} shows every run and answers its gates to the network without a token", a.listen),
        )
        .hint("add --token env:VARIABLE (or file:PATH), or listen on 127.0.0.1"));
    }
    let ctx = Arc::new(Ctx {
        state: StateDir::new(&cli.state_dir),
        root: cli.state_dir.clone(),
        token: token.map(|t| t.expose().to_string()),
        elsewhere: Default::default(),
    });
    let shared = super::shared_state(cli).await?;
    let following = shared.as_ref().map(|s| format!(", following {}", s.describe())).unwrap_or_default();
    if let Some(shared) = shared {
        follow_shared(ctx.clone(), shared);
    }
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/gates/{step}", post(answer_gate))
        .layer(middleware::from_fn_with_state(ctx.clone(), authorize))
        .with_state(ctx);
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| {
        CliError::new(exit::INVALID_INPUT, format!("cannot listen on {}: {e}", a.listen))
            .hint("choose another --listen address or port (port 0 picks a free one)")
    })?;
    let addr = listener.local_addr().map_err(|e| CliError::new(exit::STATE_ERROR, e.to_string()))?;
    outln!("serving the runs of {}{following} on http://{addr}/  (Ctrl-C stops)", cli.state_dir.display());
    let mut stop = super::signals::listen();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop.recv().await;
        })
        .await
        .map_err(|e| CliError::new(exit::STATE_ERROR, format!("the page server stopped: {e}")))?;
    Ok(exit::SUCCESS)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// With a token: the request presents it as a bearer, a cookie, or `?token=` (which then
/// becomes a cookie, so links and forms need not carry it).
async fn authorize(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(want) = &ctx.token else { return next.run(request).await };
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let cookie =
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
            c.split(';').filter_map(|kv| kv.trim().strip_prefix("drover_token=")).next().map(str::to_string)
        });
    let same = |given: &str| given.len() == want.len() && given.bytes().zip(want.bytes()).all(|(a, b)| a == b);
    if bearer.is_some_and(same) || cookie.as_deref().is_some_and(same) {
        return next.run(request).await;
    }
    if q.token.as_deref().is_some_and(same) {
        let mut response = next.run(request).await;
        if let Ok(v) = format!("drover_token={want}; HttpOnly; SameSite=Strict; Path=/").parse() {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
        return response;
    }
    (StatusCode::UNAUTHORIZED, "this page needs its token: open it with ?token=… (drover serve --token)\n")
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Html(format!("<p>{}</p><p><a href=\"/\">every run</a></p>", esc(&what)))).into_response()
}

/// Every run, newest first.
async fn index(State(ctx): State<Arc<Ctx>>) -> Response {
    let mut rows = String::new();
    let mut ids = ctx.state.list();
    ids.reverse();
    for id in &ids {
        let Ok((s, _)) = RunState::load(&ctx.state.journal(id)) else {
            rows.push_str(&format!(
                "<tr><td class=\"mono\">{}</td><td colspan=\"4\">unreadable journal</td></tr>",
                esc(id)
            ));
            continue;
        };
        let live = !matches!(ctx.live(id, &s.start.runbook), Live::No);
        let waiting = s.steps.values().filter(|r| r.gate_waiting.is_some()).count();
        let state = if live && waiting > 0 {
            format!("{} — <b>a gate waits</b>", s.state_label(live))
        } else {
            s.state_label(live).to_string()
        };
        rows.push_str(&format!(
            "<tr><td class=\"mono\"><a href=\"/runs/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
            esc(id),
            esc(&s.start.runbook),
            if s.start.mode == crate::engine::events::RunMode::DryRun { "dry run" } else { "run" },
            state,
            esc(s.records.first().map(|r| r.at.as_str()).unwrap_or("-")),
        ));
    }
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>drover: runs</title>\
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1360px;padding:0 16px}}\
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}}\
.mono{{font-family:ui-monospace,monospace;font-size:12px}}</style></head><body><h1>Runs in {}</h1>\
<table><tr><th>run</th><th>runbook</th><th>mode</th><th>state</th><th>started</th></tr>{rows}</table>\
<script>setTimeout(()=>location.reload(),2000)</script></body></html>",
        esc(&ctx.root.display().to_string())
    ))
    .into_response()
}

/// The run's report, live: the gates that wait as forms, and a script that reloads the page's
/// body whenever the journal grows.
async fn run_page(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let Ok(id) = ctx.state.resolve(&id) else { return not_found(format!("no run `{id}` in this state directory")) };
    let Ok((s, _)) = RunState::load(&ctx.state.journal(&id)) else {
        return not_found(format!("the journal of run {id} cannot be read"));
    };
    let here = ctx.live(&id, &s.start.runbook);
    let live = !matches!(here, Live::No);
    let mut gates = String::new();
    for st in &s.start.steps {
        let Some(message) = s.steps.get(&st.id).and_then(|r| r.gate_waiting.as_ref()) else { continue };
        if s.finished.is_some() {
            continue;
        }
        match &here {
            Live::Here => gates.push_str(&format!(
                "<form class=\"banner open\" method=\"post\" action=\"/runs/{id}/gates/{step}\">Step <code>{step}</code> waits for approval: \
{message}<div><input name=\"by\" class=\"who\" placeholder=\"your name\" required> \
<button name=\"answer\" value=\"approve\">Approve</button> <button name=\"answer\" value=\"deny\">Deny</button></div></form>",
                id = esc(&id),
                step = esc(&st.id),
                message = esc(message)
            )),
            Live::Elsewhere(host) => gates.push_str(&format!(
                "<div class=\"banner open\">Step <code>{step}</code> waits for approval: {message}<div>the run works on \
{host}: answer there with <code>drover approve {id} {step}</code></div></div>",
                id = esc(&id),
                step = esc(&st.id),
                message = esc(message),
                host = esc(host)
            )),
            Live::No => {}
        }
    }
    let report = if live { Report::from_live_state(&s) } else { Report::from_state(&s) };
    let page = render_html(&report);
    let follow = if s.finished.is_none() {
        // Reload on every change of the journal; keep the name being typed and the log scrolled
        // to its end; stop following once the fetched page has no script (the run finished) —
        // asked before its body moves into this document. While a process works on the run, the elapsed time ticks each second.
        format!(
            "<script>\
const who=()=>document.querySelectorAll('input.who').forEach(i=>{{i.value=localStorage.droverWho||'';i.oninput=()=>localStorage.droverWho=i.value}});\
const tail=()=>{{const l=document.getElementById('log');if(l)l.scrollTop=l.scrollHeight}};who();tail();\
const pad=n=>String(n).padStart(2,'0');\
const tick=()=>{{const e=document.getElementById('elapsed');if(!e||!{live})return;const ms=Date.now()-Number(e.dataset.startedMs);\
const s=Math.max(0,Math.floor(ms/1000));e.textContent=pad(Math.floor(s/3600))+':'+pad(Math.floor(s/60)%60)+':'+pad(s%60);\
const t=Number(e.dataset.targetMs);e.style.color=t&&ms>t?'#c62828':''}};tick();setInterval(tick,1000);\
let dirty=false,busy=false;const es=new EventSource('/runs/{id}/events');\
es.onmessage=async()=>{{dirty=true;if(busy)return;busy=true;while(dirty){{dirty=false;\
const r=await fetch(location.pathname);const d=new DOMParser().parseFromString(await r.text(),'text/html');\
if(document.activeElement&&document.activeElement.tagName==='INPUT'){{dirty=true;await new Promise(f=>setTimeout(f,500));continue;}}\
const more=!!d.querySelector('script');document.body.replaceWith(d.body);who();tail();tick();if(!more)es.close();}}busy=false;}};</script>",
            id = esc(&id),
            live = live
        )
    } else {
        String::new()
    };
    let page = page.replacen("<body>", &format!("<body><p><a href=\"/\">every run</a></p>{gates}"), 1);
    Html(page.replacen("</body>", &format!("{follow}</body>"), 1)).into_response()
}

/// Server-sent events: one message each time the run's journal grows, within 50 ms.
async fn events(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let Ok(id) = ctx.state.resolve(&id) else { return not_found(format!("no run `{id}` in this state directory")) };
    let journal = ctx.state.journal(&id);
    let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let start = len(&journal);
    let stream = futures::stream::unfold((journal, start), move |(journal, mut seen)| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = len(&journal);
            if now != seen {
                seen = now;
                let ev = SseEvent::default().data("journal");
                return Some((Ok::<_, std::convert::Infallible>(ev), (journal, seen)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct GateForm {
    by: String,
    answer: String,
}

/// A gate answered from the page: recorded as `drover approve` records it.
async fn answer_gate(
    State(ctx): State<Arc<Ctx>>,
    Path((id, step)): Path<(String, String)>,
    Form(form): Form<GateForm>,
) -> Response {
    if form.by.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "an answer needs the name of who gives it\n").into_response();
    }
    let deny = match form.answer.as_str() {
        "approve" => false,
        "deny" => true,
        other => {
            return (StatusCode::BAD_REQUEST, format!("the answer is approve or deny, not `{other}`\n"))
                .into_response();
        }
    };
    match super::approve::answer(&ctx.state, &id, &step, &form.by, deny) {
        Ok((id, _)) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => {
            let text = match e.hint {
                Some(h) => format!("{}\nhint: {h}\n", e.message),
                None => format!("{}\n", e.message),
            };
            let status =
                if e.code == exit::STATE_ERROR { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::CONFLICT };
            (status, text).into_response()
        }
    }
}
