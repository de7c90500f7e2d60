//! Domain events end to end on the real broker and Postgres: the generic ingress, versioned
//! subscribers, the task tracker example under redelivery, the outbox relay across a restart,
//! and the direct-produce example.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use events::v1::envelope::Payload;
use events::Envelope;
use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, header, produce, producer, read};
use integration_tests::*;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::Message as _;
use serde_json::{json, Value};
use switchyard_idempotent::{self as idempotent, Db, Event, IdempotentConsumer};
use switchyard_outbox::{self as outbox, Relay};
use switchyard_task_tracker::{self as tt, Topics};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[allow(dead_code)]
#[path = "../../../producers/outbox/examples/produce_envelope.rs"]
mod produce_example;

pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn pg_url() -> String {
    std::env::var("SWITCHYARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/switchyard".into())
}

/// Fresh topics for the three domains.
pub(crate) async fn topics(partitions: i32) -> Topics {
    let t = Topics {
        users: unique("users"),
        accounts: unique("accounts"),
        tasks: unique("tasks"),
    };
    for name in [&t.users, &t.accounts, &t.tasks] {
        create_topic(name, partitions).await.unwrap();
    }
    t
}

/// `deploy/events.toml` with this test's topics and an absolute schema directory.
pub(crate) fn registry(topics: &Topics) -> PathBuf {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("deploy/events.toml")).unwrap();
    let mut reg: toml::Value = toml::from_str(&text).unwrap();
    let dir = root.join("schemas/events").display().to_string();
    reg["schemas_dir"] = toml::Value::String(dir);
    for e in reg["events"].as_array_mut().unwrap() {
        let topic = match e["topic"].as_str().unwrap() {
            "users" => topics.users.clone(),
            "accounts" => topics.accounts.clone(),
            "tasks" => topics.tasks.clone(),
            other => panic!("unexpected topic {other}"),
        };
        e["topic"] = toml::Value::String(topic);
    }
    let dir = std::env::temp_dir().join(unique("events"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.toml");
    std::fs::write(&file, toml::to_string(&reg).unwrap()).unwrap();
    file
}

async fn ingress(topics: &Topics) -> Running {
    let mut cfg = ingress_config("unused");
    cfg.domain_events.registry_file = Some(registry(topics));
    start_ingress(cfg, None).await.unwrap()
}

async fn post(ingress: &Running, event_type: &str, body: &str) -> (u16, Value) {
    let resp = ingress_client()
        .post(ingress.url(&format!("/v1/events/{event_type}")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn json_payload(env: &Envelope) -> Value {
    match &env.payload {
        Some(Payload::Json(b)) => serde_json::from_slice(b).unwrap(),
        other => panic!("not a JSON payload: {other:?}"),
    }
}

#[tokio::test]
async fn ingress_publishes_a_valid_event_in_the_envelope_keyed_by_its_key_field() {
    let topics = topics(1).await;
    let ingress = ingress(&topics).await;
    let (task, user) = (Uuid::now_v7(), Uuid::now_v7());
    let body = json!({"task_id": task, "user_id": user, "assigned_at": "2026-01-02T03:04:05Z"});

    let (status, resp) = post(&ingress, "tasks.task_assigned.v1", &body.to_string()).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["topic"], topics.tasks.as_str());
    let (status, again) = post(&ingress, "tasks.task_assigned.v1", &body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["idempotency_key"], resp["idempotency_key"],
        "same event, same key"
    );
    assert_ne!(again["event_id"], resp["event_id"]);

    let msgs = read(&topics.tasks, 2, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 2);
    let m = &msgs[0];
    assert_eq!(m.key(), Some(user.to_string().as_bytes()));
    assert_eq!(
        header(m, "sy-event-type").as_deref(),
        Some("tasks.task_assigned")
    );
    let env = Envelope::from_bytes(m.payload().unwrap()).unwrap();
    assert_eq!(env.event_id, resp["event_id"].as_str().unwrap());
    assert_eq!(env.event_type, "tasks.task_assigned");
    assert_eq!(env.schema_version, 1);
    assert_eq!(env.producer, "producers/domain-events");
    assert_eq!(
        env.idempotency_key,
        resp["idempotency_key"].as_str().unwrap()
    );
    assert_eq!(
        env.occurred_at().unwrap().to_rfc3339(),
        "2026-01-02T03:04:05+00:00"
    );
    assert_eq!(json_payload(&env), body);
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn ingress_rejects_every_violation_unknown_types_and_versions() {
    let topics = topics(1).await;
    let ingress = ingress(&topics).await;

    let bad = json!({"task_id": "not-a-uuid", "assigned_at": 3, "extra": true});
    let (status, resp) = post(&ingress, "tasks.task_assigned.v1", &bad.to_string()).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["code"], "schema_violation");
    let fields: Vec<&str> = resp["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["assigned_at", "extra", "task_id", "user_id"]);

    let (status, resp) = post(&ingress, "users.user_created.v2", r#"{"user_id":"0190e6a4-0000-7000-8000-000000000002","role":"boss","active":true,"display_name":""}"#).await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = resp["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["active", "display_name", "role"]);

    let (status, resp) = post(&ingress, "tasks.task_assigned.v1", "[]").await;
    assert_eq!(
        (status, resp["violations"][0]["field"].as_str()),
        (400, Some("$"))
    );
    let (status, resp) = post(&ingress, "tasks.task_assigned.v1", "{").await;
    assert_eq!((status, resp["code"].as_str()), (400, Some("invalid_json")));
    let (status, resp) = post(&ingress, "tasks.nope.v1", "{}").await;
    assert_eq!(
        (status, resp["code"].as_str()),
        (404, Some("unknown_event_type"))
    );
    let (status, resp) = post(&ingress, "tasks.task_assigned.v7", "{}").await;
    assert_eq!(
        (status, resp["code"].as_str()),
        (404, Some("unknown_event_version"))
    );
    let (status, resp) = post(&ingress, "tasks.task_assigned", "{}").await;
    assert_eq!((status, resp["field"].as_str()), (400, Some("event_type")));

    // Nothing of the above reached the topic: the first record is the valid one after them.
    let user = Uuid::now_v7();
    let (status, _) = post(
        &ingress,
        "users.user_activated.v1",
        &json!({"user_id": user}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &ingress,
        "tasks.task_completed.v1",
        &json!({"task_id": user, "user_id": user, "completed_at": "2026-01-02T03:04:05Z"})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let msgs = read(&topics.tasks, 1, WAIT).await.unwrap();
    let env = Envelope::from_bytes(msgs[0].payload().unwrap()).unwrap();
    assert_eq!(env.event_type, "tasks.task_completed");
    ingress.stop().await.unwrap();
}

/// The compatibility rule: `<type>.v1` subscribers also receive v2 (a superset: v1's fields,
/// unchanged, plus optional ones they ignore); `<type>.v2` subscribers receive only v2+.
#[tokio::test]
async fn v1_subscribers_receive_v2_events_in_a_compatible_form() {
    let topics = topics(3).await;
    let ingress = ingress(&topics).await;
    let v1_sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let v2_sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let mut s1 = http_subscriber("v1", &topics.users, &v1_sub.url("/hook"));
    s1.event_types = vec!["users.user_created.v1".into()];
    let mut s2 = http_subscriber("v2", &topics.users, &v2_sub.url("/hook"));
    s2.event_types = vec!["users.user_created.v2".into()];
    let dispatcher = start_dispatcher(dispatcher_config(vec![s1, s2]))
        .await
        .unwrap();

    let user = Uuid::now_v7();
    let v1 = json!({"user_id": user, "role": "worker", "active": false});
    let ann = json!({"user_id": user, "role": "worker", "active": false, "display_name": "Ann"});
    let bob = json!({"user_id": user, "role": "admin", "active": false, "display_name": "Bob"});
    for (t, body) in [
        ("users.user_created.v1", &v1),
        ("users.user_created.v2", &ann),
        ("users.user_created.v2", &bob),
    ] {
        let (status, resp) = post(&ingress, t, &body.to_string()).await;
        assert_eq!(status, 200, "{resp}");
    }
    assert!(v1_sub.wait_delivered(3, WAIT).await);
    assert!(v2_sub.wait_delivered(2, WAIT).await);
    let got1: Vec<Value> = v1_sub.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(got1, [v1.clone(), ann.clone(), bob.clone()]);
    // A tolerant v1 reader: every v2 body is valid v1 once unknown fields are ignored.
    let mut v1_schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("schemas/events/users.user_created.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    v1_schema
        .as_object_mut()
        .unwrap()
        .remove("additionalProperties");
    let v1_reader = jsonschema::validator_for(&v1_schema).unwrap();
    assert!(got1.iter().all(|b| v1_reader.is_valid(b)));
    // Same key, one partition, in order: v2's subscriber skipped the v1 event before these.
    let got2: Vec<Value> = v2_sub.delivered().iter().map(|r| r.json()).collect();
    assert_eq!(got2, [ann, bob]);
    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}

/// A service's connection (search_path = its schema), with the event tables migrated.
pub(crate) async fn service_db(schema: &str, sql: &str) -> Client {
    let mut c = idempotent::connect(&pg_url(), schema).await.unwrap();
    idempotent::migrate(&mut c, schema).await.unwrap();
    outbox::migrate(&mut c, schema).await.unwrap();
    c.batch_execute(sql).await.unwrap();
    c
}

pub(crate) async fn count(c: &Client, sql: &str, arg: &str) -> i64 {
    c.query_one(sql, &[&arg]).await.unwrap().get(0)
}

pub(crate) async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ACTIVE: &str = "SELECT count(*) FROM users WHERE user_id = $1 AND active";

/// Waits until the user service has `user` active and accounting has `entries` ledger rows for
/// `task`; `what` names the pair in a failure.
async fn settled(
    users: &Client,
    accounting: &Client,
    user: Uuid,
    task: Uuid,
    entries: i64,
    what: &str,
) {
    let ledger = "SELECT count(*) FROM ledger WHERE task_id = $1";
    wait_for(&format!("{what}: user active"), async || {
        count(users, ACTIVE, &user.to_string()).await == 1
    })
    .await;
    wait_for(&format!("{what}: {entries} ledger rows"), async || {
        count(accounting, ledger, &task.to_string()).await == entries
    })
    .await;
}

#[tokio::test]
async fn task_tracker_applies_each_event_once_under_redelivery_and_reordering() {
    let topics = topics(1).await;
    let stop = CancellationToken::new();
    let schema = unique("tt").replace('-', "_");
    let (us, acc, board) = (
        format!("{schema}_users"),
        format!("{schema}_acc"),
        format!("{schema}_board"),
    );
    let mut users = service_db(&us, tt::USER_SERVICE_SQL).await;
    let accounting = service_db(&acc, tt::ACCOUNTING_SQL).await;
    let mut board_db = service_db(&board, tt::BOARD_SQL).await;

    let mut tasks = tokio::task::JoinSet::new();
    for s in [&us, &acc, &board] {
        let mut c = idempotent::connect(&pg_url(), s).await.unwrap();
        let relay = Relay::new(&kafka_settings(), "test-relay").unwrap();
        let stop = stop.clone();
        tasks.spawn(async move { relay.run(&mut c, stop).await });
    }
    let consumers = [
        (
            "user-service",
            us.clone(),
            vec![topics.accounts.clone()],
            tt::user_service_handler(topics.clone()),
        ),
        (
            "accounting",
            acc.clone(),
            vec![topics.users.clone(), topics.tasks.clone()],
            tt::accounting_handler(topics.clone()),
        ),
    ];
    for (name, s, subscribed, handler) in consumers {
        let db = Db::new(pg_url(), s);
        let (stop, group) = (stop.clone(), unique(name));
        tasks.spawn(async move {
            let refs: Vec<&str> = subscribed.iter().map(String::as_str).collect();
            IdempotentConsumer::new(name)
                .run(&kafka_settings(), &group, &refs, &db, handler, stop)
                .await
                .unwrap();
        });
    }

    let (user, task) = (Uuid::now_v7(), Uuid::now_v7());
    tt::register_user(&mut users, &topics, user, "worker")
        .await
        .unwrap();
    tt::board_update(&mut board_db, &topics, task, user, false)
        .await
        .unwrap();
    tt::board_update(&mut board_db, &topics, task, user, true)
        .await
        .unwrap();
    settled(&users, &accounting, user, task, 2, "debit and credit").await;

    // The broker redelivers: every record twice more (three deliveries in all), and the two
    // task events in swapped order.
    let p = producer().unwrap();
    for (topic, n) in [
        (&topics.users, 2),
        (&topics.accounts, 1),
        (&topics.tasks, 2),
    ] {
        let mut msgs = read(topic, n, WAIT).await.unwrap();
        assert_eq!(msgs.len(), n, "{topic}");
        if topic == &topics.tasks {
            msgs.reverse();
        }
        for _ in 0..2 {
            for m in &msgs {
                let key = std::str::from_utf8(m.key().unwrap()).unwrap();
                produce(&p, topic, key, m.payload().unwrap()).await.unwrap();
            }
        }
    }
    // Sentinels behind the redeliveries on every (single-partition) topic.
    let (user2, task2) = (Uuid::now_v7(), Uuid::now_v7());
    tt::register_user(&mut users, &topics, user2, "admin")
        .await
        .unwrap();
    tt::board_update(&mut board_db, &topics, task2, user2, false)
        .await
        .unwrap();
    settled(&users, &accounting, user2, task2, 1, "sentinel debit").await;

    let u = user.to_string();
    assert_eq!(
        count(
            &accounting,
            "SELECT count(*) FROM accounts WHERE user_id = $1",
            &u
        )
        .await,
        1
    );
    let t = task.to_string();
    let debit = "SELECT count(*) FROM ledger WHERE task_id = $1 AND kind = 'debit'";
    let credit = "SELECT count(*) FROM ledger WHERE task_id = $1 AND kind = 'credit'";
    assert_eq!(count(&accounting, debit, &t).await, 1);
    assert_eq!(count(&accounting, credit, &t).await, 1);
    assert_eq!(count(&users, ACTIVE, &u).await, 1);
    let published = "SELECT count(*) FROM outbox WHERE event_type = $1";
    assert_eq!(
        count(&accounting, published, tt::types::ACCOUNT_CREATED).await,
        2,
        "one per user"
    );
    assert_eq!(
        count(&users, published, tt::types::USER_ACTIVATED).await,
        2,
        "one per user"
    );
    let all = "SELECT count(*) FROM ledger WHERE kind <> $1";
    assert_eq!(count(&accounting, all, "").await, 3);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn outbox_relay_resumes_after_a_failed_batch_and_a_restart_without_loss() {
    let topic = unique("outbox");
    create_topic(&topic, 1).await.unwrap();
    let schema = unique("ob").replace('-', "_");
    let mut c = service_db(&schema, "SELECT 1").await;
    const ROWS: usize = 600;
    let tx = c.transaction().await.unwrap();
    for seq in 0..ROWS {
        // One row mid-batch cannot be published (its own key, an invalid topic): the relay
        // fails after sending the rest of the batch.
        let bad = seq == ROWS / 2;
        let key = if bad {
            "bad".to_owned()
        } else {
            format!("k{}", seq % 7)
        };
        let env = outbox::envelope(
            "tests.seq",
            1,
            "test",
            format!("{key}-{seq}"),
            &json!({"seq": seq}),
        );
        let t = if bad {
            "bad topic name!"
        } else {
            topic.as_str()
        };
        outbox::enqueue(&tx, t, &key, &env).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut kafka = kafka_settings();
    kafka.produce_timeout_ms = 3_000;
    let relay = Relay::new(&kafka, "test-relay").unwrap();
    assert!(relay.relay_once(&mut c).await.is_err());
    let unsent = "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND topic <> $1";
    assert_eq!(
        count(&c, unsent, "").await,
        ROWS as i64,
        "nothing marked before every ack"
    );
    // Restart: a new relay and connection; the row is fixed and everything goes out.
    drop(relay);
    c.execute("UPDATE outbox SET topic = $1 WHERE topic <> $1", &[&topic])
        .await
        .unwrap();
    drop(c);
    let mut c = idempotent::connect(&pg_url(), &schema).await.unwrap();
    let relay = Relay::new(&kafka_settings(), "test-relay").unwrap();
    while relay.relay_once(&mut c).await.unwrap() > 0 {}
    assert_eq!(count(&c, unsent, "").await, 0);

    // Every row arrived (at least once: part of the failed batch went out twice), and per key
    // the first arrivals are in outbox order. One partition: the last row is the last record.
    let consumer: StreamConsumer = kafka_settings()
        .consumer_config(&unique("reader"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let mut seen = HashSet::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let m = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let event = Event::decode(m.payload().unwrap()).unwrap();
        let seq = event.payload["seq"].as_u64().unwrap();
        if seen.insert(seq) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let prev = last.insert(key.clone(), seq);
            assert!(
                prev.is_none_or(|p| p < seq),
                "key {key}: {seq} after {prev:?}"
            );
        }
        if seq == ROWS as u64 - 1 && seen.len() == ROWS {
            break;
        }
    }
    assert_eq!(seen.len(), ROWS);
}

#[tokio::test]
async fn direct_produce_example_publishes_an_envelope_consumers_accept() {
    let topics = topics(1).await;
    let user = Uuid::now_v7();
    let body = json!({"user_id": user});
    let p = producer().unwrap();
    let id = produce_example::produce(
        &p,
        &topics.users,
        "users.user_activated",
        1,
        "user_id",
        &body,
    )
    .await
    .unwrap();
    let msgs = read(&topics.users, 1, WAIT).await.unwrap();
    assert_eq!(msgs[0].key(), Some(user.to_string().as_bytes()));
    assert_eq!(
        header(&msgs[0], "sy-event-type").as_deref(),
        Some("users.user_activated")
    );
    let event = Event::decode(msgs[0].payload().unwrap()).unwrap();
    assert_eq!(event.envelope.event_id, id);
    assert_eq!(
        (
            event.envelope.event_type.as_str(),
            event.envelope.schema_version
        ),
        ("users.user_activated", 1)
    );
    assert_eq!(event.payload, body);
}
