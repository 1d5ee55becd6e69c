//! Messages held by queues and the memory accounting behind connection.blocked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::types::ShortString;
use bytes::Bytes;
use tokio::sync::watch;

/// One published message. Queues share it through an `Arc`, so a fanout copies no body.
#[derive(Debug)]
pub(crate) struct Message {
    /// Exchange the message was published to, repeated in basic.deliver.
    pub(crate) exchange: ShortString,
    /// Routing key given by the publisher, repeated in basic.deliver.
    pub(crate) routing_key: ShortString,
    /// The content header frame, encoded once for channel 0; sessions patch the channel.
    pub(crate) encoded_header: Box<[u8]>,
    /// The message body.
    pub(crate) body: Bytes,
    /// Returns the body size to the memory gauge when the last queue drops the message.
    _charge: MemoryCharge,
}

impl Message {
    pub(crate) fn new(
        exchange: ShortString,
        routing_key: ShortString,
        header: AMQPContentHeader,
        body: Bytes,
        memory: &Arc<MemoryGauge>,
    ) -> Self {
        let frame = AMQPFrame::Header(0, header);
        let (encoded, _) = gen_frame(&frame)(WriteContext::from(Vec::new()))
            .expect("encoding a content header into a growable buffer")
            .into_inner();
        let charge = MemoryCharge::new(memory, body.len() as u64);
        Message {
            exchange,
            routing_key,
            encoded_header: encoded.into_boxed_slice(),
            body,
            _charge: charge,
        }
    }
}

/// A message in a queue, with the flag that basic.deliver and basic.get-ok report.
#[derive(Debug, Clone)]
pub(crate) struct QueuedMessage {
    pub(crate) message: Arc<Message>,
    /// Set once the message was delivered and came back through reject, nack or a closed channel.
    pub(crate) redelivered: bool,
}

/// Bytes of message bodies held by the broker, compared with the memory high watermark.
///
/// The alarm state is published through a watch channel so that every session can send
/// connection.blocked and connection.unblocked when it changes.
#[derive(Debug)]
pub(crate) struct MemoryGauge {
    /// Body bytes of all live messages, counted once per message however many queues hold it.
    bytes: AtomicU64,
    /// Above this many bytes the alarm is raised.
    high_watermark: u64,
    /// Current alarm state: `true` while publishers are blocked.
    alarm: watch::Sender<bool>,
}

impl MemoryGauge {
    pub(crate) fn new(high_watermark: u64) -> Self {
        MemoryGauge {
            bytes: AtomicU64::new(0),
            high_watermark,
            alarm: watch::Sender::new(false),
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.alarm.subscribe()
    }

    fn add(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.high_watermark && !*self.alarm.borrow() {
            self.update_alarm();
        }
    }

    fn sub(&self, bytes: u64) {
        let total = self.bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if total <= self.high_watermark && *self.alarm.borrow() {
            self.update_alarm();
        }
    }

    /// Recomputes the alarm from the current total under the watch channel's lock, so that
    /// racing updates settle on the state that matches the final total.
    fn update_alarm(&self) {
        self.alarm.send_if_modified(|alarm| {
            let raised = self.bytes.load(Ordering::Relaxed) > self.high_watermark;
            let changed = *alarm != raised;
            *alarm = raised;
            if changed {
                tracing::warn!(
                    bytes = self.bytes.load(Ordering::Relaxed),
                    high_watermark = self.high_watermark,
                    raised,
                    "memory alarm changed"
                );
            }
            changed
        });
    }
}

/// Body bytes of one message, added to the gauge on creation and removed on drop.
#[derive(Debug)]
struct MemoryCharge {
    gauge: Arc<MemoryGauge>,
    bytes: u64,
}

impl MemoryCharge {
    fn new(gauge: &Arc<MemoryGauge>, bytes: u64) -> Self {
        gauge.add(bytes);
        MemoryCharge {
            gauge: Arc::clone(gauge),
            bytes,
        }
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;

    fn message(gauge: &Arc<MemoryGauge>, size: usize) -> Message {
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: size as u64,
            properties: BasicProperties::default(),
        };
        Message::new(
            "".into(),
            "key".into(),
            header,
            Bytes::from(vec![0; size]),
            gauge,
        )
    }

    #[test]
    fn alarm_follows_watermark() {
        let gauge = Arc::new(MemoryGauge::new(100));
        let alarm = gauge.subscribe();
        let small = message(&gauge, 60);
        assert!(!*alarm.borrow());
        let large = message(&gauge, 60);
        assert!(*alarm.borrow());
        drop(large);
        assert!(!*alarm.borrow());
        assert_eq!(gauge.bytes(), 60);
        drop(small);
        assert_eq!(gauge.bytes(), 0);
    }

    #[test]
    fn header_encoded_for_channel_zero() {
        let gauge = Arc::new(MemoryGauge::new(100));
        let message = message(&gauge, 5);
        assert_eq!(
            message.encoded_header[0], 2,
            "frame type 2 is a content header"
        );
        assert_eq!(&message.encoded_header[1..3], &[0, 0]);
        assert_eq!(
            *message.encoded_header.last().expect("non-empty frame"),
            206
        );
    }
}
