//! Validation of messages published to the telemetry exchange.
//!
//! A message that does not decode as a `TelemetryRecord` is kept out of the consumers' queues
//! and stored in the invalid-telemetry queue with headers that record where it was going and
//! why it was rejected, so that an operator can inspect and republish it.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::types::{AMQPValue, ShortString};
use telemetry_core::TelemetryRecord;

/// Header that carries the routing key the publisher used.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// Header that carries the exchange the publisher used.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
/// Header that carries the validation error.
pub const VALIDATION_ERROR_HEADER: &str = "x-validation-error";

/// Checks that `body` is one valid telemetry record; returns the decoding or validation error.
pub(crate) fn validate(body: &[u8]) -> Result<(), String> {
    TelemetryRecord::from_json(body)
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// Adds the original exchange, the original routing key and the validation error to the
/// message headers, keeping the publisher's own headers.
pub(crate) fn annotate_invalid(
    header: &mut AMQPContentHeader,
    exchange: &ShortString,
    routing_key: &ShortString,
    error: &str,
) {
    let properties = std::mem::take(&mut header.properties);
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ORIGINAL_EXCHANGE_HEADER.into(),
        AMQPValue::LongString(exchange.as_str().into()),
    );
    headers.insert(
        ORIGINAL_ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(routing_key.as_str().into()),
    );
    headers.insert(
        VALIDATION_ERROR_HEADER.into(),
        AMQPValue::LongString(error.into()),
    );
    header.properties = properties.with_headers(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::FieldTable;

    #[test]
    fn non_json_body_rejected() {
        let error = validate(b"not json").expect_err("plain text is no record");
        assert!(!error.is_empty());
    }

    #[test]
    fn annotation_keeps_publisher_headers() {
        let mut own = FieldTable::default();
        own.insert("trace-id".into(), AMQPValue::LongString("abc".into()));
        let mut header = AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: BasicProperties::default().with_headers(own),
        };
        annotate_invalid(
            &mut header,
            &"telemetry".into(),
            &"DCGM_FI_DEV_GPU_UTIL".into(),
            "field `uuid` is empty",
        );
        let headers = header.properties.headers().clone().expect("headers set");
        let headers = headers.inner();
        assert!(headers.contains_key("trace-id"));
        assert_eq!(
            headers.get(ORIGINAL_ROUTING_KEY_HEADER),
            Some(&AMQPValue::LongString("DCGM_FI_DEV_GPU_UTIL".into()))
        );
        assert_eq!(
            headers.get(VALIDATION_ERROR_HEADER),
            Some(&AMQPValue::LongString("field `uuid` is empty".into()))
        );
    }
}
