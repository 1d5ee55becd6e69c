//! Benchmark harness of the telemetry pipeline.
//!
//! Starts every system under test itself on loopback, measures it, stops it, and prints
//! Markdown tables:
//!
//! - `producer`: DCGM CSV rows parsed per second by `DcgmReader` against the csv crate alone.
//! - `broker`: the built-in broker against a private RabbitMQ node ([`broker_bench`]).
//! - `ingest`: producer -> broker -> consumer -> MongoDB-wire server against a plain
//!   `insert_many` of the same documents ([`ingest`]).
//! - `api`: the REST API under `wrk` against the same queries through the MongoDB driver
//!   ([`api`]).
//! - `footprint`: resident memory of each process and release binary sizes.
#![deny(unsafe_code)]

pub mod amqp;
pub mod api;
pub mod broker_bench;
pub mod csv_bench;
pub mod dataset;
pub mod error;
pub mod footprint;
pub mod ingest;
pub mod machine;
pub mod process;
pub mod rabbitmq;
pub mod report;
pub mod servers;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use error::{Error, Result};
use footprint::Footprint;
use report::{Table, per_second, ratio};
use servers::Binaries;

/// Environment variable behind `--quick`.
pub const QUICK_ENV: &str = "BENCH_QUICK";
/// Environment variable behind `--sections`.
pub const SECTIONS_ENV: &str = "BENCH_SECTIONS";
/// Environment variable behind `--output`.
pub const OUTPUT_ENV: &str = "BENCH_OUTPUT";
/// Environment variable behind `--bin-dir`.
pub const BIN_DIR_ENV: &str = "BENCH_BIN_DIR";
/// Environment variable behind `--rabbitmq-server`.
pub const RABBITMQ_SERVER_ENV: &str = "BENCH_RABBITMQ_SERVER";
/// Environment variable behind `--mongodb-server`; the integration tests read the same one.
pub const MONGODB_SERVER_ENV: &str = "MONGODB_SERVER_BIN";

/// Parts of the benchmark that can be run on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    Producer,
    Broker,
    Ingest,
    Api,
    Footprint,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-bench", version, about = "Benchmarks the telemetry pipeline on loopback")]
pub struct Config {
    /// Small counts for a smoke run that finishes in under a minute.
    #[arg(long, env = QUICK_ENV)]
    pub quick: bool,

    /// Comma-separated sections to run (default: all).
    #[arg(long, env = SECTIONS_ENV, value_delimiter = ',',
          default_value = "producer,broker,ingest,api,footprint")]
    pub sections: Vec<Section>,

    /// DCGM export used for message bodies and CSV parsing (default: the repository's sample).
    #[arg(long, env = telemetry_core::contract::env::CSV_PATH)]
    pub csv_path: Option<PathBuf>,

    /// Directory of the workspace's release binaries (default: the directory of this binary).
    #[arg(long, env = BIN_DIR_ENV)]
    pub bin_dir: Option<PathBuf>,

    /// RabbitMQ start script that runs the node in the foreground.
    #[arg(long, env = RABBITMQ_SERVER_ENV, default_value = rabbitmq::DEFAULT_SERVER_SCRIPT)]
    pub rabbitmq_server: PathBuf,

    /// MongoDB-wire server binary (default: secantusd-rs when installed, else secantusd-py).
    #[arg(long, env = MONGODB_SERVER_ENV)]
    pub mongodb_server: Option<PathBuf>,

    /// File that receives the Markdown report in addition to standard output.
    #[arg(long, env = OUTPUT_ENV)]
    pub output: Option<PathBuf>,
}

/// Counts used by one run, chosen by `--quick`.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub csv_rows: u64,
    pub csv_repetitions: usize,
    pub broker: broker_bench::BrokerCounts,
    pub ingest_rows: u64,
    pub ceiling_rows: u64,
    pub api_rows: u64,
    pub api_duration: Duration,
    pub api_requests: u64,
}

impl Counts {
    pub fn for_mode(quick: bool) -> Self {
        if quick {
            Counts {
                csv_rows: 20_000,
                csv_repetitions: 1,
                broker: broker_bench::BrokerCounts {
                    messages: 2_000,
                    warmup: 200,
                    timeout: Duration::from_secs(30),
                    paced_rate: 2_000,
                    paced_messages: 1_000,
                },
                ingest_rows: 5_000,
                ceiling_rows: 5_000,
                api_rows: 5_000,
                api_duration: Duration::from_secs(5),
                api_requests: 200,
            }
        } else {
            Counts {
                csv_rows: 500_000,
                csv_repetitions: 3,
                // 2,000 msgs/s is under half the slowest rate of the first full run (durable
                // RabbitMQ, 1 pair: 4,371 msgs/s); 20,000 messages make 10 s per case.
                broker: broker_bench::BrokerCounts {
                    messages: 100_000,
                    warmup: 5_000,
                    timeout: Duration::from_secs(180),
                    paced_rate: 2_000,
                    paced_messages: 20_000,
                },
                ingest_rows: 1_000_000,
                ceiling_rows: 1_000_000,
                api_rows: 100_000,
                api_duration: Duration::from_secs(15),
                api_requests: 5_000,
            }
        }
    }
}

