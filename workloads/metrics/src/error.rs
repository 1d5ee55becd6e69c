//! The crate's error type: everything that can stop the service or fail a storage call.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failure to start the service, or failure of a MongoDB call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("failed to read API tokens file {path}: {source}")]
    TokensRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line of the tokens file is not `name:token`. The message never contains the token.
    #[error("invalid API tokens file {path}, line {line}: {reason}")]
    TokensLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "API tokens file {path} contains no tokens; add a `name:token` line or pass --auth-disabled"
    )]
    TokensEmpty { path: PathBuf },

    #[error("failed to listen for {server} on {addr}: {source}")]
    Bind {
        server: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("{server} server failed: {source}")]
    Serve {
        server: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("MongoDB {operation} failed: {source}")]
    Mongo {
        operation: &'static str,
        #[source]
        source: mongodb::error::Error,
    },

    #[error("stored document {id:?} is invalid: {reason}")]
    InvalidDocument { id: String, reason: String },

    #[error("MongoDB {operation} did not finish within {seconds} s")]
    MongoTimeout {
        operation: &'static str,
        seconds: u64,
    },
}

impl Error {
    /// Wraps a driver error with the operation that returned it.
    pub(crate) fn mongo(operation: &'static str) -> impl FnOnce(mongodb::error::Error) -> Error {
        move |source| Error::Mongo { operation, source }
    }

    /// True when MongoDB could not be reached at all, as opposed to rejecting a command.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Mongo { source, .. } => matches!(
                *source.kind,
                mongodb::error::ErrorKind::ServerSelection { .. }
                    | mongodb::error::ErrorKind::Io(_)
            ),
            Error::MongoTimeout { .. } => true,
            _ => false,
        }
    }
}
