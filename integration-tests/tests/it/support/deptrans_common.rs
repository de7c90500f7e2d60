//! Shared harness of the deptrans tests: a fresh database, topic and fakes per test, and
//! helpers to run the service's parts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use events::v1::{envelope::Payload, DriverStatus, DriverStatusKind};
use events::{event_type, Envelope};
use integration_tests::deptrans_fakes::{FakeState, Fakes};
use integration_tests::{kafka, kafka_settings, unique};
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use switchyard_deptrans::cache::Caches;
use switchyard_deptrans::consumer::{self, StatusEvent};
use switchyard_deptrans::krt::{KrtClient, KrtStatus, TokenStore};
use switchyard_deptrans::metrics::DeptransMetrics;
use switchyard_deptrans::sender::Sender;
use switchyard_deptrans::upstream::Upstream;
use switchyard_deptrans::{db, DeptransConfig};
use switchyard_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) const ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
pub(crate) const MOSCOW: (f64, f64) = (55.7558, 37.6173);
pub(crate) const SPB: (f64, f64) = (59.9386, 30.3141);
pub(crate) const API_KEY: &str = "test-key";

pub(crate) struct Env {
    pub fakes: Fakes,
    pub db_url: String,
    pub topic: String,
    pub group: String,
}

pub(crate) async fn env(partitions: i32) -> Env {
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

pub(crate) async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(conn);
    client
}

impl Env {
    pub(crate) fn config(&self) -> DeptransConfig {
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
        c.queue_metrics_interval_ms = 100;
        c
    }

    pub(crate) async fn db(&self) -> tokio_postgres::Client {
        pg(&self.db_url).await
    }

    /// The sender's parts, for tests that drive one run at a time.
    pub(crate) async fn sender(&self, batch: i64) -> (Sender, Arc<TokenStore>) {
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

    pub(crate) async fn queue(&self) -> Vec<(String, String, String, DateTime<Utc>)> {
        self.db()
            .await
            .query("SELECT park_id, driver_id, status, updated_at FROM deptrans.status_queue ORDER BY 1, 2", &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
            .unwrap_or_default()
    }

    /// Writes `events` into the queue of the (migrated) database, as the consumer would.
    pub(crate) async fn enqueue(&self, events: &[StatusEvent]) {
        let pool = db::pool(&self.db_url, 2).expect("pool");
        db::migrate(&pool).await.expect("migrate");
        consumer::upsert(&pool, events).await.expect("upsert");
    }

    /// Waits until the sender has emptied the queue.
    pub(crate) async fn drained(&self, what: &str) {
        eventually(what, || async { self.count("status_queue").await == 0 }).await;
    }

    /// `deptrans.rejected` as (driver, reason), by driver.
    pub(crate) async fn rejected(&self) -> Vec<(String, String)> {
        self.db()
            .await
            .query(
                "SELECT driver_id, reason FROM deptrans.rejected ORDER BY 1",
                &[],
            )
            .await
            .expect("rejected")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        self.db()
            .await
            .query_one(&format!("SELECT count(*) FROM deptrans.{table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }
}

pub(crate) struct Service {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub join: JoinHandle<Result<(), String>>,
}

impl Service {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of `series` (name plus labels exactly as exported, e.g.
    /// `x_total{cache="a",result="hit"}`) in the `/metrics` text, if present.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// One page of the internal feed at `path` asked with `query`.
    pub(crate) async fn feed_page(&self, path: &str, query: &[(&str, &str)]) -> Value {
        reqwest::Client::new()
            .get(self.url(path))
            .header("x-api-key", API_KEY)
            .query(query)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json")
    }

    /// Follows the cursor-paged feed at `path`, `limit` items a page, while it is being written,
    /// until it has handed out `n` items and then an empty page; returns each item's `field`.
    pub(crate) async fn follow_feed(
        &self,
        path: &str,
        limit: usize,
        field: &str,
        n: usize,
    ) -> Vec<String> {
        let limit = limit.to_string();
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let query = [("cursor", cursor.as_str()), ("limit", limit.as_str())];
            let page = self.feed_page(path, &query).await;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            seen.extend(
                items
                    .iter()
                    .map(|i| i[field].as_str().unwrap_or_default().to_owned()),
            );
            cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
            if seen.len() >= n && items.is_empty() {
                break;
            }
            if items.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        seen
    }

    pub(crate) async fn stop(self) {
        self.shutdown.trigger();
        self.join
            .await
            .expect("join")
            .expect("service ended with an error");
    }
}

pub(crate) async fn start(cfg: DeptransConfig) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let join = tokio::spawn(async move {
        switchyard_deptrans::run(cfg, listener, s)
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

/// The value of `series` in a Prometheus text exposition.
pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `check` until it holds; the bound only turns a hang into a failure.
pub(crate) async fn eventually<F, Fut>(what: &str, check: F)
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

pub(crate) fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, minute, 0)
        .single()
        .expect("valid time")
}

pub(crate) async fn produce(
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

/// Drivers `d0`, `d1`, ... of park `p` with licences `L0`, `L1`, ..., in Moscow.
pub(crate) fn add_drivers(f: &FakeState, n: usize, categories: &[&str]) {
    for i in 0..n {
        let (driver, licence) = (format!("d{i}"), format!("L{i}"));
        f.add_driver("p", &driver, &licence, categories, MOSCOW.0, MOSCOW.1);
    }
}

/// Drivers `d0`, `d1`, ... of park `p` going online at minute 1.
pub(crate) fn online(n: usize) -> Vec<StatusEvent> {
    (0..n)
        .map(|i| ev("p", &format!("d{i}"), KrtStatus::Online, at(1)))
        .collect()
}

/// Produces `status` at `when` for each driver `d{i}` of park `p`, `i` in `drivers`.
pub(crate) async fn produce_drivers(
    p: &FutureProducer,
    topic: &str,
    drivers: Range<usize>,
    status: DriverStatusKind,
    when: DateTime<Utc>,
) {
    for i in drivers {
        produce(p, topic, "p", &format!("d{i}"), status, when).await;
    }
}

pub(crate) fn ev(park: &str, driver: &str, status: KrtStatus, when: DateTime<Utc>) -> StatusEvent {
    StatusEvent {
        park_id: park.into(),
        driver_id: driver.into(),
        status,
        updated_at: when,
        traceparent: None,
        position: None,
    }
}
