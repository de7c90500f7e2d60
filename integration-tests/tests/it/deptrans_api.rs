//! deptrans API against the real broker and PostgreSQL: driver KRT-ID binding, the cursor-paged
//! feeds, cache behaviour, secrets never stored or logged, retention.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_deptrans::consumer;
use switchyard_deptrans::krt::KrtStatus;
use switchyard_deptrans::upstream::Upstream;
use switchyard_runtime::Shutdown;
use tokio::net::TcpListener;

use crate::support::deptrans_common::*;
use crate::support::openapi::OpenApi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_binds_a_krt_id_only_when_krt_confirms_it() {
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "d1", "77AA123456", &["econom"], MOSCOW.0, MOSCOW.1);
    f.krt_ids
        .lock()
        .unwrap()
        .insert("0123456789".into(), "77AA123456".into());
    f.krt_ids
        .lock()
        .unwrap()
        .insert("9999999999".into(), "someone-else".into());
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;
    let http = reqwest::Client::new();
    let url = svc.url("/driver/v1/deptrans-status/v1/id");
    let get = |park: &str| {
        http.get(&url)
            .header("x-yataxi-park-id", park)
            .header("x-yataxi-driver-profile-id", "d1")
            .send()
    };
    let post = |body: Value| {
        http.post(&url)
            .header("x-yataxi-park-id", "p1")
            .header("x-yataxi-driver-profile-id", "d1")
            .json(&body)
            .send()
    };

    let r = http.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["field"],
        "x-yataxi-park-id"
    );
    assert_eq!(get("nope").await.expect("get").status(), 404);
    let r: Value = get("p1").await.expect("get").json().await.expect("json");
    assert_eq!(r, json!({"bound": false}));

    for (body, field) in [
        (json!({"deptrans_id": "12"}), "deptrans_id"),
        (json!({}), "deptrans_id"),
        (json!({"deptrans_id": 123}), "deptrans_id"),
        (json!({"deptrans_id": "0123456789", "x": 1}), "x"),
    ] {
        let r = post(body).await.expect("post");
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json")["field"], field);
    }
    let r = post(json!({"deptrans_id": "9999999999"}))
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "deptrans_id_mismatch"
    );
    f.krt_down.store(true, Ordering::Relaxed);
    let r = post(json!({"deptrans_id": "0123456789"}))
        .await
        .expect("post");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    f.krt_down.store(false, Ordering::Relaxed);
    assert_eq!(
        env.count("profiles").await,
        0,
        "nothing stored before KRT confirms"
    );

    let r = post(json!({"deptrans_id": "0123456789"}))
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let body = get("p1").await.expect("get").text().await.expect("text");
    assert!(!body.contains("0123456789"), "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (v["bound"].clone(), v["deptrans_id_masked"].clone()),
        (json!(true), json!("******6789"))
    );

    let feed = svc.url("/internal/v1/id/updates");
    assert_eq!(http.get(&feed).send().await.expect("get").status(), 401);
    assert_eq!(
        http.get(&feed)
            .header("x-api-key", "wrong")
            .send()
            .await
            .expect("get")
            .status(),
        401
    );
    let page: Value = http
        .get(&feed)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"][0]["deptrans_id"], "0123456789");
    assert_eq!(
        page["items"][0]["drivers"],
        json!([{"park_id": "p1", "driver_profile_id": "d1"}])
    );
    let r = http
        .get(&feed)
        .header("x-api-key", API_KEY)
        .query(&[("cursor", "???")])
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["field"], "cursor");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_feed_pages_without_gap_or_repeat_under_concurrent_binds() {
    let env = env(0).await;
    let f = &env.fakes.state;
    let n = 120;
    add_drivers(f, n, &["econom"]);
    for i in 0..n {
        f.krt_ids
            .lock()
            .unwrap()
            .insert(format!("{i:010}"), format!("L{i}"));
    }
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;
    let http = reqwest::Client::new();
    let mut binders = Vec::new();
    for w in 0..4 {
        let (http, url) = (http.clone(), svc.url("/driver/v1/deptrans-status/v1/id"));
        binders.push(tokio::spawn(async move {
            for i in (w..n).step_by(4) {
                let r = http
                    .post(&url)
                    .header("x-yataxi-park-id", "p")
                    .header("x-yataxi-driver-profile-id", format!("d{i}"))
                    .json(&json!({"deptrans_id": format!("{i:010}")}))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 200);
            }
        }));
    }
    let seen = svc
        .follow_feed("/internal/v1/id/updates", 5, "deptrans_id", n)
        .await;
    for b in binders {
        b.await.expect("binder");
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (n, n));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_caches_and_serves_stale_data_later() {
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "d1", "L1", &["econom"], MOSCOW.0, MOSCOW.1);
    f.profiles_down.store(true, Ordering::Relaxed);
    let mut cfg = env.config();
    cfg.sender.enabled = false;
    cfg.consumer.enabled = false;
    cfg.upstream.cache_startup_timeout_ms = 1_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = switchyard_deptrans::run(cfg.clone(), listener, Shutdown::new())
        .await
        .expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("refusing to start") && msg.contains("driver-profiles"),
        "{msg}"
    );

    f.profiles_down.store(false, Ordering::Relaxed);
    let svc = start(cfg).await;
    f.profiles_down.store(true, Ordering::Relaxed);
    let failed = f.unavailable_answers.load(Ordering::Relaxed);
    eventually("a refresh failed", || async {
        f.unavailable_answers.load(Ordering::Relaxed) > failed + 1
    })
    .await;
    let r = reqwest::Client::new()
        .get(svc.url("/driver/v1/deptrans-status/v1/id"))
        .header("x-yataxi-park-id", "p1")
        .header("x-yataxi-driver-profile-id", "d1")
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        200,
        "known driver still served from the stale cache"
    );
    let metrics = reqwest::get(svc.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "switchyard_deptrans_cache_refresh_failures_total{cache=\"driver-profiles\"}"
        ),
        "{metrics}"
    );
    svc.stop().await;
}

