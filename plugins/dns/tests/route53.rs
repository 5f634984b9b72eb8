//! `dns.route53.set` against moto's Route 53 (PyPI `moto[server]`), started here on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use serde_json::{Value, json};

use drover_api::testing::Moto;
use drover_api::{Action, StepContext};

async fn moto() -> (Moto, String) {
    zone(Moto::start().unwrap()).await
}

/// A hosted zone `example.test.` with app → 192.0.2.10 (two requests).
async fn zone(moto: Moto) -> (Moto, String) {
    // SAFETY: every test sets the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let url = moto.url().to_string();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&url)
        .load()
        .await;
    let client = aws_sdk_route53::Client::new(&conf);
    let zone = client
        .create_hosted_zone()
        .name("example.test.")
        .caller_reference(format!("t{}", moto.url()))
        .send()
        .await
        .unwrap();
    let id = zone.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string();
    let rrset = ResourceRecordSet::builder()
        .name("app.example.test.")
        .r#type(RrType::A)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value("192.0.2.10").build().unwrap())
        .build()
        .unwrap();
    let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(rrset).build().unwrap();
    client
        .change_resource_record_sets()
        .hosted_zone_id(&id)
        .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .unwrap();
    (moto, id)
}

fn ctx(m: &Moto, zone: &str) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert("aws".to_string(), json!({ "route53": { "hosted_zone_id": zone, "endpoint": m.url() } }));
    drover_api::testing::context(sites, Duration::from_secs(30))
}

fn action() -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == "dns.route53.set").unwrap()
}

fn to_west() -> Value {
    json!({ "site": "aws", "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"], "ttl": 60, "expect_current": ["192.0.2.10"] })
}

#[tokio::test]
async fn upsert_guarded_by_the_current_value_and_undo() {
    let (m, zone) = moto().await;
    let c = ctx(&m, &zone);
    let plan = action().plan(&c, &to_west()).await.unwrap();
    assert!(plan.checks.iter().all(|x| x.ok), "{plan:?}");
    let out = action().run(&c, &to_west()).await.unwrap();
    assert_eq!(out["previous"], json!({ "values": ["192.0.2.10"], "ttl": 300 }));
    let again = action().plan(&c, &to_west()).await.unwrap();
    assert!(again.changes.is_empty(), "already there: {again:?}");
    action().run(&c, &to_west()).await.unwrap();
    action().undo(&c, &to_west(), &out).await.unwrap();
    let back = action().plan(&c, &to_west()).await.unwrap();
    assert!(back.summary.contains("[\"192.0.2.10\"] → [\"192.0.2.20\"]"), "{}", back.summary);
}

#[tokio::test]
async fn a_mismatch_or_an_unknown_zone_changes_nothing() {
    let (m, zone) = moto().await;
    let mut wrong = to_west();
    wrong["expect_current"] = json!(["198.51.100.1"]);
    let err = action().run(&ctx(&m, &zone), &wrong).await.unwrap_err();
    assert!(err.message.contains("the runbook expects [\"198.51.100.1\"]"), "{}", err.message);
    let err = action().run(&ctx(&m, "ZNOSUCHZONE"), &to_west()).await.unwrap_err();
    assert!(err.message.contains("no such hosted zone"), "{}", err.message);
}

#[tokio::test]
async fn credentials_route_53_refuses_are_permanent_and_say_what_to_check() {
    // moto lets the two requests that make the zone through, then checks keys as AWS does.
    let (m, zone) = zone(Moto::start_checking_credentials_after(2).unwrap()).await;
    let e = action().run(&ctx(&m, &zone), &to_west()).await.unwrap_err();
    assert_eq!(e.kind, drover_api::ErrorKind::Permanent, "{e:?}");
    assert!(e.message.starts_with("Route 53 rejected the credentials"), "{}", e.message);
    assert_eq!(e.hint.as_deref(), Some("check the AWS credentials drover runs with (environment, profile or role)"));
    // The plan (rehearsal, `drover plan`) shows it as a failed check, changing nothing.
    let plan = action().plan(&ctx(&m, &zone), &to_west()).await.unwrap();
    assert!(plan.changes.is_empty(), "{plan:?}");
    assert!(plan.checks.iter().any(|c| !c.ok && c.detail.starts_with("Route 53 rejected the credentials")), "{plan:?}");
}

/// One undo for every back end: a record the step created is deleted again — only while it
/// still holds what the step set. (Route 53's undo used to refuse, unlike the other two.)
#[tokio::test]
async fn undo_deletes_a_record_the_step_created() {
    let (m, zone) = moto().await;
    let c = ctx(&m, &zone);
    let new = json!({ "site": "aws", "name": "new.example.test.", "type": "A", "values": ["192.0.2.30"], "ttl": 60 });
    let out = action().run(&c, &new).await.unwrap();
    assert_eq!(out["previous"], json!({ "values": [], "ttl": 0 }));
    let created = action().plan(&c, &new).await.unwrap();
    assert!(created.changes.is_empty(), "created: {created:?}");
    action().undo(&c, &new, &out).await.unwrap();
    let gone = action().plan(&c, &new).await.unwrap();
    assert!(gone.summary.contains("[] → [\"192.0.2.30\"]"), "{}", gone.summary);
}
