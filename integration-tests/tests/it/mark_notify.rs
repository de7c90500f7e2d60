//! mark-notify end to end: ingress with gateway headers -> real broker -> dispatcher routing by
//! tag -> HTTP targets (real HTTP servers) and topic targets (read back and decoded).

use std::path::PathBuf;
use std::time::Duration;

use events::v1::{AnonymousSeenRecord, ClientSeenRecord, DriverSeenRecord};
use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, header, read};
use integration_tests::*;
use prost::Message as _;
use rdkafka::Message as _;
use serde_json::{json, Value};
use switchyard_dispatcher::config::MarkNotifySection;

const WAIT: Duration = Duration::from_secs(30);
const SEEN: &str = "/4.0/mark-notify/v1/seen";

struct Setup {
    topic: String,
    ingress: Running,
    dispatcher: Running,
    dlq_prefix: String,
}

/// Starts ingress + dispatcher with `integrations` (TOML) on a fresh marks topic.
async fn setup(integrations: &str) -> Setup {
    let topic = unique("marks");
    create_topic(&topic, 3).await.unwrap();
    let dir = std::env::temp_dir().join(unique("mark"));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("integrations.toml");
    std::fs::write(&file, integrations).unwrap();

    // The ingress knows nothing of the integrations: it publishes every mark.
    let mut icfg = ingress_config("unused");
    icfg.mark_notify.topic = topic.clone();
    let ingress = start_ingress(icfg, None).await.unwrap();

    let mut dcfg = dispatcher_config(Vec::new());
    dcfg.mark_notify = Some(MarkNotifySection {
        topic: topic.clone(),
        integrations_file: file,
    });
    let dlq_prefix = dcfg.topic_prefix.clone();
    let dispatcher = start_dispatcher(dcfg).await.unwrap();
    Setup {
        topic,
        ingress,
        dispatcher,
        dlq_prefix,
    }
}

