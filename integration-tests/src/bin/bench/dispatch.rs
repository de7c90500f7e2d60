//! The dispatcher benches: a backlog delivered to a counting sink, against a bare HTTP client
//! and the raw consume rate; the attempt log's cost.

use super::*;

/// The i-th record of a benchmark backlog (keys spread over 10,000 phone-only accounts).
fn backlog_envelope(i: u64) -> Envelope {
    bind_envelope(i + 1, "bench")
}

pub(super) async fn produce_backlog(topic: &str, n: u64) -> anyhow::Result<Duration> {
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
pub(super) struct CountingSink {
    pub(super) url: String,
    hits: Arc<AtomicU64>,
    first_ns: Arc<AtomicU64>,
    last_ns: Arc<AtomicU64>,
}

impl CountingSink {
    pub(super) async fn start() -> anyhow::Result<Self> {
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

    pub(super) fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.first_ns.store(u64::MAX, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
    }

    /// Waits for `n` hits (at most 10 minutes); returns (hits, first hit to last hit).
    pub(super) async fn wait(&self, n: u64) -> (u64, Duration) {
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
pub(super) async fn attempt_log(
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

pub(super) async fn dispatch(out: &mut String, n: u64, concurrency: usize) -> anyhow::Result<()> {
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
