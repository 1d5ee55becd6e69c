//! `telemetry-metrics`: the REST API over stored telemetry.
#![deny(unsafe_code)]

use clap::Parser;
use telemetry_metrics::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry_core::runtime::init_logging();
    let config = Config::parse();
    run(config, telemetry_core::runtime::shutdown_signal()).await?;
    Ok(())
}
