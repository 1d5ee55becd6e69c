//! Broker state shared by every connection: exchanges, queues and bindings.
//!
//! One `std::sync::Mutex` guards the state. It is held for short, non-async sections only
//! (routing a message, settling acknowledgements), never across an `.await`, so a blocking
//! mutex is cheaper than tokio's and cannot deadlock the runtime. Sessions encode and write
//! frames after releasing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use telemetry_core::contract::{INVALID_QUEUE, TELEMETRY_EXCHANGE};

use crate::error::Exception;
use crate::exchange::{Exchange, ExchangeKind};
use crate::message::{MemoryGauge, Message, QueuedMessage};
use crate::metrics::Metrics;
use crate::queue::{ChannelCredit, ConnectionId, Consumer, Outbound, Queue, QueueRef};

/// Exchanges that exist from start-up, as in RabbitMQ; the default exchange "" is implicit.
const PREDECLARED_EXCHANGES: [(&str, ExchangeKind); 3] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
];

/// The broker state and the counters every session updates.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) metrics: Metrics,
    pub(crate) memory: Arc<MemoryGauge>,
    /// Source of connection, queue and consumer ids.
    next_id: AtomicU64,
}

/// Everything guarded by the state lock.
#[derive(Debug, Default)]
struct State {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
}

/// Result of queue.declare.
#[derive(Debug)]
pub(crate) struct DeclaredQueue {
    pub(crate) name: Arc<str>,
    pub(crate) message_count: u32,
    pub(crate) consumer_count: u32,
}

/// Depth of one queue, for the metrics collector.
#[derive(Debug)]
pub(crate) struct QueueDepth {
    pub(crate) name: Arc<str>,
    pub(crate) ready: usize,
    pub(crate) consumers: usize,
}

/// Parameters of queue.declare.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueOptions {
    pub(crate) passive: bool,
    pub(crate) durable: bool,
    pub(crate) exclusive: bool,
    pub(crate) auto_delete: bool,
}

/// Parameters of exchange.declare.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExchangeOptions {
    pub(crate) passive: bool,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) internal: bool,
}

impl Shared {
    /// Creates the state with the predeclared exchanges, the telemetry exchange and the queue
    /// for invalid telemetry.
    // TODO: persistence. Durable exchanges, queues, bindings and persistent messages
    // (delivery-mode 2) would be written to disk and reloaded here at start-up. Until then
    // every restart starts from this empty state.
    pub(crate) fn new(memory_high_watermark: u64) -> Self {
        let shared = Shared {
            state: Mutex::new(State::default()),
            metrics: Metrics::default(),
            memory: Arc::new(MemoryGauge::new(memory_high_watermark)),
            next_id: AtomicU64::new(1),
        };
        {
            let mut state = shared.lock();
            for (name, kind) in PREDECLARED_EXCHANGES {
                state
                    .exchanges
                    .insert(name.to_owned(), Exchange::new(kind, true));
            }
            state.exchanges.insert(
                TELEMETRY_EXCHANGE.to_owned(),
                Exchange::new(ExchangeKind::Topic, true),
            );
            let id = shared.next_id();
            state.queues.insert(
                INVALID_QUEUE.to_owned(),
                Queue::new(id, Arc::from(INVALID_QUEUE), true, None, false),
            );
        }
        shared
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("broker state lock poisoned by a panic")
    }

