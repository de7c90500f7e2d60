//! `switchyard`: the operator CLI.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic declared in the file that does not exist yet.
    Apply {
        #[arg(long, default_value = "deploy/topics.toml")]
        file: PathBuf,
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
    }
    Ok(())
}
