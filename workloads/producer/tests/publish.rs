//! The producer against a real broker: what it publishes, and how it reports bad input and an
//! unreachable broker.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use telemetry_core::testing::RabbitMq;
use telemetry_core::TelemetryRecord;
use telemetry_core::testing::free_port;
use telemetry_producer::generate::{GeneratorConfig, write_dcgm_csv};
use telemetry_producer::{Error, FailureReason, ProducerConfig, run};

const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw";

fn row(value: &str, gpu: &str) -> String {
    format!(
        r#""2025-07-18T20:42:34Z","DCGM_FI_DEV_GPU_TEMP","{gpu}","nvidia{gpu}","GPU-0a1b2c3d-0000-4000-8000-00000000000{gpu}","NVIDIA H100 80GB HBM3","node-1","","","","{value}","gpu=""{gpu}""""#
    )
}

fn csv_file(lines: &[String]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{HEADER}").unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    file
}

async fn never() {
    std::future::pending::<()>().await
}

/// Declares a queue bound to every metric and returns a channel to read it with.
async fn bound_queue(url: &str, queue: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
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
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            "telemetry".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel)
}

/// Takes every message of `queue` with basic.get.
async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut messages = Vec::new();
    for _ in 0..100_000 {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => messages.push(message),
            None => break,
        }
    }
    messages
}

