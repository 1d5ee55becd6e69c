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
    /// A latency phase at a fixed publish rate, run after the throughput phase.
    pub paced: Option<Paced>,
}

/// A phase in which the publishers together send a fixed number of messages per second, well
/// below saturation, so that publish-to-delivery latency is not the age of a backlog.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// Messages per second over all publishers, split evenly over the pairs.
    pub total_rate: u32,
    /// Messages each publisher sends in the paced phase.
    pub messages_per_pair: u64,
}

/// How often a paced publisher wakes up. Tokio's timer has millisecond resolution, so the
/// publisher wakes every millisecond and sends the messages its schedule has made due.
const PACING_TICK: Duration = Duration::from_millis(1);

/// Maximum number of messages one tick sends to catch up with the schedule. A publisher that fell behind
/// (a slow confirm, a descheduled task) catches up in small bursts instead of one large one.
const MAX_BURST: u64 = 8;

/// Messages due at `elapsed` since the start of a schedule of `rate` messages per second when
/// `sent` have gone out already, at most [`MAX_BURST`] and never past `total`.
pub fn due_now(elapsed: Duration, rate: f64, sent: u64, total: u64) -> u64 {
    // The first message is due at once, message n at n / rate seconds.
    let scheduled = ((elapsed.as_secs_f64() * rate).floor() as u64).saturating_add(1).min(total);
    scheduled.saturating_sub(sent).min(MAX_BURST)
}

/// What one case measured.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub delivered: u64,
    pub elapsed: Duration,
    pub messages_per_second: f64,
    pub latency: Percentiles,
    /// Present when the case asked for a paced phase.
    pub paced: Option<PacedResult>,
}

/// Latency and delivered rate of the paced phase.
#[derive(Debug, Clone)]
pub struct PacedResult {
    pub delivered: u64,
    /// Messages delivered per second over the phase, to check that both brokers got the rate.
    pub achieved_rate: f64,
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
        run_phase(&pairs, case, case.warmup_per_pair, body, None).await?;
    }
    let (delivered, elapsed, mut latencies) = run_phase(&pairs, case, case.messages_per_pair, body, None).await?;

    // The throughput phase ends when every consumer has received its share, so the queues
    // are empty when the paced phase starts.
    let paced = match case.paced {
        Some(paced) => {
            let rate_per_pair = f64::from(paced.total_rate) / case.pairs as f64;
            let (delivered, elapsed, mut latencies) =
                run_phase(&pairs, case, paced.messages_per_pair, body, Some(rate_per_pair)).await?;
            Some(PacedResult {
                delivered,
                achieved_rate: rate(delivered, elapsed),
                latency: percentiles(&mut latencies),
            })
        }
        None => None,
    };

    for pair in &pairs {
        pair.close().await;
    }
    Ok(CaseResult {
        delivered,
        elapsed,
        messages_per_second: rate(delivered, elapsed),
        latency: percentiles(&mut latencies),
        paced,
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
        if let Err(err) = self.publisher.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await {
            tracing::warn!(queue = %self.queue, cause = %err, "queue not deleted");
        }
        let _ = self.publisher_connection.close(200, "benchmark done".into()).await;
        let _ = self.consumer_connection.close(200, "benchmark done".into()).await;
    }
}

