//! Hostile runbooks: the parser and validator take anything — random text, YAML token soup,
//! damaged copies of the shipped runbooks, deep nesting, anchors that expand — and answer with
//! a runbook or with diagnostics. Never a panic, never unbounded work.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use drover::registry::Registry;
use drover::runbook::{LoadOptions, load_source};

fn shipped() -> Vec<String> {
    ["runbooks/failover.yaml", "runbooks/failback.yaml", "runbooks/rehearsal.yaml", "examples/app-move.yaml"]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Load and report whether it was accepted; diagnostics must name the file.
fn load(text: &str) -> bool {
    problems(text).is_none()
}

fn problems(text: &str) -> Option<String> {
    let registry = Registry::builtin();
    match load_source(Path::new("rb.yaml"), text, &registry, &LoadOptions::default()) {
        Ok(_) => None,
        Err(d) => {
            let shown = d.to_string();
            assert!(shown.contains("rb.yaml"), "a diagnostic without the file: {shown}");
            Some(shown)
        }
    }
}

#[test]
fn the_shipped_runbooks_load() {
    for text in shipped() {
        assert!(load(&text));
    }
}

#[test]
fn deep_nesting_and_expanding_aliases_are_refused_quickly() {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let started = Instant::now();
    let shown = problems(&deep).unwrap();
    // yaml-rust2's own limit on flow nesting, or drover's on any nesting.
    assert!(shown.contains("recursion limit exceeded") || shown.contains("nested more than 200 levels"), "{shown}");
    let block: String = (0..300).map(|i| format!("{}- \n", "  ".repeat(i))).collect();
    let shown = problems(&block).unwrap();
    assert!(shown.contains("recursion limit exceeded") || shown.contains("nested more than 200 levels"), "{shown}");
    // A billion laughs: nine levels of aliases, each ten times the last.
    let mut laughs = String::from(
        "apiVersion: drover/v1\nkind: Runbook\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        laughs.push_str(&format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", ")));
    }
    laughs.push_str("steps: *a8\n");
    let shown = problems(&laughs).unwrap();
    assert!(shown.contains("expands to more than 1000000 nodes"), "{shown}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

fn yaml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: drover/v1\n".to_string()),
        Just("kind: Runbook\n".to_string()),
        Just("steps:\n".to_string()),
        Just("  - id: a\n".to_string()),
        Just("    uses: log\n".to_string()),
        Just("    needs: [a, b]\n".to_string()),
        Just("    with: { message: \"${{ params.x }}\" }\n".to_string()),
        Just("    if: steps.a.outcome == 'succeeded' && !params.y\n".to_string()),
        Just("    timeout: 5m\n".to_string()),
        Just("    retry: { attempts: 3, backoff: 1s }\n".to_string()),
        Just("params:\n  x: { type: string, default: \"${{\" }\n".to_string()),
        Just("&anchor ".to_string()),
        Just("*anchor\n".to_string()),
        Just("<<: *anchor\n".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("${{ }}".to_string()),
        Just("!!binary AAAA\n".to_string()),
        "[ -~]{0,12}".prop_map(|s| s),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        let _ = load(&text);
    }

    #[test]
    fn yaml_token_soup_never_panics(text in yaml_soup()) {
        let _ = load(&text);
    }

    #[test]
    fn damaged_shipped_runbooks_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[ -~\n]{0,3}"), 1..8),
    ) {
        let mut text: Vec<char> = shipped()[which].chars().collect();
        for (at, op, insert) in edits {
            if text.is_empty() {
                break;
            }
            let i = at.index(text.len());
            match op {
                0 => { text.remove(i); }
                1 => { for (k, c) in insert.chars().enumerate() { text.insert(i + k, c); } }
                _ => { text.truncate(i); }
            }
        }
        let _ = load(&text.into_iter().collect::<String>());
    }
}
