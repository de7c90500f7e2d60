//! deptrans end to end: the real broker, real PostgreSQL (a fresh database per test) and real
//! HTTP servers playing KRT, driver-profiles, personal, driver-categories and trackstory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use consumers::deptrans::cache::Caches;
use consumers::deptrans::consumer::{self, StatusEvent};
use consumers::deptrans::krt::{KrtClient, KrtStatus, StatusItem, TokenStore};
use consumers::deptrans::metrics::DeptransMetrics;
use consumers::deptrans::sender::Sender;
use consumers::deptrans::upstream::Upstream;
use consumers::deptrans::{db, DeptransConfig};
use events::v1::{envelope::Payload, DriverStatus, DriverStatusKind};
use events::{event_type, Envelope};
use integration_tests::deptrans_fakes::Fakes;
use integration_tests::{kafka, kafka_settings, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use switchyard_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
const MOSCOW: (f64, f64) = (55.7558, 37.6173);
const SPB: (f64, f64) = (59.9386, 30.3141);
const API_KEY: &str = "test-key";

struct Env {
    fakes: Fakes,
    db_url: String,
    topic: String,
    group: String,
}

async fn env(partitions: i32) -> Env {
    switchyard_runtime::telemetry::init_tracing("test");
    let name = format!("deptrans_test_{}", uuid::Uuid::now_v7().simple());
    let admin = pg(ADMIN_URL).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let topic = unique("deptrans");
    // 0 partitions: a test that never touches the broker.
    if partitions > 0 {
        kafka::create_topic(&topic, partitions)
            .await
            .expect("create topic");
    }
    Env {
        fakes: Fakes::start().await.expect("fakes"),
        db_url: format!("postgres://postgres:postgres@127.0.0.1:5432/{name}"),
        topic,
        group: unique("deptrans-status"),
    }
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(conn);
    client
}

impl Env {
    fn config(&self) -> DeptransConfig {
        let mut c = DeptransConfig {
            kafka: kafka_settings(),
            topic: self.topic.clone(),
            group_id: self.group.clone(),
            ..DeptransConfig::default()
        };
        c.postgres.url = self.db_url.clone();
        c.postgres.pool_size = 6;
        c.krt.url = self.fakes.krt.clone();
        c.krt.client_secret = "secret".into();
        c.upstream.profiles_url = self.fakes.profiles.clone();
        c.upstream.personal_url = self.fakes.personal.clone();
        c.upstream.categories_url = self.fakes.categories.clone();
        c.upstream.trackstory_url = self.fakes.trackstory.clone();
        c.upstream.cache_refresh_ms = 100;
        c.upstream.cache_startup_timeout_ms = 5_000;
        c.consumer.batch_linger_ms = 20;
        c.sender.interval_ms = 100;
        c.sender.backoff_initial_ms = 100;
        c.sender.backoff_max_ms = 400;
        c.api.clients.insert("tests".into(), API_KEY.into());
        c.drain_timeout_ms = 3_000;
        c
    }

    async fn db(&self) -> tokio_postgres::Client {
        pg(&self.db_url).await
    }

    /// The sender's parts, for tests that drive one run at a time.
    async fn sender(&self, batch: i64) -> (Sender, Arc<TokenStore>) {
        let cfg = self.config();
        let pool = db::pool(&cfg.postgres.url, 4).expect("pool");
        db::migrate(&pool).await.expect("migrate");
        let upstream = Upstream::new(&cfg.upstream).expect("upstream");
        let caches = Arc::new(Caches::default());
        caches
            .fill(&upstream)
            .await
            .map_err(|(c, e)| format!("{c}: {e}"))
            .expect("fill caches");
        let metrics = Arc::new(DeptransMetrics::default());
        let tokens = Arc::new(TokenStore::new(
            pool.clone(),
            KrtClient::new(&cfg.krt).expect("krt"),
            &cfg.krt,
            metrics.clone(),
        ));
        let mut scfg = cfg.sender.clone();
        scfg.batch_size = batch;
        scfg.bulk_size = 10;
        scfg.concurrency = 3;
        let sender = Sender {
            pool,
            caches,
            upstream,
            tokens: tokens.clone(),
            cfg: scfg,
            metrics,
        };
        (sender, tokens)
    }

    async fn queue(&self) -> Vec<(String, String, String, DateTime<Utc>)> {
        self.db()
            .await
            .query("SELECT park_id, driver_id, status, updated_at FROM deptrans.status_queue ORDER BY 1, 2", &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
            .unwrap_or_default()
    }

    async fn count(&self, table: &str) -> i64 {
        self.db()
            .await
            .query_one(&format!("SELECT count(*) FROM deptrans.{table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }
}

struct Service {
    addr: SocketAddr,
    shutdown: Shutdown,
    join: JoinHandle<Result<(), String>>,
}

impl Service {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.join
            .await
            .expect("join")
            .expect("service ended with an error");
    }
}

async fn start(cfg: DeptransConfig) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let join = tokio::spawn(async move {
        consumers::deptrans::run(cfg, listener, s)
            .await
            .map_err(|e| e.to_string())
    });
    // Ready once the API answers (migrations and caches done).
    let http = reqwest::Client::new();
    eventually("deptrans answers /ping", || {
        let (http, url) = (http.clone(), format!("http://{addr}/ping"));
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    Service {
        addr,
        shutdown,
        join,
    }
}

/// Polls `check` until it holds; the bound only turns a hang into a failure.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, minute, 0)
        .single()
        .expect("valid time")
}

async fn produce(
    p: &FutureProducer,
    topic: &str,
    park: &str,
    driver: &str,
    status: DriverStatusKind,
    when: DateTime<Utc>,
) {
    let s = DriverStatus {
        park_id: park.into(),
        driver_profile_id: driver.into(),
        status: status.into(),
        updated_at: Some(events::timestamp(when)),
    };
    let env = Envelope::new(
        event_type::DRIVER_STATUS,
        1,
        when,
        "tests",
        "k".into(),
        Payload::DriverStatus(s),
    );
    kafka::produce(p, topic, &format!("{park}/{driver}"), &env.to_bytes())
        .await
        .expect("produce");
}

fn ev(park: &str, driver: &str, status: KrtStatus, when: DateTime<Utc>) -> StatusEvent {
    StatusEvent {
        park_id: park.into(),
        driver_id: driver.into(),
        status,
        updated_at: when,
    }
}

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
    let http = reqwest::Client::new();
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
    for i in 0..60 {
        f.add_driver(
            "p",
            &format!("d{i}"),
            &format!("L{i}"),
            &["econom"],
            MOSCOW.0,
            MOSCOW.1,
        );
    }
    let p = kafka::producer().expect("producer");
    let kinds = [
        DriverStatusKind::Online,
        DriverStatusKind::Busy,
        DriverStatusKind::Offline,
    ];
    for (round, kind) in kinds.into_iter().enumerate() {
        for i in 0..60 {
            produce(
                &p,
                &env.topic,
                "p",
                &format!("d{i}"),
                kind,
                at(round as u32),
            )
            .await;
        }
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
    for i in 0..20 {
        f.add_driver(
            "p",
            &format!("d{i}"),
            &format!("L{i}"),
            &["comfort"],
            MOSCOW.0,
            MOSCOW.1,
        );
    }
    f.krt_down.store(true, Ordering::Relaxed);
    let svc = start(env.config()).await;
    let p = kafka::producer().expect("producer");
    for i in 0..20 {
        produce(
            &p,
            &env.topic,
            "p",
            &format!("d{i}"),
            DriverStatusKind::Online,
            at(1),
        )
        .await;
    }
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
    for i in 0..20 {
        produce(
            &p,
            &env.topic,
            "p",
            &format!("d{i}"),
            DriverStatusKind::Busy,
            at(2),
        )
        .await;
    }
    eventually("newer statuses queued", || async {
        let q = env.queue().await;
        q.len() == 20 && q.iter().all(|r| r.2 == "busy")
    })
    .await;
    f.krt_down.store(false, Ordering::Relaxed);
    eventually("queue drained", || async {
        env.count("status_queue").await == 0
    })
    .await;
    eventually("sessions written", || async {
        env.count("session_statuses").await == 20
    })
    .await;
    let pushed = f.pushed();
    assert_eq!(pushed.len(), 20, "{pushed:?}");
    let drivers: HashSet<&str> = pushed.iter().map(|p| p.driver.as_str()).collect();
    assert_eq!(drivers.len(), 20);
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
    let mut batch = Vec::new();
    for i in 0..n {
        f.add_driver(
            "p",
            &format!("d{i}"),
            &format!("L{i}"),
            &["econom"],
            MOSCOW.0,
            MOSCOW.1,
        );
        batch.push(ev("p", &format!("d{i}"), KrtStatus::Online, at(1)));
    }
    let (s1, _) = env.sender(40).await;
    let (s2, _) = env.sender(40).await;
    consumer::upsert(&s1.pool, &batch).await.expect("upsert");
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
    let http = reqwest::Client::new();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page: Value = http
            .get(svc.url("/internal/v1/status/updates"))
            .header("x-api-key", API_KEY)
            .query(&[("cursor", cursor.as_str()), ("limit", "7")])
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        seen.extend(items.iter().map(|i| {
            i["driver_license_pd_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }));
        cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
        if seen.len() >= n && items.is_empty() {
            break;
        }
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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
    let page: Value = http
        .get(svc.url("/internal/v1/status/updates"))
        .header("x-api-key", API_KEY)
        .query(&[("limit", "1")])
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
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
    for i in 0..n {
        f.add_driver(
            "p",
            &format!("d{i}"),
            &format!("L{i}"),
            &["econom"],
            MOSCOW.0,
            MOSCOW.1,
        );
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
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page: Value = http
            .get(svc.url("/internal/v1/id/updates"))
            .header("x-api-key", API_KEY)
            .query(&[("cursor", cursor.as_str()), ("limit", "5")])
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        seen.extend(
            items
                .iter()
                .map(|i| i["deptrans_id"].as_str().unwrap_or_default().to_owned()),
        );
        cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
        if seen.len() >= n && items.is_empty() {
            break;
        }
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
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
    let err = consumers::deptrans::run(cfg.clone(), listener, Shutdown::new())
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
         VALUES ('p', 'old', now() - interval '10 days'), ('p', 'new', now());",
    )
    .await
    .expect("seed");
    let deleted = consumers::deptrans::retention::purge(&sender.pool, 7, 4)
        .await
        .expect("purge");
    assert_eq!(deleted, 25 + 5 + 1);
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
