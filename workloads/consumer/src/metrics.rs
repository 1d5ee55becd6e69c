//! Prometheus metrics of the consumer, served on the admin port's `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and histograms of one consumer. Clones share the same values.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Deliveries received from the broker, redeliveries included.
    pub received: Counter,
    /// Records written to MongoDB.
    pub stored: Counter,
    /// Records whose `_id` was already stored (redeliveries, republished rows).
    pub duplicates: Counter,
    /// Messages rejected without requeue because their body is not valid telemetry.
    pub rejected: Counter,
    /// Failed `insert_many` attempts; each one is retried.
    pub write_failures: Counter,
    /// Broker connections re-established after a loss.
    pub reconnects: Counter,
    /// Duration of successful batch writes, in seconds.
    pub batch_write_seconds: Histogram,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        ConsumerMetrics {
            received: Counter::default(),
            stored: Counter::default(),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            write_failures: Counter::default(),
            reconnects: Counter::default(),
            // 1 ms to about 16 s.
            batch_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl ConsumerMetrics {
    /// Creates the metrics and registers them under the `telemetry_consumer` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ConsumerMetrics::default();
        let registry = registry.sub_registry_with_prefix("telemetry_consumer");
        registry.register(
            "messages_received",
            "Deliveries received from the broker",
            metrics.received.clone(),
        );
        registry.register(
            "messages_stored",
            "Records written to MongoDB",
            metrics.stored.clone(),
        );
        registry.register(
            "messages_duplicate",
            "Records already stored under the same id, such as redeliveries",
            metrics.duplicates.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages rejected without requeue because the body is not valid telemetry",
            metrics.rejected.clone(),
        );
        registry.register(
            "write_failures",
            "Failed batch writes, each retried",
            metrics.write_failures.clone(),
        );
        registry.register(
            "reconnects",
            "Broker connections re-established after a loss",
            metrics.reconnects.clone(),
        );
        registry.register(
            "batch_write_seconds",
            "Duration of successful batch writes to MongoDB",
            metrics.batch_write_seconds.clone(),
        );
        metrics
    }
}