async fn seen(ingress: &Running, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut req = ingress_client()
        .post(ingress.url(SEEN))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// (what, headers, body, field named in the error).
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, &'a str);

const CLIENT: &[(&str, &str)] = &[
    ("X-YaTaxi-UserId", "user-1"),
    ("X-Yandex-UID", "4001"),
    ("X-YaTaxi-Bound-Uids", "4002, 4003"),
    ("X-YaTaxi-PhoneId", "phone-9"),
];
const DRIVER: &[(&str, &str)] = &[
    ("X-YaTaxi-Park-Id", "park1"),
    ("X-YaTaxi-Driver-Profile-Id", "drv7"),
];

fn schema(kind: &str) -> Value {
    let path = workspace_root().join(format!("schemas/webhooks/mark-notify.{kind}.v1.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn each_caller_kind_reaches_http_and_topic_targets_in_the_documented_format() {
    let api = FakeSubscriber::start(Script::Ok).await.unwrap();
    let out = unique("promo-seen");
    create_topic(&out, 2).await.unwrap();
    let s = setup(&format!(
        r#"
        [[integrations]]
        tag = "promo"
        [[integrations.targets]]
        name = "api"
        target = {{ kind = "http", url = "{}" }}
        [[integrations.targets]]
        name = "log"
        target = {{ kind = "topic", topic = "{out}" }}
        "#,
        api.url("/seen")
    ))
    .await;

    let (st, client) = seen(&s.ingress, CLIENT, r#"{"tag":"promo","id":"n-1"}"#).await;
    assert_eq!(st, 200, "{client}");
    let (st, driver) = seen(&s.ingress, DRIVER, r#"{"tag":"promo","id":"n-2"}"#).await;
    assert_eq!(st, 200, "{driver}");
    let (st, anon) = seen(
        &s.ingress,
        &[("X-Idempotency-Token", "view-3")],
        r#"{"tag":"promo","id":"n-3"}"#,
    )
    .await;
    assert_eq!(st, 200, "{anon}");
    assert_eq!(client["idempotency_key"], "promo:n-1:client:user-1");

    // HTTP target: one body format per caller kind, valid against its JSON Schema.
    assert!(api.wait_delivered(3, WAIT).await);
    for got in api.delivered() {
        let mut body = got.json();
        let kind = body["caller"].as_str().unwrap().to_owned();
        assert!(
            jsonschema::is_valid(&schema(&kind), &body),
            "{kind}: {body}"
        );
        assert!(body.as_object_mut().unwrap().remove("seen_at").is_some());
        let (expected, token) = match kind.as_str() {
            "client" => (
                json!({"event_id": client["event_id"], "caller": "client", "tag": "promo", "id": "n-1",
                       "user_id": "user-1", "yandex_uid": 4001, "bound_uids": [4002, 4003], "phone_id": "phone-9"}),
                "promo:n-1:client:user-1",
            ),
            "driver" => (
                json!({"event_id": driver["event_id"], "caller": "driver", "tag": "promo", "id": "n-2",
                       "db_id": "park1", "uuid": "drv7"}),
                "promo:n-2:driver:park1:drv7",
            ),
            _ => (
                json!({"event_id": anon["event_id"], "caller": "anonymous", "tag": "promo", "id": "n-3"}),
                "promo:n-3:anonymous:view-3",
            ),
        };
        assert_eq!(body, expected);
        assert_eq!(got.header("x-idempotency-token"), Some(token));
    }

    // Topic target: one protobuf message per caller kind, keyed by the person.
    let records = read(&out, 3, WAIT).await.unwrap();
    assert_eq!(records.len(), 3);
    for r in &records {
        let value = r.payload().unwrap();
        let key = String::from_utf8_lossy(r.key().unwrap()).into_owned();
        // The source envelope's standard headers, beside the delivery's own.
        assert_eq!(header(r, "sy-event-type").as_deref(), Some("mark.seen"));
        assert_eq!(header(r, "sy-tag").as_deref(), Some("promo"));
        assert!(header(r, "sy-event-id").is_some());
        match header(r, "sy-caller-kind").as_deref() {
            Some("client") => {
                let m = ClientSeenRecord::decode(value).unwrap();
                assert_eq!(key, "client:user-1");
                assert_eq!(m.event_id, client["event_id"].as_str().unwrap());
                assert_eq!(
                    (m.tag.as_str(), m.id.as_str(), m.user_id.as_str()),
                    ("promo", "n-1", "user-1")
                );
                assert_eq!(
                    (m.uid, m.bound_uids.clone(), m.phone_id.as_str()),
                    (4001, vec![4002, 4003], "phone-9")
                );
                assert!(m.seen_at.is_some());
            }
            Some("driver") => {
                let m = DriverSeenRecord::decode(value).unwrap();
                assert_eq!(key, "driver:park1:drv7");
                assert_eq!(m.event_id, driver["event_id"].as_str().unwrap());
                assert_eq!(
                    (m.db_id.as_str(), m.uuid.as_str(), m.id.as_str()),
                    ("park1", "drv7", "n-2")
                );
            }
            Some("anonymous") => {
                let m = AnonymousSeenRecord::decode(value).unwrap();
                assert_eq!(key, "anonymous:view-3");
                assert_eq!(
                    (m.event_id.as_str(), m.tag.as_str(), m.id.as_str()),
                    (anon["event_id"].as_str().unwrap(), "promo", "n-3")
                );
            }
            other => panic!("unexpected caller kind {other:?}"),
        }
    }
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_integration_does_not_stop_the_other_and_backoff_then_success() {
    let broken = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let flaky = FakeSubscriber::start(Script::FailFirst {
        n: 3,
        status: 503,
        retry_after: None,
    })
    .await
    .unwrap();
    let s = setup(&format!(
        r#"
        [[integrations]]
        tag = "banner"
        [[integrations.targets]]
        name = "broken"
        target = {{ kind = "http", url = "{}" }}
        [[integrations.targets]]
        name = "flaky"
        target = {{ kind = "http", url = "{}" }}
        "#,
        broken.url("/b"),
        flaky.url("/f")
    ))
    .await;
    for i in 0..10 {
        let (st, _) = seen(
            &s.ingress,
            DRIVER,
            &format!(r#"{{"tag":"banner","id":"b-{i}"}}"#),
        )
        .await;
        assert_eq!(st, 200);
    }
    assert!(
        flaky.wait_delivered(10, WAIT).await,
        "flaky got {}",
        flaky.delivered().len()
    );
    assert_eq!(
        flaky.received().len(),
        13,
        "3 failures, then every mark once"
    );
    assert!(broken.delivered().is_empty());
    assert!(!broken.received().is_empty());
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn max_attempts_then_the_integrations_dead_letter_topic() {
    let down = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let s = setup(&format!(
        r#"
        [[integrations]]
        tag = "story"
        [[integrations.targets]]
        name = "down"
        max_attempts = 2
        target = {{ kind = "http", url = "{}" }}
        "#,
        down.url("/d")
    ))
    .await;
    let (st, resp) = seen(&s.ingress, CLIENT, r#"{"tag":"story","id":"s-1"}"#).await;
    assert_eq!(st, 200);
    let dlq = format!("{}mark-notify.story.down.dlq", s.dlq_prefix);
    let dead = read(&dlq, 1, WAIT).await.unwrap();
    assert_eq!(dead.len(), 1);
    let env = events::Envelope::from_bytes(dead[0].payload().unwrap()).unwrap();
    assert_eq!(env.event_id, resp["event_id"].as_str().unwrap());
    assert_eq!(header(&dead[0], "sy-attempts").as_deref(), Some("2"));
    assert_eq!(down.received().len(), 2);
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_mark_with_a_tag_no_integration_wants_is_kept_on_the_topic() {
    let s = setup("").await;
    let (st, resp) = seen(&s.ingress, CLIENT, r#"{"tag":"nobody-wants","id":"x"}"#).await;
    assert_eq!(st, 200, "{resp}");
    let event_id = resp["event_id"].as_str().expect("event_id").to_owned();
    // The mark is on the topic, for an integration added later to be fed by a replay.
    let records = read(&s.topic, 1, WAIT).await.unwrap();
    assert_eq!(records.len(), 1);
    let env = events::Envelope::from_bytes(records[0].payload().unwrap()).unwrap();
    assert_eq!(env.event_id, event_id);
    let Some(events::v1::envelope::Payload::NotificationSeen(m)) = env.payload else {
        panic!("not a mark: {env:?}");
    };
    assert_eq!((m.tag.as_str(), m.id.as_str()), ("nobody-wants", "x"));
    // No metric takes the client's tag as a label.
    let metrics = reqwest::get(s.ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("nobody-wants"), "{metrics}");
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn anonymous_views_spread_and_a_retried_view_keeps_its_token() {
    let s = setup("").await;
    let body = r#"{"tag":"promo","id":"popular"}"#;
    // Two views without a token are two views; a retried request with a token is one view.
    let (_, a) = seen(&s.ingress, &[], body).await;
    let (_, b) = seen(&s.ingress, &[], body).await;
    let (_, c1) = seen(&s.ingress, &[("X-Idempotency-Token", "req-77")], body).await;
    let (_, c2) = seen(&s.ingress, &[("X-Idempotency-Token", "req-77")], body).await;
    let token = |v: &Value| v["idempotency_key"].as_str().unwrap().to_owned();
    assert_ne!(token(&a), token(&b));
    assert_eq!(token(&c1), "promo:popular:anonymous:req-77");
    assert_eq!(token(&c1), token(&c2));
    assert_ne!(c1["event_id"], c2["event_id"]);

    let records = read(&s.topic, 4, WAIT).await.unwrap();
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.key().unwrap()).into_owned())
        .collect();
    keys.sort();
    keys.dedup();
    // a, b and the retried view: three keys, so views of one notification spread.
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&"anonymous:req-77".to_owned()), "{keys:?}");
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn every_bad_request_is_a_400_naming_the_field_or_header() {
    let s = setup("[[integrations]]\ntag = \"promo\"\ntargets = []\n").await;
    let ok = r#"{"tag":"promo","id":"1"}"#;
    let long_id = format!(r#"{{"tag":"promo","id":"{}"}}"#, "x".repeat(257));
    let huge = format!(
        r#"{{"tag":"promo","id":"1","pad":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let cases: Vec<Case> = vec![
        (
            "park without profile",
            vec![("X-YaTaxi-Park-Id", "p")],
            ok.into(),
            "x-yataxi-driver-profile-id",
        ),
        (
            "profile without park",
            vec![("X-YaTaxi-Driver-Profile-Id", "d")],
            ok.into(),
            "x-yataxi-park-id",
        ),
        (
            "client and driver",
            vec![
                ("X-YaTaxi-UserId", "u"),
                ("X-YaTaxi-Park-Id", "p"),
                ("X-YaTaxi-Driver-Profile-Id", "d"),
            ],
            ok.into(),
            "x-yataxi-park-id",
        ),
        (
            "non-numeric uid",
            vec![("X-YaTaxi-UserId", "u"), ("X-Yandex-UID", "abc")],
            ok.into(),
            "x-yandex-uid",
        ),
        (
            "non-numeric bound uid",
            vec![("X-YaTaxi-UserId", "u"), ("X-YaTaxi-Bound-Uids", "1,x")],
            ok.into(),
            "x-yataxi-bound-uids",
        ),
        (
            "uid without user id",
            vec![("X-Yandex-UID", "12")],
            ok.into(),
            "x-yataxi-userid",
        ),
        ("bad json", vec![], r#"{"tag":"#.into(), ""),
        ("missing id", vec![], r#"{"tag":"promo"}"#.into(), "id"),
        ("missing tag", vec![], r#"{"id":"1"}"#.into(), "tag"),
        (
            "extra field",
            vec![],
            r#"{"tag":"promo","id":"1","x":1}"#.into(),
            "x",
        ),
        (
            "wrong type",
            vec![],
            r#"{"tag":"promo","id":5}"#.into(),
            "id",
        ),
        (
            "bad tag chars",
            vec![],
            r#"{"tag":"Promo!","id":"1"}"#.into(),
            "tag",
        ),
        ("empty tag", vec![], r#"{"tag":"","id":"1"}"#.into(), "tag"),
        (
            "tag too long",
            vec![],
            format!(r#"{{"tag":"{}","id":"1"}}"#, "a".repeat(65)),
            "tag",
        ),
        (
            "empty id",
            vec![],
            r#"{"tag":"promo","id":""}"#.into(),
            "id",
        ),
        ("id too long", vec![], long_id, "id"),
        (
            "control char id",
            vec![],
            r#"{"tag":"promo","id":"a\u0007b"}"#.into(),
            "id",
        ),
        ("body too large", vec![], huge, ""),
    ];
    for (what, headers, body, field) in cases {
        let (st, resp) = seen(&s.ingress, &headers, &body).await;
        assert_eq!(st, 400, "{what}: {resp}");
        assert!(
            resp["code"].is_string() && resp["message"].is_string(),
            "{what}: {resp}"
        );
        if !field.is_empty() {
            assert_eq!(resp["field"], field, "{what}: {resp}");
        }
    }
    s.dispatcher.stop().await.unwrap();
    s.ingress.stop().await.unwrap();
}

#[tokio::test]
async fn broker_down_gives_503() {
    let mut cfg = ingress_config("unused");
    cfg.kafka.bootstrap_servers = "127.0.0.1:1".into();
    cfg.kafka.produce_timeout_ms = 1_000;
    let ingress = start_ingress(cfg, None).await.unwrap();
    let resp = ingress_client()
        .post(ingress.url(SEEN))
        .body(r#"{"tag":"promo","id":"1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    ingress.stop().await.unwrap();
}