/// Sends `count` messages through every pair at once, each publisher as fast as its confirm
/// window allows or, with `rate_per_pair`, at that many messages per second.
/// Returns the messages delivered, the time from the first publish to the last delivery, and
/// every delivery's latency in ns.
async fn run_phase(
    pairs: &[Pair],
    case: &Case,
    count: u64,
    body: &[u8],
    rate_per_pair: Option<f64>,
) -> Result<(u64, Duration, Vec<u64>)> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(pairs.len() * 2);
    for (index, pair) in pairs.iter().enumerate() {
        let tag = format!("bench-consumer-{index}-{}", now_ns());
        let deliveries = pair
            .consumer
            .basic_consume(
                pair.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("starting the consumer"))?;
        let consumer = Consuming { channel: pair.consumer.clone(), tag, deliveries };
        tasks.push(tokio::spawn(consume(consumer, count, body.len(), case.timeout)));
        let publisher = Publisher { channel: pair.publisher.clone(), queue: pair.queue.clone(), durable: case.durable };
        tasks.push(tokio::spawn(publish(publisher, count, body.to_vec(), rate_per_pair)));
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

/// The channel and queue one publisher task sends on.
struct Publisher {
    channel: Channel,
    queue: String,
    durable: bool,
}

/// Publishes `count` messages, flat out or paced at `rate` messages per second, and waits
/// for every confirm.
async fn publish(publisher: Publisher, count: u64, body: Vec<u8>, rate: Option<f64>) -> Result<Side> {
    let mut unconfirmed = VecDeque::with_capacity(CONFIRM_WINDOW);
    let mut sent = 0;
    match rate {
        None => {
            while sent < count {
                publish_one(&publisher, &body, &mut unconfirmed).await?;
                sent += 1;
            }
        }
        Some(rate) => {
            let started = tokio::time::Instant::now();
            let mut ticks = tokio::time::interval(PACING_TICK);
            // A late tick does not fire the missed ones at once. due_now catches up instead,
            // in bursts of at most MAX_BURST.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while sent < count {
                ticks.tick().await;
                for _ in 0..due_now(started.elapsed(), rate, sent, count) {
                    publish_one(&publisher, &body, &mut unconfirmed).await?;
                    sent += 1;
                }
            }
        }
    }
    while let Some(confirm) = unconfirmed.pop_front() {
        wait_confirm(Some(confirm)).await?;
    }
    Ok(Side::Published)
}

/// Publishes one message stamped with the current time, first waiting for the oldest confirm
/// when the window is full.
async fn publish_one(
    publisher: &Publisher,
    body: &[u8],
    unconfirmed: &mut VecDeque<lapin::PublisherConfirm>,
) -> Result<()> {
    if unconfirmed.len() >= CONFIRM_WINDOW {
        wait_confirm(unconfirmed.pop_front()).await?;
    }
    // Stamped here, after any wait, so latency starts at the publish call and not at the tick.
    let mut headers = FieldTable::default();
    headers.insert(SENT_HEADER.into(), AMQPValue::LongLongInt(now_ns() as i64));
    let mut properties = BasicProperties::default().with_headers(headers);
    if publisher.durable {
        properties = properties.with_delivery_mode(PERSISTENT);
    }
    let confirm = publisher
        .channel
        .basic_publish("".into(), publisher.queue.as_str().into(), BasicPublishOptions::default(), body, properties)
        .await
        .map_err(Error::amqp("publishing"))?;
    unconfirmed.push_back(confirm);
    Ok(())
}

async fn wait_confirm(confirm: Option<lapin::PublisherConfirm>) -> Result<()> {
    let Some(confirm) = confirm else {
        return Ok(());
    };
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
            None => {
                return Err(Error::Check(format!("consumer stream ended after {} messages", latencies.len())));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_is_due_at_once() {
        assert_eq!(due_now(Duration::ZERO, 2_000.0, 0, 100), 1);
        assert_eq!(due_now(Duration::ZERO, 2_000.0, 1, 100), 0);
    }

    #[test]
    fn schedule_follows_the_rate() {
        // 2,000/s: message n is due at n * 0.5 ms, so after 10 ms messages 0..=20 are due.
        assert_eq!(due_now(Duration::from_millis(10), 2_000.0, 18, 1_000), 3);
        // 500/s: one message every 2 ms; at 3 ms messages 0 and 1 are due.
        assert_eq!(due_now(Duration::from_millis(3), 500.0, 1, 1_000), 1);
        assert_eq!(due_now(Duration::from_millis(3), 500.0, 2, 1_000), 0);
    }

    #[test]
    fn catching_up_is_limited_to_a_burst() {
        assert_eq!(due_now(Duration::from_secs(1), 2_000.0, 0, 100_000), MAX_BURST);
    }

    #[test]
    fn never_past_the_total() {
        assert_eq!(due_now(Duration::from_secs(60), 2_000.0, 98, 100), 2);
        assert_eq!(due_now(Duration::from_secs(60), 2_000.0, 100, 100), 0);
    }

    #[test]
    fn ahead_of_schedule_sends_nothing() {
        assert_eq!(due_now(Duration::from_millis(1), 1_000.0, 5, 100), 0);
    }
}
