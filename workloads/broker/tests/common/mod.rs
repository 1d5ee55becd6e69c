//! Test support: a broker started in-process on free loopback ports, and lapin helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use telemetry_broker::{Broker, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test, so that a broken broker fails the test
/// instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker running in this process; shut down (and awaited) on `stop`.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<telemetry_broker::Result<()>>>,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(Config::ephemeral()).await
    }

    pub async fn start_with(config: Config) -> Self {
        telemetry_core::runtime::init_logging();
        let broker = Broker::bind(config)
            .await
            .expect("binding the broker on loopback");
        let addr = broker.local_addr();
        let admin_addr = broker.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(broker.run(async move {
            let _ = stopped.await;
        }));
        TestBroker {
            addr,
            admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        self.url_for("guest", "guest")
    }

    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@{}/%2f", self.addr)
    }

    pub async fn connect(&self) -> Connection {
        tokio::time::timeout(
            WAIT,
            Connection::connect(&self.url(), ConnectionProperties::default()),
        )
        .await
        .expect("connecting timed out")
        .expect("connecting to the test broker")
    }

    /// Stops the broker and waits until `run` returns.
    pub async fn stop(mut self) -> telemetry_broker::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("broker shutdown timed out")
            .expect("broker task panicked")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn declare(channel: &Channel, name: &str) -> lapin::Queue {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declaring a queue")
}

pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = connection
        .create_channel()
        .await
        .expect("opening a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("enabling publisher confirms");
    channel
}

/// Publishes and waits for the broker's confirm; returns whether it was an ack.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> bool {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("publishing");
    let confirmation = tokio::time::timeout(WAIT, confirm)
        .await
        .expect("confirm timed out")
        .expect("awaiting the confirm");
    confirmation.is_ack()
}

pub async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("publishing");
}

pub async fn consume(channel: &Channel, queue: &str, tag: &str) -> Consumer {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("starting a consumer")
}

/// Waits for the next delivery of `consumer`.
pub async fn next_delivery(consumer: &mut Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("no delivery within the wait limit")
        .expect("consumer stream ended")
        .expect("delivery failed")
}

/// Asserts that no delivery arrives within a short grace period.
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    let result = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(result.is_err(), "unexpected delivery: {result:?}");
}
