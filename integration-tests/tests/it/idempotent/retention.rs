//! What the idempotent consumer and the outbox keep, and for how long: `processed_events` and
//! sent outbox rows are pruned past their windows; unsent rows never are.

use super::*;

#[tokio::test]
async fn processed_events_older_than_the_window_are_pruned() {
    let topic = unique("idem-prune");
    create_topic(&topic, 1).await.unwrap();
    let s = schema("idr");
    let db_client = service_db(&s, APPLIED_SQL).await;
    for (consumer, key, age_hours) in [
        ("pruner", "old-1", 50),
        ("pruner", "old-2", 25),
        ("pruner", "recent", 23),
        ("other", "old-other", 50),
    ] {
        db_client
            .execute(
                "INSERT INTO processed_events (consumer, idempotency_key, event_id, event_type, processed_at) \
                 VALUES ($1, $2, $2, 't', now() - make_interval(hours => $3))",
                &[&consumer, &key, &age_hours],
            )
            .await
            .unwrap();
    }
    let mut c = IdempotentConsumer::new("pruner");
    c.retention = Duration::from_secs(24 * 3600);
    c.prune_every = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let handler: Handler = Box::new(|tx, event| {
        async move {
            tx.execute(
                "INSERT INTO applied (label) VALUES ($1)",
                &[&event.str("label")?],
            )
            .await?;
            Ok(())
        }
        .boxed()
    });
    start(
        &mut tasks,
        c,
        unique("pruner"),
        topic.clone(),
        Db::new(pg_url(), s.clone()),
        handler,
        stop.clone(),
    );
    let p = producer().unwrap();
    produce(&p, &topic, "fresh", &labelled("fresh"))
        .await
        .unwrap();
    let keys = async || -> Vec<String> {
        db_client
            .query(
                "SELECT idempotency_key FROM processed_events ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    wait_for("old rows pruned, fresh one recorded", async || {
        keys().await == ["fresh", "old-other", "recent"]
    })
    .await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn the_outbox_relay_deletes_sent_rows_past_their_window_and_never_unsent_ones() {
    let topic = unique("outbox-prune");
    create_topic(&topic, 1).await.unwrap();
    let s = schema("obp");
    let mut c = service_db(&s, "SELECT 1").await;
    let mut relay = Relay::new(&kafka_settings(), "test-relay").unwrap();
    relay.keep_sent = Duration::from_secs(3600);
    relay.prune_every = Duration::from_millis(200);

    // An unsent row, however old, is never pruned.
    let env = |seq: u32| {
        outbox::envelope(
            "tests.seq",
            1,
            "test",
            format!("k-{seq}"),
            &json!({"seq": seq}),
        )
    };
    outbox::enqueue(&c, &topic, "k", &env(0)).await.unwrap();
    c.execute(
        "UPDATE outbox SET created_at = now() - interval '30 days'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(relay.prune_sent(&c).await.unwrap(), 0);
    for seq in 1..4 {
        outbox::enqueue(&c, &topic, "k", &env(seq)).await.unwrap();
    }
    while relay.relay_once(&mut c).await.unwrap() > 0 {}
    let sent = "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL AND topic = $1";
    assert_eq!(count(&c, sent, &topic).await, 4);
    assert_eq!(read(&topic, 4, WAIT).await.unwrap().len(), 4);

    // Two rows were sent two hours ago: past the window.
    c.execute(
        "UPDATE outbox SET sent_at = now() - interval '2 hours' WHERE id IN \
         (SELECT id FROM outbox ORDER BY id LIMIT 2)",
        &[],
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let mut relay_db = idempotent::connect(&pg_url(), &s).await.unwrap();
    let run_stop = stop.clone();
    let task = tokio::spawn(async move { relay.run(&mut relay_db, run_stop).await });
    wait_for("old sent rows deleted", async || {
        count(&c, sent, &topic).await == 2
    })
    .await;
    let left: Vec<i64> = c
        .query("SELECT id FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left.len(), 2);
    let seqs: Vec<u64> = c
        .query("SELECT envelope FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let e = idempotent::Event::decode(r.get::<_, &[u8]>(0)).unwrap();
            e.payload["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3], "the two most recently sent rows stay");
    stop.cancel();
    task.await.unwrap();
}
