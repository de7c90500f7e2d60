//! `faults`: load through the public ingress while faults hit the three-node cluster and the
//! service processes, then the checker's report (issue 15). Needs the workspace's binaries
//! built (`cargo build --release --workspace --bins`) and PostgreSQL-free: Kafka only.
//!
//!     faults --events 100000 --rate 400 --faults leader-kill,dispatcher-kill --seed 7
//!     faults --each --events 5000       # each fault alone, then all of them in one run
//!
//! Exits non-zero when an acknowledged event was lost or a secret reached a log.

// Test and benchmark plumbing starts servers and clients directly.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use integration_tests::faults::plan::{new_seed, Fault, Holds};
use integration_tests::faults::run::{run, RunConfig, RunOutcome};

#[derive(Parser)]
#[command(about = "fault runs with a checker of lost, duplicated and reordered events")]
struct Args {
    /// Seed of the fault plan (printed at the start; pass it again to replay a run).
    #[arg(long, env = "FAULTS_SEED")]
    seed: Option<u64>,
    /// Events per run, over the four flows.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Offered events per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Sequential callers per flow.
    #[arg(long, default_value_t = 50)]
    keys: u64,
    /// Comma-separated faults (default: all): leader-kill, broker-pause, ingress-kill,
    /// dispatcher-kill, subscriber-down, subscriber-503, subscriber-stall.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Run each fault alone, then all of them together.
    #[arg(long)]
    each: bool,
    /// Short fault durations (as in the test command) instead of the (60 s down...).
    #[arg(long)]
    short: bool,
    /// Bearer token for the ingress, once it requires callers to authenticate.
    #[arg(long, env = "FAULTS_BEARER")]
    bearer: Option<String>,
    /// Seconds to wait for every acknowledged event once the load and the faults are over.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    /// Where configs and process logs go (default: a new folder under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    switchyard_runtime::telemetry::init_tracing("faults");
    let seed = args.seed.unwrap_or_else(new_seed);
    println!("faults: seed {seed}");
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut runs: Vec<Vec<Fault>> = Vec::new();
    if args.each {
        runs.extend(faults.iter().map(|f| vec![*f]));
    }
    runs.push(faults);
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(integration_tests::unique("faults")));
    let mut failed = false;
    let mut summary = Vec::new();
    for (n, faults) in runs.into_iter().enumerate() {
        let cfg = RunConfig {
            seed: seed.wrapping_add(n as u64),
            events: args.events,
            rate: args.rate,
            keys: args.keys,
            faults: faults.clone(),
            holds: if args.short {
                Holds::short()
            } else {
                Holds::full()
            },
            bearer: args.bearer.clone(),
            drain_timeout: Duration::from_secs(args.drain_timeout),
            dir: base.join(format!("run-{n}")),
        };
        let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
        println!(
            "\n== run {n}: {} (logs in {})",
            names.join(", "),
            cfg.dir.display()
        );
        let out = run(&cfg).await?;
        println!("{out}");
        failed |= out.report.lost() > 0 || !out.leaked.is_empty();
        summary.push((names.join("+"), line(&out)));
    }
    println!("\n| faults | {} |", HEADER.join(" | "));
    println!("|---|{}", "---|".repeat(HEADER.len()));
    for (names, line) in summary {
        println!("| {names} | {line} |");
    }
    anyhow::ensure!(
        !failed,
        "an acknowledged event was lost or a secret was logged"
    );
    Ok(())
}

const HEADER: [&str; 8] = [
    "seed",
    "acknowledged",
    "lost",
    "duplicates (same token)",
    "duplicates (other token)",
    "caller retries stored twice",
    "drain after faults and load",
    "run",
];

fn line(o: &RunOutcome) -> String {
    let r = &o.report;
    let same: usize = r.sinks.iter().map(|s| s.duplicates_same_token).sum();
    let twice: usize = r.sinks.iter().map(|s| s.unacknowledged_same_token).sum();
    [
        o.seed.to_string(),
        r.acknowledged().to_string(),
        r.lost().to_string(),
        same.to_string(),
        r.duplicates_other_token().to_string(),
        twice.to_string(),
        r.drain()
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        format!("{:.0} s", o.elapsed.as_secs_f64()),
    ]
    .join(" | ")
}
