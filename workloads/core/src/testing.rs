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
