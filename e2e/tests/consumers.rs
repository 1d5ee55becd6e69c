//! Consumer behaviour through the real broker and a real MongoDB-wire server: shared mode
//! stores each message once across consumers, broadcast mode gives every consumer every
//! message, and a consumer killed with unacked messages loses none.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use telemetry_consumer::ConsumerMode;
use telemetry_core::testing::{free_port, workspace_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_mode_round_robin_stores_once() {
    let mongo = start_mongo().await;
    let stop = Stop::new();
    let broker = start_broker(&stop).await;
    let database = "e2e_shared";
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let mut config = consumer_config(&broker.amqp_url, &mongo.uri, database, ConsumerMode::Shared);
        // Small prefetch so the broker has to spread deliveries instead of filling one consumer.
        config.prefetch = 10;
        config.batch_size = 10;
        consumers.push(start_consumer(config, &stop).await);
    }

    let csv = sample_subset(400);
    let summary = produce(&broker.amqp_url, csv.path()).await;
    assert_eq!(summary.confirmed, 400);
    wait_stored(&mongo.uri, database, 400).await;

    let received: Vec<u64> = consumers.iter().map(|consumer| consumer.metrics.received.get()).collect();
    assert!(received.iter().all(|count| *count > 0), "both consumers received messages: {received:?}");
    assert_eq!(received.iter().sum::<u64>(), 400, "each message delivered once: {received:?}");
    let duplicates: u64 = consumers.iter().map(|consumer| consumer.metrics.duplicates.get()).sum();
    assert_eq!(duplicates, 0);
    stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcast_mode_gives_everyone_everything() {
    let mongo = start_mongo().await;
    let stop = Stop::new();
    let broker = start_broker(&stop).await;
    let databases = ["e2e_broadcast_a", "e2e_broadcast_b"];
    let mut consumers = Vec::new();
    for database in databases {
        let config = consumer_config(&broker.amqp_url, &mongo.uri, database, ConsumerMode::Broadcast);
        consumers.push(start_consumer(config, &stop).await);
    }

    let csv = sample_subset(150);
    produce(&broker.amqp_url, csv.path()).await;
    for database in databases {
        wait_stored(&mongo.uri, database, 150).await;
    }
    for consumer in &consumers {
        assert_eq!(consumer.metrics.received.get(), 150);
    }
    stop.trigger();
}

/// Kills a consumer process (SIGKILL, no chance to ack) while it has every message unacked,
/// then checks a second consumer stores all of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_consumer_loses_nothing() {
    let mongo = start_mongo().await;
    let stop = Stop::new();
    let broker = start_broker(&stop).await;
    let database = "e2e_kill";
    let rows = 300;

    // A batch larger than the run and a long batch timeout keep every delivery unacked.
    let admin_port = free_port();
    let mut doomed = Command::new(workspace_binary("telemetry-consumer"))
        .env("AMQP_URL", &broker.amqp_url)
        .env("MONGODB_URI", &mongo.uri)
        .env("MONGODB_DATABASE", database)
        .env("CONSUMER_MODE", "shared")
        .env("CONSUMER_PREFETCH", "1000")
        .env("CONSUMER_BATCH_SIZE", "1000")
        .env("ADMIN_PORT", admin_port.to_string())
        .args(["--batch-timeout-ms", "600000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the consumer binary");
    wait_ready(std::net::SocketAddr::from(([127, 0, 0, 1], admin_port))).await;

    let csv = sample_subset(rows);
    produce(&broker.amqp_url, csv.path()).await;

    // Wait until the doomed consumer has all rows unacked, as its metrics report.
    let metrics_url = format!("http://127.0.0.1:{admin_port}/metrics");
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let (_, body) = http_get(&metrics_url, None).await;
        let text = String::from_utf8_lossy(&body);
        let received = text
            .lines()
            .find(|line| line.starts_with("telemetry_consumer_messages_received_total "))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0);
        if received == rows as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the first consumer received {received} of {rows}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored_count(&mongo.uri, database).await, 0, "nothing written before the kill");

    doomed.kill().expect("killing the consumer");
    doomed.wait().expect("reaping the consumer");

    let survivor = start_consumer(consumer_config(&broker.amqp_url, &mongo.uri, database, ConsumerMode::Shared), &stop).await;
    wait_stored(&mongo.uri, database, rows as u64).await;
    assert_eq!(survivor.metrics.received.get(), rows as u64, "every message was redelivered to the survivor");
    stop.trigger();
}
