use clap::Parser;
use telemetry_broker::{Broker, Config};
use telemetry_core::runtime::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging();
    tracing::info!(?config, "starting telemetry broker");
    let broker = Broker::bind(config).await?;
    broker.run(shutdown_signal()).await?;
    Ok(())
}