/// Runs the selected sections and returns their tables, machine description first.
/// A failing section is reported in its own table and the next one still runs.
pub async fn run(config: Config) -> Result<Vec<Table>> {
    let counts = Counts::for_mode(config.quick);
    let binaries = Binaries { dir: config.bin_dir.clone().unwrap_or_else(default_bin_dir) };
    let csv_path = config.csv_path.clone().unwrap_or_else(dataset::default_csv_path);
    let mongo_kind = servers::choose_mongo_server(config.mongodb_server.as_deref());
    let work = tempfile::Builder::new()
        .prefix("telemetry-bench-")
        .tempdir()
        .map_err(Error::io("creating the work directory"))?;

    let mut tables = vec![machine::describe(&mongo_kind, config.quick, &csv_path)];
    let mut footprint = Footprint::default();
    let wants = |section| config.sections.contains(&section);

    if wants(Section::Producer) {
        tables.push(section_table("Producer: CSV parsing", producer_section(&csv_path, work.path(), counts)));
    }
    if wants(Section::Broker) {
        match broker_section(&config, &binaries, &csv_path, work.path(), counts, &mut footprint).await {
            Ok(broker_tables) => tables.extend(broker_tables),
            Err(err) => tables.push(section_table("Broker", Err(err))),
        }
    }
    if wants(Section::Ingest) {
        let outcome = ingest::run(&binaries, &mongo_kind, work.path(), counts, &mut footprint).await;
        tables.push(section_table("Ingest", outcome));
    }
    if wants(Section::Api) {
        let outcome = api::run(&binaries, &mongo_kind, work.path(), counts, &mut footprint).await;
        tables.push(section_table("API", outcome));
    }
    if wants(Section::Footprint) {
        if !footprint.is_empty() {
            tables.push(footprint.table());
        }
        tables.push(footprint::binary_sizes(&binaries.dir));
    }
    Ok(tables)
}

/// `target/release` when the harness runs from there, which is where scripts/bench.sh builds it.
fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn section_table(title: &str, outcome: Result<Table>) -> Table {
    outcome.unwrap_or_else(|err| {
        tracing::error!(section = title, cause = %err, "section failed");
        let mut table = Table::new(title, &["result"]);
        table.row(vec!["failed".into()]);
        table.note(err.to_string());
        table
    })
}

fn producer_section(csv_path: &std::path::Path, work_dir: &std::path::Path, counts: Counts) -> Result<Table> {
    let big = work_dir.join("dcgm-repeated.csv");
    dataset::repeat_csv(csv_path, &big, counts.csv_rows)?;
    let result = csv_bench::run(&big, counts.csv_repetitions)?;

    let mut table =
        Table::new("Producer: DCGM CSV rows parsed per second", &["reader", "rows/s", "vs csv crate alone"]);
    table.row(vec![
        "telemetry_core::DcgmReader (records, labels_raw parsed)".into(),
        per_second(result.dcgm_reader_rows_per_second),
        ratio(result.dcgm_reader_rows_per_second, result.csv_only_rows_per_second),
    ]);
    table.row(vec![
        "csv crate alone (StringRecord)".into(),
        per_second(result.csv_only_rows_per_second),
        "1.00×".into(),
    ]);
    table.note(format!(
        "{} rows ({:.1} MiB): the data rows of {} repeated; best of {} passes, file in the page cache.",
        result.rows,
        result.file_bytes as f64 / 1_048_576.0,
        csv_path.display(),
        counts.csv_repetitions
    ));
    Ok(table)
}

async fn broker_section(
    config: &Config,
    binaries: &Binaries,
    csv_path: &std::path::Path,
    work_dir: &std::path::Path,
    counts: Counts,
    footprint: &mut Footprint,
) -> Result<Vec<Table>> {
    let body = dataset::padded_body(&dataset::first_record(csv_path)?)?;
    broker_bench::run(binaries, &config.rabbitmq_server, work_dir, &body, counts.broker, footprint).await
}
