//! Starting the servers under test from their release binaries, each as its own process so that
//! its memory can be read per component.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{ManagedProcess, free_port};

/// How long a Rust service gets to bind its ports.
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The MongoDB-wire server needs Python start-up (`secantusd-py`) or WiredTiger recovery.
const MONGO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Locates the workspace's release binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// Path of binary `name`, checked to exist.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if path.is_file() { Ok(path) } else { Err(Error::MissingBinary { path }) }
    }
}

/// The built-in broker on free loopback ports.
pub struct BuiltinBroker {
    pub process: ManagedProcess,
    pub amqp_url: String,
    pub admin_port: u16,
}

impl BuiltinBroker {
    pub async fn start(binaries: &Binaries, work_dir: &Path) -> Result<Self> {
        let amqp_port = free_port()?;
        let admin_port = free_port()?;
        let mut command = Command::new(binaries.path(telemetry_core::contract::images::BROKER)?);
        command
            .args(["--bind-address", "127.0.0.1"])
            .args(["--broker-port", &amqp_port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .env("RUST_LOG", "warn");
        let mut process = ManagedProcess::spawn("telemetry-broker", command, &work_dir.join("telemetry-broker.log"))?;
        process.wait_for_port(SocketAddr::from(([127, 0, 0, 1], amqp_port)), SERVICE_START_TIMEOUT).await?;
        Ok(BuiltinBroker { process, amqp_url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"), admin_port })
    }
}

/// Which MongoDB-wire server the run uses and its version, for the report.
#[derive(Debug, Clone)]
pub struct MongoServerKind {
    pub program: PathBuf,
    pub description: String,
}

/// Picks the MongoDB-wire server: `requested` when given, else `secantusd-rs` (the Rust build of
/// SecantusDB) when installed, else `secantusd-py`.
pub fn choose_mongo_server(requested: Option<&Path>) -> MongoServerKind {
    let program = match requested {
        Some(path) => path.to_owned(),
        None => find_on_path("secantusd-rs")
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/secantusd-rs")))
            .filter(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from("secantusd-py")),
    };
    let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let version = if name.contains("-py") { python_package_version("SecantusDB") } else { command_version(&program) };
    let version = version.unwrap_or_else(|| "(version unknown)".into());
    // `secantusd-rs --version` prints its own name first.
    let description = if version.starts_with(&name) { version } else { format!("{name} {version}") };
    MongoServerKind { program, description }
}

/// A MongoDB-wire server on a free loopback port with storage under the work directory.
pub struct MongoServer {
    pub process: ManagedProcess,
    pub uri: String,
}

impl MongoServer {
    pub async fn start(kind: &MongoServerKind, work_dir: &Path, name: &str) -> Result<Self> {
        let port = free_port()?;
        let storage = work_dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&storage).map_err(Error::io(format!("creating {}", storage.display())))?;
        let mut command = Command::new(&kind.program);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"]).arg(&storage);
        let mut process = ManagedProcess::spawn(name, command, &work_dir.join(format!("{name}.log")))?;
        process.wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), MONGO_START_TIMEOUT).await?;
        Ok(MongoServer { process, uri: format!("mongodb://127.0.0.1:{port}") })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn command_version(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first_line = text.lines().next().unwrap_or_default().trim().to_owned();
    (output.status.success() && !first_line.is_empty()).then_some(first_line)
}

fn python_package_version(package: &str) -> Option<String> {
    let script = format!("import importlib.metadata as m; print(m.version({package:?}))");
    let output = Command::new("python3").args(["-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}
