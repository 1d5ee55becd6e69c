use clap::Parser;
use telemetry_bench::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry_core::runtime::init_logging();
    let config = Config::parse();
    let output = config.output.clone();

    // Dropping the run future on a signal drops every server handle, which stops the servers.
    let tables = tokio::select! {
        tables = telemetry_bench::run(config) => tables?,
        () = telemetry_core::runtime::shutdown_signal() => {
            anyhow::bail!("interrupted; every server started so far has been stopped");
        }
    };

    let report: String = tables.iter().map(|table| table.to_markdown() + "\n").collect();
    print!("{report}");
    if let Some(path) = output {
        std::fs::write(&path, &report).map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    }
    Ok(())
}
