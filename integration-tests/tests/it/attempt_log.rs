//! The attempt log's storage against real PostgreSQL: batched writes and retention by count
//! per subscriber and by age.

use std::time::Duration;

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use switchyard_dispatcher::attempt_log::{self, AttemptRow};
use tokio_util::sync::CancellationToken;

fn row(subscriber: &str, n: i32, age_hours: i64) -> AttemptRow {
    AttemptRow {
        subscriber: subscriber.into(),
        at: Utc::now() - chrono::Duration::hours(age_hours),
        event_id: format!("ev-{n}"),
        attempt: n,
        status: Some(500),
        outcome: "failed",
        latency_ms: 3,
        response_excerpt: Some("nope".into()),
        error: Some("http status 500".into()),
    }
}

#[tokio::test]
async fn attempts_are_written_in_batches_and_trimmed() {
    let cfg = integration_tests::attempt_log_config().await.unwrap();
    let pool = switchyard_runtime::pg::pool(&cfg.database_url, 2).unwrap();
    let (dropped, written) = (Counter::default(), Counter::default());
    let stop = CancellationToken::new();
    let (log, task) = attempt_log::start(
        &cfg,
        pool.clone(),
        dropped.clone(),
        written.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    let writer = tokio::spawn(task);
    for n in 1..=30 {
        log.record(row("a", n, 0));
    }
    for n in 1..=5 {
        log.record(row("b", n, if n <= 2 { 100 } else { 0 }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while written.get() < 35 {
        assert!(
            std::time::Instant::now() < deadline,
            "written {}",
            written.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped.get(), 0);
    let a = recent_json(&pool, "a").await;
    assert_eq!(a.len(), 30);
    assert_eq!(a[0]["event_id"], "ev-30", "newest first");
    assert_eq!(a[0]["response_excerpt"], "nope");

    // Keep 10 per subscriber and nothing older than 72 h: 20 of a and 2 old ones of b go.
    let deleted = attempt_log::trim(&pool, 10, 72).await.unwrap();
    assert_eq!(deleted, 22);
    let a = recent_json(&pool, "a").await;
    let ids: Vec<&str> = a.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(ids[9], "ev-21", "the newest ten stay");
    let b = attempt_log::recent(&pool, Some("b"), 100).await.unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(
        attempt_log::recent(&pool, None, 100).await.unwrap().len(),
        13
    );

    // Shutdown writes what is buffered.
    log.record(row("c", 1, 0));
    stop.cancel();
    writer.await.unwrap();
    assert_eq!(
        attempt_log::recent(&pool, Some("c"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The attempt log's newest rows of `subscriber` as the JSON the admin API serves.
async fn recent_json(
    pool: &switchyard_runtime::pg::Pool,
    subscriber: &str,
) -> Vec<serde_json::Value> {
    attempt_log::recent(pool, Some(subscriber), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}
