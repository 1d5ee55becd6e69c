//! Channel-level methods of a session: channel, exchange, queue, basic and confirm classes,
//! content frames, and deliveries from the outbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{AMQPClass, AMQPSoftError, basic, channel, confirm, exchange, queue};
use amq_protocol::types::{ChannelId, ShortString};
use telemetry_core::contract::TELEMETRY_EXCHANGE;

use crate::channel::{
    BodyBuffer, Channel, ChannelConsumer, ChannelState, Confirms, PendingPublish, Unacked,
};
use crate::error::Exception;
use crate::exchange::ExchangeKind;
use crate::message::{Message, QueuedMessage};
use crate::queue::{Consumer, Outbound};
use crate::session::Session;
use crate::shared::{ExchangeOptions, QueueOptions, generated_name};
use crate::telemetry;

/// Largest message body accepted, in bytes (RabbitMQ's default `max_message_size`, 128 MiB).
const MAX_BODY_SIZE: u64 = 128 * 1024 * 1024;
/// Class id of `basic`, the only class with content (AMQP 0-9-1 section 4.2.6).
const BASIC_CLASS_ID: u16 = 60;

type MethodResult = Result<(), Exception>;

impl Session {
    /// Handles a method on a channel other than 0.
    pub(crate) fn handle_channel_method(&mut self, channel_id: ChannelId, method: AMQPClass) {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let state = self
            .channels
            .get(&channel_id)
            .map(|channel| (channel.state, channel.publish.is_some()));
        let result = match state {
            None => self.open_channel(channel_id, method),
            Some((ChannelState::Closing, _)) => {
                self.on_closing_channel(channel_id, method);
                Ok(())
            }
            Some((ChannelState::Open, true)) => Err(Exception::unexpected_frame(format!(
                "expected content header for class basic on channel {channel_id}, got a method frame"
            ))),
            Some((ChannelState::Open, false)) => self.dispatch_method(channel_id, method),
        };
        if let Err(exception) = result {
            self.raise(channel_id, exception, class_id, method_id);
        }
    }

    fn open_channel(&mut self, channel_id: ChannelId, method: AMQPClass) -> MethodResult {
        let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method else {
            return Err(Exception::channel_error(format!(
                "channel {channel_id} is not open; send channel.open first"
            )));
        };
        if channel_id > self.channel_max() {
            return Err(Exception::channel_error(format!(
                "channel {channel_id} exceeds channel_max {}",
                self.channel_max()
            )));
        }
        self.channels.insert(channel_id, Channel::new());
        self.shared.metrics.channels.inc();
        self.writer.push_method(
            channel_id,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        Ok(())
    }

    /// On a channel the broker closed, only channel.close-ok (or a crossing channel.close)
    /// matters; everything else is discarded (AMQP 0-9-1 section 2.2.5).
    fn on_closing_channel(&mut self, channel_id: ChannelId, method: AMQPClass) {
        match method {
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.channels.remove(&channel_id);
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.writer.push_method(
                    channel_id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
            }
            _ => {}
        }
    }

    fn dispatch_method(&mut self, channel_id: ChannelId, method: AMQPClass) -> MethodResult {
        match method {
            AMQPClass::Channel(method) => self.on_channel(channel_id, method),
            AMQPClass::Exchange(method) => self.on_exchange(channel_id, method),
            AMQPClass::Queue(method) => self.on_queue(channel_id, method),
            AMQPClass::Basic(method) => self.on_basic(channel_id, method),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                self.channel_mut(channel_id)
                    .confirms
                    .get_or_insert_with(Confirms::default);
                if !select.nowait {
                    let ok = confirm::AMQPMethod::SelectOk(confirm::SelectOk {});
                    self.writer.push_method(channel_id, AMQPClass::Confirm(ok));
                }
                Ok(())
            }
            AMQPClass::Access(_) => {
                let ok = amq_protocol::protocol::access::AMQPMethod::RequestOk(
                    amq_protocol::protocol::access::RequestOk {},
                );
                self.writer.push_method(channel_id, AMQPClass::Access(ok));
                Ok(())
            }
            AMQPClass::Tx(_) => Err(Exception::not_implemented(
                "transactions (tx class) are not supported; use publisher confirms",
            )),
            AMQPClass::Connection(_) => Err(Exception::channel_error(
                "connection methods belong on channel 0",
            )),
            AMQPClass::Confirm(_) => Err(Exception::unexpected_frame(
                "confirm.select-ok is sent by the broker, not the client",
            )),
        }
    }

