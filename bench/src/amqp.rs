//! The AMQP 0-9-1 throughput and latency harness, the same for every broker.
//!
//! Each publisher/consumer pair owns one queue on the default exchange and its own two
//! connections. Publishers use publisher confirms with a bounded window of unconfirmed
//! messages; consumers use manual acks (one `basic.ack` per delivery) under a `basic.qos`
//! prefetch. Every message carries its send time, in nanoseconds since a process-wide
//! [`Instant`], in the `x-bench-sent-ns` header, and the consumer subtracts it from the same
//! monotonic clock, so the latency is publish call to delivery in the consumer.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::error::{Error, Result};
use crate::stats::{Percentiles, percentiles, rate};

/// Header that carries the send time of a message.
const SENT_HEADER: &str = "x-bench-sent-ns";

/// Unconfirmed messages a publisher may have outstanding before it waits for the oldest
/// confirm. Large enough to keep the connection busy, small enough that the queue depth, and
/// with it the latency, stays bounded by window + prefetch per pair.
const CONFIRM_WINDOW: usize = 500;

/// AMQP delivery mode for persistent messages (basic class, `delivery-mode` property).
const PERSISTENT: u8 = 2;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Case {
    /// Publisher/consumer pairs, each with its own queue and connections.
    pub pairs: usize,
    /// `basic.qos` prefetch count of every consumer.
    pub prefetch: u16,
    /// Durable queues and persistent (delivery mode 2) messages.
    pub durable: bool,
    /// Messages each publisher sends in the measured phase.
    pub messages_per_pair: u64,
    /// Messages each publisher sends first, unmeasured, to warm up both sides.
    pub warmup_per_pair: u64,
    /// Upper bound on one phase; a phase that exceeds it fails the case.
    pub timeout: Duration,
}

/// What one case measured.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub delivered: u64,
    pub elapsed: Duration,
    pub messages_per_second: f64,
    pub latency: Percentiles,
}

/// Nanoseconds since a fixed instant of this process, the clock shared by every publisher and
/// consumer task.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Runs `case` against the broker at `url` and returns its throughput and latency.
/// Every message body is `body`, which must be acceptable to the broker.
pub async fn run_case(url: &str, case: &Case, body: &[u8], run_tag: &str) -> Result<CaseResult> {
    let mut pairs = Vec::with_capacity(case.pairs);
    for index in 0..case.pairs {
        pairs.push(Pair::open(url, &format!("bench.{run_tag}.{index}"), case).await?);
    }

    if case.warmup_per_pair > 0 {
        run_phase(&pairs, case, case.warmup_per_pair, body).await?;
    }
    let (delivered, elapsed, mut latencies) = run_phase(&pairs, case, case.messages_per_pair, body).await?;

    for pair in &pairs {
        pair.close().await;
    }
    Ok(CaseResult {
        delivered,
        elapsed,
        messages_per_second: rate(delivered, elapsed),
        latency: percentiles(&mut latencies),
    })
}

/// The connections, channels and queue of one publisher/consumer pair.
struct Pair {
    queue: String,
    publisher_connection: Connection,
    publisher: Channel,
    consumer_connection: Connection,
    consumer: Channel,
}

impl Pair {
    async fn open(url: &str, queue: &str, case: &Case) -> Result<Pair> {
        let properties = || ConnectionProperties::default().with_connection_name(queue.into());
        let publisher_connection =
            Connection::connect(url, properties()).await.map_err(Error::amqp("connecting the publisher"))?;
        let consumer_connection =
            Connection::connect(url, properties()).await.map_err(Error::amqp("connecting the consumer"))?;
        let publisher = publisher_connection.create_channel().await.map_err(Error::amqp("opening a channel"))?;
        let consumer = consumer_connection.create_channel().await.map_err(Error::amqp("opening a channel"))?;

        let options = QueueDeclareOptions { durable: case.durable, ..QueueDeclareOptions::default() };
        publisher
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .map_err(Error::amqp("declaring the queue"))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(Error::amqp("selecting confirms"))?;
        consumer
            .basic_qos(case.prefetch, BasicQosOptions::default())
            .await
            .map_err(Error::amqp("setting the prefetch"))?;

        Ok(Pair { queue: queue.to_owned(), publisher_connection, publisher, consumer_connection, consumer })
    }

    async fn close(&self) {
        if let Err(err) = self.publisher.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await
        {
            tracing::warn!(queue = %self.queue, cause = %err, "queue not deleted");
        }
        let _ = self.publisher_connection.close(200, "benchmark done".into()).await;
        let _ = self.consumer_connection.close(200, "benchmark done".into()).await;
    }
}

