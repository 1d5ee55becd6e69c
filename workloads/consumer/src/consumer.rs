//! The consume loop: receive deliveries, write them to MongoDB in batches, acknowledge each
//! batch after its write, reconnect after a lost connection and stop gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use mongodb::Client;
use mongodb::options::ClientOptions;
use prometheus_client::registry::Registry;
use telemetry_core::TelemetryRecord;
use telemetry_core::admin::{self, Readiness};
use telemetry_core::contract::ALL_METRICS_BINDING;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use crate::batch::{Batch, FullBatch};
use crate::config::{ConsumerConfig, ConsumerMode};
use crate::document::{document_id, to_document};
use crate::error::{Error, Result};
use crate::metrics::ConsumerMetrics;
use telemetry_core::redact_url;
use crate::store::MetricsStore;

/// Maximum wait for deliveries the broker sent before it confirmed a `basic.cancel`.
const CANCEL_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// `connection_name` client property, shown by the broker's connection list.
const CONNECTION_NAME: &str = "telemetry-consumer";

/// Runs a consumer with `config` until `shutdown` completes.
pub async fn run(
    config: ConsumerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Consumer::bind(config).await?.run(shutdown).await
}

/// A consumer whose admin server is bound but not yet serving.
///
/// Binding first lets a caller that asked for port 0 learn the admin address before the run.
pub struct Consumer {
    config: ConsumerConfig,
    admin_listener: TcpListener,
    registry: Arc<Registry>,
    metrics: ConsumerMetrics,
    readiness: Readiness,
    store: MetricsStore,
}

/// Reason a consuming session ended.
enum SessionEnd {
    /// The shutdown signal arrived and the session stopped gracefully.
    Stopped,
    /// The connection or channel failed; reconnect.
    Lost(String),
}

impl Consumer {
    /// Validates `config`, binds the admin address and prepares the MongoDB client (which
    /// connects lazily, on first use).
    pub async fn bind(config: ConsumerConfig) -> Result<Self> {
        config.validate()?;
        let admin_listener = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|source| Error::AdminBind {
                addr: config.admin_addr,
                source,
            })?;

        let mongo_error = |source| Error::MongoUri {
            uri: redact_url(&config.mongodb_uri),
            source,
        };
        let mut options = ClientOptions::parse(&config.mongodb_uri)
            .await
            .map_err(mongo_error)?;
        options.app_name = Some(CONNECTION_NAME.to_owned());
        let client = Client::with_options(options).map_err(mongo_error)?;
        let store = MetricsStore::new(&client.database(&config.database));

        let mut registry = Registry::default();
        let metrics = ConsumerMetrics::register(&mut registry);
        Ok(Consumer {
            config,
            admin_listener,
            registry: Arc::new(registry),
            metrics,
            readiness: Readiness::default(),
            store,
        })
    }

    /// Address of the `/healthz`, `/readyz` and `/metrics` server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// The consumer's metrics; clones share their values with the running consumer.
    pub fn metrics(&self) -> ConsumerMetrics {
        self.metrics.clone()
    }

    /// Serves the admin routes and consumes until `shutdown` completes. Returns `Ok` after a
    /// graceful stop; broker and MongoDB failures are retried, not returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (stop_sender, stop) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_sender.send(true);
        });

        let admin = {
            let router = admin::router(self.registry.clone(), self.readiness.clone());
            let mut stop = stop.clone();
            let listener = self.admin_listener;
            tracing::info!(addr = %listener.local_addr().expect("bound listener"), "admin server listening");
            tokio::spawn(async move {
                let signal = async move { stopped(&mut stop).await };
                if let Err(err) = axum::serve(listener, router)
                    .with_graceful_shutdown(signal)
                    .await
                {
                    tracing::error!(cause = %err, "admin server failed");
                }
            })
        };

        let worker = Worker {
            config: self.config,
            metrics: self.metrics,
            readiness: self.readiness,
            store: self.store,
            stop,
        };
        worker.run().await;

        watcher.abort();
        if let Err(err) = admin.await {
            tracing::error!(cause = %err, "admin server task panicked");
        }
        tracing::info!("consumer stopped");
        Ok(())
    }
}

struct Worker {
    config: ConsumerConfig,
    metrics: ConsumerMetrics,
    readiness: Readiness,
    store: MetricsStore,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let url = redact_url(&self.config.amqp_url);
        tracing::info!(
            amqp_url = %url,
            mongodb_uri = %redact_url(&self.config.mongodb_uri),
            database = %self.config.database,
            mode = %self.config.mode,
            batch_size = self.config.batch_size,
            prefetch = self.config.prefetch,
            "consumer starting"
        );
        if !self.ensure_indexes().await {
            return;
        }

