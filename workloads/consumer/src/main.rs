//! `telemetry-consumer`: stores telemetry messages in MongoDB until SIGTERM or Ctrl-C.
#![deny(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use telemetry_consumer::config::{DEFAULT_BATCH_SIZE, DEFAULT_PREFETCH};
use telemetry_consumer::{ConsumerConfig, ConsumerMode};
use telemetry_core::contract::{self, env};
use telemetry_core::runtime;

/// Environment variable of `--batch-timeout-ms`, a setting only the consumer has.
const BATCH_TIMEOUT_ENV: &str = env::CONSUMER_BATCH_TIMEOUT_MS;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Consumes telemetry messages and stores each record once in MongoDB"
)]
struct Cli {
    /// AMQP URL of the broker, with user and password [default: the guest account on
    /// 127.0.0.1:5672, virtual host /].
    #[arg(long, env = env::AMQP_URL, default_value = contract::DEFAULT_AMQP_URL, hide_default_value = true)]
    amqp_url: String,

    /// MongoDB connection string.
    #[arg(long, env = env::MONGODB_URI, default_value = contract::DEFAULT_MONGODB_URI)]
    mongodb_uri: String,

    /// Database that contains the `metrics` collection; in broadcast mode, give each consumer its own.
    #[arg(long, env = env::MONGODB_DATABASE, default_value = contract::DEFAULT_DATABASE)]
    mongodb_database: String,

    /// `shared`: consumers compete on the durable queue and each record is stored once.
    /// `broadcast`: each consumer gets its own temporary queue and every record.
    #[arg(long, env = env::CONSUMER_MODE, default_value = "shared")]
    consumer_mode: ConsumerMode,

    /// Records per MongoDB insert.
    #[arg(long, env = env::CONSUMER_BATCH_SIZE, default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Maximum wait before a partial batch is written, in milliseconds.
    #[arg(long, env = BATCH_TIMEOUT_ENV, default_value_t = 200)]
    batch_timeout_ms: u64,

    /// Unacknowledged deliveries the broker may send ahead; at least the batch size.
    #[arg(long, env = env::CONSUMER_PREFETCH, default_value_t = DEFAULT_PREFETCH)]
    prefetch: u16,

    /// Port of the /healthz, /readyz and /metrics server.
    #[arg(long, env = env::ADMIN_PORT, default_value_t = contract::ADMIN_PORT)]
    admin_port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    runtime::init_logging();

    let config = ConsumerConfig {
        amqp_url: cli.amqp_url,
        mongodb_uri: cli.mongodb_uri,
        database: cli.mongodb_database,
        mode: cli.consumer_mode,
        batch_size: cli.batch_size,
        batch_timeout: Duration::from_millis(cli.batch_timeout_ms),
        prefetch: cli.prefetch,
        admin_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, cli.admin_port)),
        ..ConsumerConfig::default()
    };

    match telemetry_consumer::run(config, runtime::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = error_chain(&err);
            tracing::error!(error = %message, "consumer failed to start");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its sources into one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