/// Sends `count` messages through every pair at once; returns the messages delivered, the
/// time from the first publish to the last delivery, and every delivery's latency in ns.
async fn run_phase(pairs: &[Pair], case: &Case, count: u64, body: &[u8]) -> Result<(u64, Duration, Vec<u64>)> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(pairs.len() * 2);
    for (index, pair) in pairs.iter().enumerate() {
        let tag = format!("bench-consumer-{index}-{}", now_ns());
        let deliveries = pair
            .consumer
            .basic_consume(pair.queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(Error::amqp("starting the consumer"))?;
        let consumer = Consuming { channel: pair.consumer.clone(), tag, deliveries };
        tasks.push(tokio::spawn(consume(consumer, count, body.len(), case.timeout)));
        tasks.push(tokio::spawn(publish(pair.publisher.clone(), pair.queue.clone(), count, body.to_vec(), case.durable)));
    }

    let deadline = tokio::time::Instant::now() + case.timeout + Duration::from_secs(5);
    let mut latencies = Vec::with_capacity((count as usize) * pairs.len());
    let mut delivered = 0;
    for task in tasks {
        let outcome = tokio::time::timeout_at(deadline, task).await.map_err(|_| Error::Timeout {
            what: "AMQP benchmark phase".into(),
            timeout: case.timeout,
            detail: format!("{count} messages per pair were not all published and delivered"),
        })?;
        match outcome.map_err(|err| Error::Check(format!("benchmark task failed: {err}")))?? {
            Side::Published => {}
            Side::Consumed(samples) => {
                delivered += samples.len() as u64;
                latencies.extend(samples);
            }
        }
    }
    Ok((delivered, started.elapsed(), latencies))
}

enum Side {
    Published,
    Consumed(Vec<u64>),
}

async fn publish(channel: Channel, queue: String, count: u64, body: Vec<u8>, durable: bool) -> Result<Side> {
    let mut unconfirmed = VecDeque::with_capacity(CONFIRM_WINDOW);
    for _ in 0..count {
        if unconfirmed.len() >= CONFIRM_WINDOW {
            wait_confirm(unconfirmed.pop_front()).await?;
        }
        let mut headers = FieldTable::default();
        headers.insert(SENT_HEADER.into(), AMQPValue::LongLongInt(now_ns() as i64));
        let mut properties = BasicProperties::default().with_headers(headers);
        if durable {
            properties = properties.with_delivery_mode(PERSISTENT);
        }
        let confirm = channel
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
            .await
            .map_err(Error::amqp("publishing"))?;
        unconfirmed.push_back(confirm);
    }
    while let Some(confirm) = unconfirmed.pop_front() {
        wait_confirm(Some(confirm)).await?;
    }
    Ok(Side::Published)
}

async fn wait_confirm(confirm: Option<lapin::PublisherConfirm>) -> Result<()> {
    let Some(confirm) = confirm else { return Ok(()) };
    let confirmation = confirm.await.map_err(Error::amqp("waiting for a publisher confirm"))?;
    if confirmation.is_nack() {
        return Err(Error::Check("the broker nacked a published message".into()));
    }
    Ok(())
}

/// A consumer started on one channel, cancelled when its phase has received everything.
struct Consuming {
    channel: Channel,
    tag: String,
    deliveries: lapin::Consumer,
}

async fn consume(consumer: Consuming, count: u64, body_len: usize, timeout: Duration) -> Result<Side> {
    let Consuming { channel, tag, mut deliveries } = consumer;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut latencies = Vec::with_capacity(count as usize);
    while (latencies.len() as u64) < count {
        let next = tokio::time::timeout_at(deadline, deliveries.next()).await.map_err(|_| Error::Timeout {
            what: "consumer".into(),
            timeout,
            detail: format!("{} of {count} messages delivered", latencies.len()),
        })?;
        let delivery = match next {
            Some(delivery) => delivery.map_err(Error::amqp("receiving a delivery"))?,
            None => return Err(Error::Check(format!("consumer stream ended after {} messages", latencies.len()))),
        };
        let received = now_ns();
        let sent = sent_ns(&delivery.properties)
            .ok_or_else(|| Error::Check(format!("delivery without a {SENT_HEADER} header")))?;
        if delivery.data.len() != body_len {
            return Err(Error::Check(format!("body of {} bytes delivered, {body_len} sent", delivery.data.len())));
        }
        latencies.push(received.saturating_sub(sent));
        delivery.ack(BasicAckOptions::default()).await.map_err(Error::amqp("acking"))?;
    }
    // The queue is empty now; cancelling leaves the next phase's consumer alone on it.
    channel
        .basic_cancel(tag.as_str().into(), lapin::options::BasicCancelOptions::default())
        .await
        .map_err(Error::amqp("cancelling the consumer"))?;
    Ok(Side::Consumed(latencies))
}

/// Waits until `queue` exists on the broker at `url` and has at least one consumer, which is
/// when a pipeline consumer is ready to receive.
pub async fn wait_for_consumer(url: &str, queue: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(Error::amqp("connecting to check the queue"))?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let mut consumers = 0;
    while Instant::now() < deadline {
        // A passive declare of a missing queue closes the channel (404), so each try gets one.
        let channel = connection.create_channel().await.map_err(Error::amqp("opening a channel"))?;
        if let Ok(declared) = channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
            consumers = declared.consumer_count();
            let _ = channel.close(200, "checked".into()).await;
            if consumers > 0 {
                let _ = connection.close(200, "checked".into()).await;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = connection.close(200, "checked".into()).await;
    Err(Error::Timeout {
        what: format!("queue {queue}"),
        timeout,
        detail: format!("it has {consumers} consumers; the pipeline consumer did not subscribe"),
    })
}

fn sent_ns(properties: &BasicProperties) -> Option<u64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(SENT_HEADER)? {
        AMQPValue::LongLongInt(value) => u64::try_from(*value).ok(),
        AMQPValue::Timestamp(value) => Some(*value),
        _ => None,
    }
}
