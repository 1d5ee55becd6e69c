//! The consumer between a real broker (RabbitMQ) and a real MongoDB-wire server.

use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mongodb::Client;
use mongodb::bson::doc;
use telemetry_core::testing::RabbitMq;
use telemetry_consumer::document::body_hash_id;
use telemetry_consumer::{Consumer, ConsumerConfig, ConsumerMetrics, ConsumerMode};
use telemetry_core::testing::MongoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn body(gpu_id: u32) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"2025-07-18T20:42:34Z","metric_name":"DCGM_FI_DEV_GPU_UTIL","gpu_id":{gpu_id},"device":"nvidia{gpu_id}","uuid":"GPU-{gpu_id}","model_name":"NVIDIA H100 80GB HBM3","hostname":"node-1","value":{gpu_id}.5,"labels":{{"team":"a, b"}}}}"#
    )
    .into_bytes()
}

async fn publish(channel: &Channel, message_id: Option<&str>, body: &[u8]) {
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    let confirm = channel
        .basic_publish(
            "telemetry".into(),
            "DCGM_FI_DEV_GPU_UTIL".into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap();
    confirm.await.unwrap();
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

struct Running {
    admin: SocketAddr,
    metrics: ConsumerMetrics,
    stop: oneshot::Sender<()>,
    task: JoinHandle<telemetry_consumer::Result<()>>,
}

async fn start_consumer(config: ConsumerConfig) -> Running {
    let consumer = Consumer::bind(config).await.unwrap();
    let admin = consumer.admin_addr();
    let metrics = consumer.metrics();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    for _ in 0..300 {
        if http_get(admin, "/readyz").await.0 == 200 {
            return Running {
                admin,
                metrics,
                stop,
                task,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("consumer not ready within 30 s");
}

/// Waits until the consumer has handled `count` deliveries (stored, duplicate or rejected).
async fn wait_handled(metrics: &ConsumerMetrics, count: u64) {
    for _ in 0..300 {
        let handled = metrics.stored.get() + metrics.duplicates.get() + metrics.rejected.get();
        if handled >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("consumer handled fewer than {count} deliveries within 30 s");
}

fn config(
    broker: &RabbitMq,
    mongo: &MongoServer,
    database: &str,
    mode: ConsumerMode,
) -> ConsumerConfig {
    ConsumerConfig {
        amqp_url: broker.url.clone(),
        mongodb_uri: mongo.uri.clone(),
        database: database.to_owned(),
        mode,
        batch_size: 4,
        prefetch: 10,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        ..ConsumerConfig::default()
    }
}

async fn producer_channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            "telemetry".into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel)
}

#[tokio::test]
async fn consumer_against_broker_and_mongodb() {
    let broker = RabbitMq::start();
    let mongo = MongoServer::start();
    shared_consumer_stores_once_and_rejects_invalid(&broker, &mongo).await;
    broadcast_consumers_each_get_every_record(&broker, &mongo).await;
}

async fn shared_consumer_stores_once_and_rejects_invalid(broker: &RabbitMq, mongo: &MongoServer) {
    let running = start_consumer(config(broker, mongo, "shared_db", ConsumerMode::Shared)).await;
    let (_connection, channel) = producer_channel(&broker.url).await;

    for gpu in 1..=5 {
        publish(&channel, Some(&format!("run:{gpu}")), &body(gpu)).await;
    }
    publish(&channel, Some("run:3"), &body(3)).await;
    publish(&channel, Some("bad-1"), b"not telemetry").await;
    publish(&channel, None, &body(9)).await;
    wait_handled(&running.metrics, 8).await;

    let (status, metrics_text) = http_get(running.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics_text.contains("telemetry_consumer_messages_stored_total 6"),
        "{metrics_text}"
    );

    running.stop.send(()).unwrap();
    running
        .task
        .await
        .unwrap()
        .expect("graceful stop returns Ok");

    assert_eq!(running.metrics.received.get(), 8);
    assert_eq!(running.metrics.stored.get(), 6);
    assert_eq!(running.metrics.duplicates.get(), 1);
    assert_eq!(running.metrics.rejected.get(), 1);

    let collection = Client::with_uri_str(&mongo.uri)
        .await
        .unwrap()
        .database("shared_db")
        .collection::<mongodb::bson::Document>("metrics");
    assert_eq!(collection.count_documents(doc! {}).await.unwrap(), 6);
    assert_eq!(
        collection
            .count_documents(doc! { "_id": "run:3" })
            .await
            .unwrap(),
        1
    );
    let derived = collection
        .find_one(doc! { "_id": body_hash_id(&body(9)) })
        .await
        .unwrap();
    assert_eq!(
        derived
            .expect("message without id stored under its body hash")
            .get_f64("value")
            .unwrap(),
        9.5
    );

    // Everything was acknowledged or rejected: nothing is left for redelivery.
    let queue = channel
        .queue_declare(
            "telemetry.metrics".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(queue.message_count(), 0);
}

async fn broadcast_consumers_each_get_every_record(broker: &RabbitMq, mongo: &MongoServer) {
    let region_a = start_consumer(config(broker, mongo, "region_a", ConsumerMode::Broadcast)).await;
    let region_b = start_consumer(config(broker, mongo, "region_b", ConsumerMode::Broadcast)).await;
    let (_connection, channel) = producer_channel(&broker.url).await;

    for gpu in 1..=3 {
        publish(&channel, Some(&format!("fan:{gpu}")), &body(gpu)).await;
    }
    wait_handled(&region_a.metrics, 3).await;
    wait_handled(&region_b.metrics, 3).await;
    for running in [region_a, region_b] {
        running.stop.send(()).unwrap();
        running.task.await.unwrap().unwrap();
    }

    let client = Client::with_uri_str(&mongo.uri).await.unwrap();
    for database in ["region_a", "region_b"] {
        let collection = client
            .database(database)
            .collection::<mongodb::bson::Document>("metrics");
        assert_eq!(
            collection.count_documents(doc! {}).await.unwrap(),
            3,
            "{database}"
        );
    }
}
