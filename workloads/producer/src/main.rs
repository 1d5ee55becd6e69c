//! `telemetry-producer`: publishes a DCGM CSV export, or generates one with `generate`.
//!
//! Exit codes: 0 when every row of the shard was confirmed; 1 when some rows failed (bad rows,
//! nacks, returns) or a shutdown signal interrupted the run; 2 for invalid arguments; 3 when
//! the run could not start or lost the broker for good.
#![deny(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use telemetry_core::contract::{self, env};
use telemetry_core::runtime;
use telemetry_producer::config::{DEFAULT_CONNECT_RETRIES, DEFAULT_MAX_IN_FLIGHT, new_run_id};
use telemetry_producer::generate::{self, GeneratorConfig};
use telemetry_producer::{ProducerConfig, RunSummary};

/// Environment variables of settings that only the producer has.
const RUN_ID_ENV: &str = env::RUN_ID;
const MAX_IN_FLIGHT_ENV: &str = env::MAX_IN_FLIGHT;
const CONNECT_RETRIES_ENV: &str = env::CONNECT_RETRIES;
const RETRY_DELAY_ENV: &str = env::RETRY_DELAY_MS;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Publishes DCGM CSV rows to the telemetry exchange with publisher confirms"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    publish: PublishArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a synthetic DCGM CSV export (deterministic for a seed) instead of publishing.
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
struct PublishArgs {
    /// AMQP URL of the broker, with user and password [default: the guest account on
    /// 127.0.0.1:5672, virtual host /].
    #[arg(long, env = env::AMQP_URL, default_value = contract::DEFAULT_AMQP_URL, hide_default_value = true)]
    amqp_url: String,

    /// DCGM CSV export to publish.
    #[arg(long, env = env::CSV_PATH, default_value = contract::SAMPLE_CSV_PATH)]
    csv_path: PathBuf,

    /// Prefix of every message id (`<run-id>:<line>`); all shards of one run must share it
    /// [default: a new UUID v4].
    #[arg(long, env = RUN_ID_ENV)]
    run_id: Option<String>,

    /// Index of this producer's shard; row i belongs to shard i % shard-count
    /// [default: JOB_COMPLETION_INDEX, else 0].
    #[arg(long, env = env::SHARD_INDEX)]
    shard_index: Option<u32>,

    /// Number of producers that split the file.
    #[arg(long, env = env::SHARD_COUNT, default_value_t = 1)]
    shard_count: u32,

    /// Published rows that may await a publisher confirm at once.
    #[arg(long, env = MAX_IN_FLIGHT_ENV, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,

    /// Maximum publish rate, in rows per second [default: no limit].
    #[arg(long, env = env::PUBLISH_RATE)]
    rate: Option<f64>,

    /// Connection attempts after the first failed one, at start-up and after a connection loss.
    #[arg(long, env = CONNECT_RETRIES_ENV, default_value_t = DEFAULT_CONNECT_RETRIES)]
    connect_retries: u32,

    /// Delay before the first connection retry, in milliseconds; it doubles per retry up to 30 s.
    #[arg(long, value_name = "MS", env = RETRY_DELAY_ENV, default_value_t = 500)]
    retry_delay: u64,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// GPUs per host.
    #[arg(long, default_value_t = 8)]
    gpus: u32,
    /// Hosts.
    #[arg(long, default_value_t = 8)]
    hosts: u32,
    /// Scrapes of every GPU, 10 s apart; each writes 10 rows per GPU.
    #[arg(long, default_value_t = 1)]
    samples: u32,
    /// Seed of the generator; the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file, or `-` for standard output.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    runtime::init_logging();

    let result = match cli.command {
        Some(Command::Generate(args)) => generate_csv(&args).map(|()| ExitCode::SUCCESS),
        None => publish(cli.publish).await,
    };
    result.unwrap_or_else(|err| {
        tracing::error!(error = format!("{err:#}"), "producer failed");
        eprintln!("error: {err:#}");
        ExitCode::from(3)
    })
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let config = ProducerConfig {
        amqp_url: args.amqp_url,
        csv_path: args.csv_path,
        run_id: args.run_id.unwrap_or_else(new_run_id),
        shard_index: shard_index(args.shard_index)?,
        shard_count: args.shard_count,
        max_in_flight: args.max_in_flight,
        rate: args.rate,
        connect_retries: args.connect_retries,
        retry_delay: Duration::from_millis(args.retry_delay),
        ..ProducerConfig::default()
    };

    let summary = telemetry_producer::run(config, runtime::shutdown_signal()).await?;
    Ok(exit_code(&summary))
}

/// Takes `--shard-index` (SHARD_INDEX), else the Indexed Job's JOB_COMPLETION_INDEX, else 0.
fn shard_index(explicit: Option<u32>) -> anyhow::Result<u32> {
    if let Some(index) = explicit {
        return Ok(index);
    }
    match std::env::var(env::JOB_COMPLETION_INDEX) {
        Ok(text) => text.trim().parse().with_context(|| {
            format!(
                "{} is {text:?}, not a shard index; set --shard-index",
                env::JOB_COMPLETION_INDEX
            )
        }),
        Err(_) => Ok(0),
    }
}

fn exit_code(summary: &RunSummary) -> ExitCode {
    if summary.is_complete() {
        tracing::info!("all {} rows of the shard confirmed", summary.confirmed);
        return ExitCode::SUCCESS;
    }
    // Each failure was logged as it happened; this line gives the total.
    tracing::error!(
        failed = summary.failed(),
        interrupted = summary.interrupted,
        "not every row was delivered: {summary}"
    );
    eprintln!("error: not every row was delivered: {summary}");
    ExitCode::from(1)
}

fn generate_csv(args: &GenerateArgs) -> anyhow::Result<()> {
    let config = GeneratorConfig {
        hosts: args.hosts,
        gpus_per_host: args.gpus,
        samples: args.samples,
        seed: args.seed,
        ..GeneratorConfig::default()
    };
    let rows = if args.out.as_os_str() == "-" {
        generate::write_dcgm_csv(&config, std::io::stdout().lock())
    } else {
        let file = File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        generate::write_dcgm_csv(&config, &file).and_then(|rows| (&file).flush().map(|()| rows))
    }
    .with_context(|| {
        format!(
            "writing the generated export to {} failed",
            args.out.display()
        )
    })?;
    tracing::info!(rows, out = %args.out.display(), "generated DCGM export");
    Ok(())
}