        let mut delay = self.config.retry_delay;
        let mut first = true;
        while !self.stopping() {
            let end = match self.open_session().await {
                Ok((connection, channel)) => {
                    if !first {
                        self.metrics.reconnects.inc();
                    }
                    first = false;
                    delay = self.config.retry_delay;
                    let end = self.consume(&channel).await;
                    self.readiness.set(false);
                    close(&connection, &channel).await;
                    end
                }
                Err(err) => SessionEnd::Lost(err.to_string()),
            };

            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Lost(cause) => {
                    tracing::warn!(amqp_url = %url, cause = %cause, retry_in_ms = delay.as_millis() as u64,
                        "broker connection lost or refused; reconnecting");
                    if !self.sleep_unless_stopped(delay).await {
                        break;
                    }
                    delay = (delay * 2).min(self.config.max_retry_delay);
                }
            }
        }
        self.readiness.set(false);
    }

    /// Creates the API's indexes, retrying until MongoDB responds. Returns false when stopped first.
    async fn ensure_indexes(&mut self) -> bool {
        let mut delay = self.config.retry_delay;
        loop {
            match self.store.ensure_indexes().await {
                Ok(()) => {
                    tracing::info!(database = %self.config.database, "metrics indexes in place");
                    return true;
                }
                Err(err) => {
                    tracing::warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "creating the metrics indexes failed; retrying");
                }
            }
            if !self.sleep_unless_stopped(delay).await {
                return false;
            }
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
    }

    async fn open_session(&self) -> lapin::Result<(Connection, Channel)> {
        let properties =
            ConnectionProperties::default().with_connection_name(CONNECTION_NAME.into());
        let connection = Connection::connect(&self.config.amqp_url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        Ok((connection, channel))
    }

    /// Declares the topology of the configured mode and returns the queue to consume from.
    async fn declare_queue(&self, channel: &Channel) -> lapin::Result<String> {
        let exchange_options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                exchange_options,
                FieldTable::default(),
            )
            .await?;

        let (name, options) = match self.config.mode {
            ConsumerMode::Shared => (
                self.config.shared_queue.as_str(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
            ),
            // With an empty name the broker generates one.
            ConsumerMode::Broadcast => (
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            ),
        };
        let queue = channel
            .queue_declare(name.into(), options, FieldTable::default())
            .await?;
        let queue = queue.name().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                self.config.exchange.as_str().into(),
                ALL_METRICS_BINDING.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(queue)
    }

    async fn consume(&mut self, channel: &Channel) -> SessionEnd {
        let queue = match self.declare_queue(channel).await {
            Ok(queue) => queue,
            Err(err) => return SessionEnd::Lost(format!("declaring the queue failed: {err}")),
        };
        let options = BasicConsumeOptions::default();
        let mut deliveries = match channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                options,
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => consumer,
            Err(err) => return SessionEnd::Lost(format!("basic.consume on {queue} failed: {err}")),
        };
        tracing::info!(queue = %queue, mode = %self.config.mode, consumer_tag = %deliveries.tag(), "consuming");
        self.readiness.set(true);

        let mut batch = Batch::new(self.config.batch_size);
        let mut stop = self.stop.clone();
        loop {
            let deadline = batch.deadline(self.config.batch_timeout);
            tokio::select! {
                biased;

                () = stopped(&mut stop) => {
                    self.readiness.set(false);
                    self.finish(channel, &mut deliveries, &mut batch).await;
                    return SessionEnd::Stopped;
                }
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if let Err(err) = self.accept(channel, delivery, &mut batch).await {
                            return SessionEnd::Lost(err.to_string());
                        }
                        if batch.is_full()
                            && let Err(end) = self.flush(channel, &mut batch).await
                        {
                            return end;
                        }
                    }
                    Some(Err(err)) => return SessionEnd::Lost(err.to_string()),
                    None => return SessionEnd::Lost(format!("the broker cancelled the consumer on {queue}")),
                },
                () = sleep_until_or_forever(deadline) => {
                    if let Err(end) = self.flush(channel, &mut batch).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Adds a delivery's record to the batch, or rejects it without requeue when its body is
    /// not valid telemetry, so that the broker does not deliver it again and again.
    async fn accept(
        &self,
        channel: &Channel,
        delivery: Delivery,
        batch: &mut Batch,
    ) -> lapin::Result<()> {
        self.metrics.received.inc();
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        let (id, derived) = document_id(message_id, &delivery.data);

        let document = TelemetryRecord::from_json(&delivery.data)
            .map_err(|err| err.to_string())
            .and_then(|record| to_document(&id, &record).map_err(|err| err.to_string()));
        match document {
            Ok(document) => {
                if derived {
                    tracing::warn!(id = %id, routing_key = %delivery.routing_key, "message has no message-id; using the hash of its body as _id");
                }
                batch.push(delivery.delivery_tag, document);
            }
            Err(cause) => {
                self.metrics.rejected.inc();
                tracing::warn!(message_id = message_id.unwrap_or(""), routing_key = %delivery.routing_key,
                    redelivered = delivery.redelivered, cause = %cause, "rejecting invalid telemetry message without requeue");
                channel
                    .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes the batch and acknowledges it. Returns `Err` when the session must end: the ack
    /// failed (the written records come back as redeliveries and are deduplicated) or a
    /// shutdown gave up on the write.
    async fn flush(&self, channel: &Channel, batch: &mut Batch) -> Result<(), SessionEnd> {
        let Some(FullBatch {
            documents,
            last_tag,
        }) = batch.take()
        else {
            return Ok(());
        };
        if !self.write(&documents).await {
            return Err(SessionEnd::Stopped);
        }
        match channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => Err(SessionEnd::Lost(format!(
                "acknowledging up to delivery tag {last_tag} failed: {err}"
            ))),
        }
    }

    /// Writes `documents`, retrying with a doubling delay for as long as the consumer runs.
    /// After a shutdown signal it retries for at most `shutdown_timeout`, then returns false
    /// and leaves the messages unacknowledged for redelivery.
    async fn write(&self, documents: &[mongodb::bson::Document]) -> bool {
        let mut delay = self.config.retry_delay;
        let mut give_up_at: Option<Instant> = None;
        let mut stop = self.stop.clone();
        for attempt in 1u64.. {
            let started = Instant::now();
            let error = match self.store.insert_batch(documents).await {
                Ok(outcome) => {
                    self.metrics
                        .batch_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.stored.inc_by(outcome.inserted as u64);
                    self.metrics.duplicates.inc_by(outcome.duplicates as u64);
                    if outcome.duplicates > 0 {
                        tracing::debug!(
                            duplicates = outcome.duplicates,
                            "skipped records already stored"
                        );
                    }
                    return true;
                }
                Err(error) => error,
            };

            self.metrics.write_failures.inc();
            let now = Instant::now();
            if *stop.borrow() {
                let deadline = *give_up_at.get_or_insert(now + self.config.shutdown_timeout);
                if now >= deadline {
                    tracing::error!(cause = %error, batch_size = documents.len(), attempt,
                        "giving up on the batch at shutdown; the broker will redeliver its messages");
                    return false;
                }
            }
            tracing::warn!(cause = %error, batch_size = documents.len(), attempt, retry_in_ms = delay.as_millis() as u64,
                "writing the batch to MongoDB failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // A shutdown during the wait starts the shutdown deadline at once.
                () = stopped(&mut stop), if give_up_at.is_none() => {}
            }
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
        unreachable!("the retry loop only ends by returning")
    }

    /// Stops gracefully: cancels the consumer so the broker sends nothing more, stores the
    /// deliveries already received, acknowledges them and lets the caller close the channel.
    async fn finish(&self, channel: &Channel, deliveries: &mut lapin::Consumer, batch: &mut Batch) {
        let tag = deliveries.tag();
        if let Err(err) = channel
            .basic_cancel(tag.clone(), BasicCancelOptions::default())
            .await
        {
            tracing::warn!(consumer_tag = %tag, cause = %err, "basic.cancel failed; unacknowledged messages return to the queue");
        }

        // Deliveries sent before the cancel are still buffered; storing them now saves the
        // broker from redelivering them to another consumer.
        let drain_until = Instant::now() + CANCEL_DRAIN_TIMEOUT;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout_at(drain_until, deliveries.next()).await
        {
            if self.accept(channel, delivery, batch).await.is_err() {
                break;
            }
            if batch.is_full() && self.flush(channel, batch).await.is_err() {
                return;
            }
        }
        let pending = batch.len();
        if self.flush(channel, batch).await.is_ok() {
            tracing::info!(flushed = pending, "stored and acknowledged the last batch");
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `delay`; returns false when a shutdown signal arrives first.
    async fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stopped(&mut stop) => false,
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes the channel, which returns its unacknowledged messages to the queue, then the connection.
async fn close(connection: &Connection, channel: &Channel) {
    if let Err(err) = channel.close(200, "consumer closing".into()).await {
        tracing::debug!(cause = %err, "closing the channel failed");
    }
    if let Err(err) = connection.close(200, "consumer closing".into()).await {
        tracing::debug!(cause = %err, "closing the connection failed");
    }
}

/// Completes once `stop` holds true (or its sender is gone). Unlike `wait_for`, it keeps no
/// borrow of the value, so futures awaiting it stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
