//! `bench`: prints the figures behind switchyard's speed claims, each next to a baseline
//! measured in the same run. Not a test: nothing here passes or fails on speed.
//!
//!   bench ingress      POST /v1/uid-notify at concurrency 64, Kafka vs the same handler without it
//!   bench dispatch     webhook deliveries/s from a 200k backlog vs a bare HTTP client posting the
//!                      same bodies to the same sink, and vs the raw consume rate
//!   bench breaker    a hung subscriber beside a healthy one: time until its backlog parks at
//!                      produce speed, and the healthy one's rate against its rate alone
//!   bench filter     ten one-tag integrations on one topic: skipping by header vs decoding
//!   bench attempt-log  delivery throughput with and without the attempt log
//!   bench seen         mark-notify at a fixed 10k req/s for 60 s, one HTTP + one topic integration
//!   bench e2e          POST /v1/uid-notify -> the subscriber's HTTP receipt, open loop at a fixed rate
//!
//! Open-loop latencies are measured from each request's scheduled send time (see `load`).

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use chrono::Utc;
use clap::{Parser, Subcommand};
use events::{event_type, Envelope};
use integration_tests::kafka::create_topic;
use integration_tests::load::{closed_loop, open_loop, percentiles, scheduled, LoadReport};
use integration_tests::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

mod breaker;
mod dispatch;
mod e2e;
mod filter;
mod seen;

use breaker::breaker;
use dispatch::{attempt_log, dispatch};
use e2e::e2e;
use filter::filter;
use seen::seen;

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
    /// A hung subscriber beside a healthy one, with the circuit breaker on and off.
    Breaker {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// How long the breaker-off run watches the hung subscriber park.
        #[arg(long, default_value_t = 20)]
        off_seconds: u64,
    },
    /// Ten one-tag integrations on one topic, with and without the filter headers.
    Filter {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
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
        What::Breaker {
            records,
            off_seconds,
        } => breaker(&mut report, records, off_seconds).await?,
        What::Filter { records } => filter(&mut report, records).await?,
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
