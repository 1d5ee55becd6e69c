//! The AMQP side of the producer: connecting with bounded retries, declaring the exchange and
//! building each message's properties.

pub use telemetry_core::redact_url;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};
use tokio::sync::watch;

use crate::config::ProducerConfig;
use crate::error::{Error, Result};

/// AMQP 0-9-1 `delivery-mode` of a message the broker writes to disk.
pub const PERSISTENT: u8 = 2;
/// `content-type` of every message body.
pub const CONTENT_TYPE: &str = "application/json";

/// One open connection with a channel in confirm mode.
pub(crate) struct Session {
    connection: Connection,
    channel: Channel,
}

/// One row ready to publish, kept until the broker confirms it so it can be sent again.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub message_id: String,
    /// Metric name, the routing key on the topic exchange.
    pub routing_key: String,
    /// Publish time in seconds since the Unix epoch, also the record's timestamp.
    pub timestamp: u64,
    pub body: Vec<u8>,
}

/// Returns the message id of the row on `line`: `<run-id>:<line>`.
pub fn message_id(run_id: &str, line: u64) -> String {
    format!("{run_id}:{line}")
}

/// Builds the AMQP properties of one telemetry message.
pub fn message_properties(message_id: &str, timestamp: u64, app_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(message_id.into())
        .with_timestamp(timestamp)
        .with_app_id(app_id.into())
}

impl Session {
    /// Connects, opens a confirm-mode channel and declares the exchange, trying up to
    /// `1 + connect_retries` times with a doubling delay between attempts.
    ///
    /// Returns `Ok(None)` when `stop` fires while waiting.
    pub(crate) async fn connect(
        config: &ProducerConfig,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Session>> {
        let url = redact_url(&config.amqp_url);
        let attempts = config.connect_retries.saturating_add(1);
        let mut delay = config.retry_delay;

        for attempt in 1..=attempts {
            let err = match Session::open(config).await {
                Ok(session) => {
                    tracing::info!(url = %url, attempt, exchange = %config.exchange, "connected to broker");
                    return Ok(Some(session));
                }
                Err(OpenError::Fatal(err)) => return Err(err),
                Err(OpenError::Retryable(err)) => err,
            };
            if attempt == attempts {
                return Err(Error::Connect {
                    url,
                    attempts,
                    source: err,
                });
            }

            tracing::warn!(url = %url, attempt, max_attempts = attempts, retry_in_ms = delay.as_millis() as u64,
                cause = %err, "cannot connect to broker; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(stop) => return Ok(None),
            }
            delay = next_delay(delay, config.max_retry_delay);
        }
        unreachable!("the loop returns on its last attempt")
    }

    async fn open(config: &ProducerConfig) -> Result<Session, OpenError> {
        let properties =
            ConnectionProperties::default().with_connection_name(config.app_id.clone().into());
        let connection = Connection::connect(&config.amqp_url, properties)
            .await
            .map_err(OpenError::Retryable)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(OpenError::Retryable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(OpenError::Retryable)?;

        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = channel
            .exchange_declare(
                config.exchange.as_str().into(),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await;
        if let Err(source) = declared {
            // A channel-level refusal (an exchange of another type or durability, no access)
            // will not change on retry.
            let operation = "exchange.declare (durable topic exchange)";
            let error = Error::Amqp {
                operation,
                url: redact_url(&config.amqp_url),
                source,
            };
            return Err(OpenError::Fatal(error));
        }
        Ok(Session {
            connection,
            channel,
        })
    }

    /// Publishes one row; the returned future resolves with the broker's confirm.
    ///
    /// Messages are `mandatory`, so a row that no queue would receive comes back as a
    /// `basic.return` instead of vanishing.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        app_id: &str,
        outgoing: &Outgoing,
    ) -> lapin::Result<PublisherConfirm> {
        let properties = message_properties(&outgoing.message_id, outgoing.timestamp, app_id);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        self.channel
            .basic_publish(
                exchange.into(),
                outgoing.routing_key.as_str().into(),
                options,
                &outgoing.body,
                properties,
            )
            .await
    }

    /// Closes the channel and the connection, logging (not returning) a failure.
    pub(crate) async fn close(self) {
        if let Err(err) = self.channel.close(200, "producer done".into()).await {
            tracing::debug!(cause = %err, "closing the channel failed");
        }
        if let Err(err) = self.connection.close(200, "producer done".into()).await {
            tracing::debug!(cause = %err, "closing the connection failed");
        }
    }
}

enum OpenError {
    /// The broker may accept a later attempt (refused, reset, not yet started).
    Retryable(lapin::Error),
    /// The broker refused the set-up itself; retrying cannot help.
    Fatal(Error),
}

/// Doubles `delay`, capped at `max`.
pub(crate) fn next_delay(delay: Duration, max: Duration) -> Duration {
    delay.saturating_mul(2).min(max)
}

/// Completes once `stop` holds true (or its sender is gone). Unlike `wait_for`, it keeps no
/// borrow of the value, so futures awaiting it stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_run_and_line() {
        assert_eq!(message_id("telemetry-run-7", 42), "telemetry-run-7:42");
    }

    #[test]
    fn properties_persistent_json() {
        let properties = message_properties("run:2", 1_752_871_354, APP_ID_FOR_TEST);
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(
            properties
                .content_type()
                .as_ref()
                .map(|value| value.as_str()),
            Some("application/json")
        );
        assert_eq!(
            properties.message_id().as_ref().map(|value| value.as_str()),
            Some("run:2")
        );
        assert_eq!(properties.timestamp(), &Some(1_752_871_354));
        assert_eq!(
            properties.app_id().as_ref().map(|value| value.as_str()),
            Some(APP_ID_FOR_TEST)
        );
    }

    const APP_ID_FOR_TEST: &str = "telemetry-producer";

    #[test]
    fn delay_doubles_up_to_max() {
        let max = Duration::from_secs(3);
        assert_eq!(
            next_delay(Duration::from_secs(1), max),
            Duration::from_secs(2)
        );
        assert_eq!(next_delay(Duration::from_secs(2), max), max);
        assert_eq!(next_delay(max, max), max);
    }
}
