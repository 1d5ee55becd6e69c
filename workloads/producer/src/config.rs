//! Settings of one producer run.

use std::path::PathBuf;
use std::time::Duration;

use telemetry_core::contract;

use crate::error::{Error, Result};

/// Default number of published rows that may wait for a publisher confirm at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;
/// Default number of connection attempts after the first one fails.
pub const DEFAULT_CONNECT_RETRIES: u32 = 5;
/// Default delay before the first reconnect attempt; it doubles on every further attempt.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of the doubling reconnect delay.
pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Value of the AMQP `app-id` property on every message.
pub const APP_ID: &str = "telemetry-producer";

/// Settings of one producer run. `Default` gives the contract's defaults and a fresh run id.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// AMQP URL of the broker, credentials included. Logs and errors show it without the password.
    pub amqp_url: String,
    /// DCGM CSV export to publish.
    pub csv_path: PathBuf,
    /// Topic exchange to publish to; declared durable if missing.
    pub exchange: String,
    /// Prefix of every message id (`<run-id>:<line>`). Every shard of one run must share it.
    pub run_id: String,
    /// This producer's shard, below `shard_count`. Data row `i` (0-based) belongs to shard `i % shard_count`.
    pub shard_index: u32,
    /// Number of producers that split the file between them.
    pub shard_count: u32,
    /// Published rows that may await a publisher confirm at once.
    pub max_in_flight: usize,
    /// Maximum publish rate in rows per second; `None` publishes as fast as confirms allow.
    pub rate: Option<f64>,
    /// Connection attempts after the first failed one, at start-up and after each connection loss.
    pub connect_retries: u32,
    /// Delay before the first retry; it doubles on each further retry up to `max_retry_delay`.
    pub retry_delay: Duration,
    /// Upper bound of the retry delay.
    pub max_retry_delay: Duration,
    /// How often a long run logs its progress.
    pub progress_interval: Duration,
    /// Value of the AMQP `app-id` property.
    pub app_id: String,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            amqp_url: contract::DEFAULT_AMQP_URL.to_owned(),
            csv_path: PathBuf::from(contract::SAMPLE_CSV_PATH),
            exchange: contract::TELEMETRY_EXCHANGE.to_owned(),
            run_id: new_run_id(),
            shard_index: 0,
            shard_count: 1,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rate: None,
            connect_retries: DEFAULT_CONNECT_RETRIES,
            retry_delay: DEFAULT_RETRY_DELAY,
            max_retry_delay: DEFAULT_MAX_RETRY_DELAY,
            progress_interval: Duration::from_secs(5),
            app_id: APP_ID.to_owned(),
        }
    }
}

impl ProducerConfig {
    /// Checks the settings that clap's types do not already enforce.
    pub fn validate(&self) -> Result<()> {
        if self.shard_count == 0 {
            return Err(Error::Config(
                "shard count is 0; set --shard-count (SHARD_COUNT) to 1 or more".into(),
            ));
        }
        if self.shard_index >= self.shard_count {
            return Err(Error::ShardOutOfRange {
                index: self.shard_index,
                count: self.shard_count,
            });
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "max in-flight is 0; set --max-in-flight to 1 or more".into(),
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::Config(format!(
                "publish rate {rate} is not a positive number of rows per second; set --rate \
                 (PUBLISH_RATE) above 0 or leave it unset for no limit"
            )));
        }
        if self.run_id.trim().is_empty() || self.run_id.contains(char::is_whitespace) {
            return Err(Error::Config(format!(
                "run id {:?} is empty or contains whitespace; pass a name such as the Job's name",
                self.run_id
            )));
        }
        // AMQP short strings (message-id) hold at most 255 bytes; the line number needs up to 21.
        if self.run_id.len() > 200 {
            return Err(Error::Config(format!(
                "run id is {} bytes long; use at most 200",
                self.run_id.len()
            )));
        }
        Ok(())
    }

    /// Returns true when data row `index` (0-based, header excluded) belongs to this producer.
    pub fn owns_row(&self, index: u64) -> bool {
        shard_of(index, self.shard_count) == self.shard_index
    }
}

/// Returns the shard that data row `index` (0-based, header excluded) belongs to.
pub fn shard_of(index: u64, shard_count: u32) -> u32 {
    u32::try_from(index % u64::from(shard_count)).expect("a remainder below a u32 fits in u32")
}

/// Generates a run id for a run that was not given one.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(index: u32, count: u32) -> ProducerConfig {
        ProducerConfig {
            shard_index: index,
            shard_count: count,
            ..ProducerConfig::default()
        }
    }

    #[test]
    fn shards_cover_rows_once() {
        let shards: Vec<ProducerConfig> = (0..3).map(|index| config(index, 3)).collect();
        for row in 0..100 {
            let owners = shards.iter().filter(|shard| shard.owns_row(row)).count();
            assert_eq!(owners, 1, "row {row}");
        }
        assert!(shards[0].owns_row(0));
        assert!(shards[1].owns_row(1));
        assert!(shards[2].owns_row(2));
        assert!(shards[0].owns_row(3));
    }

    #[test]
    fn single_shard_owns_everything() {
        let shard = config(0, 1);
        assert!((0..50).all(|row| shard.owns_row(row)));
    }

    #[test]
    fn shard_index_must_be_below_count() {
        let err = config(3, 3).validate().unwrap_err();
        assert!(
            matches!(err, Error::ShardOutOfRange { index: 3, count: 3 }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("shard index 3 is out of range for shard count 3"),
            "{err}"
        );
        assert!(config(2, 3).validate().is_ok());
    }

    #[test]
    fn zero_shard_count_rejected() {
        let err = config(0, 0).validate().unwrap_err().to_string();
        assert!(err.contains("shard count is 0"), "{err}");
    }

    #[test]
    fn bad_rate_rejected() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let config = ProducerConfig {
                rate: Some(rate),
                ..ProducerConfig::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("publish rate"), "{rate}: {err}");
        }
    }

    #[test]
    fn run_id_with_space_rejected() {
        let config = ProducerConfig {
            run_id: "my run".into(),
            ..ProducerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn default_run_id_is_uuid_v4() {
        let id = ProducerConfig::default().run_id;
        let parsed = uuid::Uuid::parse_str(&id).expect("run id parses as a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(
            id,
            ProducerConfig::default().run_id,
            "each run gets its own id"
        );
    }
}
