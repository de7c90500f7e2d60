//! `switchyard-deptrans`: parses flags and config, then hands over to `switchyard_deptrans::run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switchyard_deptrans::DeptransConfig;
use switchyard_runtime::{telemetry, Shutdown};

#[derive(Parser)]
#[command(about = "switchyard deptrans: driver statuses to KRT, driver KRT ids, cache feeds")]
struct Args {
    /// TOML config file (env vars SWITCHYARD_DEPTRANS_* override it).
    #[arg(long, env = "SWITCHYARD_DEPTRANS_CONFIG")]
    config: Option<PathBuf>,
    /// Print the HTTP API's OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", switchyard_deptrans::openapi_document());
        return Ok(());
    }
    telemetry::init_tracing("deptrans");
    let config = DeptransConfig::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let served = switchyard_deptrans::run(config, listener, Shutdown::on_signals()).await;
    telemetry::shutdown_tracing();
    Ok(served?)
}
