//! deptrans benchmark (prints figures; not a test): events/s from the topic into
//! `deptrans.status_queue` with 10k distinct drivers, upsert statements per event, and sender
//! rows/s to a KRT fake answering each bulk request after 5 ms. Uses the running broker and
//! PostgreSQL (`deploy/local/`), a fresh database and a fresh topic.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use events::v1::{envelope::Payload, DriverStatus, DriverStatusKind};
use events::{event_type, Envelope};
use integration_tests::deptrans_fakes::Fakes;
use integration_tests::{kafka, kafka_settings, unique};
use rdkafka::producer::FutureRecord;
use switchyard_deptrans::cache::Caches;
use switchyard_deptrans::krt::{KrtClient, TokenStore};
use switchyard_deptrans::metrics::DeptransMetrics;
use switchyard_deptrans::sender::Sender;
use switchyard_deptrans::upstream::Upstream;
use switchyard_deptrans::{db, DeptransConfig};
use switchyard_runtime::Shutdown;

#[derive(Parser)]
struct Args {
    /// Distinct drivers.
    #[arg(long, default_value_t = 10_000)]
    drivers: usize,
    /// Events per driver.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// KRT fake latency per bulk request.
    #[arg(long, default_value_t = 5)]
    krt_delay_ms: u64,
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fakes = Fakes::start().await?;
    for i in 0..args.drivers {
        fakes.state.add_driver(
            "park",
            &format!("d{i}"),
            &format!("L{i}"),
            &["econom"],
            55.75,
            37.61,
        );
    }
    let dbname = format!("deptrans_bench_{}", uuid::Uuid::now_v7().simple());
    let (admin, conn) = tokio_postgres::connect(
        "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await?;
    let topic = unique("deptrans-bench");
    kafka::create_topic(&topic, args.partitions).await?;

    let total = args.drivers * args.rounds;
    println!(
        "producing {total} events ({} drivers x {} rounds) to {topic}",
        args.drivers, args.rounds
    );
    let producer = kafka::producer()?;
    let kinds = [
        DriverStatusKind::Online,
        DriverStatusKind::Busy,
        DriverStatusKind::Offline,
    ];
    let base = chrono::Utc::now();
    for round in 0..args.rounds {
        let mut sends = Vec::with_capacity(args.drivers);
        for i in 0..args.drivers {
            let at = base + chrono::Duration::milliseconds(round as i64);
            let s = DriverStatus {
                park_id: "park".into(),
                driver_profile_id: format!("d{i}"),
                status: kinds[(round + i) % 3].into(),
                updated_at: Some(events::timestamp(at)),
            };
            let env = Envelope::new(
                event_type::DRIVER_STATUS,
                1,
                at,
                "bench",
                String::new(),
                Payload::DriverStatus(s),
            );
            let key = format!("park/d{i}");
            let payload = env.to_bytes();
            let p = producer.clone();
            let topic = topic.clone();
            sends.push(async move {
                p.send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
            });
        }
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }

    let mut cfg = DeptransConfig {
        kafka: kafka_settings(),
        topic: topic.clone(),
        group_id: unique("deptrans-bench"),
        ..DeptransConfig::default()
    };
    cfg.postgres.url = format!("postgres://postgres:postgres@127.0.0.1:5432/{dbname}");
    cfg.krt.url = fakes.krt.clone();
    cfg.krt.client_secret = "secret".into();
    cfg.upstream.profiles_url = fakes.profiles.clone();
    cfg.upstream.personal_url = fakes.personal.clone();
    cfg.upstream.categories_url = fakes.categories.clone();
    cfg.upstream.trackstory_url = fakes.trackstory.clone();
    cfg.upstream.cache_page_size = 5_000;
    cfg.sender.enabled = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let svc = tokio::spawn(switchyard_deptrans::run(
        cfg.clone(),
        listener,
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let (consumed, statements) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(resp) = http.get(format!("http://{addr}/metrics")).send().await else {
            continue;
        };
        let text = resp.text().await?;
        let consumed = metric(&text, "switchyard_deptrans_consumed_total");
        if consumed >= total as f64 {
            break (
                consumed,
                metric(&text, "switchyard_deptrans_upsert_statements_total"),
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "consumer did not finish"
        );
    };
    let secs = started.elapsed().as_secs_f64();
    shutdown.trigger();
    svc.await?.context("deptrans")?;
    println!(
        "consume -> status_queue: {consumed} events in {secs:.2} s = {:.0} events/s (includes group join and cache fill)",
        consumed / secs
    );
    println!(
        "upsert statements: {statements} = {:.4} statements/event",
        statements / consumed
    );

    // Sender: drain the queue (one row per driver) to a KRT fake that answers after a delay.
    fakes
        .state
        .push_delay_ms
        .store(args.krt_delay_ms, Ordering::Relaxed);
    let pool = db::pool(&cfg.postgres.url, 8)?;
    let upstream = Upstream::new(&cfg.upstream)?;
    let caches = Arc::new(Caches::default());
    caches
        .fill(&upstream)
        .await
        .map_err(|(c, e)| anyhow::anyhow!("{c}: {e}"))?;
    let metrics = Arc::new(DeptransMetrics::default());
    let tokens = Arc::new(TokenStore::new(
        pool.clone(),
        KrtClient::new(&cfg.krt)?,
        &cfg.krt,
        metrics.clone(),
    ));
    let sender = Sender {
        pool: pool.clone(),
        caches,
        upstream,
        tokens,
        cfg: cfg.sender.clone(),
        metrics,
    };
    let queued: i64 = pool
        .get()
        .await?
        .query_one("SELECT count(*) FROM deptrans.status_queue", &[])
        .await?
        .get(0);
    let started = Instant::now();
    let mut sent = 0;
    loop {
        let r = sender.run_once().await?;
        sent += r.sent;
        if r.claimed == 0 {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sender: {sent} of {queued} rows in {secs:.2} s = {:.0} rows/s (KRT fake {} ms per bulk request, bulk {}, concurrency {}, batch {})",
        sent as f64 / secs,
        args.krt_delay_ms,
        cfg.sender.bulk_size,
        cfg.sender.concurrency,
        cfg.sender.batch_size
    );
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .await
        .ok();
    Ok(())
}
