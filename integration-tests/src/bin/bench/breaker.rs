//! The circuit breaker's bench: a hung subscriber next to a healthy one in one dispatcher. How
//! long from the hung target's first failure until its backlog parks at produce speed, and the
//! healthy subscriber's delivery rate meanwhile against its rate alone (same backlog, same run).

use super::dispatch::{produce_backlog, CountingSink};
use super::*;

use switchyard_dispatcher::config::{BreakerConfig, RetryPolicy, SubscriberConfig, Target};

/// A target that accepts every request and never answers: the worst dead target (each attempt
/// costs the whole timeout).
async fn hung_target() -> anyhow::Result<String> {
    let app = Router::new().route("/hung", post(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hung", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The sum of every series of `name` whose labels include `subscriber="<sub>"`.
fn series_sum(text: &str, name: &str, sub: &str) -> f64 {
    let label = format!("subscriber=\"{sub}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// This process's resident set in MiB (the dispatcher runs in it), from `/proc/self/status`.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// What the sampler saw of the hung subscriber, in seconds since the dispatcher started.
#[derive(Default)]
struct Timeline {
    /// Resident set when the watch started, and the most it reached during it (MiB).
    rss_start: f64,
    rss_peak: f64,
    first_failure: Option<f64>,
    opened: Option<f64>,
    all_parked: Option<f64>,
    /// Records parked by `window` seconds after the start (the breaker-off comparison).
    parked_at_window: f64,
}

/// Samples the dispatcher's `/metrics` every 100 ms until `n` records of `sub` are parked or
/// `window` passes.
async fn watch(metrics_url: &str, sub: &str, n: u64, window: Duration) -> Timeline {
    let started = Instant::now();
    let mut t = Timeline {
        rss_start: rss_mib(),
        ..Timeline::default()
    };
    while started.elapsed() < window {
        t.rss_peak = t.rss_peak.max(rss_mib());
        let Ok(text) = async { reqwest::get(metrics_url).await?.text().await }.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let now = started.elapsed().as_secs_f64();
        if t.first_failure.is_none()
            && series_sum(&text, "switchyard_dispatch_failed_attempts_total", sub) > 0.0
        {
            t.first_failure = Some(now);
        }
        let opened = format!(
            "switchyard_dispatch_breaker_transitions_total{{subscriber=\"{sub}\",to=\"open\"}} "
        );
        if t.opened.is_none()
            && text
                .lines()
                .filter_map(|l| l.strip_prefix(&opened)?.trim().parse::<f64>().ok())
                .any(|v| v > 0.0)
        {
            t.opened = Some(now);
        }
        let parked = series_sum(&text, "switchyard_dispatch_parked_total", sub);
        t.parked_at_window = parked;
        if parked >= n as f64 {
            t.all_parked = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t
}

fn subscriber(name: &str, topic: &str, url: &str, breaker: bool) -> SubscriberConfig {
    let mut s = http_subscriber(name, topic, url);
    s.concurrency = 32;
    if let Target::Http(h) = &mut s.target {
        h.timeout_ms = 2_000;
    }
    s.breaker = BreakerConfig {
        enabled: breaker,
        ..Default::default()
    };
    s
}

fn config(subscribers: Vec<SubscriberConfig>) -> switchyard_dispatcher::DispatcherConfig {
    let mut cfg = dispatcher_config(subscribers);
    cfg.retry_partitions = 6;
    // The measurement: 3 in-process attempts and a 2 s timeout; one tier, an hour
    // away, so nothing parked comes back during the run.
    cfg.retry = RetryPolicy {
        in_process_attempts: 3,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
        tiers_ms: vec![3_600_000],
        max_in_process_retry_after_ms: 1_000,
    };
    cfg
}

pub(super) async fn breaker(out: &mut String, n: u64, off_seconds: u64) -> anyhow::Result<()> {
    let topic = unique("bench-breaker");
    create_topic(&topic, 6).await?;
    produce_backlog(&topic, n).await?;
    let sink = CountingSink::start().await?;
    let hung = hung_target().await?;

    // Baseline: the healthy subscriber alone.
    sink.reset();
    let d = start_dispatcher(config(vec![subscriber("healthy", &topic, &sink.url, true)])).await?;
    let (alone_n, alone) = sink.wait(n).await;
    d.stop().await?;

    // The same subscriber beside a hung one, breaker on (the default).
    sink.reset();
    let d = start_dispatcher(config(vec![
        subscriber("healthy", &topic, &sink.url, true),
        subscriber("hung", &topic, &hung, true),
    ]))
    .await?;
    let metrics_url = d.url("/metrics");
    let watcher = {
        let url = metrics_url.clone();
        tokio::spawn(async move { watch(&url, "hung", n, Duration::from_secs(600)).await })
    };
    let (beside_n, beside) = sink.wait(n).await;
    let on = watcher.await?;
    d.stop().await?;

    // The hung subscriber alone with the breaker off, for `off_seconds`.
    let d = start_dispatcher(config(vec![subscriber("hung", &topic, &hung, false)])).await?;
    let off = watch(
        &d.url("/metrics"),
        "hung",
        n,
        Duration::from_secs(off_seconds),
    )
    .await;
    d.stop().await?;

    let alone_rate = alone_n as f64 / alone.as_secs_f64();
    let beside_rate = beside_n as f64 / beside.as_secs_f64();
    let _ = writeln!(
        out,
        "### Circuit breaker: a hung target (never answers; timeout 2 s, 3 in-process attempts, concurrency 32) beside a healthy subscriber, {n}-record backlog, 6 partitions\n"
    );
    out.push_str("| subscriber | records/s | records | time |\n|---|---|---|---|\n");
    let _ = writeln!(
        out,
        "| healthy alone (baseline) | {alone_rate:.0} | {alone_n} | {} |",
        ms(alone)
    );
    let _ = writeln!(
        out,
        "| healthy beside the hung one | {beside_rate:.0} | {beside_n} | {} |",
        ms(beside)
    );
    let secs = |v: Option<f64>| v.map_or("never".to_owned(), |s| format!("{s:.1} s"));
    let _ = writeln!(
        out,
        "\nhung subscriber, breaker on: first failure at {}, breaker open at {}, whole backlog parked at {} (after the dispatcher started)",
        secs(on.first_failure),
        secs(on.opened),
        secs(on.all_parked)
    );
    if let (Some(open), Some(done)) = (on.opened, on.all_parked) {
        let _ = writeln!(
            out,
            "park rate once open: **{:.0} records/s**; first failure to open: **{}**",
            n as f64 / (done - open).max(0.001),
            secs(on.first_failure.map(|f| open - f)),
        );
    }
    let _ = writeln!(
        out,
        "hung subscriber, breaker off: {:.0} records parked in {off_seconds} s ({:.1} records/s)",
        off.parked_at_window,
        off.parked_at_window / off_seconds as f64
    );
    let _ = writeln!(
        out,
        "resident set of the bench process (dispatcher, sinks and hung target in it) while the hung subscriber's {n}-record backlog waits: breaker on {:.0} MiB at the start, peak {:.0} MiB; breaker off {:.0} MiB at the start, peak {:.0} MiB",
        on.rss_start, on.rss_peak, off.rss_start, off.rss_peak
    );
    let _ = writeln!(
        out,
        "\nratio healthy beside / alone: **{:.2}x** (target >= 0.95x)",
        beside_rate / alone_rate
    );
    Ok(())
}
