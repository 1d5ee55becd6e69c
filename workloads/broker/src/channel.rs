//! Per-channel state of a session: consumers, unacknowledged deliveries, publisher confirms
//! and the content frames of a publish in progress.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::basic;
use amq_protocol::types::ShortString;
use bytes::{Bytes, BytesMut};

use crate::error::Exception;
use crate::message::Message;
use crate::queue::{ChannelCredit, QueueRef};
use crate::shared::Settled;

/// Whether a channel accepts methods or waits for channel.close-ok after the broker closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelState {
    Open,
    /// The broker sent channel.close; every frame but channel.close(-ok) is discarded.
    Closing,
}

/// A consumer as its channel sees it.
#[derive(Debug)]
pub(crate) struct ChannelConsumer {
    pub(crate) tag: ShortString,
    pub(crate) queue: QueueRef,
}

/// A delivery waiting for basic.ack, basic.nack or basic.reject.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub(crate) delivery_tag: u64,
    pub(crate) queue: QueueRef,
    /// The consumer whose credit it holds; `None` for basic.get.
    pub(crate) consumer_id: Option<u64>,
    pub(crate) message: Arc<Message>,
}

impl Unacked {
    pub(crate) fn settle(self, requeue: bool) -> Settled {
        Settled {
            queue: self.queue,
            consumer_id: self.consumer_id,
            message: Some(self.message),
            requeue,
        }
    }
}

/// Publisher-confirm sequence numbers of a channel in confirm mode.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Sequence number of the last message published.
    pub(crate) published: u64,
    /// Highest sequence number already confirmed to the client.
    pub(crate) confirmed: u64,
}

/// A basic.publish whose content header or body frames are still arriving.
#[derive(Debug)]
pub(crate) struct PendingPublish {
    pub(crate) method: basic::Publish,
    pub(crate) header: Option<AMQPContentHeader>,
    pub(crate) body: BodyBuffer,
}

/// Body bytes of a publish in progress. A body that arrives in one frame keeps that frame's
/// buffer, so the common small message is never copied.
#[derive(Debug, Default)]
pub(crate) enum BodyBuffer {
    #[default]
    Empty,
    Single(Vec<u8>),
    Multiple(BytesMut),
}

impl BodyBuffer {
    pub(crate) fn len(&self) -> usize {
        match self {
            BodyBuffer::Empty => 0,
            BodyBuffer::Single(bytes) => bytes.len(),
            BodyBuffer::Multiple(bytes) => bytes.len(),
        }
    }

    pub(crate) fn append(&mut self, chunk: Vec<u8>, expected: usize) {
        *self = match std::mem::take(self) {
            BodyBuffer::Empty => BodyBuffer::Single(chunk),
            BodyBuffer::Single(first) => {
                let mut joined = BytesMut::with_capacity(expected);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                BodyBuffer::Multiple(joined)
            }
            BodyBuffer::Multiple(mut joined) => {
                joined.extend_from_slice(&chunk);
                BodyBuffer::Multiple(joined)
            }
        };
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            BodyBuffer::Empty => Bytes::new(),
            BodyBuffer::Single(bytes) => Bytes::from(bytes),
            BodyBuffer::Multiple(bytes) => bytes.freeze(),
        }
    }
}

/// One open channel of a session.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) state: ChannelState,
    /// Prefetch state shared with this channel's consumers in the queues.
    pub(crate) credit: Arc<ChannelCredit>,
    /// Per-consumer prefetch for consumers created from now on (basic.qos global=false).
    pub(crate) prefetch: u32,
    /// Consumers by broker-wide consumer id.
    pub(crate) consumers: HashMap<u64, ChannelConsumer>,
    /// Queues this channel consumes from, dispatched again when its credit grows.
    pub(crate) consumer_queues: Vec<QueueRef>,
    /// Delivery tag of the last delivery; tags start at 1 on each channel.
    pub(crate) last_delivery_tag: u64,
    /// Deliveries not yet settled, in ascending delivery-tag order.
    pub(crate) unacked: VecDeque<Unacked>,
    /// Set by confirm.select.
    pub(crate) confirms: Option<Confirms>,
    /// A publish whose content is still arriving.
    pub(crate) publish: Option<PendingPublish>,
    /// Queue of the last queue.declare, which an empty queue name refers to.
    pub(crate) last_queue: Option<Arc<str>>,
}

impl Channel {
    pub(crate) fn new() -> Self {
        Channel {
            state: ChannelState::Open,
            credit: Arc::new(ChannelCredit::default()),
            prefetch: 0,
            consumers: HashMap::new(),
            consumer_queues: Vec::new(),
            last_delivery_tag: 0,
            unacked: VecDeque::new(),
            confirms: None,
            publish: None,
            last_queue: None,
        }
    }

    pub(crate) fn next_delivery_tag(&mut self) -> u64 {
        self.last_delivery_tag += 1;
        self.last_delivery_tag
    }

    /// Resolves the queue name of a method; an empty name means the last declared queue.
    pub(crate) fn queue_name<'a>(&'a self, name: &'a ShortString) -> Result<&'a str, Exception> {
        if !name.as_str().is_empty() {
            return Ok(name.as_str());
        }
        self.last_queue.as_deref().ok_or_else(|| {
            Exception::not_found("no previously declared queue on this channel; name the queue")
        })
    }

    /// Removes the deliveries that an ack, nack or reject names and appends them to `out`.
    ///
    /// With `multiple`, every delivery up to and including `delivery_tag` is taken, and tag 0
    /// takes all of them. An unknown tag is PRECONDITION_FAILED (406).
    pub(crate) fn take_unacked(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
        out: &mut Vec<Settled>,
    ) -> Result<usize, Exception> {
        if multiple {
            let mut count = 0;
            while let Some(front) = self.unacked.front() {
                if delivery_tag != 0 && front.delivery_tag > delivery_tag {
                    break;
                }
                let entry = self.unacked.pop_front().expect("front checked");
                out.push(entry.settle(requeue));
                count += 1;
            }
            if count == 0 && delivery_tag != 0 {
                return Err(unknown_tag(delivery_tag));
            }
            return Ok(count);
        }

        let index = self
            .unacked
            .binary_search_by_key(&delivery_tag, |entry| entry.delivery_tag)
            .map_err(|_| unknown_tag(delivery_tag))?;
        let entry = self
            .unacked
            .remove(index)
            .expect("index found by binary search");
        out.push(entry.settle(requeue));
        Ok(1)
    }

    /// Removes a consumer from the channel's view; returns its queue.
    pub(crate) fn forget_consumer(&mut self, consumer_id: u64) -> Option<ChannelConsumer> {
        let consumer = self.consumers.remove(&consumer_id)?;
        let still_used = self
            .consumers
            .values()
            .any(|other| other.queue.id == consumer.queue.id);
        if !still_used {
            self.consumer_queues
                .retain(|queue| queue.id != consumer.queue.id);
        }
        Some(consumer)
    }
}

fn unknown_tag(delivery_tag: u64) -> Exception {
    Exception::precondition_failed(format!("unknown delivery tag {delivery_tag}"))
}
