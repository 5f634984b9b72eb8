//! Transport faults of the HTTP-based DNS providers, with a scripted server on loopback playing
//! a broken PowerDNS API or Route 53 endpoint: refused connections and 5xx are retryable, a body
//! that is not what the API documents is permanent, and every error names the endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use drover_api::testing::ScriptedHttp;
use drover_api::{Action, ErrorKind, StepContext};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

fn powerdns(port: u16) -> StepContext {
    powerdns_within(port, Duration::from_secs(20))
}

fn powerdns_within(port: u16, budget: Duration) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_PDNS_KEY", "key") };
    let sites = BTreeMap::from([(
        "pdns".to_string(),
        json!({ "powerdns": { "api": format!("http://127.0.0.1:{port}"), "api_key": "env:DROVER_TEST_FAULT_PDNS_KEY", "zone": "example.test." } }),
    )]);
    drover_api::testing::context(sites, budget)
}

fn set() -> serde_json::Value {
    json!({ "site": "pdns", "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"] })
}

#[tokio::test]
async fn powerdns_refused_5xx_and_malformed_answers() {
    let dead = free_port();
    let err = action("dns.powerdns.set").run(&powerdns(dead), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{dead}")) && err.message.contains("unreachable"),
        "{}",
        err.message
    );

    let api = ScriptedHttp::start(vec![(503, r#"{"error": "backend down"}"#.into())]).await;
    let err = action("dns.powerdns.set").run(&powerdns(api.port), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("PowerDNS failed (503"), "{}", err.message);

    let api = ScriptedHttp::start(vec![(200, "<html>a proxy's login page</html>".into())]).await;
    let err = action("dns.powerdns.set").run(&powerdns(api.port), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("invalid JSON"), "{}", err.message);
}

#[tokio::test]
async fn a_powerdns_api_that_never_answers_is_retryable_within_the_step_s_time() {
    let api = ScriptedHttp::silent().await;
    let started = std::time::Instant::now();
    let err = action("dns.powerdns.set").run(&powerdns_within(api.port, Duration::from_secs(2)), &set()).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    let zone = format!("{}/api/v1/servers/localhost/zones/example.test.", api.url());
    assert!(err.message.starts_with(&format!("PowerDNS API {zone} did not answer within ")), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the step, not the 10 s request limit");
}

fn route53(port: u16) -> StepContext {
    // SAFETY: every test sets the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    let sites = BTreeMap::from([(
        "aws".to_string(),
        json!({ "route53": { "hosted_zone_id": "Z123", "endpoint": format!("http://127.0.0.1:{port}") } }),
    )]);
    drover_api::testing::context(sites, Duration::from_secs(20))
}

fn upsert() -> serde_json::Value {
    json!({ "site": "aws", "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"] })
}

#[tokio::test]
async fn route53_refused_5xx_and_malformed_answers() {
    let dead = free_port();
    let err = action("dns.route53.set").run(&route53(dead), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("Route 53"), "{}", err.message);

    let api = ScriptedHttp::start(vec![(500, String::new())]).await;
    let err = action("dns.route53.set").run(&route53(api.port), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("server error (HTTP 500)"), "{}", err.message);

    let api = ScriptedHttp::start(vec![(200, "not xml at all".into())]).await;
    let err = action("dns.route53.set").run(&route53(api.port), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("Route 53"), "{}", err.message);
}
