//! Command line and environment of the operator process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use telemetry_core::contract;

/// Kubernetes operator for TelemetryPipeline resources.
#[derive(Debug, Parser)]
#[command(name = "telemetry-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the objects a pipeline would get, as multi-document YAML, without a cluster.
    Render {
        /// TelemetryPipeline manifest (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

/// Settings of the controller process.
#[derive(Debug, Args)]
pub struct RunConfig {
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, env = contract::env::ADMIN_PORT, default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,
    /// Run the controller only while holding the leader Lease (needed with more than one replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "telemetry-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease; defaults to the namespace of the operator's service account.
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity written to the Lease; defaults to the pod's host name.
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// Seconds a Lease stays valid without renewal (default 15).
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds between renewals by the leader; must be below the lease duration (default 5).
    #[arg(long, env = "LEASE_RENEW_SECONDS", default_value_t = 5)]
    pub lease_renew_seconds: u64,
    /// Seconds between attempts of a standby replica to take the Lease (default 2).
    #[arg(long, env = "LEASE_RETRY_SECONDS", default_value_t = 2)]
    pub lease_retry_seconds: u64,
}

impl RunConfig {
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.admin_port))
    }
}
