//! Prometheus metrics of the broker.
//!
//! Counters and gauges that change with every message are atomics updated in place. Per-queue
//! depths are read from the broker state at scrape time by a collector, so that the publish
//! path never touches a labelled metric family.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::shared::Shared;

/// Process-wide counters and gauges; clones of each metric share one value.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    pub(crate) channels: Gauge,
    pub(crate) consumers: Gauge,
    pub(crate) unacked: Gauge,
    pub(crate) published: Counter,
    pub(crate) delivered: Counter,
    pub(crate) acked: Counter,
    pub(crate) nacked: Counter,
    pub(crate) redelivered: Counter,
    pub(crate) invalid: Counter,
    pub(crate) returned: Counter,
}

impl Metrics {
    /// Registers every metric under the `broker_` prefix, plus the per-queue collector.
    pub(crate) fn register(&self, registry: &mut Registry, shared: Arc<Shared>) {
        let broker = registry.sub_registry_with_prefix("broker");
        broker.register(
            "connections",
            "Open AMQP connections",
            self.connections.clone(),
        );
        broker.register("channels", "Open AMQP channels", self.channels.clone());
        broker.register("consumers", "Active consumers", self.consumers.clone());
        broker.register(
            "messages_unacked",
            "Messages delivered and not yet acknowledged",
            self.unacked.clone(),
        );
        broker.register(
            "messages_published",
            "Messages received from publishers",
            self.published.clone(),
        );
        broker.register(
            "messages_delivered",
            "Deliveries to consumers and basic.get",
            self.delivered.clone(),
        );
        broker.register(
            "messages_acked",
            "Deliveries acknowledged by clients",
            self.acked.clone(),
        );
        broker.register(
            "messages_nacked",
            "Deliveries rejected or nacked by clients",
            self.nacked.clone(),
        );
        broker.register(
            "messages_redelivered",
            "Messages returned to their queue for redelivery",
            self.redelivered.clone(),
        );
        broker.register(
            "messages_invalid",
            "Telemetry messages that failed validation",
            self.invalid.clone(),
        );
        broker.register(
            "messages_returned",
            "Mandatory messages returned as unroutable",
            self.returned.clone(),
        );
        broker.register_collector(Box::new(QueueCollector { shared }));
    }
}

/// Reads queue depths from the broker state on each scrape.
struct QueueCollector {
    shared: Arc<Shared>,
}

impl fmt::Debug for QueueCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueCollector")
    }
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let depths = self.shared.queue_depths();

        let mut ready = encoder.encode_descriptor(
            "queue_messages",
            "Messages ready for delivery, per queue",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for depth in &depths {
            let labels = [("queue", depth.name.as_ref())];
            ConstGauge::new(depth.ready as i64).encode(ready.encode_family(&labels)?)?;
        }

        let mut consumers = encoder.encode_descriptor(
            "queue_consumers",
            "Consumers attached, per queue",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for depth in &depths {
            let labels = [("queue", depth.name.as_ref())];
            ConstGauge::new(depth.consumers as i64).encode(consumers.encode_family(&labels)?)?;
        }

        let memory = encoder.encode_descriptor(
            "memory_body_bytes",
            "Bytes of message bodies held in memory",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(self.shared.memory.bytes() as i64).encode(memory)?;
        Ok(())
    }
}
