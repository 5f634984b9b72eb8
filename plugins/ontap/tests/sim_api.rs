//! The simulator holds to the documented REST conventions (ONTAP-REST.md §1–2, §5.6):
//! auth, error bodies, HAL links, `fields=`, filters, paging, jobs and their expiry. Time-bound
//! behaviour (jobs, transfers, expiry) runs on a manual clock the test advances: exact, and
//! independent of how loaded the machine is.

use serde_json::{Value, json};

use std::time::Duration;

use drover_ontap_sim::{Simulator, Topology};
use drover_sim_kit::Clock;

const TOPOLOGY: &str = r#"
clusters:
  - name: east
    password: pw
    peers: [west]
    svms: [{ name: svm1 }]
    volumes: [{ name: a, svm: svm1 }, { name: b, svm: svm1 }, { name: c, svm: svm1 }]
  - name: west
    password: pw2
    peers: [east]
    svms: [{ name: dr, state: stopped, subtype: dp_destination }]
    volumes: [{ name: a, svm: dr, type: dp }, { name: b, svm: dr, type: dp }, { name: c, svm: dr, type: dp }]
svm_peers: [{ svm: dr@west, peer: svm1@east }]
relationships:
  - { source_cluster: east, source: "svm1:a", destination_cluster: west, destination: "dr:a" }
  - { source_cluster: east, source: "svm1:b", destination_cluster: west, destination: "dr:b" }
  - { source_cluster: east, source: "svm1:c", destination_cluster: west, destination: "dr:c", state: uninitialized }
settings: { job_delay: 100ms, transfer_time: 10ms, job_expiry: 300ms }
"#;

async fn sim() -> Simulator {
    Simulator::start(&Topology::from_yaml(TOPOLOGY).unwrap()).await.unwrap()
}

/// The simulator on a clock that moves only when the test says.
async fn sim_on_manual_clock() -> (Simulator, Clock) {
    let clock = Clock::manual();
    let sim = Simulator::start_with_clock(&Topology::from_yaml(TOPOLOGY).unwrap(), clock.clone()).await.unwrap();
    (sim, clock)
}

