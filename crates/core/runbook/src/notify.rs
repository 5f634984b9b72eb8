//! `notify:` — who is told, and how, when a gate waits for someone or a run ends.
//!
//! A gate waiting at 3 a.m. must reach a person; a failed failover must reach the bridge. The
//! list may be written in a runbook (travels with it) or a sites file (per estate: the shipped
//! runbooks are built in, so an estate's webhooks live with its connections). A webhook URL
//! often carries its own token (Slack's do), so it may be — and a secret header must be — a
//! reference (`env:VAR`, `file:PATH`), read when the run starts and never printed.

use std::path::PathBuf;

use drover_api::SecretRef;

use super::decode::check_keys;
use super::diag::Sink;
use super::yaml::Node;

const KEYS: &[&str] = &["name", "url", "format", "on", "headers", "link"];

/// One webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// How messages name it (`bridge`); the URL's host when not given.
    pub name: String,
    pub url: Setting,
    pub format: NotifyFormat,
    /// What it is told about.
    pub on: Vec<NotifyOn>,
    /// Sent with every request (`Authorization: env:BRIDGE_TOKEN`).
    pub headers: Vec<(String, Setting)>,
    /// The page of the runs (`drover serve`'s address): a message links to `LINK/runs/RUN_ID`.
    pub link: Option<String>,
    /// Where it was written, for messages about it.
    pub file: PathBuf,
    pub line: usize,
}

/// A value written in the file, or a reference to a secret read at the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Plain(String),
    Secret(SecretRef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// drover's own JSON body: event, run, step, message, next command, link.
    Json,
    /// `{"text": …}`, what Slack (and Mattermost, Rocket.Chat, Teams' Slack-compatible
    /// connectors) incoming webhooks take.
    Slack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    /// A manual gate waits for an answer.
    Gate,
    /// The run failed, was rolled back or was stopped.
    Failure,
    Success,
}

impl NotifyOn {
    const ALL: [NotifyOn; 3] = [NotifyOn::Gate, NotifyOn::Failure, NotifyOn::Success];

    fn parse(text: &str) -> Option<NotifyOn> {
        match text {
            "gate" => Some(NotifyOn::Gate),
            "failure" => Some(NotifyOn::Failure),
            "success" => Some(NotifyOn::Success),
            _ => None,
        }
    }
}

/// Header names whose values are credentials: only as references.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "x-api-key", "x-auth-token", "cookie"];

/// A `notify:` list, checked: every problem at its line, with the fix.
pub fn decode(node: &Node, sink: &mut Sink) -> Vec<Notify> {
    let Some(items) = node.items() else {
        sink.error(
            node.pos,
            format!("`notify` must be a list of webhooks, found {}", node.type_name()),
            Some("write `notify: [{ url: env:BRIDGE_WEBHOOK, format: slack }]`".into()),
        );
        return vec![];
    };
    let mut out: Vec<Notify> = vec![];
    for (n, item) in items.iter().enumerate() {
        let place = format!("notify item {}", n + 1);
        if item.entries().is_none() {
            sink.error(item.pos, format!("{place} must be a mapping with a `url`"), None);
            continue;
        }
        check_keys(item, KEYS, &place, sink);
        let Some(url) = item.get("url") else {
            sink.error(
                item.pos,
                format!("{place} has no `url`"),
                Some("add `url: env:VARIABLE` or `url: https://…`".into()),
            );
            continue;
        };
        let Some(url) = url_setting(url, &place, sink) else { continue };
        let format = match item.get("format").map(|f| (f, f.as_str())) {
            None | Some((_, Some("json"))) => NotifyFormat::Json,
            Some((_, Some("slack"))) => NotifyFormat::Slack,
            Some((f, _)) => {
                sink.error(f.pos, format!("{place}: format must be `json` or `slack`, found `{}`", f.as_key()), None);
                continue;
            }
        };
        let on = match item.get("on") {
            None => NotifyOn::ALL.to_vec(),
            Some(on) => {
                let words: Vec<&Node> = match on.items() {
                    Some(items) => items.iter().collect(),
                    None => vec![on],
                };
                let mut chosen = vec![];
                for w in words {
                    match w.as_str().and_then(NotifyOn::parse) {
                        Some(e) if !chosen.contains(&e) => chosen.push(e),
                        Some(_) => {}
                        None => sink.error(
                            w.pos,
                            format!("{place}: `on` takes gate, failure and success, found `{}`", w.as_key()),
                            None,
                        ),
                    }
                }
                chosen
            }
        };
        let mut headers = vec![];
        if let Some(h) = item.get("headers") {
            for (k, v) in h.entries().unwrap_or_default() {
                let name = k.as_key();
                let Some(text) = v.as_str() else {
                    sink.error(v.pos, format!("{place}: header `{name}` must be a string"), None);
                    continue;
                };
                let secret = SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str());
                match SecretRef::parse(text) {
                    Ok(r) => headers.push((name, Setting::Secret(r))),
                    // Never echo the value: it may be the token itself.
                    Err(_) if secret => sink.error(
                        v.pos,
                        format!("{place}: header `{name}` is a credential written inline"),
                        Some(format!("write `{name}: env:VARIABLE` or `{name}: file:/path/to/secret`")),
                    ),
                    Err(_) => headers.push((name, Setting::Plain(text.to_string()))),
                }
            }
        }
        let link = item.get("link").and_then(|l| match l.as_str() {
            Some(t) if t.starts_with("http://") || t.starts_with("https://") => {
                Some(t.trim_end_matches('/').to_string())
            }
            _ => {
                sink.error(l.pos, format!("{place}: link must be an http(s) address (drover serve's)"), None);
                None
            }
        });
        let name = match item.get("name").and_then(Node::as_str) {
            Some(name) => name.to_string(),
            None => match &url {
                Setting::Plain(u) => host(u).to_string(),
                Setting::Secret(r) => r.to_string(),
            },
        };
        if let Some(first) = out.iter().find(|o| o.name == name) {
            sink.error(
                item.pos,
                format!("{place}: a second webhook named `{name}` (the first at line {})", first.line),
                Some("give each a `name:` of its own".into()),
            );
            continue;
        }
        out.push(Notify { name, url, format, on, headers, link, file: sink.file().to_path_buf(), line: item.pos.line });
    }
    out
}

