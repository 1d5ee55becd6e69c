//! Test support: real servers started on loopback for integration tests.
//!
//! Enabled by the `testing` feature; only test targets turn it on.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns a TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding an ephemeral loopback port")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A MongoDB-wire server (`secantusd-py` from the PyPI package SecantusDB, or the binary named
/// by `MONGODB_SERVER_BIN`) on a free loopback port with its own storage directory.
/// The process is killed and its directory removed on drop.
///
/// When `TEST_MONGODB_URI` is set, no server is started and that URI is used instead.
pub struct MongoServer {
    /// Connection string for the driver.
    pub uri: String,
    child: Option<Child>,
    storage: Option<PathBuf>,
}

impl MongoServer {
    /// Starts the server and waits up to 60 s for it to accept connections.
    pub fn start() -> Self {
        if let Ok(uri) = std::env::var("TEST_MONGODB_URI") {
            return MongoServer { uri, child: None, storage: None };
        }
        let program = std::env::var("MONGODB_SERVER_BIN").unwrap_or_else(|_| "secantusd-py".to_owned());
        let port = free_port();
        let storage = std::env::temp_dir().join(format!("telemetry-mongo-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&storage).expect("creating the MongoDB storage directory");
        let log = std::fs::File::create(storage.with_extension("log")).expect("creating the MongoDB log file");

        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
            .arg(&storage)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("failed to start {program} ({err}); install it with scripts/install-deps.sh")
            });

        let server = MongoServer { uri: format!("mongodb://127.0.0.1:{port}"), child: Some(child), storage: Some(storage) };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_port(addr, Duration::from_secs(60)),
            "{program} did not listen on {addr} within 60 s; see {}",
            server.log_path().display()
        );
        server
    }

    fn log_path(&self) -> PathBuf {
        self.storage.as_deref().map(|dir| dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(storage) = &self.storage {
            let _ = std::fs::remove_dir_all(storage);
            let _ = std::fs::remove_file(storage.with_extension("log"));
        }
    }
}

/// A RabbitMQ node (Debian's `rabbitmq-server`) for tests of the AMQP clients against the
/// engine that production deployments may use instead of the built-in broker.
/// `TEST_AMQP_URL` names a running broker to use instead.
///
/// The node has its own ports and data directory, and is stopped and removed on drop.
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

/// Path of a binary of this workspace, built into the same target directory as the running
/// test (`target/debug`, or `target/llvm-cov-target/debug` under coverage).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test executable");
    // Test executables live in `<profile>/deps/`; binaries one level up.
    let profile_dir = exe.parent().and_then(Path::parent).expect("test executable has a profile directory");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} not found; build it first with `cargo build --bins`", path.display());
    path
}

/// Path of the real DCGM export when `DCGM_CSV` names one that exists, else the sample.
pub fn dcgm_csv_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("DCGM_CSV") {
        Some(path) if Path::new(&path).exists() => PathBuf::from(path),
        _ => root.join(crate::contract::SAMPLE_CSV_PATH),
    }
}
