//! deptrans work shifts against the real broker and PostgreSQL: the region filter decides
//! where shifts open, never whether one closes.

use events::v1::DriverStatusKind;
use integration_tests::kafka;

use crate::support::deptrans_common::*;
use crate::support::openapi::OpenApi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_closes_an_open_shift_wherever_the_driver_is() {
    let env = env(1).await;
    let f = &env.fakes.state;
    // a: online then offline outside; b: busy then offline without a position;
    // c: never reported (outside from the start); m: a marker sent last.
    for d in ["a", "b", "c", "m"] {
        let (lat, lon) = if d == "c" { SPB } else { MOSCOW };
        f.add_driver("p", d, &format!("L-{d}"), &["econom"], lat, lon);
    }
    let p = kafka::producer().expect("producer");
    produce(&p, &env.topic, "p", "a", DriverStatusKind::Online, at(1)).await;
    produce(&p, &env.topic, "p", "b", DriverStatusKind::Busy, at(1)).await;
    produce(&p, &env.topic, "p", "c", DriverStatusKind::Online, at(1)).await;
    let svc = start(env.config()).await;
    eventually("a and b reported", || async { f.pushed().len() == 2 }).await;

    // a drives out of the region, b's position is lost, then all go offline.
    f.positions
        .lock()
        .unwrap()
        .insert(("p".into(), "a".into()), SPB);
    f.positions
        .lock()
        .unwrap()
        .remove(&("p".to_owned(), "b".to_owned()));
    for d in ["a", "b", "c"] {
        produce(&p, &env.topic, "p", d, DriverStatusKind::Offline, at(2)).await;
    }
    // Outside the region an online or busy status still opens nothing.
    produce(&p, &env.topic, "p", "a", DriverStatusKind::Online, at(3)).await;
    produce(&p, &env.topic, "p", "m", DriverStatusKind::Online, at(3)).await;
    eventually("the marker reported", || async {
        f.pushed().iter().any(|x| x.driver == "lic:L-m")
    })
    .await;
    env.drained("queue drained").await;
    let by = |d: &str| -> Vec<String> {
        f.pushed()
            .into_iter()
            .filter(|x| x.driver == format!("lic:L-{d}"))
            .map(|x| x.status)
            .collect()
    };
    assert_eq!(by("a"), vec!["online", "offline"]);
    assert_eq!(by("b"), vec!["busy", "offline"]);
    assert!(by("c").is_empty(), "{:?}", f.pushed());
    let m = svc.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "switchyard_deptrans_events_total{outcome=\"offline_closes_shift\"}"
        ),
        Some(2.0),
        "{m}"
    );
    // KRT's answers closed both shifts.
    let closed: i64 = env
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM deptrans.session_statuses WHERE session_status = 'closed'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(closed, 2);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drivers_history_keeps_every_status_sent_and_shift_state_newest_first() {
    let env = env(1).await;
    let f = &env.fakes.state;
    f.add_driver("p", "h", "L-h", &["econom"], MOSCOW.0, MOSCOW.1);
    let p = kafka::producer().expect("producer");
    let svc = start(env.config()).await;
    // One status at a time, each sent before the next (the queue keeps a driver's latest).
    let steps = [
        (DriverStatusKind::Online, 1),
        (DriverStatusKind::Busy, 2),
        (DriverStatusKind::Offline, 3),
    ];
    for (n, (kind, minute)) in steps.into_iter().enumerate() {
        produce(&p, &env.topic, "p", "h", kind, at(minute)).await;
        eventually("the status sent", || async { f.pushed().len() == n + 1 }).await;
    }
    env.drained("queue drained").await;

    let get = |query: &'static str| {
        reqwest::Client::new()
            .get(svc.url(&format!("/internal/v1/history{query}")))
            .header("x-api-key", API_KEY)
            .send()
    };
    let resp = get("?park_id=p&driver_id=h").await.expect("history");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    OpenApi::load("deptrans.json").check("get", "/internal/v1/history", 200, &body);
    let field = |list: &str, key: &str| -> Vec<String> {
        body[list]
            .as_array()
            .expect(list)
            .iter()
            .map(|e| e[key].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        field("statuses", "status"),
        ["offline", "busy", "online"],
        "{body:#}"
    );
    let times: Vec<String> = [3, 2, 1]
        .iter()
        .map(|m| at(*m).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .collect();
    let sent_at: Vec<String> = field("statuses", "status_at")
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .collect();
    assert_eq!(sent_at, times, "each status at its own time");
    assert_eq!(
        field("sessions", "session_status"),
        ["closed", "open", "open"],
        "every shift state KRT answered, newest first: {body:#}"
    );
    assert_eq!(
        body["session"]["session_status"], "closed",
        "the latest state as before"
    );
    assert_eq!(body["driver_license_pd_id"], "pd-p-h");

    // Another driver has no history; a missing driver_id is a 400 naming it; no key, 401.
    let other = get("?park_id=p&driver_id=nobody").await.expect("other");
    let other: serde_json::Value = other.json().await.expect("json");
    assert_eq!(other["statuses"], serde_json::json!([]));
    let bad = get("?park_id=p").await.expect("bad");
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(bad["field"], "driver_id", "{bad}");
    let anon = reqwest::get(svc.url("/internal/v1/history?park_id=p&driver_id=h"))
        .await
        .expect("anon");
    assert_eq!(anon.status(), 401);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supply_gauges_split_active_drivers_by_krt_state() {
    let env = env(1).await;
    let f = &env.fakes.state;
    for d in ["a", "b", "c", "d"] {
        f.add_driver("p", d, &format!("L-{d}"), &["econom"], MOSCOW.0, MOSCOW.1);
    }
    f.add_driver("p", "e", "L-e", &["econom"], SPB.0, SPB.1);
    {
        let mut ids = f.krt_ids.lock().unwrap();
        ids.insert("0000000001".into(), "L-a".into());
        ids.insert("0000000002".into(), "L-b".into());
    }
    // KRT names a driver with a bound id by that id.
    f.refuse("id:0000000002");
    let mut cfg = env.config();
    cfg.supply.interval_ms = 200;
    let svc = start(cfg).await;
    let http = reqwest::Client::new();
    for (d, id) in [("a", "0000000001"), ("b", "0000000002")] {
        let r = http
            .post(svc.url("/driver/v1/deptrans-status/v1/id"))
            .header("x-yataxi-park-id", "p")
            .header("x-yataxi-driver-profile-id", d)
            .json(&serde_json::json!({ "deptrans_id": id }))
            .send()
            .await
            .expect("bind");
        assert_eq!(r.status(), 200, "bind {d}");
    }
    let p = kafka::producer().expect("producer");
    // a: bound, shift opened; b: bound, KRT refuses (no shift); c: no id; d: went offline;
    // e: outside the regions.
    for d in ["a", "b", "c", "d", "e"] {
        produce(&p, &env.topic, "p", d, DriverStatusKind::Online, at(1)).await;
    }
    produce(&p, &env.topic, "p", "d", DriverStatusKind::Offline, at(2)).await;
    let want = [
        ("bound_open_shift", 1.0),
        ("bound_no_shift", 1.0),
        ("unbound", 1.0),
    ];
    let mut last = String::new();
    for _ in 0..600 {
        last = svc.metrics().await;
        if want.iter().all(|(krt, n)| {
            metric_value(
                &last,
                &format!("switchyard_deptrans_active_drivers{{krt=\"{krt}\"}}"),
            ) == Some(*n)
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (krt, n) in want {
        assert_eq!(
            metric_value(
                &last,
                &format!("switchyard_deptrans_active_drivers{{krt=\"{krt}\"}}")
            ),
            Some(n),
            "{krt}"
        );
    }
    svc.stop().await;
}
