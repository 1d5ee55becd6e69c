//! Telemetry validation on the telemetry exchange, the admin endpoints and shutdown.

mod common;

use common::*;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use telemetry_core::contract::{
    ALL_METRICS_BINDING, INVALID_QUEUE, METRICS_PATH, READY_PATH, SHARED_QUEUE, TELEMETRY_EXCHANGE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn valid_record() -> Vec<u8> {
    serde_json::json!({
        "timestamp": "2025-07-18T13:42:33Z",
        "metric_name": "DCGM_FI_DEV_GPU_UTIL",
        "gpu_id": 0,
        "device": "nvidia0",
        "uuid": "GPU-5fd4f087-86f3-7a43-b711-4771313afc50",
        "model_name": "NVIDIA H100 80GB HBM3",
        "hostname": "node-1",
        "value": 87.0
    })
    .to_string()
    .into_bytes()
}

/// Sends one HTTP/1.1 GET to the admin server and returns the status line and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the admin server");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the request");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("response timed out")
        .expect("reading");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("HTTP response with a body");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn invalid_record_nacked_and_stored() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare(&channel, SHARED_QUEUE).await;
    channel
        .queue_bind(
            SHARED_QUEUE.into(),
            TELEMETRY_EXCHANGE.into(),
            ALL_METRICS_BINDING.into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("binding the metrics queue");

    let invalid = br#"{"metric_name": "DCGM_FI_DEV_GPU_UTIL", "value": "high"}"#;
    assert!(
        !publish_confirmed(
            &channel,
            TELEMETRY_EXCHANGE,
            "DCGM_FI_DEV_GPU_UTIL",
            invalid
        )
        .await,
        "invalid record must be nacked"
    );
    assert!(
        publish_confirmed(
            &channel,
            TELEMETRY_EXCHANGE,
            "DCGM_FI_DEV_GPU_UTIL",
            &valid_record()
        )
        .await,
        "valid record must be acked"
    );

    let mut consumer = consume(&channel, SHARED_QUEUE, "store").await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(
        delivery.data,
        valid_record(),
        "only the valid record reaches the consumer"
    );

    let stored = channel
        .basic_get(INVALID_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the invalid record is kept in the invalid queue");
    assert_eq!(stored.delivery.data, invalid);
    let headers = stored
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers on the invalid record");
    let headers = headers.inner();
    assert_eq!(
        headers.get("x-original-routing-key"),
        Some(&AMQPValue::LongString("DCGM_FI_DEV_GPU_UTIL".into()))
    );
    match headers.get("x-validation-error") {
        Some(AMQPValue::LongString(error)) => assert!(!error.as_bytes().is_empty()),
        other => panic!("x-validation-error header missing: {other:?}"),
    }

    let (status, metrics) = http_get(broker.admin_addr, METRICS_PATH).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains("broker_messages_invalid_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("broker_messages_published_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"broker_queue_messages{queue="telemetry.invalid"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains("broker_connections 1"), "{metrics}");
}

#[tokio::test]
async fn readiness_reported_while_serving() {
    let broker = TestBroker::start().await;
    let (status, _) = http_get(broker.admin_addr, READY_PATH).await;
    assert!(status.contains("200"), "{status}");
}

/// Waits for the next connection event that `matches` accepts.
async fn next_event(
    events: &mut (impl futures::Stream<Item = lapin::Event> + Unpin),
    matches: impl Fn(&lapin::Event) -> bool,
) -> lapin::Event {
    use futures::StreamExt;
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.next().await.expect("event stream ended");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
    .expect("no matching connection event within the wait limit")
}

#[tokio::test]
async fn shutdown_closes_clients_with_320() {
    let broker = TestBroker::start().await;
    let connection = broker.connect().await;
    let mut events = Box::pin(connection.events_listener());

    broker.stop().await.expect("clean shutdown");
    let event = next_event(&mut events, |event| matches!(event, lapin::Event::Error(_))).await;
    let lapin::Event::Error(error) = event else {
        unreachable!("filtered for errors")
    };
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => assert_eq!(amqp.get_id(), 320, "{error}"),
        other => panic!("expected connection.close 320, got {other:?}"),
    }
}

#[tokio::test]
async fn memory_alarm_blocks_publisher() {
    let config = telemetry_broker::Config {
        memory_high_watermark: 64,
        ..telemetry_broker::Config::ephemeral()
    };
    let broker = TestBroker::start_with(config).await;
    let publisher = broker.connect().await;
    let mut events = Box::pin(publisher.events_listener());
    let channel = confirm_channel(&publisher).await;
    declare(&channel, "backlog").await;
    assert!(publish_confirmed(&channel, "", "backlog", &[7; 128]).await);
    next_event(&mut events, |event| {
        matches!(event, lapin::Event::ConnectionBlocked(_))
    })
    .await;

    let reader = broker.connect().await;
    let reader_channel = reader.create_channel().await.expect("channel");
    let taken = reader_channel
        .basic_get("backlog".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get");
    assert!(taken.is_some());
    next_event(&mut events, |event| {
        matches!(event, lapin::Event::ConnectionUnblocked)
    })
    .await;
}
