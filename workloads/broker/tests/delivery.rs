//! Delivery semantics: round-robin, prefetch, requeue on nack/reject and on close.

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

/// Ready (undelivered) messages of `queue`, read with a passive queue.declare.
async fn ready_count(channel: &lapin::Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

#[tokio::test]
async fn consumers_share_queue_round_robin() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let publisher = confirm_channel(&connection).await;
    declare(&publisher, "shared").await;
    let first_channel = connection.create_channel().await.expect("channel");
    let second_channel = connection.create_channel().await.expect("channel");
    let mut first = consume(&first_channel, "shared", "first").await;
    let mut second = consume(&second_channel, "shared", "second").await;

    for body in [b"m1", b"m2", b"m3", b"m4"] {
        assert!(publish_confirmed(&publisher, "", "shared", body).await);
    }

    assert_eq!(next_delivery(&mut first).await.data, b"m1");
    assert_eq!(next_delivery(&mut second).await.data, b"m2");
    assert_eq!(next_delivery(&mut first).await.data, b"m3");
    assert_eq!(next_delivery(&mut second).await.data, b"m4");
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let publisher = confirm_channel(&connection).await;
    declare(&publisher, "limited").await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(2, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut consumer = consume(&channel, "limited", "slow").await;

    for index in 0..5 {
        assert!(publish_confirmed(&publisher, "", "limited", format!("m{index}").as_bytes()).await);
    }
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!(first.data, b"m0");
    assert_eq!(second.data, b"m1");
    assert_eq!(
        ready_count(&publisher, "limited").await,
        3,
        "prefetch 2 leaves 3 of 5 in the queue"
    );

    first
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"m2");
    assert_eq!(ready_count(&publisher, "limited").await, 2);
}

#[tokio::test]
async fn global_prefetch_shared_by_channel_consumers() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let publisher = confirm_channel(&connection).await;
    declare(&publisher, "global-a").await;
    declare(&publisher, "global-b").await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(1, BasicQosOptions { global: true })
        .await
        .expect("basic.qos global");
    let mut consumer_a = consume(&channel, "global-a", "a").await;
    let _consumer_b = consume(&channel, "global-b", "b").await;

    assert!(publish_confirmed(&publisher, "", "global-a", b"a1").await);
    assert!(publish_confirmed(&publisher, "", "global-b", b"b1").await);
    let delivery = next_delivery(&mut consumer_a).await;
    assert_eq!(delivery.data, b"a1");
    assert_eq!(
        ready_count(&publisher, "global-b").await,
        1,
        "the channel-wide limit of 1 is taken by a1"
    );
}

#[tokio::test]
async fn nack_and_reject_requeue_redelivered() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare(&channel, "retry").await;
    assert!(publish_confirmed(&channel, "", "retry", b"again").await);
    let mut consumer = consume(&channel, "retry", "retrier").await;

    let first = next_delivery(&mut consumer).await;
    assert!(!first.redelivered);
    first
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .expect("nack");

    let second = next_delivery(&mut consumer).await;
    assert_eq!(second.data, b"again");
    assert!(
        second.redelivered,
        "a nacked and requeued message is marked redelivered"
    );
    second
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .expect("reject");

    let third = next_delivery(&mut consumer).await;
    assert!(third.redelivered);
    third
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject without requeue");
    assert_eq!(
        ready_count(&channel, "retry").await,
        0,
        "reject without requeue drops the message"
    );
}

#[tokio::test]
async fn closed_channel_requeues_unacked() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let publisher = confirm_channel(&connection).await;
    declare(&publisher, "handover").await;
    assert!(publish_confirmed(&publisher, "", "handover", b"one").await);
    assert!(publish_confirmed(&publisher, "", "handover", b"two").await);

    let leaving = connection.create_channel().await.expect("channel");
    let mut consumer = consume(&leaving, "handover", "leaving").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"one");
    assert_eq!(next_delivery(&mut consumer).await.data, b"two");
    leaving
        .close(200, "done".into())
        .await
        .expect("closing the channel");

    let other_connection = broker.connect().await;
    let staying = other_connection.create_channel().await.expect("channel");
    let mut successor = consume(&staying, "handover", "staying").await;
    let first = next_delivery(&mut successor).await;
    let second = next_delivery(&mut successor).await;
    assert_eq!(first.data, b"one", "requeued messages keep their order");
    assert!(first.redelivered);
    assert_eq!(second.data, b"two");
    assert!(second.redelivered);
}

#[tokio::test]
async fn closed_connection_requeues_unacked() {
    let broker = TestBroker::start().await;
    let publisher_connection = broker.connect().await;
    let publisher = confirm_channel(&publisher_connection).await;
    declare(&publisher, "orphaned").await;
    assert!(publish_confirmed(&publisher, "", "orphaned", b"payload").await);

    let leaving = broker.connect().await;
    let channel = leaving.create_channel().await.expect("channel");
    let mut consumer = consume(&channel, "orphaned", "leaving").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"payload");
    leaving
        .close(200, "bye".into())
        .await
        .expect("closing the connection");

    let successor_channel = publisher_connection
        .create_channel()
        .await
        .expect("channel");
    let mut successor = consume(&successor_channel, "orphaned", "successor").await;
    let delivery = next_delivery(&mut successor).await;
    assert_eq!(delivery.data, b"payload");
    assert!(delivery.redelivered);
}

#[tokio::test]
async fn multiple_ack_settles_all_earlier() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare(&channel, "batch").await;
    for index in 0..3 {
        assert!(publish_confirmed(&channel, "", "batch", format!("m{index}").as_bytes()).await);
    }
    let mut consumer = consume(&channel, "batch", "batcher").await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(next_delivery(&mut consumer).await);
    }
    let last = last.expect("three deliveries");
    last.acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .expect("multiple ack");
    channel
        .close(200, "done".into())
        .await
        .expect("closing the channel");

    let check = connection.create_channel().await.expect("channel");
    assert_eq!(
        ready_count(&check, "batch").await,
        0,
        "nothing is requeued after a multiple ack"
    );
}
