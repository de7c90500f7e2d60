//! `bench`: prints the figures behind switchyard's speed claims, each next to a baseline
//! measured in the same run. Not a test: nothing here passes or fails on speed.
//!
//!   bench ingress      POST /v1/uid-notify at concurrency 64, Kafka vs the same handler without it
//!   bench dispatch     webhook deliveries/s from a 200k backlog vs a bare HTTP client posting the
//!                      same bodies to the same sink, and vs the raw consume rate
//!   bench attempt-log  delivery throughput with and without the attempt log
//!   bench seen         mark-notify at a fixed 10k req/s for 60 s, one HTTP + one topic integration
//!   bench e2e          POST /v1/uid-notify -> the subscriber's HTTP receipt, open loop at a fixed rate
//!
//! Open-loop latencies are measured from each request's scheduled send time (see `load`).

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
use integration_tests::load::{closed_loop, open_loop, percentiles, scheduled, LoadReport};
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
    /// End to end: ingress accepts, the dispatcher delivers, the subscriber receives.
    E2e {
        /// Offered requests/s.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Subscriber concurrency (the shipped default).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The broker the figures were measured on: `SWITCHYARD_BENCH_BROKER` when set (someone else's
/// Kafka), otherwise the single local node of the version `deploy/kafka/pom.xml` pins.
fn broker_label() -> String {
    if let Ok(label) = std::env::var("SWITCHYARD_BENCH_BROKER") {
        return label;
    }
    let pom = std::fs::read_to_string(workspace_root().join("deploy/kafka/pom.xml"));
    let version = pom.ok().and_then(|p| {
        let (_, rest) = p.split_once("<kafka.version>")?;
        Some(rest.split_once("</kafka.version>")?.0.trim().to_owned())
    });
    format!(
        "Apache Kafka {}, single node, as deploy/local/kafka.sh starts it",
        version
            .as_deref()
            .unwrap_or("(version unknown: deploy/kafka/pom.xml unreadable)")
    )
}

/// A row of an open-loop run: offered and achieved rates next to the latencies.
fn open_row(name: &str, r: &LoadReport) -> String {
    format!(
        "| {name} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
        r.offered.unwrap_or(0),
        r.rate(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        r.ok,
        r.failed,
        ms(r.send_lag_max)
    )
}

const OPEN_HEAD: &str = "| endpoint | offered/s | achieved/s | p50 | p99 | max | ok | failed | max send lag |\n|---|---|---|---|---|---|---|---|---|\n";

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
    let broker = format!("broker: {} ({})", bootstrap(), broker_label());
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
        What::E2e {
            rate,
            seconds,
            concurrency,
        } => e2e(&mut report, rate, seconds, concurrency).await?,
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

/// uid-notify bodies with portal_uid `base + i`.
fn uid_body(base: u64) -> integration_tests::load::BodyFn {
    Arc::new(move |i| {
        format!(
            r#"{{"portal_uid":{},"phonish_uid":{},"event_type":"bind"}}"#,
            base + i,
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
        let state = switchyard_ingress::AppState::new(
            ingress_config(&topic),
            switchyard_ingress::Publisher::Discard,
        )?;
        tokio::spawn(switchyard_ingress::run(
            state,
            None,
            listener,
            switchyard_runtime::Shutdown::new(),
        ));
        format!("http://{addr}/v1/uid-notify")
    };
    let real = start_ingress(ingress_config(&topic), None).await?;
    let dur = Duration::from_secs(seconds);
    closed_loop(
        &bare,
        concurrency,
        Duration::from_secs(2),
        uid_body(1_000_000),
    )
    .await; // warm-up
    let b = closed_loop(&bare, concurrency, dur, uid_body(1_000_000)).await;
    closed_loop(
        &real.url("/v1/uid-notify"),
        concurrency,
        Duration::from_secs(2),
        uid_body(1_000_000),
    )
    .await;
    let k = closed_loop(
        &real.url("/v1/uid-notify"),
        concurrency,
        dur,
        uid_body(1_000_000),
    )
    .await;
    let _ = writeln!(
        out,
        "### Ingress: POST /v1/uid-notify, concurrency {concurrency}, {seconds} s each\n"
    );
    out.push_str("| endpoint | req/s | p50 | p99 | ok | failed |\n|---|---|---|---|---|---|\n");
    out.push_str(&row("bare (same handler, no Kafka)", &b));
    out.push_str(&row("ingress (acks=all, answer after ack)", &k));
    let _ = writeln!(
        out,
        "\nratio ingress / bare: **{:.2}x** (target >= 0.6x); ingress p99 **{}** (target < 10 ms)",
        k.rate() / b.rate(),
        ms(k.p99)
    );
    real.stop().await?;
    Ok(())
}

/// The i-th record of a benchmark backlog (keys spread over 10,000 phone-only accounts).
fn backlog_envelope(i: u64) -> Envelope {
    let link = AccountLink {
        portal_uid: i + 1,
        phonish_uid: i + 2,
        event: LinkEvent::Bind.into(),
    };
    Envelope::new(
        event_type::UID_BIND,
        1,
        Utc::now(),
        "bench",
        link.idempotency_key(),
        Payload::AccountLink(link),
    )
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
        let env = backlog_envelope(i);
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

/// A subscriber that answers 200 at once and counts hits, with the times of the first and the
/// last (nanoseconds since the sink started), so a run's clock needs no polling.
struct CountingSink {
    url: String,
    hits: Arc<AtomicU64>,
    first_ns: Arc<AtomicU64>,
    last_ns: Arc<AtomicU64>,
}

impl CountingSink {
    async fn start() -> anyhow::Result<Self> {
        let base = Instant::now();
        let hits = Arc::new(AtomicU64::new(0));
        let first_ns = Arc::new(AtomicU64::new(u64::MAX));
        let last_ns = Arc::new(AtomicU64::new(0));
        let (h, f, l) = (hits.clone(), first_ns.clone(), last_ns.clone());
        let app = Router::new().route(
            "/sink",
            post(move || {
                let now = base.elapsed().as_nanos() as u64;
                f.fetch_min(now, Ordering::Relaxed);
                l.fetch_max(now, Ordering::Relaxed);
                h.fetch_add(1, Ordering::Relaxed);
                async { "" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/sink", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            hits,
            first_ns,
            last_ns,
        })
    }

    fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.first_ns.store(u64::MAX, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
    }

    /// Waits for `n` hits (at most 10 minutes); returns (hits, first hit to last hit).
    async fn wait(&self, n: u64) -> (u64, Duration) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.hits.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (first, last) = (
            self.first_ns.load(Ordering::Relaxed),
            self.last_ns.load(Ordering::Relaxed),
        );
        let took = Duration::from_nanos(last.saturating_sub(first));
        (self.hits.load(Ordering::Relaxed), took)
    }
}

/// Runs a dispatcher with a fresh consumer group over `topic`'s backlog of `n` records to
/// `sink`; returns (delivered, time from the first delivery to the last, attempt-log rows
/// dropped).
async fn deliver_backlog(
    sink: &CountingSink,
    topic: &str,
    n: u64,
    concurrency: usize,
    attempt_log: Option<switchyard_dispatcher::config::AttemptLogConfig>,
) -> anyhow::Result<(u64, Duration, u64)> {
    sink.reset();
    let mut sub = http_subscriber("bench", topic, &sink.url);
    sub.concurrency = concurrency;
    let mut cfg = dispatcher_config(vec![sub]);
    cfg.attempt_log = attempt_log;
    let d = start_dispatcher(cfg).await?;
    let (delivered, took) = sink.wait(n).await;
    let metrics = reqwest::get(d.url("/metrics")).await?.text().await?;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_dispatch_attempt_log_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    d.stop().await?;
    Ok((delivered, took, dropped))
}

/// The baseline of the dispatcher: the client it delivers with (`HttpSink`: same reqwest
/// client, pool, timeout and headers) posting the bodies it would render for the backlog to
/// `sink`, `concurrency` requests at a time, with no Kafka in the way. Bodies are rendered
/// before the clock starts. Returns (delivered, first hit to last hit).
async fn bare_client(
    sink: &CountingSink,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<(u64, Duration)> {
    sink.reset();
    let switchyard_dispatcher::config::Target::Http(target) =
        http_subscriber("bench", "unused", &sink.url).target
    else {
        anyhow::bail!("http_subscriber made a non-HTTP target");
    };
    let client = switchyard_dispatcher::http_target::HttpSink::new(&target, concurrency)?;
    let mut bodies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let env = backlog_envelope(i);
        bodies.push((
            env.event_id.clone(),
            switchyard_dispatcher::render::render_http(&env)?,
        ));
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((id, rendered)) = bodies.get(i) else {
                    break;
                };
                client.attempt(id, rendered).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(sink.wait(n).await)
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
    let log_cfg = switchyard_dispatcher::config::AttemptLogConfig {
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
    let sink = CountingSink::start().await?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for with_log in [false, true] {
            let cfg = with_log.then(|| log_cfg.clone());
            let (delivered, took, dropped) =
                deliver_backlog(&sink, &topic, n, concurrency, cfg).await?;
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

    // The same bodies and client without Kafka, then the dispatcher, to the same sink.
    let sink = CountingSink::start().await?;
    let (bare_n, bare) = bare_client(&sink, n, concurrency).await?;
    let (delivered, took, _) = deliver_backlog(&sink, &topic, n, concurrency, None).await?;

    let raw_rate = n as f64 / raw.as_secs_f64();
    let bare_rate = bare_n as f64 / bare.as_secs_f64();
    let rate = delivered as f64 / took.as_secs_f64();
    let _ = writeln!(
        out,
        "### Dispatcher: {n}-record backlog, 6 partitions, subscriber concurrency {concurrency}\n"
    );
    out.push_str("| path | records/s | records | time |\n|---|---|---|---|\n");
    let mut line = |name: &str, rate: f64, count: u64, took: Duration| {
        let _ = writeln!(out, "| {name} | {rate:.0} | {count} | {} |", ms(took));
    };
    line(
        "produce backlog (acks=all)",
        n as f64 / produced_in.as_secs_f64(),
        n,
        produced_in,
    );
    line(
        "raw consume (baseline: no decode, no delivery)",
        raw_rate,
        n,
        raw,
    );
    line(
        "bare HTTP client (baseline: the dispatcher's HttpSink, same bodies, same sink)",
        bare_rate,
        bare_n,
        bare,
    );
    line("webhook deliveries (HTTP POST, 2xx)", rate, delivered, took);
    let _ = writeln!(
        out,
        "\nratio deliveries / bare client: **{:.2}x** (target >= 0.7x); deliveries / raw consume: {:.2}x",
        rate / bare_rate,
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
    dcfg.mark_notify = Some(switchyard_dispatcher::config::MarkNotifySection {
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
            let id = m.headers().and_then(|h| {
                rdkafka::message::Headers::iter(h)
                    .find(|h| h.key == "sy-event-id")
                    .and_then(|h| h.value)
                    .map(<[u8]>::to_vec)
            });
            archived.insert(id.unwrap_or_default());
        }
    }
    let (http_total, http_distinct) = {
        let g = ids.lock().unwrap();
        (g.0, g.1.len())
    };
    d.stop().await?;
    ingress.stop().await?;
    let _ = writeln!(out, "### mark-notify: open loop at {rate} req/s for {seconds} s, one HTTP + one topic integration\n");
    out.push_str(OPEN_HEAD);
    out.push_str(&open_row("POST /4.0/mark-notify/v1/seen", &r));
    let _ = writeln!(
        out,
        "\n| integration | distinct delivered | missing (accepted, not delivered) | duplicates |\n|---|---|---|---|"
    );
    for (name, distinct, total) in [
        ("http", http_distinct, http_total),
        ("topic", archived.len(), archive_total),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {distinct} | {} | {} |",
            r.ok.saturating_sub(distinct),
            total.saturating_sub(distinct as u64)
        );
    }
    let _ = writeln!(
        out,
        "\naccepted {} of {} marks; achieved **{:.0}/s** of {rate}/s offered (target >= {:.0}/s), p99 **{}** from the scheduled send (target < 20 ms); target: every accepted mark delivered once to each integration",
        r.ok,
        r.requests,
        r.rate(),
        rate as f64 * 0.95,
        ms(r.p99)
    );
    Ok(())
}

/// portal_uid of the e2e run's event `i` is `E2E_UID + i`; warm-up events start at `WARM_UID`.
const E2E_UID: u64 = 1;
const WARM_UID: u64 = 1 << 40;

/// What the e2e subscriber received: the first arrival of each measured event, by index.
#[derive(Default)]
struct Arrivals {
    first: Vec<Option<Instant>>,
    distinct: usize,
    total: u64,
    warm: u64,
}

/// End to end: `POST /v1/uid-notify` at a fixed offered rate through an in-process ingress and
/// dispatcher to a subscriber that answers 200 at once; each event's latency runs from its
/// scheduled send time to the subscriber's receipt of it (matched by portal_uid).
async fn e2e(out: &mut String, rate: u64, seconds: u64, concurrency: usize) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Webhook {
        portal_uid: u64,
    }
    let topic = unique("bench-e2e");
    create_topic(&topic, 6).await?;
    let total = rate * seconds;
    let arrivals = Arc::new(Mutex::new(Arrivals {
        first: vec![None; total as usize],
        ..Default::default()
    }));
    let sink = {
        let arrivals = arrivals.clone();
        let app = Router::new().route(
            "/e2e",
            post(move |body: axum::body::Bytes| {
                let at = Instant::now();
                let uid = serde_json::from_slice::<Webhook>(&body).map_or(0, |w| w.portal_uid);
                let mut guard = arrivals.lock().unwrap();
                let a = &mut *guard;
                a.total += 1;
                if uid >= WARM_UID {
                    a.warm += 1;
                } else if let Some(slot) = uid
                    .checked_sub(E2E_UID)
                    .and_then(|i| a.first.get_mut(i as usize))
                {
                    if slot.is_none() {
                        *slot = Some(at); // a duplicate arrives later: the first one counts
                        a.distinct += 1;
                    }
                }
                async { "" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/e2e")
    };
    let ingress = start_ingress(ingress_config(&topic), None).await?;
    let mut sub = http_subscriber("e2e", &topic, &sink);
    sub.concurrency = concurrency;
    let d = start_dispatcher(dispatcher_config(vec![sub])).await?;
    let url = ingress.url("/v1/uid-notify");
    let no_headers: integration_tests::load::HeadersFn = Arc::new(|_| Vec::new());

    // Warm-up, not measured: the dispatcher has joined its group and every client is connected
    // before the clock starts.
    let w = open_loop(
        &url,
        50,
        Duration::from_secs(1),
        100,
        no_headers.clone(),
        uid_body(WARM_UID),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (arrivals.lock().unwrap().warm as usize) < w.ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        w.ok > 0 && arrivals.lock().unwrap().warm as usize >= w.ok,
        "warm-up: {} of {} events accepted, fewer delivered within 60 s",
        w.ok,
        w.requests
    );

    let r = open_loop(
        &url,
        rate,
        Duration::from_secs(seconds),
        2_000,
        no_headers,
        uid_body(E2E_UID),
    )
    .await;
    // Drain: until every accepted event arrived, or nothing new arrived for 15 s.
    let mut progress = (0, Instant::now());
    loop {
        let n = arrivals.lock().unwrap().distinct;
        if n >= r.ok || progress.1.elapsed() > Duration::from_secs(15) {
            break;
        }
        if n != progress.0 {
            progress = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await?;
    ingress.stop().await?;

    let a = std::mem::take(&mut *arrivals.lock().unwrap());
    let mut lat: Vec<Duration> = (0..total)
        .zip(&a.first)
        .filter_map(|(i, at)| {
            Some(
                at.as_ref()?
                    .saturating_duration_since(scheduled(r.started, i, rate)),
            )
        })
        .collect();
    let last = a.first.iter().flatten().max().copied().unwrap_or(r.started);
    let delivered_rate = a.distinct as f64 / (last - r.started).as_secs_f64().max(1e-9);
    let (p50, p99, max) = percentiles(&mut lat);
    let _ = writeln!(
        out,
        "### End to end: POST /v1/uid-notify -> subscriber's HTTP receipt, open loop at {rate} req/s for {seconds} s, 6 partitions, subscriber concurrency {concurrency}\n"
    );
    out.push_str(OPEN_HEAD);
    out.push_str(&open_row("POST /v1/uid-notify (2xx after broker ack)", &r));
    let _ = writeln!(
        out,
        "\n| scheduled send -> | rate/s | p50 | p99 | max |\n|---|---|---|---|---|\n| ingress answer (2xx) | {:.0} | {} | {} | {} |\n| subscriber's HTTP receipt | {delivered_rate:.0} | {} | {} | {} |",
        r.rate(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        ms(p50),
        ms(p99),
        ms(max)
    );
    let _ = writeln!(
        out,
        "\n| sent | accepted (2xx) | failed | delivered (distinct) | missing (accepted, not delivered) | duplicates |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
        r.requests,
        r.ok,
        r.failed,
        a.distinct,
        r.ok.saturating_sub(a.distinct),
        a.total - a.warm - a.distinct as u64
    );
    let _ = writeln!(
        out,
        "\nend-to-end p99 **{}** (target < 25 ms at 1k/s); delivered {delivered_rate:.0}/s of {rate}/s offered",
        ms(p99)
    );
    Ok(())
}
