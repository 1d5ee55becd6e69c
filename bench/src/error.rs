//! Errors of the benchmark harness.

use std::path::PathBuf;
use std::time::Duration;

/// Why a benchmark section could not run or produced no valid measurement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to start {program}: {source}; install it or name another binary with the matching flag")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not accept connections on {addr} within {timeout:?}; see its log at {log}")]
    StartTimeout { what: String, addr: std::net::SocketAddr, timeout: Duration, log: PathBuf },
    #[error("{what} exited during start-up with {status}; see its log at {log}")]
    ExitedEarly { what: String, status: std::process::ExitStatus, log: PathBuf },
    #[error("{what} timed out after {timeout:?}: {detail}")]
    Timeout { what: String, timeout: Duration, detail: String },
    #[error("binary {path} not found; build it first with `cargo build --release --workspace --bins`")]
    MissingBinary { path: PathBuf },
    #[error("AMQP error while {action}: {source}")]
    Amqp {
        action: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("MongoDB error while {action}: {source}")]
    Mongo {
        action: &'static str,
        #[source]
        source: mongodb::error::Error,
    },
    #[error("I/O error while {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid DCGM export {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    #[error("{tool} output could not be parsed: {reason}; output was:\n{output}")]
    ToolOutput { tool: &'static str, reason: String, output: String },
    #[error("check failed: {0}")]
    Check(String),
}

/// Result with the harness error as default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }

    pub(crate) fn amqp(action: &'static str) -> impl FnOnce(lapin::Error) -> Error {
        move |source| Error::Amqp { action, source }
    }

    pub(crate) fn mongo(action: &'static str) -> impl FnOnce(mongodb::error::Error) -> Error {
        move |source| Error::Mongo { action, source }
    }
}
