//! deptrans benchmark (prints figures; not a test): events/s from the topic into
//! `deptrans.status_queue` with 10k distinct drivers, upsert statements per event, and sender
//! rows/s to a KRT fake answering each request after 20 ms, in `krt.mode = "bulk"` (the
//! baseline) and in `"single"` (one request per driver) with the default rate limit and without. Uses the running broker and
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
use switchyard_deptrans::config::KrtMode;
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
    /// KRT fake latency per request (bulk or per driver).
    #[arg(long, default_value_t = 20)]
    krt_delay_ms: u64,
    /// Rows sent in each `single`-mode run (the bulk run sends every queued row).
    #[arg(long, default_value_t = 2_000)]
    single_rows: usize,
}

/// Puts the first `rows` of the snapshot taken after the consumer run back into an empty queue.
async fn restore_queue(pool: &switchyard_runtime::pg::Pool, rows: usize) -> anyhow::Result<u64> {
    let conn = pool.get().await?;
    conn.batch_execute("DELETE FROM deptrans.status_queue")
        .await?;
    let limit = i64::try_from(rows).unwrap_or(i64::MAX);
    Ok(conn
        .execute(
            "INSERT INTO deptrans.status_queue (park_id, driver_id, status, updated_at) \
             SELECT park_id, driver_id, status, updated_at FROM bench_queue \
             ORDER BY driver_id LIMIT $1",
            &[&limit],
        )
        .await?)
}

fn krt_calls(fakes: &Fakes) -> u64 {
    fakes.state.push_calls.load(Ordering::Relaxed)
        + fakes.state.single_calls.load(Ordering::Relaxed)
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
    let mut first = None;
    let (consumed, statements) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(resp) = http.get(format!("http://{addr}/metrics")).send().await else {
            continue;
        };
        let text = resp.text().await?;
        let consumed = metric(&text, "switchyard_deptrans_consumed_total");
        if consumed > 0.0 && first.is_none() {
            first = Some((started.elapsed().as_secs_f64(), consumed));
        }
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
    if let Some((at, n)) = first {
        println!(
            "  of which start-up (group join, cache fill) until the first events stored: {at:.2} s; \
             then {:.0} events/s",
            (consumed - n) / (secs - at)
        );
    }
    println!(
        "upsert statements: {statements} = {:.4} statements/event",
        statements / consumed
    );

    // Sender: drain the queue (one row per driver) to a KRT fake that answers after a delay,
    // once per KRT mode, each run starting from the same rows.
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
    pool.get()
        .await?
        .batch_execute(
            "CREATE TABLE bench_queue AS SELECT park_id, driver_id, status, updated_at \
             FROM deptrans.status_queue",
        )
        .await?;
    let runs = [
        (KrtMode::Bulk, cfg.sender.concurrency, 0, usize::MAX),
        (
            KrtMode::Single,
            cfg.sender.concurrency,
            cfg.krt.single_rate_per_sec,
            args.single_rows,
        ),
        (KrtMode::Single, 32, 0, args.single_rows),
    ];
    let mut bulk_rate = None;
    for (mode, concurrency, rate, rows) in runs {
        let mut cfg = cfg.clone();
        cfg.krt.mode = mode;
        cfg.krt.single_rate_per_sec = rate;
        cfg.sender.concurrency = concurrency;
        let queued = restore_queue(&pool, rows).await? as usize;
        let metrics = Arc::new(DeptransMetrics::default());
        let tokens = Arc::new(TokenStore::new(
            pool.clone(),
            KrtClient::new(&cfg.krt)?,
            &cfg.krt,
            metrics.clone(),
        ));
        let sender = Sender {
            pool: pool.clone(),
            caches: caches.clone(),
            upstream: upstream.clone(),
            tokens,
            cfg: cfg.sender.clone(),
            metrics,
        };
        let calls_before = krt_calls(&fakes);
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
        let per_sec = sent as f64 / secs;
        let ratio = match bulk_rate {
            None => {
                bulk_rate = Some(per_sec);
                String::from("baseline")
            }
            Some(b) => format!("{:.3}x bulk", per_sec / b),
        };
        let shape = match mode {
            KrtMode::Bulk => format!("bulk {}", cfg.sender.bulk_size),
            KrtMode::Single if rate == 0 => "rate unlimited".to_string(),
            KrtMode::Single => format!("rate limit {rate}/s"),
        };
        println!(
            "sender {mode:?}: {sent} of {queued} rows in {secs:.2} s = {per_sec:.0} rows/s ({ratio}); \
             {} KRT requests; KRT fake {} ms per request, {shape}, concurrency {concurrency}, batch {}",
            krt_calls(&fakes) - calls_before,
            args.krt_delay_ms,
            cfg.sender.batch_size
        );
        anyhow::ensure!(
            sent == queued,
            "sender {mode:?} sent {sent} of {queued} rows"
        );
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .await
        .ok();
    Ok(())
}
