//! Publishing and consuming with lapin against the in-process broker.

mod common;

use common::*;
use lapin::options::{BasicAckOptions, BasicGetOptions};

#[tokio::test]
async fn confirmed_publish_consumed_with_ack() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare(&channel, "jobs").await;

    assert!(publish_confirmed(&channel, "", "jobs", b"hello").await);

    let consumer_channel = connection
        .create_channel()
        .await
        .expect("opening a channel");
    let mut consumer = consume(&consumer_channel, "jobs", "worker").await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, b"hello");
    assert_eq!(delivery.routing_key.as_str(), "jobs");
    assert!(!delivery.redelivered);
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("acking");

    let left = consumer_channel
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .expect("basic.get");
    assert!(left.is_none(), "the acked message must not come back");
    broker.stop().await.expect("clean shutdown");
}
