//! deptrans work shifts against the real broker and PostgreSQL: the region filter decides
//! where shifts open, never whether one closes.

use events::v1::DriverStatusKind;
use integration_tests::kafka;

use crate::support::deptrans_common::*;

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
    eventually("queue drained", || async {
        env.count("status_queue").await == 0
    })
    .await;
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
