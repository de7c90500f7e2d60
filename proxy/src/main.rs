//! `switchyard-proxy`: parses flags and config, then hands over to `switchyard_proxy::run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switchyard_proxy::ProxyConfig;
use switchyard_runtime::{telemetry, Shutdown};

/// mimalloc rather than glibc's malloc: allocation was a tenth of the proxy's CPU per request
/// (bench-results/proxy.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "talaria-proxy: the secure reverse proxy to partner APIs")]
struct Args {
    /// TOML config file (env vars SWITCHYARD_PROXY_* override it).
    #[arg(long, env = "SWITCHYARD_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Load and check the config (keys included), then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init_tracing("proxy");
    let config = ProxyConfig::load(args.config.as_deref())?;
    if args.check {
        switchyard_proxy::ProxyState::new(&config)?;
        println!("config ok: {} backend(s)", config.backends.len());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listeners = switchyard_proxy::Listeners::bind(&config)
            .await
            .context("binding the listeners")?;
        switchyard_proxy::run(config, listeners, Shutdown::on_signals()).await?;
        anyhow::Ok(())
    });
    telemetry::shutdown_tracing();
    served
}
