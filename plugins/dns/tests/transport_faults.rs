//! Transport faults of the DNS providers, with scripted servers on loopback: a broken PowerDNS
//! API or Route 53 endpoint (refused connections, 5xx and silence are retryable, a body that is
//! not what the API documents is permanent) and a hostile RFC 2136 server (garbage, foreign
//! ids, unsigned answers). Every error names the endpoint; nothing hostile passes for success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};

use drover_api::testing::ScriptedHttp;
use drover_api::{Action, ErrorKind, StepContext};

fn action(name: &str) -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

/// A context with one site of these settings.
fn one_site(name: &str, settings: serde_json::Value, budget: Duration) -> StepContext {
    drover_api::testing::context(BTreeMap::from([(name.to_string(), settings)]), budget)
}

/// Point app.example.test. at 192.0.2.20 through `site`.
fn app_to_new_address(site: &str) -> serde_json::Value {
    json!({ "site": site, "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"] })
}

fn powerdns(port: u16) -> StepContext {
    powerdns_within(port, Duration::from_secs(20))
}

fn powerdns_within(port: u16, budget: Duration) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_PDNS_KEY", "key") };
    let api = format!("http://127.0.0.1:{port}");
    let settings =
        json!({ "powerdns": { "api": api, "api_key": "env:DROVER_TEST_FAULT_PDNS_KEY", "zone": "example.test." } });
    one_site("pdns", settings, budget)
}

fn set() -> serde_json::Value {
    app_to_new_address("pdns")
}

#[tokio::test]
async fn powerdns_refused_5xx_429_and_malformed_answers() {
    let refusing = drover_api::testing::RefusingPort::new();
    let dead = refusing.port;
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

    let api = ScriptedHttp::start(vec![(429, "slow down".into())]).await;
    let err = action("dns.powerdns.set").run(&powerdns(api.port), &set()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("rate-limiting (429)"), "{}", err.message);

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
    route53_within(port, Duration::from_secs(20))
}

fn route53_within(port: u16, budget: Duration) -> StepContext {
    // SAFETY: every test sets the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    one_site("aws", json!({ "route53": { "hosted_zone_id": "Z123", "endpoint": endpoint } }), budget)
}

fn upsert() -> serde_json::Value {
    app_to_new_address("aws")
}

#[tokio::test]
async fn route53_refused_5xx_and_malformed_answers() {
    let refusing = drover_api::testing::RefusingPort::new();
    let dead = refusing.port;
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

#[tokio::test]
async fn route53_throttling_and_silence_are_retryable_within_the_step_s_time() {
    let throttled = r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r1</RequestId></ErrorResponse>"#;
    let api = ScriptedHttp::start(vec![(400, throttled.into())]).await;
    let err = action("dns.route53.set").run(&route53(api.port), &upsert()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("Throttling") || err.message.contains("Rate exceeded"), "{}", err.message);

    let api = ScriptedHttp::silent().await;
    let started = std::time::Instant::now();
    let err = action("dns.route53.set").run(&route53_within(api.port, Duration::from_secs(2)), &upsert()).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the step: {:?}", started.elapsed());
    assert!(err.message.contains("timed out"), "{}", err.message);
}

/// A UDP DNS server on loopback that answers queries for `app.example.test.` with 192.0.2.10
/// and every UPDATE with whatever `update_answer` makes of the request (nothing: silence).
async fn udp_server(update_answer: fn(&Message) -> Option<Vec<u8>>) -> (u16, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
            let answer = if request.op_code() == OpCode::Update {
                update_answer(&request)
            } else {
                let mut m = reply(&request, ResponseCode::NoError);
                let a = Record::from_rdata(
                    Name::from_ascii("app.example.test.").unwrap(),
                    300,
                    RData::A(A::new(192, 0, 2, 10)),
                );
                m.add_answer(a);
                m.to_vec().ok()
            };
            if let Some(bytes) = answer {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    (port, task)
}

/// A response to `request` with its id, opcode and question, unsigned.
fn reply(request: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(request.id()).set_message_type(MessageType::Response).set_op_code(request.op_code());
    m.add_queries(request.queries().to_vec());
    m.set_response_code(code);
    m
}

fn rfc2136(port: u16) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_TSIG", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=") };
    let settings = json!({ "dns": { "server": format!("127.0.0.1:{port}"), "zone": "example.test.", "key_name": "drover-key",
                                    "tsig_key": "env:DROVER_TEST_FAULT_TSIG", "timeout": "300ms" } });
    one_site("dns", settings, Duration::from_secs(5))
}

fn to_west() -> serde_json::Value {
    let mut with = app_to_new_address("dns");
    with["propagation_timeout"] = json!("1s");
    with
}