#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn licence_numbers_and_tokens_are_never_stored_or_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = env(0).await;
    let f = &env.fakes.state;
    let licence = "LICENCE-SECRET-4242";
    f.add_driver("p", "d", licence, &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver(
        "p",
        "e",
        "LICENCE-SECRET-5353",
        &["econom"],
        MOSCOW.0,
        MOSCOW.1,
    );
    f.krt_ids
        .lock()
        .unwrap()
        .insert("0000000042".into(), "LICENCE-SECRET-5353".into());
    let (sender, tokens) = env.sender(10).await;
    consumer::upsert(&sender.pool, &[ev("p", "d", KrtStatus::Online, at(1))])
        .await
        .expect("upsert");
    f.revoke_tokens(); // force a 401 and a refresh path too
    assert_eq!(sender.run_once().await.expect("run").sent, 1);
    // The bind path also handles a licence: check it through KRT.
    let token = tokens.get().await.expect("token");
    let upstream = Upstream::new(&env.config().upstream).expect("upstream");
    let lic = upstream
        .licences(vec!["pd-p-e".into()])
        .await
        .expect("personal");
    tracing::info!(?lic, ?token, "debug output of licence and token");
    assert!(tokens
        .client
        .check(&token, "0000000042", &lic[0].license)
        .await
        .expect("check"));

    assert_eq!(
        f.pushed()[0].driver,
        format!("lic:{licence}"),
        "KRT did get the licence"
    );
    let db = env.db().await;
    let mut dump = String::new();
    for t in [
        "status_queue",
        "sent_marks",
        "session_statuses",
        "profiles",
        "krt_token",
    ] {
        let row = db
            .query_one(&format!("SELECT coalesce(string_agg(row_to_json(t)::text, ','), '') FROM deptrans.{t} t"), &[])
            .await
            .expect("dump");
        dump.push_str(row.get::<_, &str>(0));
    }
    assert!(!dump.contains("LICENCE-SECRET"), "{dump}");
    let stored_token: String = db
        .query_one("SELECT access_token FROM deptrans.krt_token", &[])
        .await
        .expect("token")
        .get(0);
    let logs =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(logs.contains("krt token refreshed"), "capture works");
    assert!(!logs.contains("LICENCE-SECRET"), "licence in logs");
    let leaked: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&stored_token) || l.contains("token-1-"))
        .collect();
    assert!(leaked.is_empty(), "token in logs: {leaked:?}");
    assert!(!logs.contains("\"secret\""), "client secret in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_old_session_history_in_batches() {
    let env = env(0).await;
    let (sender, _) = env.sender(10).await;
    let db = env.db().await;
    db.batch_execute(
        "INSERT INTO deptrans.session_statuses (driver_license_pd_id, session_status, status_at, updated_at, ended_at)
         SELECT 'old-' || g, 'closed', now(), now() - interval '10 days', now() - interval '9 days' FROM generate_series(1, 25) g;
         INSERT INTO deptrans.session_statuses (driver_license_pd_id, session_status, status_at, updated_at, ended_at)
         SELECT 'stale-' || g, 'open', now(), now() - interval '10 days', NULL FROM generate_series(1, 5) g;
         INSERT INTO deptrans.session_statuses (driver_license_pd_id, session_status, status_at, updated_at, ended_at)
         SELECT 'new-' || g, 'open', now(), now(), now() + interval '8 hours' FROM generate_series(1, 7) g;
         INSERT INTO deptrans.sent_marks (park_id, driver_id, updated_at)
         VALUES ('p', 'old', now() - interval '10 days'), ('p', 'new', now());
         INSERT INTO deptrans.session_history (driver_license_pd_id, session_status, status_at, recorded_at)
         SELECT 'h', 'open', now() - g * interval '1 day', now() - (g * 24 + 12) * interval '1 hour'
         FROM generate_series(0, 9) g;
         INSERT INTO deptrans.status_history (park_id, driver_id, status, status_at, recorded_at)
         SELECT 'p', 'h', 'online', now() - g * interval '1 day', now() - (g * 24 + 12) * interval '1 hour'
         FROM generate_series(0, 9) g;",
    )
    .await
    .expect("seed");
    let deleted = switchyard_deptrans::retention::purge(&sender.pool, 7, 4)
        .await
        .expect("purge");
    // History recorded 0.5, 1.5, ... 9.5 days ago: the 7.5, 8.5 and 9.5 of each go.
    assert_eq!(deleted, 25 + 5 + 1 + 3 + 3);
    assert_eq!(env.count("session_history").await, 7);
    assert_eq!(env.count("status_history").await, 7);
    let left: Vec<String> = db
        .query(
            "SELECT driver_license_pd_id FROM deptrans.session_statuses ORDER BY 1",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        (1..=7).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(env.count("sent_marks").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_generated_openapi_document() {
    let spec = OpenApi::load("deptrans.json");
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "d1", "77AA123456", &["econom"], MOSCOW.0, MOSCOW.1);
    f.add_driver("p1", "d2", "77BB123456", &["econom"], MOSCOW.0, MOSCOW.1);
    f.krt_ids
        .lock()
        .unwrap()
        .insert("0123456789".into(), "77AA123456".into());
    f.refuse("lic:77BB123456");
    let mut cfg = env.config();
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;
    let http = reqwest::Client::new();
    let id_path = "/driver/v1/deptrans-status/v1/id";
    let call = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("json"))
    };
    let driver = |req: reqwest::RequestBuilder, d: &str| {
        req.header("x-yataxi-park-id", "p1")
            .header("x-yataxi-driver-profile-id", d.to_owned())
    };
    let mut seen = Vec::new();
    let mut check = |method: &str, path: &str, want: u16, (status, body): (u16, Value)| {
        assert_eq!(status, want, "{method} {path}: {body}");
        spec.check(method, path, status, &body);
        seen.push(format!("{method} {path} {status}"));
    };

    let url = svc.url(id_path);
    check("get", id_path, 400, call(http.get(&url)).await);
    check(
        "get",
        id_path,
        404,
        call(
            http.get(&url)
                .header("x-yataxi-park-id", "p1")
                .header("x-yataxi-driver-profile-id", "nobody"),
        )
        .await,
    );
    check(
        "get",
        id_path,
        200,
        call(driver(http.get(&url), "d1")).await,
    );
    let post = |id: &str| driver(http.post(&url), "d1").json(&json!({ "deptrans_id": id }));
    check("post", id_path, 400, call(post("12")).await);
    check("post", id_path, 409, call(post("9999999999")).await);
    f.krt_down.store(true, Ordering::Relaxed);
    check("post", id_path, 503, call(post("0123456789")).await);
    f.krt_down.store(false, Ordering::Relaxed);
    check("post", id_path, 200, call(post("0123456789")).await);
    check(
        "get",
        id_path,
        200,
        call(driver(http.get(&url), "d1")).await,
    );

    // Statuses: d1 is sent, d2 is refused by KRT.
    env.enqueue(&[
        ev("p1", "d1", KrtStatus::Online, at(1)),
        ev("p1", "d2", KrtStatus::Online, at(1)),
    ])
    .await;
    env.drained("queue drained").await;
    for path in [
        "/internal/v1/id/updates",
        "/internal/v1/status/updates",
        "/internal/v1/rejected",
    ] {
        let url = svc.url(path);
        check("get", path, 401, call(http.get(&url)).await);
        let keyed = || http.get(&url).header("x-api-key", API_KEY);
        check(
            "get",
            path,
            400,
            call(keyed().query(&[("limit", "0")])).await,
        );
        let (status, body) = call(keyed()).await;
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(1),
            "{path}: {body}"
        );
        check("get", path, 200, (status, body));
    }
    let path = "/internal/v1/rejected/requeue";
    let url = svc.url(path);
    let requeue = |body: Value| http.post(&url).header("x-api-key", API_KEY).json(&body);
    check(
        "post",
        path,
        401,
        call(http.post(&url).json(&json!({}))).await,
    );
    check(
        "post",
        path,
        400,
        call(requeue(json!({"drivers": []}))).await,
    );
    check(
        "post",
        path,
        200,
        call(requeue(
            json!({"drivers": [{"park_id": "p1", "driver_id": "d2"}]}),
        ))
        .await,
    );
    // Every documented answer but the 500s was exercised.
    assert_eq!(seen.len(), 20, "{seen:#?}");
    svc.stop().await;
}

#[test]
fn the_deptrans_openapi_check_refuses_answers_that_break_the_document() {
    let spec = OpenApi::load("deptrans.json");
    let path = "/driver/v1/deptrans-status/v1/id";
    spec.check("get", path, 200, &json!({"bound": false}));
    for wrong in [
        json!({"bound": "no"}),
        json!({"deptrans_id_masked": "******6789"}),
    ] {
        let broke = std::panic::catch_unwind(|| spec.check("get", path, 200, &wrong));
        assert!(broke.is_err(), "accepted {wrong}");
    }
    let broke = std::panic::catch_unwind(|| {
        spec.check(
            "get",
            "/internal/v1/rejected",
            200,
            &json!({"items": [{"park_id": "p"}], "cursor": ""}),
        )
    });
    assert!(
        broke.is_err(),
        "a rejected item without its fields was accepted"
    );
}