    pub(crate) fn declare_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        options: ExchangeOptions,
    ) -> Result<(), Exception> {
        let mut state = self.lock();
        if name.is_empty() {
            return if options.passive {
                Ok(())
            } else {
                Err(Exception::access_refused(
                    "operation not permitted on the default exchange",
                ))
            };
        }
        match state.exchanges.get(name) {
            Some(_) if options.passive => Ok(()),
            Some(existing) => {
                if existing.kind != kind
                    || existing.durable != options.durable
                    || existing.auto_delete != options.auto_delete
                    || existing.internal != options.internal
                {
                    return Err(Exception::precondition_failed(format!(
                        "inequivalent arguments for exchange '{name}': declared as type '{}' durable={} auto_delete={} internal={}",
                        existing.kind.as_str(),
                        existing.durable,
                        existing.auto_delete,
                        existing.internal
                    )));
                }
                Ok(())
            }
            None if options.passive => Err(Exception::not_found(format!(
                "no exchange '{name}' in vhost '/'"
            ))),
            None if name.starts_with("amq.") => Err(Exception::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            ))),
            None => {
                let mut exchange = Exchange::new(kind, options.durable);
                exchange.auto_delete = options.auto_delete;
                exchange.internal = options.internal;
                state.exchanges.insert(name.to_owned(), exchange);
                Ok(())
            }
        }
    }

    /// Deletes an exchange. Like RabbitMQ, deleting a missing exchange succeeds.
    pub(crate) fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), Exception> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(Exception::access_refused(format!(
                "operation not permitted on exchange '{name}'"
            )));
        }
        let mut state = self.lock();
        match state.exchanges.get(name) {
            Some(exchange) if if_unused && !exchange.bindings.is_empty() => Err(
                Exception::precondition_failed(format!("exchange '{name}' in vhost '/' in use")),
            ),
            Some(_) => {
                state.exchanges.remove(name);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(crate) fn declare_queue(
        &self,
        connection: ConnectionId,
        name: &str,
        options: QueueOptions,
    ) -> Result<DeclaredQueue, Exception> {
        let mut state = self.lock();
        if let Some(queue) = state.queues.get(name) {
            check_owner(queue, connection)?;
            if !options.passive
                && (queue.durable != options.durable
                    || queue.owner.is_some() != options.exclusive
                    || queue.auto_delete != options.auto_delete)
            {
                return Err(Exception::precondition_failed(format!(
                    "inequivalent arguments for queue '{name}' in vhost '/': declared durable={} exclusive={} auto_delete={}",
                    queue.durable,
                    queue.owner.is_some(),
                    queue.auto_delete
                )));
            }
            return Ok(DeclaredQueue {
                name: Arc::clone(&queue.name),
                message_count: queue.messages.len() as u32,
                consumer_count: queue.consumers.len() as u32,
            });
        }
        if options.passive {
            return Err(Exception::not_found(format!(
                "no queue '{name}' in vhost '/'"
            )));
        }
        if name.starts_with("amq.") {
            return Err(Exception::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }

        let name: Arc<str> = if name.is_empty() {
            Arc::from(generated_name("amq.gen-"))
        } else {
            Arc::from(name)
        };
        let owner = options.exclusive.then_some(connection);
        let queue = Queue::new(
            self.next_id(),
            Arc::clone(&name),
            options.durable,
            owner,
            options.auto_delete,
        );
        state.queues.insert(name.to_string(), queue);
        Ok(DeclaredQueue {
            name,
            message_count: 0,
            consumer_count: 0,
        })
    }

    pub(crate) fn bind_queue(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), Exception> {
        self.change_binding(connection, queue, exchange, |target, queue| {
            target.bind(queue, key);
        })
    }

    pub(crate) fn unbind_queue(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), Exception> {
        self.change_binding(connection, queue, exchange, |target, queue| {
            target.unbind(queue, key);
        })
    }

    /// Checks that `connection` may change the bindings of `queue` on `exchange`, then applies
    /// `change` to the exchange with the queue's name.
    fn change_binding(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        change: impl FnOnce(&mut Exchange, &Arc<str>),
    ) -> Result<(), Exception> {
        let mut state = self.lock();
        let state = &mut *state;
        let queue = state
            .queues
            .get(queue)
            .ok_or_else(|| missing_queue(queue))?;
        check_owner(queue, connection)?;
        if exchange.is_empty() {
            return Err(Exception::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let target = state
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| missing_exchange(exchange))?;
        change(target, &queue.name);
        Ok(())
    }

    /// Drops the ready messages of a queue; returns how many there were.
    pub(crate) fn purge_queue(
        &self,
        connection: ConnectionId,
        name: &str,
    ) -> Result<u32, Exception> {
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(name)
            .ok_or_else(|| missing_queue(name))?;
        check_owner(queue, connection)?;
        let count = queue.messages.len() as u32;
        queue.messages.clear();
        Ok(count)
    }

    /// Deletes a queue; returns its ready message count. Like RabbitMQ, deleting a missing
    /// queue succeeds with a count of 0.
    pub(crate) fn delete_queue(
        &self,
        connection: ConnectionId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, Exception> {
        let mut state = self.lock();
        let Some(queue) = state.queues.get(name) else {
            return Ok(0);
        };
        check_owner(queue, connection)?;
        if if_unused && !queue.consumers.is_empty() {
            return Err(Exception::precondition_failed(format!(
                "queue '{name}' in vhost '/' in use"
            )));
        }
        if if_empty && !queue.messages.is_empty() {
            return Err(Exception::precondition_failed(format!(
                "queue '{name}' in vhost '/' is not empty"
            )));
        }
        let count = queue.messages.len() as u32;
        self.remove_queue(&mut state, name);
        Ok(count)
    }

    /// Removes a queue, its bindings and its consumers, telling their sessions.
    fn remove_queue(&self, state: &mut State, name: &str) {
        let Some(queue) = state.queues.remove(name) else {
            return;
        };
        for exchange in state.exchanges.values_mut() {
            exchange.unbind_queue(name);
        }
        for consumer in queue.consumers {
            self.metrics.consumers.dec();
            let notice = Outbound::ConsumerCancelled {
                channel: consumer.channel,
                consumer_id: consumer.id,
            };
            // A closed outbox means the session is gone and has nothing to tell its client.
            let _ = consumer.outbox.send(notice);
        }
        tracing::debug!(queue = name, "queue deleted");
    }

    /// Routes a message through `exchange` and enqueues it; returns whether any queue took it.
    /// `scratch` is a reusable buffer for the matched queue names.
    pub(crate) fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Arc<Message>,
        scratch: &mut Vec<Arc<str>>,
    ) -> Result<bool, Exception> {
        let mut state = self.lock();
        let state = &mut *state;
        self.metrics.published.inc();

        if exchange.is_empty() {
            return Ok(match state.queues.get_mut(routing_key) {
                Some(queue) => {
                    self.enqueue(queue, message);
                    true
                }
                None => false,
            });
        }

        let source = state
            .exchanges
            .get(exchange)
            .ok_or_else(|| missing_exchange(exchange))?;
        if source.internal {
            return Err(Exception::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '/'"
            )));
        }
        scratch.clear();
        source.route(routing_key, scratch);
        let mut routed = false;
        for name in scratch.drain(..) {
            if let Some(queue) = state.queues.get_mut(&*name) {
                self.enqueue(queue, Arc::clone(&message));
                routed = true;
            }
        }
        Ok(routed)
    }

    /// Stores a message that failed telemetry validation in the invalid-telemetry queue.
    pub(crate) fn store_invalid(&self, message: Arc<Message>) {
        let mut state = self.lock();
        self.metrics.published.inc();
        self.metrics.invalid.inc();
        match state.queues.get_mut(INVALID_QUEUE) {
            Some(queue) => self.enqueue(queue, message),
            None => tracing::error!(
                queue = INVALID_QUEUE,
                "invalid telemetry dropped because its queue was deleted"
            ),
        }
    }

    fn enqueue(&self, queue: &mut Queue, message: Arc<Message>) {
        queue.messages.push_back(QueuedMessage {
            message,
            redelivered: false,
        });
        queue.dispatch(&self.metrics);
    }

    /// Attaches a consumer and starts dispatching to it.
    pub(crate) fn consume(
        &self,
        queue_name: &str,
        consumer: Consumer,
    ) -> Result<QueueRef, Exception> {
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(queue_name)
            .ok_or_else(|| missing_queue(queue_name))?;
        check_owner(queue, consumer.connection)?;
        if queue.has_exclusive_consumer() {
            return Err(Exception::access_refused(format!(
                "queue '{queue_name}' in vhost '/' in exclusive use"
            )));
        }
        if consumer.exclusive && !queue.consumers.is_empty() {
            return Err(Exception::access_refused(format!(
                "cannot obtain exclusive access to locked queue '{queue_name}' in vhost '/'"
            )));
        }
        queue.consumers.push(consumer);
        self.metrics.consumers.inc();
        queue.dispatch(&self.metrics);
        Ok(queue.reference())
    }

    /// Detaches a consumer and deletes its queue when it is auto-delete and this was the
    /// last consumer. Unacknowledged deliveries stay with the channel.
    pub(crate) fn cancel(&self, queue: &QueueRef, consumer_id: u64) {
        let mut state = self.lock();
        let Some(target) = state
            .queues
            .get_mut(&*queue.name)
            .filter(|target| target.id == queue.id)
        else {
            return;
        };
        if target.remove_consumer(consumer_id).is_some() {
            self.metrics.consumers.dec();
        }
        if target.auto_delete && target.consumers.is_empty() {
            self.remove_queue(&mut state, &queue.name);
        }
    }

    /// Takes the first ready message for basic.get; returns it with the count left behind.
    pub(crate) fn get(
        &self,
        connection: ConnectionId,
        name: &str,
    ) -> Result<Option<(QueuedMessage, QueueRef, u32)>, Exception> {
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(name)
            .ok_or_else(|| missing_queue(name))?;
        check_owner(queue, connection)?;
        let Some(message) = queue.messages.pop_front() else {
            return Ok(None);
        };
        self.metrics.delivered.inc();
        Ok(Some((
            message,
            queue.reference(),
            queue.messages.len() as u32,
        )))
    }

    /// Settles deliveries of one channel: acknowledged ones are dropped, requeued ones go
    /// back to the front of their queue marked redelivered, in their original order.
    /// Then dispatches the queues in `wake`, whose consumers may have regained credit.
    pub(crate) fn settle(
        &self,
        settled: &mut Vec<Settled>,
        credit: &ChannelCredit,
        wake: &[QueueRef],
    ) {
        let mut state = self.lock();
        for entry in settled.iter_mut().rev() {
            self.metrics.unacked.dec();
            if entry.consumer_id.is_some() {
                credit.unacked.fetch_sub(1, Ordering::Relaxed);
            }
            let Some(queue) = state
                .queues
                .get_mut(&*entry.queue.name)
                .filter(|queue| queue.id == entry.queue.id)
            else {
                continue;
            };
            if let Some(consumer_id) = entry.consumer_id {
                queue.release_credit(consumer_id);
            }
            if entry.requeue
                && let Some(message) = entry.message.take()
            {
                queue.messages.push_front(QueuedMessage {
                    message,
                    redelivered: true,
                });
                self.metrics.redelivered.inc();
            }
        }
        let mut last_dispatched = None;
        for entry in settled.iter() {
            if last_dispatched == Some(entry.queue.id) {
                continue;
            }
            last_dispatched = Some(entry.queue.id);
            if let Some(queue) = state
                .queues
                .get_mut(&*entry.queue.name)
                .filter(|queue| queue.id == entry.queue.id)
            {
                queue.dispatch(&self.metrics);
            }
        }
        for queue in wake {
            if let Some(queue) = state
                .queues
                .get_mut(&*queue.name)
                .filter(|target| target.id == queue.id)
            {
                queue.dispatch(&self.metrics);
            }
        }
        drop(state);
        // Messages not requeued are dropped here, after the lock, with their memory charge.
        settled.clear();
    }

    /// Puts back a delivery that never reached its client (its channel or consumer was gone
    /// when the session took it from the outbox), keeping its redelivered flag.
    pub(crate) fn return_undelivered(
        &self,
        queue: &QueueRef,
        consumer_id: u64,
        no_ack: bool,
        message: QueuedMessage,
        credit: Option<&ChannelCredit>,
    ) {
        let mut state = self.lock();
        if !no_ack {
            self.metrics.unacked.dec();
            if let Some(credit) = credit {
                credit.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(target) = state
            .queues
            .get_mut(&*queue.name)
            .filter(|target| target.id == queue.id)
        {
            target.release_credit(consumer_id);
            target.messages.push_front(message);
            target.dispatch(&self.metrics);
        }
    }

    /// Deletes the exclusive queues of a closed connection.
    pub(crate) fn drop_connection_queues(&self, connection: ConnectionId) {
        let mut state = self.lock();
        let owned: Vec<String> = state
            .queues
            .iter()
            .filter(|(_, queue)| queue.owner == Some(connection))
            .map(|(name, _)| name.clone())
            .collect();
        for name in owned {
            self.remove_queue(&mut state, &name);
        }
    }

    /// Dispatches queues again, after channel.flow re-enabled deliveries.
    pub(crate) fn wake(&self, queues: &[QueueRef]) {
        let mut state = self.lock();
        for queue in queues {
            if let Some(target) = state
                .queues
                .get_mut(&*queue.name)
                .filter(|target| target.id == queue.id)
            {
                target.dispatch(&self.metrics);
            }
        }
    }

    /// Sets the channel-wide prefetch limit and dispatches queues that may now deliver more.
    pub(crate) fn set_global_prefetch(
        &self,
        credit: &ChannelCredit,
        prefetch: u32,
        queues: &[QueueRef],
    ) {
        credit.global_prefetch.store(prefetch, Ordering::Relaxed);
        self.wake(queues);
    }

    pub(crate) fn queue_depths(&self) -> Vec<QueueDepth> {
        let state = self.lock();
        let mut depths: Vec<QueueDepth> = state
            .queues
            .values()
            .map(|queue| QueueDepth {
                name: Arc::clone(&queue.name),
                ready: queue.messages.len(),
                consumers: queue.consumers.len(),
            })
            .collect();
        depths.sort_by(|a, b| a.name.cmp(&b.name));
        depths
    }
}

/// One delivery being settled by ack, nack, reject, recover or a channel close.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) queue: QueueRef,
    /// The consumer whose prefetch credit the delivery holds; `None` for basic.get.
    pub(crate) consumer_id: Option<u64>,
    /// The message, taken when it is requeued.
    pub(crate) message: Option<Arc<Message>>,
    pub(crate) requeue: bool,
}

fn check_owner(queue: &Queue, connection: ConnectionId) -> Result<(), Exception> {
    match queue.owner {
        Some(owner) if owner != connection => Err(Exception::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '/'; it is exclusive to another connection",
            queue.name
        ))),
        _ => Ok(()),
    }
}

fn missing_queue(name: &str) -> Exception {
    Exception::not_found(format!("no queue '{name}' in vhost '/'"))
}

fn missing_exchange(name: &str) -> Exception {
    Exception::not_found(format!("no exchange '{name}' in vhost '/'"))
}

/// Returns a random name with `prefix`, like RabbitMQ's `amq.gen-…` and `amq.ctag-…`.
pub(crate) fn generated_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}
