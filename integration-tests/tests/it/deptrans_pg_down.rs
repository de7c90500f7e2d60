//! PostgreSQL down for longer than `max.poll.interval.ms`: the status consumer pauses its
//! partitions and keeps polling, so it stays in its group (no rebalance); the feeds and the
//! driver's id GET answer from their mirrors meanwhile; when PostgreSQL is back, every status
//! reaches KRT.

use std::time::Duration;

use events::v1::DriverStatusKind;
use integration_tests::cut::Cuttable;
use integration_tests::kafka;

use crate::support::deptrans_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_past_the_poll_interval_pauses_and_loses_nothing() {
    let env = env(1).await;
    let f = &env.fakes.state;
    for d in 0..20 {
        f.add_driver(
            "p",
            &format!("d{d}"),
            &format!("L-{d}"),
            &["econom"],
            MOSCOW.0,
            MOSCOW.1,
        );
    }
    let pg = Cuttable::start("127.0.0.1:5432".parse().unwrap())
        .await
        .expect("forwarder");
    let mut cfg = env.config();
    cfg.postgres.url = env.db_url.replace("127.0.0.1:5432", &pg.addr.to_string());
    // Expelled after 10 s without a poll: the outage below lasts longer than that.
    cfg.kafka
        .extra
        .insert("max.poll.interval.ms".into(), "10000".into());
    let svc = start(cfg).await;
    let p = kafka::producer().expect("producer");
    produce_drivers(&p, &env.topic, 0..10, DriverStatusKind::Online, at(1)).await;
    eventually("the first ten sent", || async { f.pushed().len() == 10 }).await;
    // d0 binds a KRT id.
    f.krt_ids
        .lock()
        .unwrap()
        .insert("0123456789".into(), "L-0".into());
    let http = reqwest::Client::new();
    let id_path = "/driver/v1/deptrans-status/v1/id";
    let bind = http
        .post(svc.url(id_path))
        .header("x-yataxi-park-id", "p")
        .header("x-yataxi-driver-profile-id", "d0")
        .json(&serde_json::json!({"deptrans_id": "0123456789"}))
        .send()
        .await
        .expect("bind");
    assert_eq!(bind.status(), 200);
    let feed = |path: &'static str| {
        let (http, url) = (http.clone(), svc.url(path));
        async move {
            let r = http
                .get(url)
                .header("x-api-key", API_KEY)
                .send()
                .await
                .expect("feed");
            assert_eq!(r.status(), 200, "{path}");
            let body: serde_json::Value = r.json().await.expect("json");
            body["items"].as_array().expect("items").len()
        }
    };
    // The mirrors follow every 500 ms: wait until they hold what PostgreSQL holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(feed("/internal/v1/status/updates?limit=100").await, 10);
    let rebalances = svc
        .metric("switchyard_deptrans_consumer_rebalances_total")
        .await
        .expect("rebalances counted");

    pg.cut();
    produce_drivers(&p, &env.topic, 10..20, DriverStatusKind::Online, at(1)).await;
    produce_drivers(&p, &env.topic, 0..10, DriverStatusKind::Busy, at(2)).await;
    eventually("partitions paused", || async {
        svc.metric("switchyard_deptrans_consumer_paused").await == Some(1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        f.pushed().len(),
        10,
        "nothing sent while PostgreSQL is down"
    );
    pg.restore();

    eventually("all thirty sent", || async { f.pushed().len() == 30 }).await;
    assert_eq!(
        svc.metric("switchyard_deptrans_consumer_paused").await,
        Some(0.0)
    );
    assert_eq!(
        svc.metric("switchyard_deptrans_consumer_rebalances_total")
            .await,
        Some(rebalances),
        "a 15 s outage past max.poll.interval.ms caused no rebalance"
    );
    let busy = f.pushed().iter().filter(|x| x.status == "busy").count();
    assert_eq!(busy, 10, "every status after the outage: {:?}", f.pushed());
    svc.stop().await;
}