    fn channel_mut(&mut self, channel_id: ChannelId) -> &mut Channel {
        self.channels
            .get_mut(&channel_id)
            .expect("caller checked that the channel is open")
    }

    fn on_channel(&mut self, channel_id: ChannelId, method: channel::AMQPMethod) -> MethodResult {
        match method {
            channel::AMQPMethod::Close(close) => {
                tracing::debug!(channel = channel_id, code = close.reply_code, text = %close.reply_text, "client closed channel");
                self.release_channel(channel_id);
                self.channels.remove(&channel_id);
                self.writer.push_method(
                    channel_id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::Flow(flow) => {
                let channel = self.channel_mut(channel_id);
                channel.credit.paused.store(!flow.active, Ordering::Relaxed);
                let queues = channel.consumer_queues.clone();
                if flow.active {
                    self.shared.wake(&queues);
                }
                let ok = channel::AMQPMethod::FlowOk(channel::FlowOk {
                    active: flow.active,
                });
                self.writer.push_method(channel_id, AMQPClass::Channel(ok));
                Ok(())
            }
            channel::AMQPMethod::FlowOk(_) | channel::AMQPMethod::CloseOk(_) => Ok(()),
            channel::AMQPMethod::Open(_) => Err(Exception::channel_error(format!(
                "channel {channel_id} is already open"
            ))),
            channel::AMQPMethod::OpenOk(_) => Err(Exception::unexpected_frame(
                "channel.open-ok is sent by the broker",
            )),
        }
    }

    fn on_exchange(&mut self, channel_id: ChannelId, method: exchange::AMQPMethod) -> MethodResult {
        match method {
            exchange::AMQPMethod::Declare(declare) => {
                let options = ExchangeOptions {
                    passive: declare.passive,
                    durable: declare.durable,
                    auto_delete: declare.auto_delete,
                    internal: declare.internal,
                };
                // A passive declare checks existence only, so its type field is not parsed.
                let kind = if declare.passive {
                    ExchangeKind::Direct
                } else {
                    ExchangeKind::parse(declare.kind.as_str())?
                };
                self.shared
                    .declare_exchange(declare.exchange.as_str(), kind, options)?;
                if !declare.nowait {
                    let ok = exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {});
                    self.writer.push_method(channel_id, AMQPClass::Exchange(ok));
                }
                Ok(())
            }
            exchange::AMQPMethod::Delete(delete) => {
                self.shared
                    .delete_exchange(delete.exchange.as_str(), delete.if_unused)?;
                if !delete.nowait {
                    let ok = exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {});
                    self.writer.push_method(channel_id, AMQPClass::Exchange(ok));
                }
                Ok(())
            }
            exchange::AMQPMethod::Bind(_) | exchange::AMQPMethod::Unbind(_) => Err(
                Exception::not_implemented("exchange-to-exchange bindings are not supported"),
            ),
            _ => Err(Exception::unexpected_frame(
                "exchange.*-ok methods are sent by the broker",
            )),
        }
    }

