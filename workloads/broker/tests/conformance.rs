//! Other AMQP clients against the broker: pika (Python), amqplib (Node.js) and the
//! amqp-tools command-line programs (librabbitmq-c). Each publishes and consumes a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use tokio::process::Command;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client program with a time limit and asserts that it succeeded.
async fn run_client(command: &mut Command, what: &str) -> Output {
    command.kill_on_drop(true);
    let output = tokio::time::timeout(WAIT * 3, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {:?}", WAIT * 3))
        .unwrap_or_else(|err| {
            panic!("failed to start {what} ({err}); install it with scripts/install-deps.sh")
        });
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn pika_publishes_and_consumes() {
    let broker = TestBroker::start().await;
    let output = run_client(
        Command::new("python3")
            .arg(clients_dir().join("pika_roundtrip.py"))
            .args([&broker.url(), "pika-queue", "from pika"]),
        "pika client",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from pika");
}

#[tokio::test]
async fn amqplib_publishes_and_consumes() {
    let broker = TestBroker::start().await;
    let node_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.run/tools/node_modules");
    let output = run_client(
        Command::new("node")
            .env("NODE_PATH", node_path)
            .arg(clients_dir().join("amqplib_roundtrip.js"))
            .args([&broker.url(), "amqplib-queue", "from amqplib"]),
        "amqplib client",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "from amqplib"
    );
}

#[tokio::test]
async fn amqp_tools_publish_get_and_consume() {
    let broker = TestBroker::start().await;
    let url = broker.url();
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("channel");
    declare(&channel, "tools-queue").await;

    for body in ["first", "second"] {
        run_client(
            Command::new("amqp-publish").args([
                "--url",
                &url,
                "--routing-key",
                "tools-queue",
                "--body",
                body,
            ]),
            "amqp-publish",
        )
        .await;
    }

    let got = run_client(
        Command::new("amqp-get").args(["--url", &url, "--queue", "tools-queue"]),
        "amqp-get",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "first");

    // amqp-consume runs `cat` once per message and stops after --count messages.
    let consumed = run_client(
        Command::new("amqp-consume").args([
            "--url",
            &url,
            "--queue",
            "tools-queue",
            "--count",
            "1",
            "cat",
        ]),
        "amqp-consume",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&consumed.stdout).trim(), "second");
}
