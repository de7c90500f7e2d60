//! deptrans's plain JSON source (`[[sources]] format = "json"`) against the real broker and
//! PostgreSQL: JSON statuses reach KRT exactly as envelope ones do, and records that cannot be
//! used go to the source's dead-letter topic with why and where from, without holding up the
//! good records behind them on the same partition.

use std::collections::BTreeMap;
use std::time::Duration;

use events::header;
use events::v1::DriverStatusKind;
use integration_tests::{kafka, kafka_settings, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use switchyard_deptrans::config::SourceConfig;

use crate::support::deptrans_common::*;

/// A plain record as another service would produce it.
fn record(driver: &str, status: &str, minute: u32) -> Value {
    json!({
        "park_id": "p",
        "driver_profile_id": driver,
        "status": status,
        "updated_at": at(minute).to_rfc3339(),
    })
}

async fn produce_json(p: &rdkafka::producer::FutureProducer, topic: &str, key: &str, v: &[u8]) {
    kafka::produce(p, topic, key, v).await.expect("produce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_statuses_reach_krt_exactly_as_envelope_ones() {
    let env = env(1).await;
    let json_topic = unique("deptrans-json");
    kafka::create_topic(&json_topic, 1)
        .await
        .expect("json topic");
    let f = &env.fakes.state;
    // trackstory puts "pos-in" in Saint Petersburg and "pos-out" in Moscow; their records say
    // otherwise, and the record wins.
    f.add_driver("p", "env", "L-env", &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p", "json", "L-json", &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p", "pos-in", "L-pos-in", &["comfort"], SPB.0, SPB.1);
    f.add_driver(
        "p",
        "pos-out",
        "L-pos-out",
        &["comfort"],
        MOSCOW.0,
        MOSCOW.1,
    );
    let p = kafka::producer().expect("producer");
    produce(&p, &env.topic, "p", "env", DriverStatusKind::Busy, at(1)).await;
    let mut out = record("pos-out", "online", 1);
    out["position"] = json!({"lat": SPB.0, "lon": SPB.1});
    let mut inside = record("pos-in", "online", 1);
    inside["position"] = json!({"lat": MOSCOW.0, "lon": MOSCOW.1});
    // Fields deptrans does not read are tolerated.
    let mut plain = record("json", "busy", 1);
    plain["source_service"] = json!("driver-status-v2");
    plain["car_id"] = json!(17);
    for (driver, v) in [("pos-out", out), ("pos-in", inside), ("json", plain)] {
        produce_json(
            &p,
            &json_topic,
            &format!("p/{driver}"),
            v.to_string().as_bytes(),
        )
        .await;
    }

    let mut cfg = env.config();
    cfg.sources = vec![
        SourceConfig::envelope(&env.topic),
        SourceConfig::json(&json_topic),
    ];
    let svc = start(cfg).await;
    // One partition: once "json" (produced last) is pushed, "pos-out" was decided too.
    eventually("env, json and pos-in pushed", || async {
        f.pushed().len() >= 3
    })
    .await;
    env.drained("queue drained").await;
    let pushed: BTreeMap<String, (String, String)> = f
        .pushed()
        .into_iter()
        .map(|p| (p.driver, (p.status, p.timestamp)))
        .collect();
    assert_eq!(
        pushed.keys().collect::<Vec<_>>(),
        vec!["lic:L-env", "lic:L-json", "lic:L-pos-in"],
        "{pushed:?}"
    );
    // Same status at the same time: KRT sees no difference between the formats.
    assert_eq!(pushed["lic:L-json"], pushed["lic:L-env"]);
    assert_eq!(pushed["lic:L-pos-in"].0, "online");
    // No bad record on either source; the series exist at zero.
    let m = svc.metrics().await;
    for (topic, reason) in [
        (json_topic.as_str(), "not_json"),
        (json_topic.as_str(), "invalid_time"),
        (env.topic.as_str(), "not_envelope"),
    ] {
        let series = format!(
            "switchyard_deptrans_bad_records_total{{topic=\"{topic}\",reason=\"{reason}\"}}"
        );
        assert_eq!(metric_value(&m, &series), Some(0.0), "{series}\n{m}");
    }
    svc.stop().await;
}

fn committed(group: &str, topic: &str) -> Offset {
    let c: BaseConsumer = kafka_settings()
        .consumer_config(group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()[0].offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_records_are_dead_lettered_and_the_good_ones_after_them_arrive() {
    // env.topic (one partition) is the JSON source itself.
    let env = env(1).await;
    let f = &env.fakes.state;
    for d in ["before", "after"] {
        f.add_driver("p", d, &format!("L-{d}"), &["econom"], MOSCOW.0, MOSCOW.1);
    }
    let mut missing = record("gone", "online", 1);
    missing.as_object_mut().unwrap().remove("driver_profile_id");
    let mut bad_time = record("late", "online", 1);
    bad_time["updated_at"] = json!("yesterday at noon");
    let records: Vec<(&str, Vec<u8>)> = vec![
        (
            "p/before",
            record("before", "online", 1).to_string().into_bytes(),
        ),
        ("p/x", b"{\"park_id\": \"p\", not json".to_vec()),
        ("p/gone", missing.to_string().into_bytes()),
        (
            "p/asleep",
            record("asleep", "asleep", 1).to_string().into_bytes(),
        ),
        ("p/late", bad_time.to_string().into_bytes()),
        (
            "p/after",
            record("after", "busy", 2).to_string().into_bytes(),
        ),
    ];
    let p = kafka::producer().expect("producer");
    for (key, value) in &records {
        produce_json(&p, &env.topic, key, value).await;
    }

    let mut cfg = env.config();
    cfg.sources = vec![SourceConfig::json(&env.topic)];
    cfg.sender.enabled = false;
    let svc = start(cfg).await;
    eventually("the records around the bad ones queued", || async {
        env.queue().await.len() == 2
    })
    .await;
    assert_eq!(
        env.queue().await,
        vec![
            ("p".into(), "after".into(), "busy".into(), at(2)),
            ("p".into(), "before".into(), "online".into(), at(1)),
        ]
    );

    let dlq = format!("{}.deptrans.dlq", env.topic);
    let parked = kafka::read(&dlq, 4, Duration::from_secs(30))
        .await
        .expect("read dead letters");
    assert_eq!(parked.len(), 4, "dead letters: {parked:?}");
    let mut by_offset: BTreeMap<i64, _> = BTreeMap::new();
    for m in &parked {
        let offset: i64 = kafka::header(m, header::SOURCE_OFFSET)
            .expect("sy-source-offset")
            .parse()
            .expect("numeric offset");
        assert_eq!(
            kafka::header(m, header::SOURCE_TOPIC).as_deref(),
            Some(env.topic.as_str())
        );
        assert_eq!(
            kafka::header(m, header::SOURCE_PARTITION).as_deref(),
            Some("0")
        );
        // The record itself, untouched: key and value.
        let (key, value) = &records[usize::try_from(offset).expect("offset")];
        assert_eq!(m.key(), Some(key.as_bytes()));
        assert_eq!(m.payload(), Some(value.as_slice()));
        by_offset.insert(
            offset,
            (
                kafka::header(m, header::DLQ_REASON).expect("sy-dlq-reason"),
                kafka::header(m, header::LAST_ERROR).expect("sy-last-error"),
            ),
        );
    }
    let reasons: Vec<(i64, &str)> = by_offset
        .iter()
        .map(|(o, (reason, _))| (*o, reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, "not_json"),
            (2, "missing_field"),
            (3, "invalid_status"),
            (4, "invalid_time")
        ]
    );
    // The error names the field.
    for (offset, field) in [(2, "driver_profile_id"), (3, "status"), (4, "updated_at")] {
        let error = &by_offset[&offset].1;
        assert!(error.starts_with(field), "{offset}: {error}");
    }

    let m = svc.metrics().await;
    for reason in [
        "not_json",
        "missing_field",
        "invalid_status",
        "invalid_time",
    ] {
        let series = format!(
            "switchyard_deptrans_bad_records_total{{topic=\"{}\",reason=\"{reason}\"}}",
            env.topic
        );
        assert_eq!(metric_value(&m, &series), Some(1.0), "{series}\n{m}");
    }
    assert_eq!(
        metric_value(&m, "switchyard_deptrans_dead_letter_failures_total"),
        Some(0.0)
    );
    // Every offset stored and committed, the bad records' included.
    eventually("all six offsets committed", || async {
        committed(&env.group, &env.topic) == Offset::Offset(6)
    })
    .await;
    svc.stop().await;
}

/// `schemas/deptrans/contractor-status.v1.json` accepts exactly what the decoder accepts.
#[test]
fn deptrans_contractor_status_schema_agrees_with_the_decoder() {
    let path =
        integration_tests::workspace_root().join("schemas/deptrans/contractor-status.v1.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read schema")).expect("json");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    let with = |field: &str, value: Value| {
        let mut v = record("d", "online", 1);
        v[field] = value;
        v
    };
    let without = |field: &str| {
        let mut v = record("d", "online", 1);
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let cases = [
        record("d", "online", 1),
        record("d", "busy", 1),
        record("d", "offline", 1),
        with("extra", json!({"any": "thing"})),
        with("position", json!({"lat": 55.75, "lon": 37.61})),
        with("position", json!({"lat": -90, "lon": 180, "accuracy": 3})),
        with("position", Value::Null),
        with("updated_at", json!("2026-01-01T10:00:00.123+03:00")),
        without("park_id"),
        without("driver_profile_id"),
        without("status"),
        without("updated_at"),
        with("park_id", json!("")),
        with("park_id", Value::Null),
        with("driver_profile_id", json!(42)),
        with("status", json!("asleep")),
        with("status", json!("ONLINE")),
        with("updated_at", json!("yesterday")),
        with("updated_at", json!(1_767_250_800)),
        with("position", json!({"lat": 90.5, "lon": 37.0})),
        with("position", json!({"lat": 55.0, "lon": -181})),
        with("position", json!({"lat": 55.0})),
        with("position", json!([55.0, 37.0])),
        json!([1, 2]),
        json!("online"),
    ];
    for v in cases {
        let decoded = switchyard_deptrans::records::decode_json(v.to_string().as_bytes());
        assert_eq!(
            validator.is_valid(&v),
            decoded.is_ok(),
            "schema and decoder disagree on {v}: {decoded:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deptrans_dead_letter_failures_are_retried_and_nothing_is_lost() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let env = env(1).await;
    let f = &env.fakes.state;
    f.add_driver("p", "after", "L-after", &["econom"], MOSCOW.0, MOSCOW.1);
    let dlq = unique("deptrans-dlq");
    let mut source = SourceConfig::json(&env.topic);
    source.dead_letter_topic = Some(dlq.clone());
    let mut cfg = env.config();
    cfg.sources = vec![source];
    cfg.sender.enabled = false;
    cfg.kafka.produce_timeout_ms = 1_500;
    cfg.consumer.retry_backoff_ms = 100;
    // deptrans creates the dead-letter topic at start; take it away again.
    let svc = start(cfg).await;
    let admin: AdminClient<DefaultClientContext> =
        kafka_settings().admin_config().create().expect("admin");
    let deleted = admin
        .delete_topics(&[&dlq], &AdminOptions::new())
        .await
        .expect("delete topics");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let meta: BaseConsumer = kafka_settings()
        .consumer_config(&unique("meta"))
        .create()
        .expect("metadata client");
    eventually("dead-letter topic gone", || async {
        meta.fetch_metadata(Some(&dlq), Duration::from_secs(5))
            .is_ok_and(|m| {
                m.topics()
                    .iter()
                    .all(|t| t.error().is_some() || t.partitions().is_empty())
            })
    })
    .await;

    let p = kafka::producer().expect("producer");
    produce_json(&p, &env.topic, "p/x", b"not json at all").await;
    let after = record("after", "busy", 2).to_string();
    produce_json(&p, &env.topic, "p/after", after.as_bytes()).await;
    eventually("dead-letter produce failed and counted", || async {
        svc.metric("switchyard_deptrans_dead_letter_failures_total")
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    // The offset of the bad record is not stored while its copy is not on the broker.
    assert_ne!(committed(&env.group, &env.topic), Offset::Offset(2));

    // The topic is back: the copy lands, and the status behind it arrives.
    eventually("dead-letter topic recreated", || async {
        kafka::create_topic(&dlq, 1).await.is_ok()
    })
    .await;
    eventually("the status after the bad record queued", || async {
        env.queue().await.len() == 1
    })
    .await;
    let parked = kafka::read(&dlq, 1, Duration::from_secs(30))
        .await
        .expect("read dead letters");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].payload(), Some(&b"not json at all"[..]));
    assert_eq!(
        kafka::header(&parked[0], header::DLQ_REASON).as_deref(),
        Some("not_json")
    );
    eventually("both offsets committed", || async {
        committed(&env.group, &env.topic) == Offset::Offset(2)
    })
    .await;
    svc.stop().await;
}
