//! Settings of the consumer.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use telemetry_core::contract;

use crate::error::{Error, Result};

/// Default number of records written to MongoDB in one `insert_many`.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Default time a partial batch waits for more messages before it is written.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(200);
/// Default number of unacknowledged deliveries the broker may send ahead (`basic.qos`).
pub const DEFAULT_PREFETCH: u16 = 1000;

/// Sharing mode of the telemetry stream among consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerMode {
    /// All consumers compete on the durable queue `telemetry.metrics`, so each record is
    /// stored once by one of them. Scale throughput by adding consumers.
    #[default]
    Shared,
    /// Each consumer reads from its own server-named, exclusive, auto-delete queue bound to
    /// every metric, so each one receives every record. Use it to feed several databases (one
    /// per region, or a staging copy), each consumer with its own `--mongodb-database` or URI.
    /// Records published while a broadcast consumer is down are not kept for it.
    Broadcast,
}

impl fmt::Display for ConsumerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsumerMode::Shared => "shared",
            ConsumerMode::Broadcast => "broadcast",
        })
    }
}

impl FromStr for ConsumerMode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(ConsumerMode::Shared),
            "broadcast" => Ok(ConsumerMode::Broadcast),
            _ => Err(format!(
                "consumer mode {text:?} is not valid; use `shared` or `broadcast`"
            )),
        }
    }
}

/// Settings of one consumer. `Default` gives the contract's defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// AMQP URL of the broker, credentials included. Logs show it without the password.
    pub amqp_url: String,
    /// MongoDB connection string. Logs show it without the password.
    pub mongodb_uri: String,
    /// Database that contains the `metrics` collection.
    pub database: String,
    pub mode: ConsumerMode,
    /// Topic exchange the producers publish to; declared durable if missing.
    pub exchange: String,
    /// Durable queue that consumers share in [`ConsumerMode::Shared`].
    pub shared_queue: String,
    /// Records per `insert_many`.
    pub batch_size: usize,
    /// Maximum time a partial batch waits before it is written.
    pub batch_timeout: Duration,
    /// Unacknowledged deliveries the broker may send ahead; at least `batch_size`, because a
    /// batch is acknowledged only once it is full or timed out.
    pub prefetch: u16,
    /// Address of the `/healthz`, `/readyz` and `/metrics` server; port 0 picks a free one.
    pub admin_addr: SocketAddr,
    /// First delay between retries of a failed write or connection; it doubles per retry.
    pub retry_delay: Duration,
    /// Upper bound of the retry delay.
    pub max_retry_delay: Duration,
    /// How long a shutdown may spend writing the last batch before it gives up and leaves the
    /// batch's messages unacknowledged for redelivery.
    pub shutdown_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            amqp_url: contract::DEFAULT_AMQP_URL.to_owned(),
            mongodb_uri: contract::DEFAULT_MONGODB_URI.to_owned(),
            database: contract::DEFAULT_DATABASE.to_owned(),
            mode: ConsumerMode::Shared,
            exchange: contract::TELEMETRY_EXCHANGE.to_owned(),
            shared_queue: contract::SHARED_QUEUE.to_owned(),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            prefetch: DEFAULT_PREFETCH,
            admin_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, contract::ADMIN_PORT)),
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ConsumerConfig {
    /// Checks the settings that the types do not already enforce.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config(
                "batch size is 0; set --batch-size (CONSUMER_BATCH_SIZE) to 1 or more".into(),
            ));
        }
        if self.prefetch == 0 {
            return Err(Error::Config(
                "prefetch is 0, which AMQP reads as unlimited; set --prefetch (CONSUMER_PREFETCH) to at \
                 least the batch size"
                    .into(),
            ));
        }
        if usize::from(self.prefetch) < self.batch_size {
            return Err(Error::PrefetchBelowBatch {
                prefetch: self.prefetch,
                batch_size: self.batch_size,
            });
        }
        if self.batch_timeout.is_zero() {
            return Err(Error::Config(
                "batch timeout is 0; set --batch-timeout-ms to 1 or more".into(),
            ));
        }
        if self.database.is_empty() || self.database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(Error::Config(format!(
                "database name {:?} is not valid in MongoDB; set --mongodb-database (MONGODB_DATABASE) \
                 to a name without / \\ . space \" $",
                self.database
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ConsumerConfig::default().validate().unwrap();
    }

    #[test]
    fn prefetch_below_batch_rejected() {
        let config = ConsumerConfig {
            batch_size: 500,
            prefetch: 100,
            ..ConsumerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("prefetch 100 is below the batch size 500"),
            "{err}"
        );
    }

    #[test]
    fn zero_prefetch_rejected() {
        let config = ConsumerConfig {
            batch_size: 1,
            prefetch: 0,
            ..ConsumerConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("prefetch is 0")
        );
    }

    #[test]
    fn zero_batch_size_rejected() {
        let config = ConsumerConfig {
            batch_size: 0,
            ..ConsumerConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("batch size is 0")
        );
    }

    #[test]
    fn invalid_database_name_rejected() {
        let config = ConsumerConfig {
            database: "tele.metry".into(),
            ..ConsumerConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("\"tele.metry\"")
        );
    }

    #[test]
    fn mode_parses_case_insensitively() {
        assert_eq!("shared".parse::<ConsumerMode>(), Ok(ConsumerMode::Shared));
        assert_eq!(
            "Broadcast".parse::<ConsumerMode>(),
            Ok(ConsumerMode::Broadcast)
        );
        let err = "fanout".parse::<ConsumerMode>().unwrap_err();
        assert!(err.contains("\"fanout\""), "{err}");
        assert_eq!(ConsumerMode::Broadcast.to_string(), "broadcast");
    }
}
