//! deptrans end to end: the real broker, real PostgreSQL (a fresh database per test) and real
//! HTTP servers playing KRT, driver-profiles, personal, driver-categories and trackstory.
//! (ingress, consumer, sender and token; the API and feeds are in deptrans_api.rs)

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use events::v1::DriverStatusKind;
use integration_tests::{kafka, kafka_settings, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use switchyard_deptrans::consumer;
use switchyard_deptrans::krt::{KrtStatus, StatusItem, TokenStore};
use switchyard_deptrans::sender::Sender;

use crate::support::deptrans_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_to_queue_keeps_only_region_and_category_and_newer_wins() {
    let env = env(1).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "in", "L-in", &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p1", "far", "L-far", &["econom"], SPB.0, SPB.1);
    f.add_driver("p1", "biz", "L-biz", &["business"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p1", "nopos", "L-nopos", &["comfort"], MOSCOW.0, MOSCOW.1);
    f.positions
        .lock()
        .unwrap()
        .remove(&("p1".to_owned(), "nopos".to_owned()));
    f.add_driver(
        "p1",
        "last",
        "L-last",
        &["econom", "comfort_plus"],
        MOSCOW.0,
        MOSCOW.1,
    );

    let mut icfg = integration_tests::ingress_config(&unique("unused"));
    icfg.driver_status.topic = env.topic.clone();
    let ingress = integration_tests::start_ingress(icfg, None)
        .await
        .expect("ingress");
    let http = integration_tests::ingress_client();
    let post = |body: Value| {
        let (http, url) = (http.clone(), ingress.url("/v1/driver-status"));
        async move { http.post(url).json(&body).send().await.expect("post") }
    };
    // Bad input: 400 naming the field.
    for (body, field) in [
        (
            json!({"park_id": "p1", "driver_profile_id": "in", "status": "online"}),
            "updated_at",
        ),
        (
            json!({"park_id": "p/1", "driver_profile_id": "in", "status": "online", "updated_at": at(0)}),
            "park_id",
        ),
        (
            json!({"park_id": "p1", "driver_profile_id": "in", "status": "asleep", "updated_at": at(0)}),
            "status",
        ),
    ] {
        let r = post(body).await;
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["field"], field, "{b}");
    }
    let events = [
        ("in", "online", at(10)),
        ("in", "offline", at(9)), // older, arrives later: must not win
        ("far", "online", at(10)),
        ("biz", "online", at(10)),
        ("nopos", "online", at(10)),
        ("last", "busy", at(11)),
    ];
    for (driver, status, when) in events {
        let r = post(json!({"park_id": "p1", "driver_profile_id": driver, "status": status, "updated_at": when})).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    let mut cfg = env.config();
    cfg.sender.enabled = false;
    let svc = start(cfg).await;
    // One partition: once "last" is queued, everything before it was consumed.
    eventually("last driver queued", || async {
        env.queue().await.iter().any(|r| r.1 == "last")
    })
    .await;
    let q = env.queue().await;
    assert_eq!(
        q,
        vec![
            ("p1".into(), "in".into(), "online".into(), at(10)),
            ("p1".into(), "last".into(), "busy".into(), at(11)),
        ]
    );
    svc.stop().await;
    ingress.stop().await.expect("ingress stop");
}

fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let c: BaseConsumer = kafka_settings()
        .consumer_config(group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements().iter().map(|e| e.offset()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_wait_for_the_commit_and_a_restart_loses_nothing() {
    let env = env(3).await;
    let f = &env.fakes.state;
    add_drivers(f, 60, &["econom"]);
    let p = kafka::producer().expect("producer");
    let kinds = [
        DriverStatusKind::Online,
        DriverStatusKind::Busy,
        DriverStatusKind::Offline,
    ];
    for (round, kind) in kinds.into_iter().enumerate() {
        produce_drivers(&p, &env.topic, 0..60, kind, at(round as u32)).await;
    }
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.batch_max = 25;

    // trackstory down: the consumer reads but cannot commit a batch, so stores no offset.
    f.trackstory_down.store(true, Ordering::Relaxed);
    let svc = start(cfg.clone()).await;
    eventually("consumer tried trackstory", || async {
        f.unavailable_answers.load(Ordering::Relaxed) >= 2
    })
    .await;
    svc.stop().await;
    assert_eq!(env.count("status_queue").await, 0);
    let offsets = committed(&env.group, &env.topic, 3);
    assert!(
        offsets
            .iter()
            .all(|o| !matches!(o, Offset::Offset(n) if *n > 0)),
        "{offsets:?}"
    );

    // Up again: stop mid-stream once something is stored, restart, and everything arrives.
    f.trackstory_down.store(false, Ordering::Relaxed);
    let svc = start(cfg.clone()).await;
    eventually("some rows stored", || async {
        env.count("status_queue").await > 0
    })
    .await;
    svc.stop().await;
    let svc = start(cfg).await;
    eventually("every driver at its latest status", || async {
        let q = env.queue().await;
        q.len() == 60 && q.iter().all(|r| r.2 == "offline" && r.3 == at(2))
    })
    .await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krt_down_then_up_sends_exactly_the_latest_status_once() {
    let env = env(2).await;
    let f = &env.fakes.state;
    add_drivers(f, 20, &["comfort"]);
    f.krt_down.store(true, Ordering::Relaxed);
    let svc = start(env.config()).await;
    let p = kafka::producer().expect("producer");
    produce_drivers(&p, &env.topic, 0..20, DriverStatusKind::Online, at(1)).await;
    eventually("rows queued while krt is down", || async {
        env.queue().await.len() == 20
    })
    .await;
    let tried = f.unavailable_answers.load(Ordering::Relaxed);
    eventually("sender retried", || async {
        f.unavailable_answers.load(Ordering::Relaxed) >= tried + 2
    })
    .await;
    assert_eq!(
        env.count("status_queue").await,
        20,
        "rows stay while KRT is down"
    );
    assert_eq!(env.count("session_statuses").await, 0);
    // The queue gauges see the 20 waiting rows; their status time (at(1)) is long past.
    eventually("queue gauges show the waiting rows", || async {
        let m = svc.metrics().await;
        metric_value(&m, "switchyard_deptrans_queue_rows") == Some(20.0)
            && metric_value(&m, "switchyard_deptrans_queue_oldest_seconds").is_some_and(|s| s > 0.0)
    })
    .await;
    // Every event was a known driver: the consumer's category checks and the sender's
    // licence lookups hit, none missed.
    let m = svc.metrics().await;
    let lookups = |cache: &str, result: &str| {
        metric_value(
            &m,
            &format!(
                "switchyard_deptrans_cache_lookups_total{{cache=\"{cache}\",result=\"{result}\"}}"
            ),
        )
    };
    assert!(lookups("driver-categories", "hit") >= Some(20.0), "{m}");
    assert_eq!(lookups("driver-categories", "miss"), Some(0.0), "{m}");
    assert!(lookups("driver-profiles", "hit") >= Some(20.0), "{m}");
    assert_eq!(lookups("driver-profiles", "miss"), Some(0.0), "{m}");
    // Requests by matched route and status; an unknown path is route "-".
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http.get(svc.url("/ping")).send().await.expect("ping");
        assert_eq!(r.status(), 200);
    }
    let r = http
        .get(svc.url("/no/such/path"))
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    let r = http
        .get(svc.url("/driver/v1/deptrans-status/v1/id"))
        .send()
        .await
        .expect("id without headers");
    assert_eq!(r.status(), 400);
    let m = svc.metrics().await;
    let requests = |route: &str, status: u16| {
        metric_value(
            &m,
            &format!("switchyard_deptrans_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    // start() polled /ping until it answered, so at least the two calls above.
    assert!(requests("/ping", 200) >= Some(2.0), "{m}");
    assert_eq!(requests("-", 404), Some(1.0), "{m}");
    assert_eq!(
        requests("/driver/v1/deptrans-status/v1/id", 400),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "switchyard_deptrans_request_duration_seconds_count{route=\"/driver/v1/deptrans-status/v1/id\"}"
        ) >= Some(1.0),
        "{m}"
    );
    produce_drivers(&p, &env.topic, 0..20, DriverStatusKind::Busy, at(2)).await;
    eventually("newer statuses queued", || async {
        let q = env.queue().await;
        q.len() == 20 && q.iter().all(|r| r.2 == "busy")
    })
    .await;
    f.krt_down.store(false, Ordering::Relaxed);
    env.drained("queue drained").await;
    eventually("sessions written", || async {
        env.count("session_statuses").await == 20
    })
    .await;
    eventually("queue gauges back to empty", || async {
        let m = svc.metrics().await;
        metric_value(&m, "switchyard_deptrans_queue_rows") == Some(0.0)
            && metric_value(&m, "switchyard_deptrans_queue_oldest_seconds") == Some(0.0)
    })
    .await;
    // All 40 records consumed and their offsets stored: lag 0 on both partitions of the status
    // topic (from librdkafka's statistics, every 5 s).
    let lag = |partition: i32| {
        format!(
            "switchyard_deptrans_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}}",
            env.topic
        )
    };
    eventually("consumer lag exported and caught up", || async {
        let m = svc.metrics().await;
        (0..2).all(|p| metric_value(&m, &lag(p)) == Some(0.0))
    })
    .await;
    let pushed = f.pushed();
    assert_eq!(pushed.len(), 20, "{pushed:?}");
    let drivers: HashSet<&str> = pushed.iter().map(|p| p.driver.as_str()).collect();
    assert_eq!(drivers.len(), 20);
    // Every push, failed or not, is a client span of a send trace.
    let traced = f.push_traceparents();
    assert!(!traced.is_empty());
    assert!(
        traced.iter().all(|t| t
            .as_deref()
            .and_then(switchyard_runtime::trace::parse)
            .is_some()),
        "{traced:?}"
    );
    assert!(pushed
        .iter()
        .all(|p| p.status == "busy" && p.driver.starts_with("lic:L")));
    let db = env.db().await;
    let open: i64 = db
        .query_one("SELECT count(*) FROM deptrans.session_statuses WHERE session_status = 'open' AND ended_at IS NOT NULL", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(open, 20);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_updated_during_the_push_stays_queued() {
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p", "a", "LA", &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p", "b", "LB", &["econom"], MOSCOW.0, MOSCOW.1);
    let (sender, _) = env.sender(100).await;
    let pool = sender.pool.clone();
    consumer::upsert(
        &pool,
        &[
            ev("p", "a", KrtStatus::Online, at(1)),
            ev("p", "b", KrtStatus::Online, at(1)),
        ],
    )
    .await
    .expect("upsert");
    let gate = f.push_gate.write().await;
    let run = tokio::spawn(async move { sender.run_once().await.map_err(|e| e.to_string()) });
    eventually("push started", || async {
        f.push_calls.load(Ordering::Relaxed) >= 1
    })
    .await;
    consumer::upsert(&pool, &[ev("p", "a", KrtStatus::Busy, at(2))])
        .await
        .expect("upsert newer");
    drop(gate);
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.sent, 2);
    assert_eq!(
        env.queue().await,
        vec![("p".into(), "a".into(), "busy".into(), at(2))]
    );
    assert_eq!(env.count("session_statuses").await, 2);
    // The newer version goes out on the next run; an older late event is not queued again.
    let (sender, _) = env.sender(100).await;
    assert_eq!(sender.run_once().await.expect("run").sent, 1);
    consumer::upsert(&pool, &[ev("p", "a", KrtStatus::Offline, at(1))])
        .await
        .expect("late event");
    assert_eq!(env.count("status_queue").await, 0);
    let statuses: Vec<String> = f
        .pushed()
        .into_iter()
        .filter(|p| p.driver == "lic:LA")
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, vec!["online", "busy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_never_send_a_row_twice_and_the_status_feed_pages_cleanly() {
    let env = env(0).await;
    let f = &env.fakes.state;
    let n = 300;
    add_drivers(f, n, &["econom"]);
    let (s1, _) = env.sender(40).await;
    let (s2, _) = env.sender(40).await;
    consumer::upsert(&s1.pool, &online(n))
        .await
        .expect("upsert");
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;

    let drain = |s: Sender| {
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let r = s.run_once().await.map_err(|e| e.to_string())?;
                sent += r.sent;
                if r.claimed == 0 {
                    return Ok::<usize, String>(sent);
                }
            }
        })
    };
    let (h1, h2) = (drain(s1), drain(s2));
    // Page the status feed while both senders write.
    let seen = svc
        .follow_feed("/internal/v1/status/updates", 7, "driver_license_pd_id", n)
        .await;
    let sent =
        h1.await.expect("join").expect("sender 1") + h2.await.expect("join").expect("sender 2");
    assert_eq!(sent, n);
    let pushed = f.pushed();
    let distinct: HashSet<&str> = pushed.iter().map(|p| p.driver.as_str()).collect();
    assert_eq!(
        (pushed.len(), distinct.len()),
        (n, n),
        "each row pushed exactly once"
    );
    let unique_seen: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), unique_seen.len()),
        (n, n),
        "feed: no gap, no repeat"
    );
    // Items carry the drivers from the profiles cache.
    let page = svc
        .feed_page("/internal/v1/status/updates", &[("limit", "1")])
        .await;
    assert_eq!(page["items"][0]["drivers"][0]["park_id"], "p");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_shared_across_restarts_and_refreshed_after_401_and_expiry() {
    let env = env(0).await;
    let f = &env.fakes.state;
    let (_, first) = env.sender(10).await;
    let t1 = first.get().await.expect("token");
    assert_eq!(f.tokens_issued.load(Ordering::Relaxed), 1);
    // A restarted instance reads the stored token instead of asking KRT.
    let (_, second) = env.sender(10).await;
    assert!(second.get().await.expect("token").value == t1.value);
    assert_eq!(f.tokens_issued.load(Ordering::Relaxed), 1);

    let item = StatusItem {
        deptrans_id: Some("0000000001".into()),
        license: None,
        status: KrtStatus::Online,
        timestamp: at(1),
    };
    let push = |store: Arc<TokenStore>| {
        let item = item.clone();
        async move {
            store
                .with_token(|t| {
                    let (store, item) = (store.clone(), item.clone());
                    async move { store.client.push(&t, &[item]).await }
                })
                .await
        }
    };
    f.revoke_tokens();
    push(second.clone()).await.expect("push after 401 refresh");
    assert_eq!(f.unauthorized_answers.load(Ordering::Relaxed), 1);
    assert_eq!(f.tokens_issued.load(Ordering::Relaxed), 2);
    // The first instance still holds the revoked token: its 401 picks up the stored new one.
    push(first.clone())
        .await
        .expect("push with the shared token");
    assert_eq!(f.tokens_issued.load(Ordering::Relaxed), 2);

    // Tokens that expire within the refresh margin are replaced before use.
    f.token_ttl_secs.store(30, Ordering::Relaxed); // margin is 60 s
    f.revoke_tokens();
    push(first.clone()).await.expect("push");
    let issued = f.tokens_issued.load(Ordering::Relaxed);
    let (_, third) = env.sender(10).await;
    third.get().await.expect("token");
    assert_eq!(
        f.tokens_issued.load(Ordering::Relaxed),
        issued + 1,
        "stale stored token refreshed"
    );
}
