//! Filtering before decoding: ten integrations on one mark-notify topic, each taking one tag.
//! The same backlog is delivered twice, its records once with the `sy-event-type`/`sy-tag`
//! headers every producer now sets (each subscriber skips the other nine tags' records by
//! their headers) and once without them (the path before: every subscriber copies and decodes
//! every record, then drops nine in ten).

use super::dispatch::CountingSink;
use super::*;

use events::v1::{notification_seen::Caller, AnonymousCaller, NotificationSeen};

const TAGS: u64 = 10;

fn mark(i: u64) -> Envelope {
    let seen = NotificationSeen {
        tag: format!("tag{}", i % TAGS),
        id: format!("n-{i}"),
        caller: Some(Caller::Anonymous(AnonymousCaller {})),
    };
    Envelope::new(
        event_type::MARK_SEEN,
        1,
        Utc::now(),
        "bench",
        format!("{}:{}:view-{i}", seen.tag, seen.id),
        events::v1::envelope::Payload::NotificationSeen(seen),
    )
}

/// Produces `n` marks to `topic`, through the standard record builder or without headers.
async fn produce_marks(topic: &str, n: u64, headers: bool) -> anyhow::Result<()> {
    use futures::StreamExt;
    let p: FutureProducer = kafka_settings()
        .producer_config("bench")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let (p, topic) = (p.clone(), topic.to_owned());
        pending.push(async move {
            let env = mark(i);
            let key = format!("view-{i}");
            let bytes = env.to_bytes();
            let record = if headers {
                switchyard_runtime::kafka::envelope_record(&topic, &key, &bytes, &env)
            } else {
                FutureRecord::<str, [u8]>::to(&topic)
                    .key(key.as_str())
                    .payload(&bytes[..])
            };
            p.send(record, Duration::from_secs(60))
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
    Ok(())
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (Linux; in
/// USER_HZ ticks, which the proc ABI fixes at 100 per second).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state .. cmajflt: utime is field 14, the 12th after ')'
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// Delivers `topic`'s backlog of `n` marks through ten one-tag integrations in one dispatcher;
/// returns (delivered, first to last delivery, CPU time of the whole process meanwhile).
async fn run(
    sink: &CountingSink,
    topic: &str,
    n: u64,
) -> anyhow::Result<(u64, Duration, Duration)> {
    sink.reset();
    let subs = (0..TAGS)
        .map(|t| {
            let mut s = http_subscriber(&format!("tag{t}"), topic, &sink.url);
            s.tags = vec![format!("tag{t}")];
            s.concurrency = 64;
            s
        })
        .collect();
    let cpu = cpu_time();
    let d = start_dispatcher(dispatcher_config(subs)).await?;
    let (delivered, took) = sink.wait(n).await;
    let cpu = cpu_time() - cpu;
    d.stop().await?;
    Ok((delivered, took, cpu))
}

pub(super) async fn filter(out: &mut String, n: u64) -> anyhow::Result<()> {
    let with = unique("bench-filter-headers");
    let without = unique("bench-filter-bare");
    create_topic(&with, 6).await?;
    create_topic(&without, 6).await?;
    produce_marks(&with, n, true).await?;
    produce_marks(&without, n, false).await?;
    let sink = CountingSink::start().await?;
    let (b_n, b_took, b_cpu) = run(&sink, &without, n).await?;
    let (h_n, h_took, h_cpu) = run(&sink, &with, n).await?;

    let _ = writeln!(
        out,
        "### Filter before decode: {n} marks over {TAGS} tags on one topic (6 partitions), {TAGS} integrations of one tag each\n"
    );
    out.push_str("| records | deliveries/s | delivered | time | CPU | CPU per record read |\n|---|---|---|---|---|---|\n");
    let reads = (n * TAGS) as f64;
    let mut line = |name: &str, count: u64, took: Duration, cpu: Duration| {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {count} | {} | {} | {:.2} µs |",
            count as f64 / took.as_secs_f64(),
            ms(took),
            ms(cpu),
            cpu.as_secs_f64() * 1e6 / reads
        );
    };
    line(
        "without headers (baseline: every integration decodes every record)",
        b_n,
        b_took,
        b_cpu,
    );
    line(
        "with sy-event-type / sy-tag headers (skipped by header)",
        h_n,
        h_took,
        h_cpu,
    );
    let _ = writeln!(
        out,
        "\nratio deliveries/s with / without: **{:.2}x**; CPU with / without: **{:.2}x** (CPU is the whole bench process: dispatcher, sink and the HTTP between them)",
        (h_n as f64 / h_took.as_secs_f64()) / (b_n as f64 / b_took.as_secs_f64()),
        h_cpu.as_secs_f64() / b_cpu.as_secs_f64()
    );
    Ok(())
}
