//! `drover validate` reports every problem of a runbook at once, each at file:line:column
//! with a hint; the messages are part of the interface, so they are snapshotted.

use std::path::Path;

use drover::registry::Registry;
use drover::runbook::{LoadOptions, load, load_source};

fn problems(text: &str) -> String {
    match load_source(Path::new("rb.yaml"), text, &Registry::builtin(), &LoadOptions::default()) {
        Ok(_) => "ok".into(),
        Err(d) => d.to_string(),
    }
}

#[test]
fn every_problem_of_a_broken_runbook_is_reported_at_once() {
    let d = load(Path::new("tests/fixtures/broken.yaml"), &Registry::builtin(), &LoadOptions::default()).unwrap_err();
    insta::assert_snapshot!(d.to_string());
}

#[test]
fn syntax_error_names_the_line() {
    let out = problems("apiVersion: drover/v1\nkind: Runbook\nsteps:\n  - id: a\n    uses: [log\n");
    assert!(out.starts_with("rb.yaml:"), "{out}");
    assert!(out.contains("invalid YAML"), "{out}");
}

#[test]
fn missing_required_param_is_an_error_only_when_running() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams:\n  target: { type: string, required: true }\nsteps:\n  - { id: a, uses: log, with: { message: \"${{ params.target }}\" } }\n";
    let reg = Registry::builtin();
    assert!(load_source(Path::new("rb.yaml"), text, &reg, &LoadOptions::default()).is_ok());
    let run = LoadOptions { require_params: true, ..LoadOptions::default() };
    let err = load_source(Path::new("rb.yaml"), text, &reg, &run).unwrap_err().to_string();
    assert!(err.contains("rb.yaml:5:3: error: param `target` is required"), "{err}");
    let with = LoadOptions { require_params: true, params: vec!["target=west".into()], ..LoadOptions::default() };
    assert_eq!(load_source(Path::new("rb.yaml"), text, &reg, &with).unwrap().params["target"], "west");
}

#[test]
fn param_overrides_are_typed_and_checked() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams:\n  n: { type: int, default: 1 }\n  mode: { type: string, default: planned, enum: [planned, unplanned] }\nsteps:\n  - { id: a, uses: log, with: { message: hi } }\n";
    let reg = Registry::builtin();
    let opts = |p: &[&str]| LoadOptions { params: p.iter().map(|s| s.to_string()).collect(), ..LoadOptions::default() };
    let err = load_source(Path::new("rb.yaml"), text, &reg, &opts(&["n=many", "mode=sideways", "nn=1", "oops"]))
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(err);
    let ok = load_source(Path::new("rb.yaml"), text, &reg, &opts(&["n=5", "mode=unplanned"])).unwrap();
    assert_eq!(ok.params["n"], 5);
}

