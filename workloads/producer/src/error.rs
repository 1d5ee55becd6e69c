//! Errors that stop a producer run before every row could be handled.
//!
//! A bad row or a message the broker rejects is not an [`Error`]: the run goes on and reports it
//! in [`crate::RunSummary::failures`].

use std::path::PathBuf;

use telemetry_core::RowError;

/// Why a producer run could not start or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(
        "shard index {index} is out of range for shard count {count}; set --shard-index \
         (SHARD_INDEX, else JOB_COMPLETION_INDEX) to a value below the shard count"
    )]
    ShardOutOfRange { index: u32, count: u32 },

    #[error("cannot read DCGM CSV {}; check --csv-path (CSV_PATH)", path.display())]
    OpenCsv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a DCGM export", path.display())]
    NotDcgm {
        path: PathBuf,
        #[source]
        source: RowError,
    },

    #[error(
        "cannot connect to the AMQP broker at {url} after {attempts} attempts; check --amqp-url \
         (AMQP_URL) and that the broker is running"
    )]
    Connect {
        /// Broker URL with the password replaced by `***`.
        url: String,
        attempts: u32,
        #[source]
        source: lapin::Error,
    },

    #[error("AMQP {operation} on {url} failed")]
    Amqp {
        operation: &'static str,
        /// Broker URL with the password replaced by `***`.
        url: String,
        #[source]
        source: lapin::Error,
    },

    #[error(
        "lost the connection to {url} with {unconfirmed} rows unconfirmed ({confirmed} confirmed \
         so far) and could not reconnect after {attempts} attempts; rerun with the same --run-id \
         so that consumers drop the rows they already stored"
    )]
    ConnectionLost {
        /// Broker URL with the password replaced by `***`.
        url: String,
        attempts: u32,
        confirmed: u64,
        unconfirmed: usize,
        #[source]
        source: lapin::Error,
    },
}

/// Result with the producer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