    fn on_queue(&mut self, channel_id: ChannelId, method: queue::AMQPMethod) -> MethodResult {
        match method {
            queue::AMQPMethod::Declare(declare) => self.declare_queue(channel_id, declare),
            queue::AMQPMethod::Bind(bind) => {
                let name = self
                    .channel_mut(channel_id)
                    .queue_name(&bind.queue)?
                    .to_owned();
                self.shared.bind_queue(
                    self.id,
                    &name,
                    bind.exchange.as_str(),
                    bind.routing_key.as_str(),
                )?;
                if !bind.nowait {
                    self.writer.push_method(
                        channel_id,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
                Ok(())
            }
            queue::AMQPMethod::Unbind(unbind) => {
                let name = self
                    .channel_mut(channel_id)
                    .queue_name(&unbind.queue)?
                    .to_owned();
                self.shared.unbind_queue(
                    self.id,
                    &name,
                    unbind.exchange.as_str(),
                    unbind.routing_key.as_str(),
                )?;
                self.writer.push_method(
                    channel_id,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
                Ok(())
            }
            queue::AMQPMethod::Purge(purge) => {
                let name = self
                    .channel_mut(channel_id)
                    .queue_name(&purge.queue)?
                    .to_owned();
                let message_count = self.shared.purge_queue(self.id, &name)?;
                if !purge.nowait {
                    let ok = queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count });
                    self.writer.push_method(channel_id, AMQPClass::Queue(ok));
                }
                Ok(())
            }
            queue::AMQPMethod::Delete(delete) => {
                let name = self
                    .channel_mut(channel_id)
                    .queue_name(&delete.queue)?
                    .to_owned();
                let message_count =
                    self.shared
                        .delete_queue(self.id, &name, delete.if_unused, delete.if_empty)?;
                if !delete.nowait {
                    let ok = queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count });
                    self.writer.push_method(channel_id, AMQPClass::Queue(ok));
                }
                Ok(())
            }
            _ => Err(Exception::unexpected_frame(
                "queue.*-ok methods are sent by the broker",
            )),
        }
    }

    fn declare_queue(&mut self, channel_id: ChannelId, declare: queue::Declare) -> MethodResult {
        let options = QueueOptions {
            passive: declare.passive,
            durable: declare.durable,
            exclusive: declare.exclusive,
            auto_delete: declare.auto_delete,
        };
        let declared = self
            .shared
            .declare_queue(self.id, declare.queue.as_str(), options)?;
        self.channel_mut(channel_id).last_queue = Some(Arc::clone(&declared.name));
        if !declare.nowait {
            let ok = queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: ShortString::from(&*declared.name),
                message_count: declared.message_count,
                consumer_count: declared.consumer_count,
            });
            self.writer.push_method(channel_id, AMQPClass::Queue(ok));
        }
        Ok(())
    }

    fn on_basic(&mut self, channel_id: ChannelId, method: basic::AMQPMethod) -> MethodResult {
        match method {
            basic::AMQPMethod::Publish(publish) => {
                if publish.immediate {
                    return Err(Exception::not_implemented(
                        "immediate=true is not supported, as in RabbitMQ",
                    ));
                }
                self.has_published = true;
                let pending = PendingPublish {
                    method: publish,
                    header: None,
                    body: BodyBuffer::Empty,
                };
                self.channel_mut(channel_id).publish = Some(pending);
                Ok(())
            }
            basic::AMQPMethod::Consume(consume) => self.consume(channel_id, consume),
            basic::AMQPMethod::Cancel(cancel) => {
                self.cancel_consumer(channel_id, &cancel.consumer_tag);
                if !cancel.nowait {
                    let ok = basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: cancel.consumer_tag,
                    });
                    self.writer.push_method(channel_id, AMQPClass::Basic(ok));
                }
                Ok(())
            }
            basic::AMQPMethod::Qos(qos) => {
                let prefetch = u32::from(qos.prefetch_count);
                let channel = self.channel_mut(channel_id);
                if qos.global {
                    let credit = Arc::clone(&channel.credit);
                    let queues = channel.consumer_queues.clone();
                    self.shared.set_global_prefetch(&credit, prefetch, &queues);
                } else {
                    channel.prefetch = prefetch;
                }
                self.writer.push_method(
                    channel_id,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::Get(get) => self.basic_get(channel_id, get),
            basic::AMQPMethod::Ack(ack) => {
                let count = self.settle(channel_id, ack.delivery_tag, ack.multiple, false)?;
                self.shared.metrics.acked.inc_by(count as u64);
                Ok(())
            }
            basic::AMQPMethod::Nack(nack) => {
                let count =
                    self.settle(channel_id, nack.delivery_tag, nack.multiple, nack.requeue)?;
                self.shared.metrics.nacked.inc_by(count as u64);
                Ok(())
            }
            basic::AMQPMethod::Reject(reject) => {
                let count = self.settle(channel_id, reject.delivery_tag, false, reject.requeue)?;
                self.shared.metrics.nacked.inc_by(count as u64);
                Ok(())
            }
            basic::AMQPMethod::Recover(_) => {
                // NOTE: requeue=false is treated like requeue=true, as RabbitMQ does: the
                // messages go back to their queues instead of to the same consumer.
                self.settle(channel_id, 0, true, true)?;
                self.writer.push_method(
                    channel_id,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                self.settle(channel_id, 0, true, true)?;
                Ok(())
            }
            _ => Err(Exception::unexpected_frame(
                "this basic method is sent by the broker, not the client",
            )),
        }
    }

    fn consume(&mut self, channel_id: ChannelId, consume: basic::Consume) -> MethodResult {
        let queue_name = self
            .channel_mut(channel_id)
            .queue_name(&consume.queue)?
            .to_owned();
        let tag = if consume.consumer_tag.as_str().is_empty() {
            ShortString::from(generated_name("amq.ctag-"))
        } else {
            consume.consumer_tag
        };
        let channel = self
            .channels
            .get(&channel_id)
            .expect("channel checked open");
        if channel
            .consumers
            .values()
            .any(|consumer| consumer.tag == tag)
        {
            return Err(Exception::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}' on channel {channel_id}"
            )));
        }

        let consumer_id = self.shared.next_id();
        let consumer = Consumer {
            id: consumer_id,
            connection: self.id,
            channel: channel_id,
            no_ack: consume.no_ack,
            exclusive: consume.exclusive,
            prefetch: channel.prefetch,
            unacked: 0,
            credit: Arc::clone(&channel.credit),
            outbox: self.outbox_tx.clone(),
        };
        // Deliveries go through the outbox, so consume-ok below is written before any of them.
        let queue = self.shared.consume(&queue_name, consumer)?;
        let channel = self.channel_mut(channel_id);
        if !channel
            .consumer_queues
            .iter()
            .any(|known| known.id == queue.id)
        {
            channel.consumer_queues.push(queue.clone());
        }
        channel.consumers.insert(
            consumer_id,
            ChannelConsumer {
                tag: tag.clone(),
                queue,
            },
        );
        tracing::debug!(channel = channel_id, consumer_tag = %tag, queue = %queue_name, "consumer started");
        if !consume.nowait {
            let ok = basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag });
            self.writer.push_method(channel_id, AMQPClass::Basic(ok));
        }
        Ok(())
    }

    fn cancel_consumer(&mut self, channel_id: ChannelId, tag: &ShortString) {
        let channel = self.channel_mut(channel_id);
        let Some(consumer_id) = channel
            .consumers
            .iter()
            .find(|(_, consumer)| consumer.tag == *tag)
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(consumer) = channel.forget_consumer(consumer_id) {
            self.shared.cancel(&consumer.queue, consumer_id);
        }
    }

    fn basic_get(&mut self, channel_id: ChannelId, get: basic::Get) -> MethodResult {
        let queue_name = self
            .channel_mut(channel_id)
            .queue_name(&get.queue)?
            .to_owned();
        let Some((queued, queue, message_count)) = self.shared.get(self.id, &queue_name)? else {
            let empty = basic::AMQPMethod::GetEmpty(basic::GetEmpty {});
            self.writer.push_method(channel_id, AMQPClass::Basic(empty));
            return Ok(());
        };
        let channel = self.channel_mut(channel_id);
        let delivery_tag = channel.next_delivery_tag();
        let QueuedMessage {
            message,
            redelivered,
        } = queued;
        if !get.no_ack {
            channel.unacked.push_back(Unacked {
                delivery_tag,
                queue,
                consumer_id: None,
                message: Arc::clone(&message),
            });
            self.shared.metrics.unacked.inc();
        }
        let ok = basic::GetOk {
            delivery_tag,
            redelivered,
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            message_count,
        };
        self.push_content(
            channel_id,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)),
            &message,
        );
        Ok(())
    }

    /// Settles deliveries named by ack, nack, reject or recover; returns how many.
    fn settle(
        &mut self,
        channel_id: ChannelId,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<usize, Exception> {
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("channel checked open");
        self.settle_scratch.clear();
        let count =
            channel.take_unacked(delivery_tag, multiple, requeue, &mut self.settle_scratch)?;
        self.shared.settle(
            &mut self.settle_scratch,
            &channel.credit,
            &channel.consumer_queues,
        );
        Ok(count)
    }

    /// Handles a content header frame of the publish in progress.
    pub(crate) fn handle_content_header(
        &mut self,
        channel_id: ChannelId,
        header: AMQPContentHeader,
    ) {
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            self.raise(
                0,
                Exception::channel_error(format!(
                    "content header on channel {channel_id}, which is not open"
                )),
                0,
                0,
            );
            return;
        };
        if channel.state == ChannelState::Closing {
            return;
        }
        let pending = match channel.publish.as_mut() {
            Some(pending) if pending.header.is_none() => pending,
            _ => {
                let exception = Exception::unexpected_frame(format!(
                    "content header on channel {channel_id} without basic.publish"
                ));
                self.raise(channel_id, exception, 0, 0);
                return;
            }
        };
        if header.class_id != BASIC_CLASS_ID {
            let exception = Exception::unexpected_frame(format!(
                "content header of class {} on channel {channel_id}; expected basic (60)",
                header.class_id
            ));
            self.raise(channel_id, exception, 0, 0);
            return;
        }
        if header.body_size > MAX_BODY_SIZE {
            let exception = Exception::precondition_failed(format!(
                "message size {} is larger than the maximum {MAX_BODY_SIZE} bytes",
                header.body_size
            ));
            self.raise(channel_id, exception, BASIC_CLASS_ID, 40);
            return;
        }
        let complete = header.body_size == 0;
        pending.header = Some(header);
        if complete {
            self.complete_publish(channel_id);
        }
    }

    /// Handles a content body frame of the publish in progress.
    pub(crate) fn handle_content_body(&mut self, channel_id: ChannelId, body: Vec<u8>) {
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            self.raise(
                0,
                Exception::channel_error(format!(
                    "content body on channel {channel_id}, which is not open"
                )),
                0,
                0,
            );
            return;
        };
        if channel.state == ChannelState::Closing {
            return;
        }
        let Some((pending, expected)) = channel.publish.as_mut().and_then(|pending| {
            pending
                .header
                .as_ref()
                .map(|header| header.body_size as usize)
                .map(|size| (pending, size))
        }) else {
            let exception = Exception::unexpected_frame(format!(
                "content body on channel {channel_id} without a content header"
            ));
            self.raise(channel_id, exception, 0, 0);
            return;
        };
        if pending.body.len() + body.len() > expected {
            let exception = Exception::frame_error(format!(
                "content body on channel {channel_id} exceeds the {expected} bytes announced in its header"
            ));
            self.raise(channel_id, exception, 0, 0);
            return;
        }
        pending.body.append(body, expected);
        if pending.body.len() == expected {
            self.complete_publish(channel_id);
        }
    }

    /// Routes a fully received message, then sends basic.return and confirms as needed.
    fn complete_publish(&mut self, channel_id: ChannelId) {
        let channel = self.channel_mut(channel_id);
        let PendingPublish {
            method,
            header,
            body,
        } = channel.publish.take().expect("publish in progress");
        let header = header.expect("content header received");
        let body = body.into_bytes();
        let confirm_tag = channel.confirms.as_mut().map(|confirms| {
            confirms.published += 1;
            confirms.published
        });

        if method.exchange.as_str() == TELEMETRY_EXCHANGE
            && let Err(reason) = telemetry::validate(&body)
        {
            self.reject_invalid(channel_id, method, header, body, reason, confirm_tag);
            return;
        }

        let mandatory = method.mandatory;
        let message = Arc::new(Message::new(
            method.exchange,
            method.routing_key,
            header,
            body,
            &self.shared.memory,
        ));
        let routed = match self.shared.publish(
            message.exchange.as_str(),
            message.routing_key.as_str(),
            Arc::clone(&message),
            &mut self.route_scratch,
        ) {
            Ok(routed) => routed,
            Err(exception) => {
                self.raise(channel_id, exception, BASIC_CLASS_ID, 40);
                return;
            }
        };
        if !routed && mandatory {
            let returned = basic::Return {
                reply_code: AMQPSoftError::NOROUTE.get_id(),
                reply_text: "NO_ROUTE".into(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            };
            self.push_content(
                channel_id,
                AMQPClass::Basic(basic::AMQPMethod::Return(returned)),
                &message,
            );
            self.shared.metrics.returned.inc();
        }
        if confirm_tag.is_some() {
            self.confirms_pending = true;
        }
    }

    /// Stores an invalid telemetry message in the invalid queue and nacks it to a publisher
    /// in confirm mode.
    fn reject_invalid(
        &mut self,
        channel_id: ChannelId,
        method: basic::Publish,
        mut header: AMQPContentHeader,
        body: bytes::Bytes,
        reason: String,
        confirm_tag: Option<u64>,
    ) {
        self.invalid_count += 1;
        if self.invalid_count == 1 || self.invalid_count.is_multiple_of(1000) {
            tracing::warn!(
                channel = channel_id,
                routing_key = %method.routing_key,
                cause = %reason,
                invalid_on_connection = self.invalid_count,
                "invalid telemetry stored in the invalid queue"
            );
        }
        telemetry::annotate_invalid(&mut header, &method.exchange, &method.routing_key, &reason);
        let message = Message::new(
            method.exchange,
            method.routing_key,
            header,
            body,
            &self.shared.memory,
        );
        self.shared.store_invalid(Arc::new(message));

        let Some(tag) = confirm_tag else {
            return;
        };
        // Acks before this nack go out first, so the client sees confirms in order.
        self.flush_confirms_of(channel_id);
        let channel = self.channel_mut(channel_id);
        if let Some(confirms) = channel.confirms.as_mut() {
            confirms.confirmed = tag;
        }
        let nack = basic::Nack {
            delivery_tag: tag,
            multiple: false,
            requeue: false,
        };
        self.writer
            .push_method(channel_id, AMQPClass::Basic(basic::AMQPMethod::Nack(nack)));
    }

    fn flush_confirms_of(&mut self, channel_id: ChannelId) {
        let channel = self.channel_mut(channel_id);
        let Some(confirms) = channel.confirms.as_mut() else {
            return;
        };
        // The publish being nacked is already counted in `published`; ack the ones before it.
        let upto = confirms.published - 1;
        if upto > confirms.confirmed {
            let ack = basic::Ack {
                delivery_tag: upto,
                multiple: upto - confirms.confirmed > 1,
            };
            confirms.confirmed = upto;
            self.writer
                .push_method(channel_id, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)));
        }
    }

    /// Writes a method with content: the method frame, the content header and body frames.
    fn push_content(&mut self, channel_id: ChannelId, method: AMQPClass, message: &Message) {
        self.writer.push_method(channel_id, method);
        self.writer
            .push_encoded_header(channel_id, &message.encoded_header);
        if !message.body.is_empty() {
            self.writer
                .push_body(channel_id, &message.body, self.frame_max);
        }
    }

    /// Handles work from the outbox: a delivery to one of this session's consumers, or the
    /// cancellation of a consumer whose queue was deleted.
    pub(crate) fn handle_outbound(&mut self, outbound: Outbound) {
        match outbound {
            Outbound::Deliver {
                channel: channel_id,
                consumer_id,
                no_ack,
                queue,
                message,
            } => {
                let target = self
                    .channels
                    .get_mut(&channel_id)
                    .filter(|channel| channel.state == ChannelState::Open)
                    .and_then(|channel| {
                        channel
                            .consumers
                            .get(&consumer_id)
                            .map(|consumer| consumer.tag.clone())
                            .map(|tag| (channel, tag))
                    });
                let Some((channel, consumer_tag)) = target else {
                    // The consumer was cancelled or its channel closed while this was queued.
                    let credit = self
                        .channels
                        .get(&channel_id)
                        .map(|channel| Arc::clone(&channel.credit));
                    self.shared.return_undelivered(
                        &queue,
                        consumer_id,
                        no_ack,
                        message,
                        credit.as_deref(),
                    );
                    return;
                };
                let delivery_tag = channel.next_delivery_tag();
                let QueuedMessage {
                    message,
                    redelivered,
                } = message;
                if !no_ack {
                    channel.unacked.push_back(Unacked {
                        delivery_tag,
                        queue,
                        consumer_id: Some(consumer_id),
                        message: Arc::clone(&message),
                    });
                }
                let deliver = basic::Deliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                };
                self.push_content(
                    channel_id,
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)),
                    &message,
                );
            }
            Outbound::ConsumerCancelled {
                channel: channel_id,
                consumer_id,
            } => {
                let notify = self.can_notify_cancel();
                let Some(channel) = self
                    .channels
                    .get_mut(&channel_id)
                    .filter(|channel| channel.state == ChannelState::Open)
                else {
                    return;
                };
                let Some(consumer) = channel.forget_consumer(consumer_id) else {
                    return;
                };
                tracing::info!(channel = channel_id, consumer_tag = %consumer.tag, queue = %consumer.queue.name, "consumer cancelled because its queue was deleted");
                if notify {
                    let cancel = basic::Cancel {
                        consumer_tag: consumer.tag,
                        nowait: true,
                    };
                    self.writer.push_method(
                        channel_id,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)),
                    );
                }
            }
        }
    }
}
