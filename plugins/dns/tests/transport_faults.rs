//! Transport faults of the HTTP-based DNS providers, with a scripted server on loopback playing
//! a broken PowerDNS API or Route 53 endpoint: refused connections and 5xx are retryable, a body
//! that is not what the API documents is permanent, and every error names the endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use drover_api::{Action, ErrorKind, StepContext};

/// A server answering every request with `status` and `body`.
async fn answering(status: u16, body: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, task)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

fn powerdns(port: u16) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_PDNS_KEY", "key") };
    let sites = BTreeMap::from([(
        "pdns".to_string(),
        json!({ "powerdns": { "api": format!("http://127.0.0.1:{port}"), "api_key": "env:DROVER_TEST_FAULT_PDNS_KEY", "zone": "example.test." } }),
    )]);
    drover_api::testing::context(sites, Duration::from_secs(20))
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

    let (port, t) = answering(503, r#"{"error": "backend down"}"#).await;
    let err = action("dns.powerdns.set").run(&powerdns(port), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("PowerDNS failed (503"), "{}", err.message);
    t.abort();

    let (port, t) = answering(200, "<html>a proxy's login page</html>").await;
    let err = action("dns.powerdns.set").run(&powerdns(port), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("invalid JSON"), "{}", err.message);
    t.abort();
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

    let (port, t) = answering(500, "").await;
    let err = action("dns.route53.set").run(&route53(port), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("server error (HTTP 500)"), "{}", err.message);
    t.abort();

    let (port, t) = answering(200, "not xml at all").await;
    let err = action("dns.route53.set").run(&route53(port), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("Route 53"), "{}", err.message);
    t.abort();
}