#[tokio::test]
async fn unreadable_file_error_names_path() {
    let config = ProducerConfig {
        csv_path: "/nonexistent/dcgm-export.csv".into(),
        ..ProducerConfig::default()
    };
    let err = run(config, never()).await.unwrap_err();
    assert!(matches!(err, Error::OpenCsv { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/dcgm-export.csv"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_header_rejected_before_connecting() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "time,name,value\n1,2,3").unwrap();
    // The broker URL points nowhere: the header check must come first.
    let config = ProducerConfig {
        csv_path: file.path().to_owned(),
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        ..ProducerConfig::default()
    };
    let err = run(config, never()).await.unwrap_err();
    assert!(matches!(err, Error::NotDcgm { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_broker_bounded_retries() {
    let file = csv_file(&[row("40", "0")]);
    let port = free_port();
    let config = ProducerConfig {
        csv_path: file.path().to_owned(),
        amqp_url: format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f"),
        connect_retries: 2,
        retry_delay: Duration::from_millis(10),
        ..ProducerConfig::default()
    };
    let err = run(config, never()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { attempts: 3, .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("amqp://guest:***@127.0.0.1:{port}/%2f")),
        "{message}"
    );
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password leaked: {message}"
    );
}

#[tokio::test]
async fn invalid_shard_index_rejected() {
    let config = ProducerConfig {
        shard_index: 2,
        shard_count: 2,
        ..ProducerConfig::default()
    };
    let err = run(config, never()).await.unwrap_err();
    assert!(
        matches!(err, Error::ShardOutOfRange { index: 2, count: 2 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn broker_round_trips() {
    let broker = RabbitMq::start();
    bad_rows_reported_valid_rows_published(&broker.url).await;
    shards_split_file_without_overlap(&broker.url).await;
    unbound_exchange_reports_returns(&broker.url).await;
}

async fn bad_rows_reported_valid_rows_published(url: &str) {
    let (_connection, channel) = bound_queue(url, "bad-rows").await;
    let lines = [
        row("40", "0"),
        row("hot", "1"),
        row("41", "2"),
        row("", "3"),
        row("42", "4"),
    ];
    let file = csv_file(&lines);
    let config = ProducerConfig {
        csv_path: file.path().to_owned(),
        amqp_url: url.to_owned(),
        run_id: "bad-rows-run".into(),
        ..ProducerConfig::default()
    };

    let summary = run(config, never()).await.unwrap();

    assert_eq!(summary.rows_read, 5);
    assert_eq!(summary.confirmed, 3);
    assert_eq!(summary.failed(), 2);
    assert!(!summary.is_complete());
    let lines_failed: Vec<u64> = summary
        .failures
        .iter()
        .map(|failure| failure.line)
        .collect();
    assert_eq!(lines_failed, [3, 5]);
    let FailureReason::InvalidRow {
        column,
        value,
        message,
    } = &summary.failures[0].reason
    else {
        panic!("{:?}", summary.failures[0]);
    };
    assert_eq!(column.as_deref(), Some("value"));
    assert_eq!(value.as_deref(), Some("hot"));
    assert!(message.contains("line 3"), "{message}");

    let messages = drain(&channel, "bad-rows").await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["bad-rows-run:2", "bad-rows-run:4", "bad-rows-run:6"]);

    let first = &messages[0].delivery;
    assert_eq!(first.routing_key.as_str(), "DCGM_FI_DEV_GPU_TEMP");
    assert_eq!(first.properties.delivery_mode(), &Some(2));
    assert_eq!(
        first.properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        first.properties.app_id().as_ref().unwrap().as_str(),
        "telemetry-producer"
    );
    let record = TelemetryRecord::from_json(&first.data).unwrap();
    assert_eq!(record.value, 40.0);
    assert_eq!(record.labels["gpu"], "0");
    assert_ne!(
        telemetry_core::format_timestamp(&record.timestamp),
        "2025-07-18T20:42:34Z",
        "timestamp replaced"
    );
    assert_eq!(
        record.timestamp.timestamp_subsec_nanos(),
        0,
        "whole seconds"
    );
    assert_eq!(
        first.properties.timestamp(),
        &Some(record.timestamp.timestamp() as u64)
    );
}

async fn shards_split_file_without_overlap(url: &str) {
    let (_connection, channel) = bound_queue(url, "shards").await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let generator = GeneratorConfig {
        hosts: 2,
        gpus_per_host: 4,
        samples: 1,
        seed: 9,
        ..GeneratorConfig::default()
    };
    let rows = write_dcgm_csv(&generator, &mut file).unwrap();

    let mut summaries = Vec::new();
    for shard_index in 0..3 {
        let config = ProducerConfig {
            csv_path: file.path().to_owned(),
            amqp_url: url.to_owned(),
            run_id: "shard-run".into(),
            shard_index,
            shard_count: 3,
            max_in_flight: 4,
            ..ProducerConfig::default()
        };
        summaries.push(run(config, never()).await.unwrap());
    }

    assert!(
        summaries.iter().all(|summary| summary.is_complete()),
        "{summaries:?}"
    );
    assert_eq!(
        summaries
            .iter()
            .map(|summary| summary.confirmed)
            .sum::<u64>(),
        rows
    );
    assert_eq!(summaries[0].rows_read, rows.div_ceil(3));
    let messages = drain(&channel, "shards").await;
    let ids: BTreeSet<String> = messages
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(messages.len() as u64, rows, "no row published twice");
    let expected: BTreeSet<String> = (2..rows + 2)
        .map(|line| format!("shard-run:{line}"))
        .collect();
    assert_eq!(ids, expected);
}

async fn unbound_exchange_reports_returns(url: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let file = csv_file(&[row("40", "0"), row("41", "1")]);
    let config = ProducerConfig {
        csv_path: file.path().to_owned(),
        amqp_url: url.to_owned(),
        exchange: "telemetry-unbound".into(),
        ..ProducerConfig::default()
    };

    let summary = run(config, never()).await.unwrap();

    assert_eq!(summary.confirmed, 0);
    assert_eq!(summary.failed(), 2);
    assert!(
        matches!(
            summary.failures[0].reason,
            FailureReason::Unroutable {
                reply_code: 312,
                ..
            }
        ),
        "{:?}",
        summary.failures
    );
    assert!(
        summary.failures[0]
            .to_string()
            .contains("start the consumers"),
        "{}",
        summary.failures[0]
    );
    // The producer declared the exchange it publishes to.
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            "telemetry-unbound".into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
}
