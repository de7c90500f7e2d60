//! deptrans poison isolation against real PostgreSQL and a fake KRT that refuses chosen
//! drivers: a refused row leaves the queue for `deptrans.rejected` and costs the others nothing;
//! the internal API lists and re-queues it. Rows that cannot be sent yet (unknown driver, no
//! licence) are deferred with back-off, never lost to a transient `personal` failure, and
//! rejected past their maximum age.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use switchyard_deptrans::config::KrtMode;
use switchyard_deptrans::consumer;
use switchyard_deptrans::krt::KrtStatus;

use crate::support::deptrans_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_driver_among_10k_costs_the_others_nothing() {
    let env = env(0).await;
    let f = &env.fakes.state;
    let n: usize = 10_000;
    add_drivers(f, n, &["econom"]);
    // The poison: KRT answers 400 to any request holding it (and echoes the licence).
    f.refuse("lic:L4321");
    // And one row KRT's bulk answer marks `rejected`.
    f.reject("lic:L777");
    env.enqueue(&online(n)).await;

    let mut cfg = env.config();
    cfg.consumer.enabled = false;
    cfg.sender.batch_size = 500;
    cfg.sender.bulk_size = 100;
    cfg.sender.concurrency = 4;
    // One back-off would stall the sender past every wait below.
    cfg.sender.backoff_initial_ms = 600_000;
    cfg.sender.backoff_max_ms = 600_000;
    let svc = start(cfg).await;
    env.drained("queue drained").await;

    let pushed = f.pushed();
    let drivers: HashSet<&str> = pushed.iter().map(|p| p.driver.as_str()).collect();
    assert_eq!(
        (pushed.len(), drivers.len()),
        (n - 2, n - 2),
        "every other row pushed exactly once"
    );
    assert!(!drivers.contains("lic:L4321") && !drivers.contains("lic:L777"));
    assert_eq!(env.count("session_statuses").await, (n - 2) as i64);
    // Bisection cost: 100 bulk requests plus at most 2 per halving of the refused chunk
    // (ceil(log2(100)) = 7 halvings).
    let calls = f.push_calls.load(Ordering::Relaxed);
    assert!(calls <= 100 + 2 * 7, "{calls} status requests");

    let db = env.db().await;
    let rows: Vec<(String, String, String, Option<i32>, String)> = db
        .query(
            "SELECT driver_id, status, reason, krt_status, krt_answer FROM deptrans.rejected ORDER BY driver_id",
            &[],
        )
        .await
        .expect("rejected")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (&*rows[0].0, &*rows[0].1, &*rows[0].2, rows[0].3),
        ("d4321", "online", "krt_refused", Some(400))
    );
    assert!(
        rows[0].4.contains("invalid_item") && rows[0].4.contains("<redacted>"),
        "{}",
        rows[0].4
    );
    assert_eq!(
        (&*rows[1].0, &*rows[1].2, rows[1].3),
        ("d777", "krt_rejected", None)
    );
    assert!(rows[1].4.contains("no permit"), "{}", rows[1].4);
    assert!(
        rows.iter()
            .all(|r| !r.4.contains("L4321") && !r.4.contains("L777")),
        "licence numbers are never stored: {rows:?}"
    );

    let m = svc.metrics().await;
    let value = |series: &str| metric_value(&m, series);
    assert_eq!(
        value("switchyard_deptrans_sent_total{outcome=\"failed\"}"),
        Some(0.0),
        "no row waited for KRT: {m}"
    );
    assert_eq!(value("switchyard_deptrans_krt_failures_total"), Some(0.0));
    assert_eq!(
        value("switchyard_deptrans_sent_total{outcome=\"sent\"}"),
        Some((n - 2) as f64)
    );
    assert_eq!(
        value("switchyard_deptrans_rejected_total{reason=\"krt_refused\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("switchyard_deptrans_rejected_total{reason=\"krt_rejected\"}"),
        Some(1.0)
    );
    assert!(
        value("switchyard_deptrans_krt_bisections_total").is_some_and(|b| (1.0..=7.0).contains(&b)),
        "{m}"
    );
    eventually("rejected gauge", || async {
        svc.metric("switchyard_deptrans_rejected_rows").await == Some(2.0)
    })
    .await;

    // Listed through the internal API, oldest first, paged.
    let http = reqwest::Client::new();
    let list = |q: Vec<(&'static str, String)>| {
        let (http, url) = (http.clone(), svc.url("/internal/v1/rejected"));
        async move {
            http.get(url)
                .header("x-api-key", API_KEY)
                .query(&q)
                .send()
                .await
                .expect("list")
        }
    };
    let r = http
        .get(svc.url("/internal/v1/rejected"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 401);
    for (q, field) in [
        (vec![("reason", "bogus".to_owned())], "reason"),
        (vec![("limit", "0".to_owned())], "limit"),
        (vec![("cursor", "???".to_owned())], "cursor"),
        (
            vec![("limit", "1".to_owned()), ("limit", "2".to_owned())],
            "limit",
        ),
    ] {
        let r = list(q).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json")["field"], field);
    }
    let page: Value = list(vec![("limit", "1".to_owned())])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let second: Value = list(vec![
        ("limit", "5".to_owned()),
        (
            "cursor",
            page["cursor"].as_str().unwrap_or_default().to_owned(),
        ),
    ])
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(
        second["items"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert_ne!(
        page["items"][0]["driver_id"],
        second["items"][0]["driver_id"]
    );
    let refused: Value = list(vec![("reason", "krt_refused".to_owned())])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refused["items"][0]["driver_id"], "d4321", "{refused}");
    assert_eq!(refused["items"][0]["krt_status"], 400);
    assert!(!refused.to_string().contains("L4321"));

    // Bad re-queue bodies: 400 naming the field.
    let requeue = |body: Value| {
        let (http, url) = (http.clone(), svc.url("/internal/v1/rejected/requeue"));
        async move {
            http.post(url)
                .header("x-api-key", API_KEY)
                .json(&body)
                .send()
                .await
                .expect("requeue")
        }
    };
    for (body, field) in [
        (json!({}), "drivers"),
        (json!({"drivers": []}), "drivers"),
        (
            json!({"drivers": [{"park_id": "p", "driver_id": ""}]}),
            "drivers[0].driver_id",
        ),
        (
            json!({"drivers": [{"park_id": "p", "driver_id": 1}]}),
            "drivers[0].driver_id",
        ),
        (json!({"drivers": [], "x": 1}), "x"),
    ] {
        let r = requeue(body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            r.json::<Value>().await.expect("json")["field"],
            field,
            "{body}"
        );
    }

    // KRT takes the driver again: re-queued, it goes out and leaves deptrans.rejected.
    f.unrefuse("lic:L4321");
    let r = requeue(json!({"drivers": [
        {"park_id": "p", "driver_id": "d4321"},
        {"park_id": "p", "driver_id": "nobody"}
    ]}))
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"requeued": [{"park_id": "p", "driver_id": "d4321"}],
               "not_found": [{"park_id": "p", "driver_id": "nobody"}]})
    );
    eventually("the re-queued row is pushed", || async {
        f.pushed().iter().any(|p| p.driver == "lic:L4321")
    })
    .await;
    env.drained("queue drained again").await;
    assert_eq!(env.count("rejected").await, 1);
    assert_eq!(
        svc.metric("switchyard_deptrans_requeued_total").await,
        Some(1.0)
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_rows_wait_with_backoff_then_are_rejected_and_personal_down_loses_nothing() {
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p", "ok", "L-ok", &["econom"], MOSCOW.0, MOSCOW.1);
    // nl: known profile, but personal has no licence for it; u: unknown to driver-profiles.
    f.add_driver("p", "nl", "L-nl", &["econom"], MOSCOW.0, MOSCOW.1);
    f.licences.lock().unwrap().remove("pd-p-nl");
    let (mut s, _) = env.sender(100).await;
    s.cfg.unknown_driver_delay_ms = 0;
    let pool = s.pool.clone();
    consumer::upsert(
        &pool,
        &[
            ev("p", "ok", KrtStatus::Online, at(1)),
            ev("p", "nl", KrtStatus::Online, at(1)),
            ev("p", "u", KrtStatus::Online, at(1)),
        ],
    )
    .await
    .expect("upsert");
    let deferred = || async {
        env.db()
            .await
            .query(
                "SELECT driver_id, deferred_reason, attempts FROM deptrans.status_queue ORDER BY 1",
                &[],
            )
            .await
            .expect("queue")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect::<Vec<(String, Option<String>, i32)>>()
    };

    // personal down: nothing that needs a licence is sent, and nothing is taken for "no licence".
    f.personal_down.store(true, Ordering::Relaxed);
    let r = s.run_once().await.expect("run");
    assert_eq!((r.sent, r.rejected, r.deferred, r.failed), (0, 0, 1, 2));
    assert_eq!(
        deferred().await,
        vec![
            ("nl".into(), None, 0),
            ("ok".into(), None, 0),
            ("u".into(), Some("unknown_driver".into()), 1),
        ]
    );
    assert_eq!(env.count("rejected").await, 0);
    assert!(f.pushed().is_empty());

    // personal back: ok is sent; nl has no licence and u is still unknown: both deferred.
    f.personal_down.store(false, Ordering::Relaxed);
    let r = s.run_once().await.expect("run");
    assert_eq!((r.sent, r.rejected, r.deferred, r.failed), (1, 0, 2, 0));
    assert_eq!(
        deferred().await,
        vec![
            ("nl".into(), Some("no_licence".into()), 1),
            ("u".into(), Some("unknown_driver".into()), 2),
        ]
    );
    // The queue gauges split due and deferred; the stale age counts only due rows.
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;
    eventually("queue gauges split due and deferred", || async {
        let m = svc.metrics().await;
        metric_value(&m, "switchyard_deptrans_queue_due_rows") == Some(0.0)
            && metric_value(&m, "switchyard_deptrans_queue_deferred_rows") == Some(2.0)
            && metric_value(&m, "switchyard_deptrans_queue_rows") == Some(2.0)
            && metric_value(&m, "switchyard_deptrans_queue_oldest_seconds") == Some(0.0)
    })
    .await;
    svc.stop().await;

    // The next try waits twice as long (initial 0 here, so due at once): tried again, still
    // deferred. Past the maximum age both move to deptrans.rejected with their reason.
    let r = s.run_once().await.expect("run");
    assert_eq!((r.deferred, r.rejected), (2, 0));
    s.cfg.deferred_max_age_ms = 0;
    let r = s.run_once().await.expect("run");
    assert_eq!((r.sent, r.rejected, r.deferred, r.failed), (0, 2, 0, 0));
    assert_eq!(env.count("status_queue").await, 0);
    assert_eq!(
        env.rejected().await,
        vec![
            ("nl".into(), "no_licence".into()),
            ("u".into(), "unknown_driver".into())
        ]
    );
    let pushed: Vec<String> = f.pushed().into_iter().map(|p| p.driver).collect();
    assert_eq!(pushed, vec!["lic:L-ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_single_krt_modes_send_the_same_and_classify_the_same() {
    for mode in [KrtMode::Bulk, KrtMode::Single] {
        let env = env(0).await;
        let f = &env.fakes.state;
        let n = 30;
        add_drivers(f, n, &["econom"]);
        f.refuse("lic:L7");
        f.reject("lic:L9");
        env.enqueue(&online(n)).await;
        let mut cfg = env.config();
        cfg.consumer.enabled = false;
        cfg.sender.bulk_size = 10;
        cfg.krt.mode = mode;
        cfg.krt.single_rate_per_sec = 1_000;
        let svc = start(cfg).await;
        env.drained("queue drained").await;
        let pushed = f.pushed();
        let drivers: HashSet<&str> = pushed.iter().map(|p| p.driver.as_str()).collect();
        assert_eq!((pushed.len(), drivers.len()), (n - 2, n - 2), "{mode:?}");
        assert_eq!(
            env.rejected().await,
            vec![
                ("d7".into(), "krt_refused".into()),
                ("d9".into(), "krt_rejected".into())
            ],
            "{mode:?}"
        );
        let (bulk, single) = (
            f.push_calls.load(Ordering::Relaxed),
            f.single_calls.load(Ordering::Relaxed),
        );
        match mode {
            KrtMode::Bulk => assert!(bulk >= 3 && single == 0, "{bulk} {single}"),
            KrtMode::Single => assert_eq!((bulk, single), (0, n as u64)),
        }
        assert_eq!(
            svc.metric("switchyard_deptrans_sent_total{outcome=\"failed\"}")
                .await,
            Some(0.0)
        );
        svc.stop().await;
    }
}