fn url_setting(node: &Node, place: &str, sink: &mut Sink) -> Option<Setting> {
    let Some(text) = node.as_str() else {
        sink.error(node.pos, format!("{place}: url must be a string"), None);
        return None;
    };
    if text.starts_with("env:") || text.starts_with("file:") {
        return match SecretRef::parse(text) {
            Ok(r) => Some(Setting::Secret(r)),
            Err(e) => {
                sink.error(node.pos, format!("{place}: url: {e}"), None);
                None
            }
        };
    }
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        sink.error(
            node.pos,
            format!("{place}: url must be an http(s) address or a reference (`env:VAR`, `file:PATH`)"),
            None,
        );
        return None;
    }
    // Slack's (and its imitators') webhook URLs are their own credential.
    if host(text).starts_with("hooks.") {
        sink.error(
            node.pos,
            format!("{place}: this webhook URL is a credential written inline"),
            Some("put it in an environment variable or a file: `url: env:BRIDGE_WEBHOOK`".into()),
        );
        return None;
    }
    Some(Setting::Plain(text.to_string()))
}

/// `https://user@host:8080/path` → `host:8080`
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(yaml: &str) -> (Vec<Notify>, Vec<String>) {
        let node = crate::yaml::parse(yaml).unwrap();
        let path = std::path::Path::new("rb.yaml");
        let mut sink = Sink::new(path);
        let out = decode(node.get("notify").unwrap(), &mut sink);
        (out, sink.found.0.iter().map(|d| format!("{}: {}", d.line, d.message)).collect())
    }

    #[test]
    fn a_webhook_by_reference_with_a_secret_header() {
        let (n, errors) = decoded(
            "notify:\n  - name: bridge\n    url: env:BRIDGE\n    format: slack\n    on: [gate, failure]\n    headers: { Authorization: file:/etc/drover/token, X-Team: dr }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(n[0].url, Setting::Secret(SecretRef::Env("BRIDGE".into())));
        assert_eq!(n[0].on, [NotifyOn::Gate, NotifyOn::Failure]);
        assert_eq!(n[0].headers[1], ("X-Team".into(), Setting::Plain("dr".into())));
        assert_eq!(n[0].line, 2);
    }

    #[test]
    fn inline_credentials_and_unknown_words_are_refused_at_their_line_without_echoing_them() {
        let (_, errors) = decoded(
            "notify:\n  - url: https://hooks.slack.com/services/T0/B0/s3cr3t\n  - url: http://127.0.0.1:9/h\n    headers: { Authorization: Bearer s3cr3t }\n    on: [gates]\n    formt: json\n",
        );
        let all = errors.join("\n");
        assert!(all.contains("2: notify item 1: this webhook URL is a credential written inline"), "{all}");
        assert!(all.contains("4: notify item 2: header `Authorization` is a credential written inline"), "{all}");
        assert!(all.contains("5: notify item 2: `on` takes gate, failure and success, found `gates`"), "{all}");
        assert!(all.contains("6: unknown key `formt` in notify item 2"), "{all}");
        assert!(!all.contains("s3cr3t"), "{all}");
    }
}
