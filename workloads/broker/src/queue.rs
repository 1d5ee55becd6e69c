//! Queues, their consumers, and round-robin dispatch under prefetch limits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use amq_protocol::types::ChannelId;
use tokio::sync::mpsc;

use crate::message::QueuedMessage;
use crate::metrics::Metrics;

/// Identifies one connection for the lifetime of the process.
pub(crate) type ConnectionId = u64;

/// A queue's identity as sessions keep it: the id tells a queue apart from a later queue
/// declared with the same name.
#[derive(Debug, Clone)]
pub(crate) struct QueueRef {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
}

/// Work sent to a session by other tasks, through its unbounded outbox.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Deliver a message to a consumer of this session.
    Deliver {
        channel: ChannelId,
        consumer_id: u64,
        no_ack: bool,
        queue: QueueRef,
        message: QueuedMessage,
    },
    /// The queue of a consumer was deleted; tell the client with basic.cancel.
    ConsumerCancelled {
        channel: ChannelId,
        consumer_id: u64,
    },
}

/// Prefetch state of one channel, shared by its consumers in every queue.
///
/// Every change happens with the broker state locked; atomics make it shareable.
#[derive(Debug, Default)]
pub(crate) struct ChannelCredit {
    /// Channel-wide limit on unacknowledged deliveries (basic.qos with global=true); 0 is none.
    pub(crate) global_prefetch: AtomicU32,
    /// Unacknowledged deliveries to consumers of the channel.
    pub(crate) unacked: AtomicU32,
    /// Cleared by channel.flow active=false: no deliveries until the client sets it again.
    pub(crate) paused: AtomicBool,
}

/// A consumer attached to a queue.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// Broker-wide id that survives tag reuse.
    pub(crate) id: u64,
    pub(crate) connection: ConnectionId,
    pub(crate) channel: ChannelId,
    /// With no-ack, deliveries count as acknowledged when sent and take no prefetch credit.
    pub(crate) no_ack: bool,
    pub(crate) exclusive: bool,
    /// Per-consumer limit on unacknowledged deliveries (basic.qos with global=false); 0 is none.
    pub(crate) prefetch: u32,
    /// Unacknowledged deliveries to this consumer.
    pub(crate) unacked: u32,
    pub(crate) credit: Arc<ChannelCredit>,
    /// The owning session's outbox.
    pub(crate) outbox: mpsc::UnboundedSender<Outbound>,
}

impl Consumer {
    fn can_take(&self) -> bool {
        if self.credit.paused.load(Ordering::Relaxed) {
            return false;
        }
        if self.no_ack {
            return true;
        }
        let global = self.credit.global_prefetch.load(Ordering::Relaxed);
        let under_own = self.prefetch == 0 || self.unacked < self.prefetch;
        let under_global = global == 0 || self.credit.unacked.load(Ordering::Relaxed) < global;
        under_own && under_global
    }
}

/// A declared queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// Accepted and reported; the broker keeps every queue in memory only.
    pub(crate) durable: bool,
    /// Connection that declared the queue exclusive; others get RESOURCE_LOCKED.
    pub(crate) owner: Option<ConnectionId>,
    /// Deleted when its last consumer is cancelled, once it has had one.
    pub(crate) auto_delete: bool,
    /// Messages ready for delivery, oldest first.
    pub(crate) messages: VecDeque<QueuedMessage>,
    pub(crate) consumers: Vec<Consumer>,
    /// Index in `consumers` where the next round-robin search starts.
    next_consumer: usize,
}

impl Queue {
    pub(crate) fn new(
        id: u64,
        name: Arc<str>,
        durable: bool,
        owner: Option<ConnectionId>,
        auto_delete: bool,
    ) -> Self {
        Queue {
            id,
            name,
            durable,
            owner,
            auto_delete,
            messages: VecDeque::new(),
            consumers: Vec::new(),
            next_consumer: 0,
        }
    }

    pub(crate) fn reference(&self) -> QueueRef {
        QueueRef {
            id: self.id,
            name: Arc::clone(&self.name),
        }
    }

    pub(crate) fn has_exclusive_consumer(&self) -> bool {
        self.consumers.iter().any(|consumer| consumer.exclusive)
    }

    /// Hands ready messages to consumers with credit, in round-robin order, until the queue
    /// is empty or no consumer can take more.
    pub(crate) fn dispatch(&mut self, metrics: &Metrics) {
        while !self.messages.is_empty() {
            let Some(index) = self.next_ready_consumer() else {
                return;
            };
            let message = self.messages.pop_front().expect("queue checked non-empty");
            let consumer = &mut self.consumers[index];
            if !consumer.no_ack {
                consumer.unacked += 1;
                consumer.credit.unacked.fetch_add(1, Ordering::Relaxed);
                metrics.unacked.inc();
            }
            metrics.delivered.inc();
            let delivery = Outbound::Deliver {
                channel: consumer.channel,
                consumer_id: consumer.id,
                no_ack: consumer.no_ack,
                queue: QueueRef {
                    id: self.id,
                    name: Arc::clone(&self.name),
                },
                message,
            };
            if let Err(mpsc::error::SendError(returned)) = consumer.outbox.send(delivery) {
                // The session ended and will remove its consumers as it cleans up; keep the
                // message and stop dispatching to this queue until then.
                if let Outbound::Deliver { message, .. } = returned {
                    self.messages.push_front(message);
                }
                return;
            }
        }
    }

    fn next_ready_consumer(&mut self) -> Option<usize> {
        let count = self.consumers.len();
        for offset in 0..count {
            let index = (self.next_consumer + offset) % count;
            if self.consumers[index].can_take() {
                self.next_consumer = (index + 1) % count;
                return Some(index);
            }
        }
        None
    }

    /// Takes back prefetch credit for one settled delivery of consumer `consumer_id`.
    pub(crate) fn release_credit(&mut self, consumer_id: u64) {
        if let Some(consumer) = self
            .consumers
            .iter_mut()
            .find(|consumer| consumer.id == consumer_id)
        {
            consumer.unacked = consumer.unacked.saturating_sub(1);
        }
    }

    /// Removes a consumer; returns it so that the caller can settle its bookkeeping.
    pub(crate) fn remove_consumer(&mut self, consumer_id: u64) -> Option<Consumer> {
        let index = self
            .consumers
            .iter()
            .position(|consumer| consumer.id == consumer_id)?;
        let consumer = self.consumers.remove(index);
        if self.next_consumer > index {
            self.next_consumer -= 1;
        }
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
        Some(consumer)
    }
}
