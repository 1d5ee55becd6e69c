//! Errors that stop the consumer.
//!
//! Lost connections and failed writes are not here: the consumer retries those while it runs.

use std::net::SocketAddr;

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(
        "prefetch {prefetch} is below the batch size {batch_size}, so a batch could never fill; \
         set --prefetch (CONSUMER_PREFETCH) to at least {batch_size} or lower --batch-size"
    )]
    PrefetchBelowBatch { prefetch: u16, batch_size: usize },

    #[error("cannot listen on admin address {addr}; set ADMIN_PORT to a free port")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid MongoDB connection string {uri}; check --mongodb-uri (MONGODB_URI)")]
    MongoUri {
        /// Connection string with the password replaced by `***`.
        uri: String,
        #[source]
        source: mongodb::error::Error,
    },
}

/// Result with the consumer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
