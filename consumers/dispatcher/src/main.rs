//! `switchyard-dispatcher`: parses flags and config, then hands over to `switchyard_dispatcher::run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switchyard_dispatcher::DispatcherConfig;
use switchyard_runtime::{telemetry, Shutdown};

#[derive(Parser)]
#[command(about = "switchyard dispatcher: delivers events to subscribers")]
struct Args {
    /// TOML config file (env vars SWITCHYARD_DISPATCHER_* override it).
    #[arg(long, env = "SWITCHYARD_DISPATCHER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the admin API's OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", switchyard_dispatcher::admin_api::openapi::document());
        return Ok(());
    }
    telemetry::init_tracing("dispatcher");
    let config = DispatcherConfig::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let served =
        switchyard_dispatcher::run(config, args.config, listener, Shutdown::on_signals()).await;
    telemetry::shutdown_tracing();
    Ok(served?)
}