#[test]
fn interpolated_values_are_type_checked_at_run_time_not_load_time() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams: { d: 1s }\nsteps:\n  - { id: a, uses: sleep, with: { duration: \"${{ params.d }}\" } }\n";
    assert_eq!(problems(text), "ok");
}

#[test]
fn a_sites_file_supplies_and_overrides_sites() {
    let dir = tempfile::tempdir().unwrap();
    let sites = dir.path().join("sites.yaml");
    std::fs::write(&sites, "apiVersion: drover/v1\nkind: Sites\nsites:\n  west: { ontap: { url: https://w, credentials: env:W } }\n  east: { ontap: { url: https://e, credentials: \"plain\" } }\n").unwrap();
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nsteps:\n  - { id: a, uses: log, with: { message: \"${{ sites.west.ontap.url }}\" } }\n";
    let opts = LoadOptions { sites_file: Some(sites.clone()), ..LoadOptions::default() };
    let err = load_source(Path::new("rb.yaml"), text, &Registry::builtin(), &opts).unwrap_err().to_string();
    assert!(
        err.contains("sites.yaml:5:49: error: sites.east.ontap.credentials: credentials must be a reference"),
        "{err}"
    );
    assert!(!err.contains("plain"), "an inline secret is never echoed: {err}");
}

#[test]
fn every_shipped_runbook_and_example_validates() {
    let mut checked = 0;
    // examples/plugin.yaml uses the example external plugin.
    let registry = Registry::builtin().with_plugin_path("examples/plugins".into());
    for dir in ["runbooks", "examples"] {
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
            if let Err(d) = load(path, &registry, &LoadOptions::default()) {
                panic!("{} does not validate:\n{d}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} runbooks found");
}

/// The shipped failover's relationship steps, with a sites file beside it.
fn with_sites(runbook: &str, sites: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("rb.yaml");
    let sf = dir.path().join("sites.yaml");
    std::fs::write(&rb, runbook).unwrap();
    std::fs::write(&sf, sites).unwrap();
    let opts = LoadOptions { sites_file: Some(sf.clone()), ..LoadOptions::default() };
    match load(&rb, &Registry::builtin(), &opts) {
        Ok(_) => "ok".into(),
        Err(d) => d.to_string().replace(&dir.path().display().to_string(), "DIR"),
    }
}

const BREAK: &str = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nsteps:\n  - { id: break, uses: ontap.snapmirror.break, with: { site: west, destination: \"svm_dr:\" } }\n";

#[test]
fn a_typo_in_a_sites_file_is_an_error_at_load_with_its_line() {
    let sites = "apiVersion: drover/v1\nkind: Sites\nsites:\n  west:\n    ontap: { urll: https://ontap-west, username: drover, credentials: env:ONTAP_WEST }\n";
    let out = with_sites(BREAK, sites);
    assert!(out.contains("DIR/sites.yaml:5:14: error: site `west`: unknown setting `urll` (ontap.urll)"), "{out}");
    assert!(out.contains("hint: did you mean `url`?"), "{out}");
}

#[test]
fn a_misspelt_section_is_an_error_at_load_with_the_nearest_section() {
    for (typo, fix) in [("ontapp", "ontap"), ("kubeconfg", "kube"), ("runtme", "s3")] {
        let sites = format!("apiVersion: drover/v1\nkind: Sites\nsites:\n  west:\n    {typo}: {{ url: https://x }}\n");
        let out = with_sites(BREAK, &sites);
        assert!(out.contains(&format!("DIR/sites.yaml:5:5: error: site `west`: unknown section `{typo}`")), "{out}");
        if typo == "ontapp" {
            assert!(out.contains(&format!("did you mean `{fix}`?")), "{out}");
        }
    }
    let sites = "apiVersion: drover/v1\nkind: Sites\nsites:\n  lb:\n    haproxy: { runtme: tcp://127.0.0.1:9999 }\n  dns:\n    dns: { sever: 127.0.0.1:53, zone: x., key_name: k, tsig_key: env:K }\n";
    let out = with_sites(BREAK, sites);
    assert!(
        out.contains("unknown setting `runtme` (haproxy.runtme)") && out.contains("did you mean `runtime`?"),
        "{out}"
    );
    assert!(out.contains("unknown setting `sever` (dns.sever)") && out.contains("did you mean `server`?"), "{out}");
}

#[test]
fn a_required_key_missing_behind_an_expression_is_a_validate_error() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams: { dr: west }\nsteps:\n  - { id: break, uses: ontap.snapmirror.break, with: { site: \"${{ params.dr }}\" } }\n";
    let out = problems(text);
    assert!(out.contains("rb.yaml:6:54: error: step `break`: missing parameter `destination`"), "{out}");
}

#[test]
fn an_expression_of_the_wrong_type_is_a_validate_error_at_its_place() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams:\n  namespaces: { type: string, default: shop }\n  replicas: { type: string, default: three }\nsteps:\n  - { id: up, uses: kube.scale, with: { site: west, namespaces: \"${{ params.namespaces }}\", replicas: \"${{ params.replicas }}\" } }\n";
    let out = problems(text);
    assert!(
        out.contains("step `up`: with.namespaces: param `namespaces` is a string, but `kube.scale` takes a list"),
        "{out}"
    );
    assert!(
        out.contains("with.replicas: param `replicas` is a string, but `kube.scale` takes a whole number"),
        "{out}"
    );
}

#[test]
fn a_param_value_that_the_action_refuses_is_an_error_at_load() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams: { address: not-an-address }\nsteps:\n  - { id: dns, uses: dns.rfc2136.set, with: { site: dns, name: a.example.com., type: A, values: [\"${{ params.address }}\"] } }\n";
    let out = problems(text);
    assert!(out.contains("`not-an-address` is not an IPv4 address"), "{out}");
    assert!(out.contains("from `${{ params.address }}`"), "{out}");
}

#[test]
fn a_number_read_into_a_text_parameter_is_written_as_text() {
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams: { n: 3 }\nsteps:\n  - { id: say, uses: log, with: { message: \"${{ params.n }}\" } }\n";
    assert_eq!(problems(text), "ok");
}

#[test]
fn a_site_named_by_a_param_is_checked_once_the_params_are_known() {
    let sites = "apiVersion: drover/v1\nkind: Sites\nsites:\n  west:\n    ontap: { url: https://ontap-west, username: drover, credentials: env:ONTAP_WEST }\n";
    let rb = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nparams: { dr: wset }\nsteps:\n  - { id: break, uses: ontap.snapmirror.break, with: { site: \"${{ params.dr }}\", destination: \"svm_dr:\" } }\n";
    let out = with_sites(rb, sites);
    assert!(out.contains("site `wset` (from `${{ params.dr }}`) is not defined (with.site)"), "{out}");
    assert!(out.contains("did you mean `west`?"), "{out}");
}

/// Which site settings are secrets is declared by each plugin (a setting typed `SecretRef`),
/// not by a list of names in core: the DNS plugin's `tsig_key` and etcd's client `key` are
/// refused inline, and never echoed.
#[test]
fn secrets_are_the_settings_plugins_declare_and_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let sites = dir.path().join("sites.yaml");
    std::fs::write(
        &sites,
        "apiVersion: drover/v1\nkind: Sites\nsites:\n  dns: { dns: { server: 127.0.0.1:53, zone: x., key_name: k, tsig_key: \"c2VjcmV0\" } }\n  etcd: { etcd: { endpoints: [https://e:2379], key: \"BEGIN-PRIVATE\" } }\n",
    )
    .unwrap();
    let text = "apiVersion: drover/v1\nkind: Runbook\nmetadata: { name: x }\nsteps:\n  - { id: a, uses: log, with: { message: hi } }\n";
    let opts = LoadOptions { sites_file: Some(sites.clone()), ..LoadOptions::default() };
    let err = load_source(Path::new("rb.yaml"), text, &Registry::builtin(), &opts).unwrap_err().to_string();
    assert!(err.contains("sites.dns.dns.tsig_key: credentials must be a reference"), "{err}");
    assert!(err.contains("sites.etcd.etcd.key: credentials must be a reference"), "{err}");
    assert!(!err.contains("c2VjcmV0") && !err.contains("BEGIN-PRIVATE"), "an inline secret is never echoed: {err}");
}

#[test]
fn prepare_after_names_a_step_it_needs_on_an_action_that_prepares() {
    let rb = |step: &str| {
        format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: x }}\nsteps:\n  - {{ id: fence, uses: log, with: {{ message: fenced }} }}\n  - {{ id: other, uses: log, with: {{ message: other }} }}\n{step}"
        )
    };
    let restore = "  - id: restore\n    uses: kube.restore\n    needs: [fence]\n    prepare_after: [{after}]\n    with: { site: west, from: { manifests: [m] } }\n";
    let sites = "sites:\n  west: { kube: { context: west } }\n";
    let with_sites = |after: &str| {
        rb(&restore.replace("{after}", after))
            .replace("metadata: { name: x }\n", &format!("metadata: {{ name: x }}\n{sites}"))
    };
    assert_eq!(problems(&with_sites("fence")), "ok");
    let not_needed = problems(&with_sites("other"));
    assert!(
        not_needed.contains("rb.yaml:12:21: error: step `restore`: prepare_after `other`, which it does not need"),
        "{not_needed}"
    );
    assert!(not_needed.contains("add it to `needs`"), "{not_needed}");
    let unknown = problems(&with_sites("fenc"));
    assert!(unknown.contains("prepare_after `fenc`, which is not a step"), "{unknown}");
    let log =
        problems(&rb("  - { id: note, uses: log, needs: [fence], prepare_after: [fence], with: { message: hi } }\n"));
    assert!(log.contains("`log` does nothing ahead of its turn, so `prepare_after` has no effect"), "{log}");
}
