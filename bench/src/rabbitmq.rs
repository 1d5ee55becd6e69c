//! A private RabbitMQ node on loopback, started from Debian's `rabbitmq-server` package.
//!
//! The node gets its own node name, AMQP port, Erlang distribution port, database and log
//! directories, config file and Erlang cookie (through `HOME`), so it neither touches
//! `/var/lib/rabbitmq` nor meets a node that is already running. It also runs without epmd:
//! `-start_epmd false -erl_epmd_port <dist port>` makes the VM listen for distribution on a
//! fixed port instead of registering with a shared epmd daemon that would outlive the run.
//! Checked with RabbitMQ 3.10.8 on Erlang/OTP 25.2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{ManagedProcess, free_port};

/// The script that starts the VM in the foreground. `/usr/sbin/rabbitmq-server` is a wrapper
/// that switches to the `rabbitmq` user and the system directories, so it is not used.
pub const DEFAULT_SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Boot of the Erlang VM and the rabbit application takes a few seconds; 60 s allows for a
/// loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running RabbitMQ node, stopped with SIGTERM when dropped.
pub struct RabbitNode {
    pub process: ManagedProcess,
    /// AMQP URL of the node's only listener, with the default `guest` user.
    pub amqp_url: String,
    /// Directory that contains the node's database, logs and config.
    pub base_dir: PathBuf,
}

impl RabbitNode {
    /// Starts a node under `base_dir` and waits until its AMQP listener accepts connections and
    /// the rabbit application has written its pid file.
    pub async fn start(script: &Path, base_dir: &Path) -> Result<Self> {
        let amqp_port = free_port()?;
        let dist_port = free_port()?;
        let node_name = format!("telemetry-bench-{}-{amqp_port}@localhost", std::process::id());
        let home = base_dir.join("home");
        std::fs::create_dir_all(&home).map_err(Error::io(format!("creating {}", home.display())))?;

        // `loopback_users = none` is harmless here because the listener binds 127.0.0.1 only.
        let config = base_dir.join("rabbitmq.conf");
        let config_text = format!(
            "listeners.tcp.default = 127.0.0.1:{amqp_port}\nloopback_users = none\nlog.console = false\n"
        );
        write_file(&config, &config_text)?;
        let plugins = base_dir.join("enabled_plugins");
        write_file(&plugins, "[].\n")?;
        let pid_file = base_dir.join("rabbitmq.pid");

        let mut command = Command::new(script);
        command
            .current_dir(base_dir)
            .env("HOME", &home)
            .env("RABBITMQ_NODENAME", &node_name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", base_dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base_dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", base_dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", base_dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_PID_FILE", &pid_file)
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!("-start_epmd false -erl_epmd_port {dist_port}"),
            );
        let mut process = ManagedProcess::spawn("rabbitmq", command, &base_dir.join("rabbitmq-server.log"))?;

        let addr = SocketAddr::from(([127, 0, 0, 1], amqp_port));
        process.wait_for_port(addr, START_TIMEOUT).await?;
        // The launcher script stays the parent; the memory that matters is the VM's.
        let vm_pid = wait_for_pid_file(&pid_file, Duration::from_secs(10)).await?;
        process.set_measured_pid(vm_pid);
        tracing::info!(node = %node_name, %addr, vm_pid, "RabbitMQ node ready");

        Ok(RabbitNode {
            process,
            amqp_url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"),
            base_dir: base_dir.to_owned(),
        })
    }
}

/// Returns the version of the installed `rabbitmq-server` Debian package, if dpkg knows it.
pub fn installed_version() -> Option<String> {
    let output = Command::new("dpkg-query").args(["-W", "-f=${Version}", "rabbitmq-server"]).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}

async fn wait_for_pid_file(path: &Path, timeout: Duration) -> Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok()) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "RabbitMQ pid file".into(),
                timeout,
                detail: format!("{} was not written", path.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
