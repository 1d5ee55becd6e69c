//! Exchanges, queues and bindings: routing, exclusive and auto-delete queues, errors.

mod common;

use common::*;
use lapin::options::{
    BasicCancelOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

async fn exchange(channel: &lapin::Channel, name: &str, kind: ExchangeKind) {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declaring an exchange");
}

async fn bind(channel: &lapin::Channel, queue: &str, exchange: &str, key: &str) {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("binding a queue");
}

/// Bodies ready in `queue`, taken with basic.get and no-ack.
async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..100 {
        let options = BasicGetOptions { no_ack: true };
        match channel
            .basic_get(queue.into(), options)
            .await
            .expect("basic.get")
        {
            Some(message) => {
                bodies.push(String::from_utf8(message.delivery.data).expect("UTF-8 body"))
            }
            None => break,
        }
    }
    bodies
}

fn protocol_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

#[tokio::test]
async fn topic_exchange_matches_patterns() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    exchange(&channel, "metrics", ExchangeKind::Topic).await;
    for queue in ["all", "gpu-util", "one-word"] {
        declare(&channel, queue).await;
    }
    bind(&channel, "all", "metrics", "#").await;
    bind(&channel, "gpu-util", "metrics", "gpu.*.util").await;
    bind(&channel, "one-word", "metrics", "*").await;

    for key in ["gpu.0.util", "gpu.0.temp", "host"] {
        assert!(publish_confirmed(&channel, "metrics", key, key.as_bytes()).await);
    }
    assert_eq!(
        drain(&channel, "all").await,
        ["gpu.0.util", "gpu.0.temp", "host"]
    );
    assert_eq!(drain(&channel, "gpu-util").await, ["gpu.0.util"]);
    assert_eq!(drain(&channel, "one-word").await, ["host"]);
}

#[tokio::test]
async fn fanout_and_direct_exchanges_route() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    exchange(&channel, "broadcast", ExchangeKind::Fanout).await;
    for queue in ["left", "right", "direct-a", "direct-b"] {
        declare(&channel, queue).await;
    }
    bind(&channel, "left", "broadcast", "ignored").await;
    bind(&channel, "right", "broadcast", "").await;
    bind(&channel, "direct-a", "amq.direct", "a").await;
    bind(&channel, "direct-b", "amq.direct", "b").await;

    assert!(publish_confirmed(&channel, "broadcast", "any", b"to-all").await);
    assert!(publish_confirmed(&channel, "amq.direct", "b", b"to-b").await);
    assert_eq!(drain(&channel, "left").await, ["to-all"]);
    assert_eq!(drain(&channel, "right").await, ["to-all"]);
    assert!(drain(&channel, "direct-a").await.is_empty());
    assert_eq!(drain(&channel, "direct-b").await, ["to-b"]);
}

#[tokio::test]
async fn exclusive_server_named_queue_deleted_on_close() {
    let broker = TestBroker::start().await;
    let owner = broker.connect().await;
    let owner_channel = owner.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = owner_channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .expect("declaring");
    let name = queue.name().as_str().to_owned();
    assert!(name.starts_with("amq.gen-"), "server-named queue: {name}");

    let other = broker.connect().await;
    let other_channel = other.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let locked = other_channel
        .queue_declare(name.as_str().into(), passive, FieldTable::default())
        .await
        .expect_err("locked");
    assert_eq!(protocol_code(&locked), Some(405), "{locked}");

    owner
        .close(200, "bye".into())
        .await
        .expect("closing the owner");
    let check = other.create_channel().await.expect("channel");
    let gone = check
        .queue_declare(name.as_str().into(), passive, FieldTable::default())
        .await
        .expect_err("deleted");
    assert_eq!(protocol_code(&gone), Some(404), "{gone}");
}

#[tokio::test]
async fn auto_delete_queue_deleted_after_last_cancel() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("transient".into(), options, FieldTable::default())
        .await
        .expect("declaring");
    let _consumer = consume(&channel, "transient", "only").await;
    channel
        .basic_cancel("only".into(), BasicCancelOptions::default())
        .await
        .expect("cancelling");

    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let gone = channel
        .queue_declare("transient".into(), passive, FieldTable::default())
        .await
        .expect_err("deleted");
    assert_eq!(protocol_code(&gone), Some(404), "{gone}");
}

#[tokio::test]
async fn passive_declare_of_missing_queue_closes_channel() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let error = channel
        .queue_declare("missing".into(), passive, FieldTable::default())
        .await
        .expect_err("missing queue");
    assert_eq!(protocol_code(&error), Some(404), "{error}");
    assert!(
        !channel.status().connected(),
        "a soft error closes the channel"
    );
    assert!(
        connection.status().connected(),
        "a soft error keeps the connection"
    );
    connection
        .create_channel()
        .await
        .expect("the connection still opens channels");
}

#[tokio::test]
async fn mandatory_unroutable_returned() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let confirm = channel
        .basic_publish(
            "amq.direct".into(),
            "nobody".into(),
            options,
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publishing");
    let confirmation = tokio::time::timeout(WAIT, confirm)
        .await
        .expect("confirm timed out")
        .expect("confirm");
    assert!(
        confirmation.is_ack(),
        "an unroutable message is still confirmed"
    );
    let returned = confirmation
        .take_message()
        .expect("basic.return for a mandatory unroutable message");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
}

#[tokio::test]
async fn wrong_password_refused() {
    let broker = TestBroker::start().await;
    let result = lapin::Connection::connect(
        &broker.url_for("guest", "wrong"),
        lapin::ConnectionProperties::default(),
    )
    .await;
    let error = result.expect_err("a wrong password must be refused");
    assert_eq!(protocol_code(&error), Some(403), "{error}");
}

#[tokio::test]
async fn body_larger_than_frame_max_round_trips() {
    // 8192 is the smallest frame_max lapin negotiates.
    let config = telemetry_broker::Config {
        frame_max: 8192,
        ..telemetry_broker::Config::ephemeral()
    };
    let broker = TestBroker::start_with(config).await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare(&channel, "large").await;
    let body: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
    assert!(publish_confirmed(&channel, "", "large", &body).await);

    let mut consumer = consume(&channel, "large", "reader").await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data.len(), body.len());
    assert_eq!(delivery.data, body);
}
