//! The idempotent consumer and the outbox beyond the happy path, on the real broker and
//! Postgres (issue 18 item 6): a reassigned task is debited once per assignment, partitions
//! progress independently, records that cannot be applied are dead-lettered and passed, and
//! `processed_events` and sent outbox rows are pruned.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use integration_tests::kafka::{create_topic, header, produce, producer, read};
use integration_tests::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use serde_json::json;
use switchyard_idempotent::{self as idempotent, Db, EventsError, Handler, IdempotentConsumer};
use switchyard_outbox::{self as outbox, Relay};
use switchyard_task_tracker::{self as tt};
use tokio::sync::Semaphore;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain_events::{count, pg_url, service_db, topics, wait_for, WAIT};

const APPLIED_SQL: &str = "CREATE TABLE IF NOT EXISTS applied (label TEXT NOT NULL)";

fn schema(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

async fn labels(c: &Client) -> Vec<String> {
    c.query("SELECT label FROM applied ORDER BY label", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An envelope whose JSON payload is `{"label": label}`, keyed by the label.
fn labelled(label: &str) -> Vec<u8> {
    outbox::envelope(
        "tests.labelled",
        1,
        "test",
        label.to_owned(),
        &json!({"label": label}),
    )
    .to_bytes()
}

async fn produce_to(p: &FutureProducer, topic: &str, partition: i32, key: &str, value: &[u8]) {
    p.send(
        FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

fn start(
    tasks: &mut tokio::task::JoinSet<()>,
    consumer: IdempotentConsumer,
    group: String,
    topic: String,
    db: Db,
    handler: Handler,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        consumer
            .run(
                &kafka_settings(),
                &group,
                &[topic.as_str()],
                &db,
                handler,
                stop,
            )
            .await
            .unwrap();
    });
}

#[tokio::test]
async fn a_reassigned_task_is_debited_per_assignment_and_credited_per_completion() {
    let topics = topics(2).await;
    let stop = CancellationToken::new();
    let s = schema("ttr");
    let (acc, board) = (format!("{s}_acc"), format!("{s}_board"));
    let accounting = service_db(&acc, tt::ACCOUNTING_SQL).await;
    let mut board_db = service_db(&board, tt::BOARD_SQL).await;
    let mut tasks = tokio::task::JoinSet::new();
    let mut relay_db = idempotent::connect(&pg_url(), &board).await.unwrap();
    let relay = Relay::new(&kafka_settings(), "test-relay").unwrap();
    let relay_stop = stop.clone();
    tasks.spawn(async move { relay.run(&mut relay_db, relay_stop).await });
    start(
        &mut tasks,
        IdempotentConsumer::new("accounting"),
        unique("accounting"),
        topics.tasks.clone(),
        Db::new(pg_url(), acc.clone()),
        tt::accounting_handler(topics.clone()),
        stop.clone(),
    );

    // Assigned to a, reassigned to b, reassigned back to a, completed by a; then reassigned
    // to b once more and completed by b.
    let (a, b, task) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (user, completed) in [
        (a, false),
        (b, false),
        (a, false),
        (a, true),
        (b, false),
        (b, true),
    ] {
        tt::board_update(&mut board_db, &topics, task, user, completed)
            .await
            .unwrap();
    }
    let t = task.to_string();
    let ledger = "SELECT count(*) FROM ledger WHERE task_id = $1";
    wait_for("six ledger rows", async || {
        count(&accounting, ledger, &t).await == 6
    })
    .await;

    // The broker redelivers every task record twice more, in reverse order; a sentinel
    // assignment behind them shows they were all consumed.
    let p = producer().unwrap();
    let mut msgs = read(&topics.tasks, 6, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 6);
    msgs.reverse();
    for _ in 0..2 {
        for m in &msgs {
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            produce(&p, &topics.tasks, key, m.payload().unwrap())
                .await
                .unwrap();
        }
    }
    let sentinel = Uuid::now_v7();
    for user in [a, b] {
        tt::board_update(&mut board_db, &topics, sentinel, user, false)
            .await
            .unwrap();
    }
    wait_for("sentinel debits", async || {
        count(&accounting, ledger, &sentinel.to_string()).await == 2
    })
    .await;

    let per = |kind: &str, user: Uuid| {
        let (accounting, t, kind) = (&accounting, t.clone(), kind.to_owned());
        async move {
            accounting
                .query_one(
                    "SELECT count(*) FROM ledger WHERE task_id = $1 AND kind = $2 AND user_id = $3",
                    &[&t, &kind, &user.to_string()],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(per("debit", a).await, 2, "a was assigned twice");
    assert_eq!(per("debit", b).await, 2, "b was assigned twice");
    assert_eq!(per("credit", a).await, 1, "a completed once");
    assert_eq!(per("credit", b).await, 1, "b completed once");
    assert_eq!(count(&accounting, ledger, &t).await, 6);

    // The audit trail keeps the times: four distinct assign times on the debits, each credit
    // pointing at its user's latest assignment before the finish time.
    let row = accounting
        .query_one(
            "SELECT count(DISTINCT assigned_at), count(*) FILTER (WHERE completed_at IS NOT NULL) \
             FROM ledger WHERE task_id = $1 AND kind = 'debit'",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4, 0));
    let credits = accounting
        .query(
            "SELECT c.user_id, c.assigned_at = (SELECT max(d.assigned_at) FROM ledger d \
               WHERE d.task_id = c.task_id AND d.user_id = c.user_id AND d.kind = 'debit' \
                 AND d.assigned_at < c.completed_at), \
               c.completed_at > c.assigned_at \
             FROM ledger c WHERE c.task_id = $1 AND c.kind = 'credit' ORDER BY c.completed_at",
            &[&t],
        )
        .await
        .unwrap();
    let credits: Vec<(String, Option<bool>, Option<bool>)> = credits
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        credits,
        [
            (a.to_string(), Some(true), Some(true)),
            (b.to_string(), Some(true), Some(true))
        ]
    );
    // The board's row follows the reassignments.
    let row = board_db
        .query_one(
            "SELECT user_id, state, assigned_at IS NOT NULL, completed_at > assigned_at \
             FROM tasks WHERE task_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2),
            row.get::<_, Option<bool>>(3)
        ),
        (b.to_string(), "completed".to_owned(), true, Some(true))
    );
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn a_blocked_partition_does_not_hold_up_the_others() {
    let topic = unique("idem-par");
    create_topic(&topic, 2).await.unwrap();
    let s = schema("idp");
    let db_client = service_db(&s, APPLIED_SQL).await;
    let gate = Arc::new(Semaphore::new(0));
    let handler: Handler = {
        let gate = gate.clone();
        Box::new(move |tx, event| {
            let gate = gate.clone();
            async move {
                let label = event.str("label")?.to_owned();
                if label == "p0-blocker" {
                    let _permit = gate.acquire().await.expect("gate open");
                }
                tx.execute("INSERT INTO applied (label) VALUES ($1)", &[&label])
                    .await?;
                Ok(())
            }
            .boxed()
        })
    };
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    start(
        &mut tasks,
        IdempotentConsumer::new("par"),
        unique("par"),
        topic.clone(),
        Db::new(pg_url(), s.clone()),
        handler,
        stop.clone(),
    );
    let p = producer().unwrap();
    for label in ["p0-blocker", "p0-after"] {
        produce_to(&p, &topic, 0, label, &labelled(label)).await;
    }
    let p1: Vec<String> = (0..5).map(|i| format!("p1-{i}")).collect();
    for label in &p1 {
        produce_to(&p, &topic, 1, label, &labelled(label)).await;
    }
    wait_for("partition 1 applied", async || {
        labels(&db_client)
            .await
            .iter()
            .filter(|l| l.starts_with("p1-"))
            .count()
            == 5
    })
    .await;
    // Partition 0 is still held by its blocked first record, in order.
    assert_eq!(labels(&db_client).await, p1);
    gate.add_permits(1);
    wait_for("partition 0 applied", async || {
        labels(&db_client).await.len() == 7
    })
    .await;
    let mut all = vec!["p0-after".to_owned(), "p0-blocker".to_owned()];
    all.extend(p1);
    assert_eq!(labels(&db_client).await, all);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn records_that_cannot_be_applied_are_dead_lettered_and_the_partition_moves_on() {
    let topic = unique("idem-dlq");
    let dead = unique("idem-dead");
    create_topic(&topic, 1).await.unwrap();
    create_topic(&dead, 1).await.unwrap();
    let s = schema("idd");
    let db_client = service_db(&s, APPLIED_SQL).await;
    let flaky_tries = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let handler =
        |flaky_tries: Arc<AtomicU32>, seen: Arc<std::sync::Mutex<Vec<String>>>| -> Handler {
            Box::new(move |tx, event| {
                let (flaky_tries, seen) = (flaky_tries.clone(), seen.clone());
                async move {
                    let label = event.str("label")?.to_owned();
                    seen.lock().unwrap().push(label.clone());
                    let fail = match label.as_str() {
                        "refused" => return Err(EventsError::Handler("refused for good".into())),
                        "flaky" => flaky_tries.fetch_add(1, Ordering::SeqCst) < 2,
                        "broken" => true,
                        _ => false,
                    };
                    if fail {
                        // A statement the server rejects: counts as one failed attempt.
                        tx.execute("SELECT 1 / 0", &[]).await?;
                    }
                    tx.execute("INSERT INTO applied (label) VALUES ($1)", &[&label])
                        .await?;
                    Ok(())
                }
                .boxed()
            })
        };
    let consumer = || {
        let mut c = IdempotentConsumer::new("dlq");
        c.dead_letter_topic = Some(dead.clone());
        c.max_attempts = 3;
        c
    };
    let group = unique("dlq");
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    start(
        &mut tasks,
        consumer(),
        group.clone(),
        topic.clone(),
        Db::new(pg_url(), s.clone()),
        handler(flaky_tries.clone(), seen.clone()),
        stop.clone(),
    );
    let p = producer().unwrap();
    let garbage = b"\xff\xff\xff\xff not an envelope".to_vec();
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage.clone()),
        ("refused", labelled("refused")),
        ("flaky", labelled("flaky")),
        ("broken", labelled("broken")),
        ("ok", labelled("ok")),
    ];
    for (key, value) in &records {
        produce(&p, &topic, key, value).await.unwrap();
    }
    wait_for("ok applied", async || {
        labels(&db_client).await.contains(&"ok".to_owned())
    })
    .await;
    assert_eq!(labels(&db_client).await, ["flaky", "ok"]);
    assert_eq!(
        flaky_tries.load(Ordering::SeqCst),
        3,
        "two failures, then applied"
    );

    let parked = read(&dead, 4, Duration::from_secs(10)).await.unwrap();
    let got: Vec<ParkedView<'_>> = parked
        .iter()
        .map(|m| {
            (
                m.key(),
                header(m, "sy-origin"),
                header(m, "sy-attempts"),
                header(m, "sy-subscriber"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                Some(&b"garbage"[..]),
                Some(format!("{topic}/0/0")),
                Some("0".into()),
                Some("dlq".into())
            ),
            (
                Some(&b"refused"[..]),
                Some(format!("{topic}/0/1")),
                Some("1".into()),
                Some("dlq".into())
            ),
            (
                Some(&b"broken"[..]),
                Some(format!("{topic}/0/3")),
                Some("3".into()),
                Some("dlq".into())
            ),
        ]
    );
    assert_eq!(parked[0].payload(), Some(&garbage[..]), "parked as it came");
    assert_eq!(
        parked[2].payload(),
        Some(&labelled_payload_of(&records, "broken")[..])
    );
    assert!(header(&parked[0], "sy-last-error")
        .unwrap()
        .contains("not an envelope"));
    assert!(header(&parked[1], "sy-last-error")
        .unwrap()
        .contains("refused for good"));
    assert!(header(&parked[2], "sy-last-error")
        .unwrap()
        .contains("division by zero"));
    let processed: i64 = db_client
        .query_one(
            "SELECT count(*) FROM processed_events WHERE consumer = 'dlq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(processed, 2, "only the applied records are recorded");

    // The offsets went past the dead letters: a restart in the same group sees only new records.
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    seen.lock().unwrap().clear();
    let stop = CancellationToken::new();
    start(
        &mut tasks,
        consumer(),
        group,
        topic.clone(),
        Db::new(pg_url(), s.clone()),
        handler(flaky_tries.clone(), seen.clone()),
        stop.clone(),
    );
    produce(&p, &topic, "after", &labelled("after"))
        .await
        .unwrap();
    wait_for("after applied", async || {
        labels(&db_client).await.contains(&"after".to_owned())
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), ["after"]);
    assert_eq!(
        read(&dead, 4, Duration::from_secs(5)).await.unwrap().len(),
        3
    );
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

fn labelled_payload_of(records: &[(&str, Vec<u8>)], key: &str) -> Vec<u8> {
    records.iter().find(|(k, _)| *k == key).unwrap().1.clone()
}

/// A dead-lettered record as the test compares it: key, origin, attempts, subscriber headers.
type ParkedView<'a> = (
    Option<&'a [u8]>,
    Option<String>,
    Option<String>,
    Option<String>,
);

mod retention;
