//! The README's main command: `drover lab failover`, planned and unplanned, on the built-in
//! two-site lab (ONTAP and Kubernetes simulators; real BIND, HAProxy and moto, which
//! `bash .ci/run` installs). It exits 0 only when the end state is checked: relationship
//! broken off, DR SVM running, apps running on west with rewritten hosts, DNS and load balancer
//! on west.

mod common;

use common::drover;

fn lab_failover(mode: &str, extra: &[&str]) -> (Option<i32>, String) {
    for needed in ["named", "haproxy", "moto_server"] {
        let found =
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(needed).is_file()));
        assert!(found, "{needed} is needed for the full lab (bash .ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let mut args = vec!["lab", "failover", "--mode", mode, "--dir", lab.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = drover(&dir.path().join("state"), &args);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const END_STATE: [&str; 6] = [
    "✓ SVM-DR relationship svm_dr: is broken_off",
    "✓ DR SVM svm_dr is running",
    "✓ west runs Deployment shop/web with 3 available replicas",
    "✓ west's Ingress shop/web serves shop.west.example.com",
    "✓ DNS shop.example.com → 198.51.100.10",
    "✓ load balancer answers `served by west`",
];

#[test]
fn a_planned_lab_failover_fences_the_primary_and_ends_with_west_serving() {
    let (code, text) = lab_failover("planned", &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in END_STATE {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("Kubernetes east  simulator"), "{text}");
    assert!(text.contains("DNS              real server  127.0.0.1:"), "{text}");
    assert!(text.contains("restore-from-backup   skipped"), "{text}");
}

#[test]
fn an_unplanned_lab_failover_never_touches_the_lost_primary() {
    let (code, text) = lab_failover("unplanned", &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in END_STATE {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("disaster: the east site is gone"), "{text}");
    for step in ["fence", "final-update", "stop-source-svm", "restore-from-primary"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(step) && l.contains("skipped")), "{step} ran:\n{text}");
    }
    assert!(text.contains("source=Velero backup lab-nightly"), "{text}");
}

#[test]
fn failover_then_failback_returns_the_lab_to_where_it_started() {
    let (code, text) = lab_failover("planned", &["--failback"]);
    assert_eq!(code, Some(0), "{text}");
    let after = text.split("after the failback").nth(1).unwrap_or_else(|| panic!("no failback in:\n{text}"));
    for line in [
        "✓ SVM-DR relationship svm1: → svm_dr: snapmirrored",
        "✓ SVMs: svm1 running, svm_dr stopped",
        "✓ east runs Deployment shop/web with 3 available replicas",
        "✓ east's Ingress shop/web serves shop.east.example.com",
        "✓ east's namespace shop is not fenced",
        "✓ west has no namespace shop",
        "✓ DNS shop.example.com → 203.0.113.10",
        "✓ load balancer answers `served by east`",
    ] {
        assert!(after.contains(line), "missing `{line}` in:\n{after}");
    }
}