/// What each hostile answer to a signed UPDATE comes to: undecodable or foreign datagrams are
/// dropped (they may be spoofs) and the server counts as silent — retryable; a decodable
/// answer without the TSIG signature is not believed, whatever it says — permanent. None is
/// taken for success.
#[tokio::test]
async fn malformed_and_forged_answers_to_an_update_are_never_taken_for_success() {
    type Answer = fn(&Message) -> Option<Vec<u8>>;
    let silent: [(&str, Answer); 4] = [
        ("silence", |_| None),
        ("random bytes", |_| Some((0..60u8).map(|i| i.wrapping_mul(97)).collect())),
        ("a header promising records that are not there", |r| {
            let mut b = reply(r, ResponseCode::NoError).to_vec().unwrap();
            b.truncate(12);
            b[7] = 5; // ANCOUNT 5
            Some(b)
        }),
        ("another message's id", |r| {
            let mut m = reply(r, ResponseCode::NoError);
            m.set_id(r.id().wrapping_add(1));
            m.to_vec().ok()
        }),
    ];
    let unsigned: [(&str, Answer); 3] = [
        ("an unsigned NOERROR", |r| reply(r, ResponseCode::NoError).to_vec().ok()),
        ("an unsigned SERVFAIL", |r| reply(r, ResponseCode::ServFail).to_vec().ok()),
        ("an unsigned truncated answer", |r| {
            let mut m = reply(r, ResponseCode::NoError);
            m.set_truncated(true);
            m.to_vec().ok()
        }),
    ];
    let cases =
        silent.iter().map(|c| (c, ErrorKind::Retryable)).chain(unsigned.iter().map(|c| (c, ErrorKind::Permanent)));
    for ((what, answer), kind) in cases {
        let (port, task) = udp_server(*answer).await;
        let started = std::time::Instant::now();
        let result = action("dns.rfc2136.set").run(&rfc2136(port), &to_west()).await;
        task.abort();
        let err = result.expect_err(what);
        assert_eq!(err.kind, kind, "{what}: {err:?}");
        let expected = match kind {
            ErrorKind::Retryable => format!("DNS server 127.0.0.1:{port} did not answer"),
            _ => format!(
                "DNS server 127.0.0.1:{port} answered without a TSIG signature; the answer is not trusted (key `drover-key` from env:DROVER_TEST_FAULT_TSIG)"
            ),
        };
        assert!(err.message.starts_with(&expected), "{what}: {}", err.message);
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: within the step's time");
    }
}

#[tokio::test]
async fn a_signed_servfail_is_retryable_and_the_next_attempt_goes_through() {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_TSIG", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=") };
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=";
    let server = drover_standins::dns::StandIn::start(
        0,
        "example.test.",
        "drover-key",
        secret,
        300,
        &[("app.example.test.", "192.0.2.10")],
    )
    .await
    .unwrap();
    server.fail_updates_with(Some(ResponseCode::ServFail));
    let ctx = rfc2136(server.addr().port());
    let err = action("dns.rfc2136.set").run(&ctx, &to_west()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert_eq!(
        err.message,
        format!("DNS server {} failed the update of app.example.test. A (SERVFAIL)", server.addr())
    );
    assert_eq!(server.a_values("app.example.test."), ["192.0.2.10"], "nothing changed");
    server.fail_updates_with(None);
    action("dns.rfc2136.set").run(&ctx, &to_west()).await.unwrap();
    assert_eq!(server.a_values("app.example.test."), ["192.0.2.20"]);
}

/// A fleet's switches checked at once: at most the site's `max_in_flight` messages reach the
/// server at a time. The lab's 500 plans sent together overflowed BIND's UDP receive buffer
/// and one dropped datagram held the whole preflight for the 5 s timeout.
#[tokio::test]
async fn plans_at_once_keep_within_the_server_s_messages_in_flight() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = socket.local_addr().unwrap().port();
    let (open, peak, served) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let server = {
        let (socket, open, peak, served) = (socket.clone(), open.clone(), peak.clone(), served.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
                peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let (socket, open, served) = (socket.clone(), open.clone(), served.clone());
                tokio::spawn(async move {
                    // A server that takes a moment per message.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let bytes = reply(&request, ResponseCode::NoError).to_vec().unwrap();
                    open.fetch_sub(1, Ordering::SeqCst);
                    served.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&bytes, from).await;
                });
            }
        })
    };
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_FAULT_TSIG", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=") };
    let settings = json!({ "dns": { "server": format!("127.0.0.1:{port}"), "zone": "example.test.", "key_name": "drover-key",
                                    "tsig_key": "env:DROVER_TEST_FAULT_TSIG", "timeout": "2s", "max_in_flight": 4 } });
    let ctx = one_site("dns", settings, Duration::from_secs(30));
    let set = action("dns.rfc2136.set");
    let with = to_west();
    let plans = futures::future::join_all((0..30).map(|_| set.plan(&ctx, &with))).await;
    server.abort();
    assert!(plans.iter().all(|p| p.is_ok()), "{:?}", plans.iter().find(|p| p.is_err()));
    assert!(served.load(Ordering::SeqCst) >= 30, "every plan asked the server");
    assert!(peak.load(Ordering::SeqCst) <= 4, "{} messages in flight at once", peak.load(Ordering::SeqCst));
}
