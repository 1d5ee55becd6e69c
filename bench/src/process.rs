//! Child processes the harness starts: servers and pipeline components, each in its own process
//! group, with its output in a log file, its memory read from `/proc`, and SIGTERM (then SIGKILL)
//! to the whole group when stopped or dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How long a stopped process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// Returns a TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(Error::io("binding an ephemeral loopback port"))
}

/// Resident memory of one process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`; `None` when the process is gone.
pub fn read_memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

/// A child process in its own process group, stopped when dropped.
pub struct ManagedProcess {
    /// Short name used in tables and errors, for example `rabbitmq`.
    name: String,
    child: Child,
    /// Process whose memory is reported: the child itself, or the VM a launcher script started.
    measured_pid: u32,
    /// File that receives the child's stdout and stderr.
    log: PathBuf,
    stopped: bool,
}

impl ManagedProcess {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let output = File::create(log).map_err(Error::io(format!("creating log file {}", log.display())))?;
        let errors = output.try_clone().map_err(Error::io("duplicating a log file handle"))?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|source| Error::Spawn { program, source })?;
        tracing::info!(process = name, pid = child.id(), log = %log.display(), "started");
        Ok(ManagedProcess {
            name: name.to_owned(),
            measured_pid: child.id(),
            child,
            log: log.to_owned(),
            stopped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Measures `pid` instead of the child, for launchers that fork the real server.
    pub fn set_measured_pid(&mut self, pid: u32) {
        self.measured_pid = pid;
    }

    /// Memory of the measured process, `None` once it has exited.
    pub fn memory(&self) -> Option<Memory> {
        read_memory(self.measured_pid)
    }

    /// Waits until `addr` accepts TCP connections, failing early if the child exits.
    pub async fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(Error::io("polling a child process"))? {
                self.stopped = true;
                return Err(Error::ExitedEarly { what: self.name.clone(), status, log: self.log.clone() });
            }
            let connected = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await
            .unwrap_or(false);
            if connected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::StartTimeout { what: self.name.clone(), addr, timeout, log: self.log.clone() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(Error::io("polling a child process"))? {
                self.stopped = true;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: self.name.clone(),
                    timeout,
                    detail: format!("the process did not exit; see {}", self.log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Returns the exit status if the child has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM to the process group, waits up to `grace`, then sends SIGKILL.
    /// Returns the child's exit status, `None` if it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.stopped {
            return self.child.try_wait().ok().flatten();
        }
        self.stopped = true;
        let group = Pid::from_raw(self.child.id() as i32);
        if let Err(err) = killpg(group, Signal::SIGTERM) {
            tracing::debug!(process = %self.name, cause = %err, "SIGTERM not delivered");
        }

        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Helpers the child forked (Erlang's port programs) share its group.
                    let _ = killpg(group, Signal::SIGKILL);
                    tracing::info!(process = %self.name, %status, "stopped");
                    return Some(status);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(err) => {
                    tracing::warn!(process = %self.name, cause = %err, "polling failed; killing");
                    break;
                }
            }
        }

        tracing::warn!(process = %self.name, ?grace, "no exit after SIGTERM; sending SIGKILL");
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        None
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_of_own_process() {
        let memory = read_memory(std::process::id()).expect("own /proc status");
        assert!(memory.rss_kib > 0);
        assert!(memory.hwm_kib >= memory.rss_kib);
    }

    #[test]
    fn memory_of_missing_process() {
        assert_eq!(read_memory(u32::MAX), None);
    }

    #[test]
    fn stop_ends_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30"]);
        let mut process = ManagedProcess::spawn("sleeper", command, &dir.path().join("log")).unwrap();
        let status = process.stop(Duration::from_secs(5));
        assert!(status.is_some(), "sh should exit on SIGTERM");
        assert!(process.memory().is_none());
    }
}
