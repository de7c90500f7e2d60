//! Runs the deptrans fakes (KRT, driver-profiles, personal, driver-categories, trackstory) on
//! the ports of `deploy/deptrans.example.toml` for the local run, with a few Moscow drivers.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use clap::Parser;
use integration_tests::deptrans_fakes::Fakes;

#[derive(Parser)]
struct Args {
    /// First port; the five fakes listen on it and the next four.
    #[arg(long, default_value_t = 9301)]
    base_port: u16,
    /// Drivers park1/driver0.. (econom, in Moscow, KRT ids 0000000000..).
    #[arg(long, default_value_t = 3)]
    drivers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let p = args.base_port;
    let fakes = Fakes::start_on([p, p + 1, p + 2, p + 3, p + 4]).await?;
    for i in 0..args.drivers {
        let licence = format!("77LOCAL{i:04}");
        fakes.state.add_driver(
            "park1",
            &format!("driver{i}"),
            &licence,
            &["econom"],
            55.75,
            37.61,
        );
        fakes
            .state
            .krt_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{i:010}"), licence);
    }
    println!(
        "deptrans fakes: krt {} profiles {} personal {} categories {} trackstory {} (client_secret = \"secret\")",
        fakes.krt, fakes.profiles, fakes.personal, fakes.categories, fakes.trackstory
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
