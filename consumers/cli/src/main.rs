//! `switchyard`: the operator CLI. Subscribers, pauses, dead letters, replays and the attempt
//! log go through a dispatcher's admin API (`--admin-url`, `--admin-token`); topics, tail and
//! produce talk to the brokers directly.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rdkafka::consumer::Consumer;
use switchyard_cli::client::AdminClient;
use switchyard_cli::records;
use switchyard_dispatcher::admin_api::model::{DeadLetter, SubscriberView};
use switchyard_dispatcher::replay::{DeadLetterSelection, ReplaySource, TopicSelection};
use switchyard_runtime::topics::{ensure_topics, TopicsFile};
use switchyard_runtime::KafkaSettings;

#[derive(Parser)]
#[command(about = "switchyard operator CLI")]
struct Cli {
    /// Bootstrap servers of the cluster.
    #[arg(
        long,
        env = "SWITCHYARD_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap_servers: String,
    /// A dispatcher's address (its `listen`), for the admin API.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    admin_url: String,
    /// The dispatcher's `[admin] token`.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Subscribers with state, lag, rates and dead letters.
    Subscribers,
    /// Stop a subscriber taking new records (in-flight deliveries finish); holds across
    /// replicas and restarts when the dispatcher has a database.
    Pause { subscriber: String },
    /// Let a paused subscriber go on from where it stopped.
    Resume { subscriber: String },
    /// The last delivery attempts (all subscribers, or one).
    Attempts {
        subscriber: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Replay a topic's records, by offset or time range, to one subscriber.
    Replay {
        subscriber: String,
        #[arg(long)]
        topic: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// First offset (inclusive).
        #[arg(long)]
        from_offset: Option<i64>,
        /// Last offset (inclusive).
        #[arg(long)]
        to_offset: Option<i64>,
        /// Start time, RFC 3339 (inclusive).
        #[arg(long)]
        from_time: Option<chrono::DateTime<chrono::Utc>>,
        /// End time, RFC 3339 (exclusive).
        #[arg(long)]
        to_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Dead-letter topics of subscribers.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print a topic's records as JSON lines, envelopes decoded.
    Tail {
        topic: String,
        /// Start at the oldest record instead of waiting for new ones.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish a JSON event, wrapped in the envelope, and wait for the broker ack.
    Produce {
        #[arg(long)]
        topic: String,
        /// Record key: the entity whose events must stay in order.
        #[arg(long)]
        key: String,
        /// Envelope event type, e.g. `users.user_created`.
        #[arg(long)]
        event_type: String,
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// The payload as JSON.
        #[arg(long)]
        json: String,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic declared in the file that does not exist yet.
    Apply {
        #[arg(long, default_value = "deploy/topics.toml")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// The newest dead letters of a subscriber with their last error and attempts.
    List {
        subscriber: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a subscriber's dead letters back through its retry tier, with a fresh budget:
    /// those not replayed before, all of them, or one.
    Replay {
        subscriber: String,
        /// Replay every dead letter, not only those not replayed before.
        #[arg(long)]
        from_beginning: bool,
        /// With --offset: only this record.
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchyard_runtime::telemetry::init_tracing("cli");
    let result = run(cli).await;
    // Whatever spans the command made are exported before the process ends.
    tokio::task::spawn_blocking(switchyard_runtime::telemetry::shutdown_tracing).await?;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let kafka = KafkaSettings {
        bootstrap_servers: cli.bootstrap_servers,
        ..Default::default()
    };
    // Asked only by the commands that talk to the admin API: the others need no token.
    let admin = || admin_client(&cli.admin_url, cli.admin_token.as_deref());
    match cli.command {
        Command::Topics {
            command: TopicsCommand::Apply { file },
        } => {
            let spec = TopicsFile::read(&file)?;
            ensure_topics(&kafka, &spec.topics)
                .await
                .with_context(|| format!("applying {}", file.display()))?;
            for t in &spec.topics {
                println!("topic {} ({} partitions) ok", t.name, t.partitions);
            }
        }
        Command::Subscribers => {
            let subs = admin()?.subscribers().await?;
            print_subscribers(&subs);
        }
        Command::Pause { ref subscriber } | Command::Resume { ref subscriber } => {
            let paused = matches!(cli.command, Command::Pause { .. });
            let subscriber = subscriber.clone();
            let v = admin()?.set_paused(&subscriber, paused).await?;
            println!("{} {}", v.name, v.state);
        }
        Command::Attempts { subscriber, limit } => {
            let rows = admin()?.attempts(subscriber.as_deref(), limit).await?;
            for r in rows {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Command::Replay {
            subscriber,
            topic,
            partition,
            from_offset,
            to_offset,
            from_time,
            to_time,
        } => {
            let source = ReplaySource::Topic(TopicSelection {
                topic,
                partition,
                from_offset,
                to_offset,
                from_time,
                to_time,
            });
            follow_replay(&admin()?, &subscriber, &source).await?;
        }
        Command::Dlq {
            command:
                DlqCommand::List {
                    subscriber,
                    limit,
                    json,
                },
        } => {
            let records = admin()?.dead_letters(&subscriber, limit).await?;
            print_dead_letters(&records, json);
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    subscriber,
                    from_beginning,
                    partition,
                    offset,
                },
        } => {
            let source = ReplaySource::DeadLetters(DeadLetterSelection {
                from_beginning,
                partition,
                offset,
            });
            follow_replay(&admin()?, &subscriber, &source).await?;
        }
        Command::Tail {
            topic,
            from_beginning,
            count,
        } => {
            let consumer = records::tail_consumer(&kafka, &topic, from_beginning)?;
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let m = consumer.recv().await?;
                println!("{}", records::record_json(&m));
                seen += 1;
            }
            consumer.unsubscribe();
        }
        Command::Produce {
            topic,
            key,
            event_type,
            version,
            json,
        } => {
            let id =
                records::produce_json(&kafka, &topic, &key, &event_type, version, &json).await?;
            println!("{{\"event_id\":\"{id}\"}}");
        }
    }
    Ok(())
}

fn admin_client(url: &str, token: Option<&str>) -> anyhow::Result<AdminClient> {
    let token =
        token.context("the admin API needs a token: --admin-token or SWITCHYARD_ADMIN_TOKEN")?;
    Ok(AdminClient::new(url, token))
}

/// Starts a replay through the admin API and shows a progress bar until it ends.
async fn follow_replay(
    client: &AdminClient,
    subscriber: &str,
    source: &ReplaySource,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records replayed ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let job = client
        .replay(subscriber, source, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish();
    if let Some(e) = job.error {
        anyhow::bail!("replay failed after {} records: {e}", job.done);
    }
    println!("replayed {} records to {subscriber}", job.done);
    Ok(())
}

fn print_subscribers(subs: &[SubscriberView]) {
    println!(
        "{:<32} {:<8} {:<9} {:>8} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "SUBSCRIBER",
        "STATE",
        "BREAKER",
        "LAG",
        "DELIV/S",
        "FAIL/S",
        "DEAD-LETTERS",
        "DELIVERED",
        "PARK-FAIL"
    );
    for s in subs {
        println!(
            "{:<32} {:<8} {:<9} {:>8} {:>10.1} {:>10.1} {:>12} {:>12} {:>9}",
            s.name,
            s.state,
            s.breaker,
            s.lag,
            s.delivered_per_sec,
            s.failed_per_sec,
            s.dead_letters
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            s.delivered,
            s.parking_failed,
        );
    }
    for s in subs {
        if let Some(why) = &s.paused_reason {
            println!("{} is paused: {why}", s.name);
        }
    }
}

fn print_dead_letters(records: &[DeadLetter], json: bool) {
    if json {
        for r in records {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:>4} {:>8} {:<38} {:<24} {:>8}  LAST ERROR",
        "PART", "OFFSET", "EVENT ID", "TYPE", "ATTEMPTS"
    );
    for r in records {
        println!(
            "{:>4} {:>8} {:<38} {:<24} {:>8}  {}",
            r.partition,
            r.offset,
            r.event_id.as_deref().unwrap_or("-"),
            r.event_type.as_deref().unwrap_or("-"),
            r.attempts,
            r.last_error.as_deref().unwrap_or("-"),
        );
    }
}
