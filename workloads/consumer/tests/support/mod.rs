//! A RabbitMQ node on loopback for integration tests.
//!
//! The project's own broker lives in another crate, which workloads do not depend on, so these
//! tests use RabbitMQ (installed by scripts/install-deps.sh). `TEST_AMQP_URL` names a running
//! broker to use instead.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use telemetry_core::testing::{free_port, wait_for_port};

/// A RabbitMQ node with its own ports and data directory, stopped and removed on drop.
pub struct RabbitMq {
    /// AMQP URL with the default guest account.
    pub url: String,
    node: Option<String>,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl RabbitMq {
    /// Starts a node and waits up to 90 s for its AMQP listener.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("TEST_AMQP_URL") {
            return RabbitMq {
                url,
                node: None,
                child: None,
                dir: None,
            };
        }
        let port = free_port();
        let dist_port = free_port();
        let node = format!("test{port}@localhost");
        let dir = std::env::temp_dir().join(format!("telemetry-rabbitmq-{port}"));
        std::fs::create_dir_all(dir.join("log")).expect("creating the RabbitMQ data directory");
        // Debian's rabbitmq-server drops to the rabbitmq user when started as root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let log = std::fs::File::create(dir.join("server.out"))
            .expect("creating the RabbitMQ output file");

        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_MNESIA_BASE", &dir)
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the output file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start rabbitmq-server ({err}); install it with scripts/install-deps.sh"));

        let server = RabbitMq {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            node: Some(node),
            child: Some(child),
            dir: Some(dir),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_port(addr, Duration::from_secs(90)),
            "RabbitMQ did not listen on {addr} within 90 s; see {}",
            server.dir.as_ref().unwrap().display()
        );
        server
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            let _ = Command::new("rabbitmqctl")
                .args(["-n", node, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
