//! `switchyard-ingress`: parses flags and config, then hands over to `switchyard_ingress::run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switchyard_ingress::{AppState, IngressConfig, Publisher};
use switchyard_runtime::{telemetry, Shutdown};

#[derive(Parser)]
#[command(about = "switchyard HTTP ingress")]
struct Args {
    /// TOML config file (env vars SWITCHYARD_INGRESS_* override it).
    #[arg(long, env = "SWITCHYARD_INGRESS_CONFIG")]
    config: Option<PathBuf>,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", switchyard_ingress::openapi::document());
        return Ok(());
    }
    telemetry::init_tracing("ingress");
    let config = IngressConfig::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let publisher = Publisher::kafka(&config.kafka, "ingress")?;
    let state = AppState::new(config, publisher)?;
    switchyard_ingress::run(state, args.config, listener, Shutdown::on_signals()).await;
    telemetry::shutdown_tracing();
    Ok(())
}
