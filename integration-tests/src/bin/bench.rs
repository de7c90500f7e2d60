//! `bench`: prints the figures behind switchyard's speed claims, each next to a baseline
//! measured in the same run. Not a test: nothing here passes or fails on speed.
//!
//!   bench ingress   POST /v1/uid-notify at concurrency 64, Kafka vs the same handler without it
//!   bench dispatch  webhook deliveries/s from a 200k backlog vs the raw consume rate
//!   bench seen      mark-notify at a fixed 10k req/s for 60 s, one HTTP + one topic integration

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use chrono::Utc;
use clap::{Parser, Subcommand};
use events::v1::{envelope::Payload, AccountLink, LinkEvent};
use events::{event_type, Envelope};
use integration_tests::kafka::create_topic;
use integration_tests::load::{closed_loop, open_loop, LoadReport};
use integration_tests::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    what: What,
    /// Append the report to this markdown file.
    #[arg(long, global = true)]
    out: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum What {
    Ingress {
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    Dispatch {
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Delivery throughput with and without the attempt log.
    AttemptLog {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, default_value_t = 2)]
        rounds: u32,
    },
    Seen {
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn row(name: &str, r: &LoadReport) -> String {
    format!(
        "| {name} | {:.0} | {} | {} | {} | {} |\n",
        r.rate(),
        ms(r.p50),
        ms(r.p99),
        r.ok,
        r.failed
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = format!(
        "broker: {} ({})",
        bootstrap(),
        std::env::var("SWITCHYARD_BENCH_BROKER").unwrap_or_else(|_| {
            "nisshi with PostgreSQL storage, as deploy/local/broker.sh starts it".into()
        })
    );
    let mut report = String::new();
    match args.what {
        What::Ingress {
            concurrency,
            seconds,
        } => ingress(&mut report, concurrency, seconds).await?,
        What::Dispatch {
            records,
            concurrency,
        } => dispatch(&mut report, records, concurrency).await?,
        What::AttemptLog {
            records,
            concurrency,
            rounds,
        } => attempt_log(&mut report, records, concurrency, rounds).await?,
        What::Seen { rate, seconds } => seen(&mut report, rate, seconds).await?,
    }
    let _ = writeln!(
        report,
        "\n_{broker}; machine: {} cores; {}_\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Utc::now().to_rfc3339()
    );
    print!("{report}");
    if let Some(out) = args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        f.write_all(report.as_bytes())?;
    }
    Ok(())
}

fn uid_body() -> integration_tests::load::BodyFn {
    Arc::new(|i| {
        format!(
            r#"{{"portal_uid":{},"phonish_uid":{},"event_type":"bind"}}"#,
            1_000_000 + i,
            1 + i % 50_000
        )
    })
}

async fn ingress(out: &mut String, concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    let topic = unique("bench-uid");
    create_topic(&topic, 6).await?;
    // Same router and handler; the baseline's publisher answers without a broker.
    let bare = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state =
            producers::AppState::new(ingress_config(&topic), producers::Publisher::Discard)?;
        tokio::spawn(producers::run(
            state,
            None,
            listener,
            switchyard_runtime::Shutdown::new(),
        ));
        format!("http://{addr}/v1/uid-notify")
    };
    let real = start_ingress(ingress_config(&topic), None).await?;
    let dur = Duration::from_secs(seconds);
    closed_loop(&bare, concurrency, Duration::from_secs(2), uid_body()).await; // warm-up
    let b = closed_loop(&bare, concurrency, dur, uid_body()).await;
    closed_loop(
        &real.url("/v1/uid-notify"),
        concurrency,
        Duration::from_secs(2),
        uid_body(),
    )
    .await;
    let k = closed_loop(&real.url("/v1/uid-notify"), concurrency, dur, uid_body()).await;
    let _ = writeln!(
        out,
        "### Ingress: POST /v1/uid-notify, concurrency {concurrency}, {seconds} s each\n"
    );
    out.push_str("| endpoint | req/s | p50 | p99 | ok | failed |\n|---|---|---|---|---|---|\n");
    out.push_str(&row("bare (same handler, no Kafka)", &b));
    out.push_str(&row("ingress (acks=all, answer after ack)", &k));
    let _ = writeln!(
        out,
        "\nratio ingress / bare: **{:.2}x** (target >= 0.6x)",
        k.rate() / b.rate()
    );
    real.stop().await?;
    Ok(())
}

async fn produce_backlog(topic: &str, n: u64) -> anyhow::Result<Duration> {
    let p: FutureProducer = kafka_settings()
        .producer_config("bench")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..n {
        let link = AccountLink {
            portal_uid: i + 1,
            phonish_uid: i + 2,
            event: LinkEvent::Bind.into(),
        };
        let env = Envelope::new(
            event_type::UID_BIND,
            1,
            Utc::now(),
            "bench",
            link.idempotency_key(),
            Payload::AccountLink(link),
        );
        let (p, topic) = (p.clone(), topic.to_owned());
        pending.push(async move {
            let key = (i % 10_000).to_string();
            let bytes = env.to_bytes();
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&bytes),
                Duration::from_secs(60),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if pending.len() >= 20_000 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(started.elapsed())
}

/// Runs a dispatcher with a fresh consumer group over `topic`'s backlog of `n` records to a
/// sink that answers 200 at once; returns (delivered, time from the first delivery to the last).
async fn deliver_backlog(
    topic: &str,
    n: u64,
    concurrency: usize,
    attempt_log: Option<consumers::config::AttemptLogConfig>,
) -> anyhow::Result<(u64, Duration, u64)> {
    let hits = Arc::new(AtomicU64::new(0));
    let first_hit = Arc::new(Mutex::new(None::<Instant>));
    let sink = {
        let (hits, first_hit) = (hits.clone(), first_hit.clone());
        let app = Router::new().route(
            "/sink",
            post(move || {
                let (hits, first_hit) = (hits.clone(), first_hit.clone());
                async move {
                    if hits.fetch_add(1, Ordering::Relaxed) == 0 {
                        *first_hit.lock().unwrap() = Some(Instant::now());
                    }
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/sink")
    };
    let mut sub = http_subscriber("bench", topic, &sink);
    sub.concurrency = concurrency;
    let mut cfg = dispatcher_config(vec![sub]);
    cfg.attempt_log = attempt_log;
    let d = start_dispatcher(cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while hits.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = hits.load(Ordering::Relaxed);
    let took = first_hit
        .lock()
        .unwrap()
        .map_or(Duration::ZERO, |f| f.elapsed());
    let metrics = reqwest::get(d.url("/metrics")).await?.text().await?;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_dispatch_attempt_log_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    d.stop().await?;
    Ok((delivered, took, dropped))
}

/// Delivery throughput with and without the attempt log, in interleaved rounds over one
/// backlog (each round a fresh consumer group), and how many rows the log wrote.
async fn attempt_log(
    out: &mut String,
    n: u64,
    concurrency: usize,
    rounds: u32,
) -> anyhow::Result<()> {
    let topic = unique("bench-attempt-log");
    create_topic(&topic, 6).await?;
    produce_backlog(&topic, n).await?;
    // The shipped defaults (buffer, batch size, flush interval), in a database of its own.
    let log_cfg = consumers::config::AttemptLogConfig {
        database_url: fresh_database("switchyard_bench").await?,
        ..toml::from_str("database_url = ''")?
    };
    let _ = writeln!(
        out,
        "### Attempt log cost: {n}-record backlog, 6 partitions, concurrency {concurrency}, {rounds} interleaved rounds\n"
    );
    out.push_str(
        "| round | attempt log | deliveries/s | delivered | log rows dropped |\n|---|---|---|---|---|\n",
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for with_log in [false, true] {
            let cfg = with_log.then(|| log_cfg.clone());
            let (delivered, took, dropped) = deliver_backlog(&topic, n, concurrency, cfg).await?;
            let rate = delivered as f64 / took.as_secs_f64();
            if with_log {
                on.push(rate)
            } else {
                off.push(rate)
            }
            let _ = writeln!(
                out,
                "| {round} | {} | {rate:.0} | {delivered} | {dropped} |",
                if with_log { "on" } else { "off" }
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (mean(&off), mean(&on));
    let _ = writeln!(
        out,
        "\nmean without the log {off:.0}/s, with it {on:.0}/s: cost **{:.1}%** (target < 10%)",
        (1.0 - on / off) * 100.0,
    );
    Ok(())
}

async fn dispatch(out: &mut String, n: u64, concurrency: usize) -> anyhow::Result<()> {
    let topic = unique("bench-dispatch");
    create_topic(&topic, 6).await?;
    let produced_in = produce_backlog(&topic, n).await?;

    // Raw consume rate of the same topic: decode nothing, deliver nothing.
    let consumer: StreamConsumer = kafka_settings()
        .consumer_config(&unique("bench-raw"))
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut first = None;
    let mut count = 0u64;
    while count < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        let _ = m.payload().map(<[u8]>::len);
        first.get_or_insert_with(Instant::now);
        count += 1;
    }
    let raw = first.map_or(Duration::ZERO, |f| f.elapsed());
    drop(consumer);

    let (delivered, took, _) = deliver_backlog(&topic, n, concurrency, None).await?;

    let raw_rate = n as f64 / raw.as_secs_f64();
    let rate = delivered as f64 / took.as_secs_f64();
    let _ = writeln!(
        out,
        "### Dispatcher: {n}-record backlog, 6 partitions, subscriber concurrency {concurrency}\n"
    );
    out.push_str("| path | records/s | records | time |\n|---|---|---|---|\n");
    let _ = writeln!(
        out,
        "| produce backlog (acks=all) | {:.0} | {n} | {} |",
        n as f64 / produced_in.as_secs_f64(),
        ms(produced_in)
    );
    let _ = writeln!(
        out,
        "| raw consume (baseline) | {raw_rate:.0} | {n} | {} |",
        ms(raw)
    );
    let _ = writeln!(
        out,
        "| webhook deliveries (HTTP POST, 2xx) | {rate:.0} | {delivered} | {} |",
        ms(took)
    );
    let _ = writeln!(
        out,
        "\nratio deliveries / raw consume: **{:.2}x**; target >= 20000 deliveries/s",
        rate / raw_rate
    );
    Ok(())
}

async fn seen(out: &mut String, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let marks = unique("bench-marks");
    let archive = unique("bench-archive");
    create_topic(&marks, 6).await?;
    create_topic(&archive, 6).await?;
    let ids = Arc::new(Mutex::new((0u64, HashSet::<String>::new())));
    let sink = {
        let ids = ids.clone();
        let app = Router::new().route(
            "/seen",
            post(move |body: axum::body::Bytes| {
                let ids = ids.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut g = ids.lock().unwrap();
                    g.0 += 1;
                    g.1.insert(v["event_id"].as_str().unwrap_or_default().to_owned());
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/seen")
    };
    let dir = std::env::temp_dir().join(unique("bench-seen"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("integrations.toml");
    std::fs::write(&file, format!(
        "[[integrations]]\ntag = \"promo\"\n[[integrations.targets]]\nname = \"api\"\nconcurrency = 128\ntarget = {{ kind = \"http\", url = \"{sink}\" }}\n[[integrations.targets]]\nname = \"archive\"\nconcurrency = 128\ntarget = {{ kind = \"topic\", topic = \"{archive}\" }}\n"
    ))?;
    let mut icfg = ingress_config("unused");
    icfg.mark_notify.topic = marks.clone();
    icfg.mark_notify.integrations_file = Some(file.clone());
    let ingress = start_ingress(icfg, None).await?;
    let mut dcfg = dispatcher_config(Vec::new());
    dcfg.mark_notify = Some(consumers::config::MarkNotifySection {
        topic: marks,
        integrations_file: file,
    });
    let d = start_dispatcher(dcfg).await?;

    let headers = Arc::new(|i: u64| vec![("x-yataxi-userid", format!("user-{}", i % 20_000))]);
    let body: integration_tests::load::BodyFn =
        Arc::new(|i| format!(r#"{{"tag":"promo","id":"n-{i}"}}"#));
    let r = open_loop(
        &ingress.url("/4.0/mark-notify/v1/seen"),
        rate,
        Duration::from_secs(seconds),
        2_000,
        headers,
        body,
    )
    .await;

    // Drain: wait until both integrations have everything that was accepted (or 5 minutes).
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut archived = HashSet::new();
    let mut archive_total = 0u64;
    let consumer: StreamConsumer = kafka_settings()
        .consumer_config(&unique("bench-archive-reader"))
        .create()?;
    consumer.subscribe(&[&archive])?;
    while Instant::now() < deadline && (archived.len() < r.ok || ids.lock().unwrap().1.len() < r.ok)
    {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            archive_total += 1;
            archived.insert(
                rdkafka::message::Headers::iter(m.headers().unwrap())
                    .find(|h| h.key == "sy-event-id")
                    .and_then(|h| h.value)
                    .map(|v| v.to_vec())
                    .unwrap_or_default(),
            );
        }
    }
    let (http_total, http_distinct) = {
        let g = ids.lock().unwrap();
        (g.0, g.1.len())
    };
    d.stop().await?;
    ingress.stop().await?;
    let _ = writeln!(out, "### mark-notify: open loop at {rate} req/s for {seconds} s, one HTTP + one topic integration\n");
    out.push_str("| endpoint | req/s | p50 | p99 | ok | failed |\n|---|---|---|---|---|---|\n");
    out.push_str(&row("POST /4.0/mark-notify/v1/seen", &r));
    let _ = writeln!(
        out,
        "\n| integration | distinct delivered | duplicates |\n|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| http | {http_distinct} | {} |",
        http_total - http_distinct as u64
    );
    let _ = writeln!(
        out,
        "| topic | {} | {} |",
        archived.len(),
        archive_total - archived.len() as u64
    );
    let _ = writeln!(
        out,
        "\naccepted {} marks; target p99 < 20 ms at 10k/s and every accepted mark delivered",
        r.ok
    );
    Ok(())
}
