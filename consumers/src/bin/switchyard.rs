//! `switchyard`: the operator CLI (topics, dead-letter replay, tail, produce).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use consumers::{admin, DispatcherConfig};
use rdkafka::consumer::Consumer;
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
    /// Send a subscriber's dead letters back through its retry tier, with a fresh budget.
    Replay {
        /// The dispatcher config naming the subscriber (its topic prefix and group).
        #[arg(long, default_value = "deploy/dispatcher.example.toml")]
        config: PathBuf,
        #[arg(long)]
        subscriber: String,
        /// Replay every dead letter, not only those not replayed before.
        #[arg(long)]
        from_beginning: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchyard_runtime::telemetry::init_tracing("cli");
    let kafka = KafkaSettings {
        bootstrap_servers: cli.bootstrap_servers,
        ..Default::default()
    };
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
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    subscriber,
                    from_beginning,
                },
        } => {
            let mut cfg = DispatcherConfig::load(Some(&config))?;
            cfg.kafka.bootstrap_servers = kafka.bootstrap_servers.clone();
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} dead letters replayed ({per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let n = admin::replay_dead_letters(&cfg, &subscriber, from_beginning, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish();
            println!("replayed {n} dead letters of {subscriber}");
        }
        Command::Tail {
            topic,
            from_beginning,
            count,
        } => {
            let consumer = admin::tail_consumer(&kafka, &topic, from_beginning)?;
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let m = consumer.recv().await?;
                println!("{}", admin::record_json(&m));
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
            let id = admin::produce_json(&kafka, &topic, &key, &event_type, version, &json).await?;
            println!("{{\"event_id\":\"{id}\"}}");
        }
    }
    Ok(())
}
