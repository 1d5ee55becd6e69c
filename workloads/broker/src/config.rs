//! Broker settings: command-line flags with environment fallbacks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use clap::Parser;
use telemetry_core::contract::{ADMIN_PORT, AMQP_PORT, env};

/// Environment variable behind `--bind-address`.
pub const BIND_ADDRESS_ENV: &str = env::BROKER_BIND_ADDRESS;
/// Environment variable behind `--max-connections`.
pub const MAX_CONNECTIONS_ENV: &str = env::BROKER_MAX_CONNECTIONS;
/// Environment variable behind `--guest-loopback-only`.
pub const GUEST_LOOPBACK_ONLY_ENV: &str = env::BROKER_GUEST_LOOPBACK_ONLY;

/// Default `frame_max` offered in connection.tune, in bytes (RabbitMQ 3.x uses the same).
pub const DEFAULT_FRAME_MAX: u32 = 131_072;
/// Smallest `frame_max` a peer may negotiate, in bytes (AMQP 0-9-1 section 4.2.1).
///
/// NOTE: some clients (lapin 4) never request less than 8192, and the broker rejects a
/// tune-ok above what it offered, so a `--frame-max` below 8192 locks those clients out.
pub const MIN_FRAME_MAX: u32 = 4_096;
/// Default heartbeat interval offered in connection.tune, in seconds (RabbitMQ's default).
pub const DEFAULT_HEARTBEAT: u16 = 60;
/// Default limit on the bytes of message bodies held in memory before publishers are blocked.
pub const DEFAULT_MEMORY_HIGH_WATERMARK: u64 = 512 * 1024 * 1024;
/// Default number of AMQP connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;

/// Settings of one broker instance.
#[derive(Clone, Parser)]
#[command(
    name = "telemetry-broker",
    version,
    about = "AMQP 0-9-1 broker with in-memory queues"
)]
pub struct Config {
    /// IP address that the AMQP and admin listeners bind to.
    #[arg(long, env = BIND_ADDRESS_ENV, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// TCP port of the AMQP listener; 0 picks a free port.
    #[arg(long, env = env::BROKER_PORT, default_value_t = AMQP_PORT)]
    pub broker_port: u16,

    /// TCP port of the admin HTTP server (/healthz, /readyz, /metrics); 0 picks a free port.
    #[arg(long, env = env::ADMIN_PORT, default_value_t = ADMIN_PORT)]
    pub admin_port: u16,

    /// User name that clients log in with (SASL PLAIN or AMQPLAIN).
    #[arg(long, env = env::BROKER_USER, default_value = "guest")]
    pub broker_user: String,

    /// Password of the broker user.
    #[arg(long, env = env::BROKER_PASSWORD, default_value = "guest", hide_env_values = true, hide_default_value = true)]
    pub broker_password: String,

    /// Largest frame the broker accepts and sends, in bytes (minimum 4096, default 131072).
    #[arg(long, env = env::BROKER_FRAME_MAX, default_value_t = DEFAULT_FRAME_MAX,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_FRAME_MAX)..))]
    pub frame_max: u32,

    /// Heartbeat interval offered to clients, in seconds; 0 disables heartbeats (default 60).
    #[arg(long, env = env::BROKER_HEARTBEAT, default_value_t = DEFAULT_HEARTBEAT)]
    pub heartbeat: u16,

    /// Bytes of message bodies held in memory above which publishing connections are blocked
    /// (default 536870912, 512 MiB).
    #[arg(long, env = env::BROKER_MEMORY_HIGH_WATERMARK, default_value_t = DEFAULT_MEMORY_HIGH_WATERMARK)]
    pub memory_high_watermark: u64,

    /// Maximum number of AMQP connections served at once; further clients wait in the backlog.
    #[arg(long, env = MAX_CONNECTIONS_ENV, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Accept the user `guest` only from loopback addresses, as RabbitMQ does by default.
    #[arg(long, env = GUEST_LOOPBACK_ONLY_ENV, default_value_t = true, action = clap::ArgAction::Set)]
    pub guest_loopback_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            broker_port: AMQP_PORT,
            admin_port: ADMIN_PORT,
            broker_user: "guest".to_owned(),
            broker_password: "guest".to_owned(),
            frame_max: DEFAULT_FRAME_MAX,
            heartbeat: DEFAULT_HEARTBEAT,
            memory_high_watermark: DEFAULT_MEMORY_HIGH_WATERMARK,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            guest_loopback_only: true,
        }
    }
}

impl Config {
    /// Settings for tests: loopback address, free ports picked by the kernel, other defaults.
    pub fn ephemeral() -> Self {
        Config {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            broker_port: 0,
            admin_port: 0,
            ..Config::default()
        }
    }
}

// Written by hand so that the password never reaches a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind_address", &self.bind_address)
            .field("broker_port", &self.broker_port)
            .field("admin_port", &self.admin_port)
            .field("broker_user", &self.broker_user)
            .field("broker_password", &"<redacted>")
            .field("frame_max", &self.frame_max)
            .field("heartbeat", &self.heartbeat)
            .field("memory_high_watermark", &self.memory_high_watermark)
            .field("max_connections", &self.max_connections)
            .field("guest_loopback_only", &self.guest_loopback_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_contract() {
        let config = Config::try_parse_from(["telemetry-broker"]).expect("parsing no flags");
        assert_eq!(config.broker_port, AMQP_PORT);
        assert_eq!(config.admin_port, ADMIN_PORT);
        assert_eq!(config.frame_max, DEFAULT_FRAME_MAX);
        assert!(config.guest_loopback_only);
    }

    #[test]
    fn frame_max_below_minimum_rejected() {
        let result = Config::try_parse_from(["telemetry-broker", "--frame-max", "1024"]);
        assert!(result.is_err());
    }

    #[test]
    fn debug_redacts_password() {
        let config = Config {
            broker_password: "s3cret".to_owned(),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