async fn call(sim: &Simulator, method: reqwest::Method, path: &str, body: Option<Value>, pw: &str) -> (u16, Value) {
    let url = format!("{}{}", sim.url("west"), path);
    let mut req = reqwest::Client::new().request(method, url).basic_auth("admin", Some(pw));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(sim: &Simulator, path: &str) -> Value {
    let (status, body) = call(sim, reqwest::Method::GET, path, None, "pw2").await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn bad_credentials_get_401() {
    let s = sim().await;
    let (status, _) = call(&s, reqwest::Method::GET, "/api/cluster", None, "wrong").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn unknown_uuid_is_404_with_string_code_4() {
    let s = sim().await;
    let (status, body) = call(
        &s,
        reqwest::Method::GET,
        "/api/snapmirror/relationships/00000000-0000-0000-0000-000000000000",
        None,
        "pw2",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({ "error": { "message": "entry doesn't exist", "code": "4", "target": "uuid" } }));
}

#[tokio::test]
async fn collections_return_keys_and_links_by_default_and_fields_on_request() {
    let s = sim().await;
    let page = get(&s, "/api/storage/volumes").await;
    let rec = &page["records"][0];
    let mut keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["_links", "name", "uuid"]);
    assert!(rec["_links"]["self"]["href"].as_str().unwrap().starts_with("/api/storage/volumes/"));
    let page = get(&s, "/api/storage/volumes?name=b&fields=type,svm.name").await;
    assert_eq!(page["num_records"], 1);
    assert_eq!(page["records"][0]["type"], "dp");
    assert_eq!(page["records"][0]["svm"], json!({ "name": "dr" }));
    assert!(page["records"][0].get("clone").is_none());
    let uuid = page["records"][0]["uuid"].as_str().unwrap().to_string();
    let one = get(&s, &format!("/api/storage/volumes/{uuid}")).await;
    assert!(one.get("clone").is_none(), "clone.* is expensive: only on request");
    let one = get(&s, &format!("/api/storage/volumes/{uuid}?fields=clone.*")).await;
    assert_eq!(one["clone"]["is_flexclone"], false);
}

#[tokio::test]
async fn dotted_filters_wildcards_negation_and_paging() {
    let s = sim().await;
    let page = get(&s, "/api/snapmirror/relationships?destination.path=dr:*&state=!uninitialized&fields=state").await;
    assert_eq!(page["num_records"], 2);
    let mut seen = vec![];
    let mut next = Some("/api/snapmirror/relationships?fields=destination.path&max_records=1".to_string());
    while let Some(path) = next {
        let page = get(&s, &path).await;
        seen.push(page["records"][0]["destination"]["path"].as_str().unwrap().to_string());
        next = page["_links"]["next"]["href"].as_str().map(str::to_string);
    }
    assert_eq!(seen, vec!["dr:a", "dr:b", "dr:c"]);
    let count = get(&s, "/api/snapmirror/relationships?return_records=false").await;
    assert_eq!(count["num_records"], 3);
    assert!(count.get("records").is_none());
}

#[tokio::test]
async fn state_patch_returns_a_job_that_ends_and_later_expires() {
    let (s, clock) = sim_on_manual_clock().await;
    let rel = get(&s, "/api/snapmirror/relationships?destination.path=dr:a").await;
    let uuid = rel["records"][0]["uuid"].as_str().unwrap().to_string();
    let (status, body) = call(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/snapmirror/relationships/{uuid}"),
        Some(json!({ "state": "broken_off" })),
        "pw2",
    )
    .await;
    assert_eq!(status, 202);
    let href = body["job"]["_links"]["self"]["href"].as_str().unwrap().to_string();
    let job = get(&s, &href).await;
    assert!(["queued", "running"].contains(&job["state"].as_str().unwrap()), "{job}");
    clock.advance(Duration::from_millis(99));
    assert!(["queued", "running"].contains(&get(&s, &href).await["state"].as_str().unwrap()), "job_delay is 100ms");
    clock.advance(Duration::from_millis(1));
    let job = get(&s, &href).await;
    assert_eq!((job["state"].as_str(), job["code"].as_u64()), (Some("success"), Some(0)));
    let rel = get(&s, &format!("/api/snapmirror/relationships/{uuid}")).await;
    assert_eq!(rel["state"], "broken_off");
    // A repeated transition is rejected by default, as the client must GET first.
    let (status, body) = call(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/snapmirror/relationships/{uuid}"),
        Some(json!({ "state": "broken_off" })),
        "pw2",
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("13303818")));
    clock.advance(Duration::from_millis(299));
    assert_eq!(call(&s, reqwest::Method::GET, &href, None, "pw2").await.0, 200, "job_expiry is 300ms");
    clock.advance(Duration::from_millis(1));
    let (status, _) = call(&s, reqwest::Method::GET, &href, None, "pw2").await;
    assert_eq!(status, 404, "finished jobs expire");
}

/// `return_timeout` makes the request wait, in real time, for the job.
#[tokio::test]
async fn return_timeout_answers_once_the_job_has_ended() {
    let s = sim().await;
    // With return_timeout the answer waits for the job: 200 instead of 202.
    let rel_b = get(&s, "/api/snapmirror/relationships?destination.path=dr:b").await;
    let uuid_b = rel_b["records"][0]["uuid"].as_str().unwrap().to_string();
    let (status, body) = call(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/snapmirror/relationships/{uuid_b}?return_timeout=5"),
        Some(json!({ "state": "paused" })),
        "pw2",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["job"]["uuid"].is_string());
}

#[tokio::test]
async fn invalid_transitions_answer_with_documented_codes() {
    let s = sim().await;
    let rel = get(&s, "/api/snapmirror/relationships?destination.path=dr:c").await;
    let uuid = rel["records"][0]["uuid"].as_str().unwrap().to_string();
    let patch = |state: &'static str| {
        let (s, uuid) = (&s, uuid.clone());
        async move {
            call(
                s,
                reqwest::Method::PATCH,
                &format!("/api/snapmirror/relationships/{uuid}"),
                Some(json!({ "state": state })),
                "pw2",
            )
            .await
        }
    };
    let (status, body) = patch("broken_off").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("13303818")), "uninitialized cannot be broken");
    let (status, body) = patch("in_sync").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("13303831")));
    let (status, body) = patch("sideways").await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["target"].as_str()),
        (400, Some("2"), Some("state"))
    );
    // Dotted keys in a body are accepted like nested ones.
    let (status, body) = call(
        &s,
        reqwest::Method::POST,
        "/api/storage/volumes",
        Some(json!({ "name": "x", "svm.name": "nope" })),
        "pw2",
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("2621462")));
}

#[tokio::test]
async fn transfer_post_is_201_with_a_location_and_updates_lag() {
    let (s, clock) = sim_on_manual_clock().await;
    let rel = get(&s, "/api/snapmirror/relationships?destination.path=dr:a&fields=exported_snapshot,lag_time").await;
    let uuid = rel["records"][0]["uuid"].as_str().unwrap().to_string();
    let before = rel["records"][0]["exported_snapshot"].clone();
    assert!(rel["records"][0]["lag_time"].as_str().unwrap().starts_with("PT"));
    let resp = reqwest::Client::new()
        .post(format!("{}/api/snapmirror/relationships/{uuid}/transfers", s.url("west")))
        .basic_auth("admin", Some("pw2"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert!(resp.headers()["location"].to_str().unwrap().contains("/transfers/"));
    clock.advance(Duration::from_millis(10));
    let rel = get(&s, &format!("/api/snapmirror/relationships/{uuid}")).await;
    assert_eq!(rel["transfer"]["state"], "success");
    assert_ne!(rel["exported_snapshot"], before);
}

#[tokio::test]
async fn faults_can_be_declared_in_the_topology() {
    let text = format!(
        "{TOPOLOGY}faults:\n  - {{ cluster: west, method: GET, path: /api/cluster, kind: {{ type: sync_error, status: 503, code: \"13303816\", message: busy }}, count: 1 }}\n"
    );
    let s = Simulator::start(&Topology::from_yaml(&text).unwrap()).await.unwrap();
    let (status, body) = call(&s, reqwest::Method::GET, "/api/cluster", None, "pw2").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("13303816")));
    let (status, _) = call(&s, reqwest::Method::GET, "/api/cluster", None, "pw2").await;
    assert_eq!(status, 200, "the fault applied to one request only");
}
