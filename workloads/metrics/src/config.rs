//! Command-line and environment configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use telemetry_core::contract::{self, env};

use crate::params::PageLimits;
use crate::{Error, Result};

/// Environment variable of `--bind-address`.
pub const BIND_ADDRESS_ENV: &str = telemetry_core::contract::env::BIND_ADDRESS;
/// Environment variable of `--auth-disabled`.
pub const API_AUTH_DISABLED_ENV: &str = telemetry_core::contract::env::API_AUTH_DISABLED;

/// REST API over the telemetry that consumers store in MongoDB.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-metrics", version, about)]
pub struct Config {
    /// TCP port of the REST API (0 picks a free port).
    #[arg(long, env = env::API_PORT, default_value_t = contract::API_PORT)]
    pub api_port: u16,

    /// TCP port of the admin server with /healthz, /readyz and /metrics (0 picks a free port).
    #[arg(long, env = env::ADMIN_PORT, default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,

    /// IP address that both servers listen on.
    #[arg(long, env = BIND_ADDRESS_ENV, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// MongoDB connection string. It may contain credentials, so it is never logged.
    #[arg(long, env = env::MONGODB_URI, default_value = contract::DEFAULT_MONGODB_URI, hide_env_values = true)]
    pub mongodb_uri: String,

    /// MongoDB database that contains the metrics collection.
    #[arg(long, env = env::MONGODB_DATABASE, default_value = contract::DEFAULT_DATABASE)]
    pub mongodb_database: String,

    /// File of API tokens, one `name:token` per line; `#` starts a comment line.
    /// Read once at start-up. Required unless --auth-disabled is given.
    #[arg(long, env = env::API_TOKENS_FILE)]
    pub api_tokens_file: Option<PathBuf>,

    /// Serve the API without authentication. Must be given explicitly when no tokens file is set.
    #[arg(long, env = API_AUTH_DISABLED_ENV)]
    pub auth_disabled: bool,

    /// Number of entries per page when a request gives no `limit`.
    #[arg(long, env = env::API_PAGE_SIZE_DEFAULT, default_value_t = 100)]
    pub api_page_size_default: u32,

    /// Largest `limit` a request may ask for; a larger one is rejected with 400.
    #[arg(long, env = env::API_PAGE_SIZE_MAX, default_value_t = 1000)]
    pub api_page_size_max: u32,
}

impl Config {
    /// Checks the settings that clap cannot check one at a time.
    pub fn validate(&self) -> Result<()> {
        self.page_limits()?;
        if self.auth_disabled && self.api_tokens_file.is_some() {
            return Err(Error::Config(
                "both --api-tokens-file and --auth-disabled are set; give only one of them"
                    .to_owned(),
            ));
        }
        if !self.auth_disabled && self.api_tokens_file.is_none() {
            return Err(Error::Config(format!(
                "no API tokens file is configured; set --api-tokens-file ({}) or, to serve the API \
                 without authentication, pass --auth-disabled ({})",
                env::API_TOKENS_FILE,
                API_AUTH_DISABLED_ENV
            )));
        }
        Ok(())
    }

    /// Returns the page sizes, checked as [`PageLimits::new`] describes.
    pub fn page_limits(&self) -> Result<PageLimits> {
        PageLimits::new(self.api_page_size_default, self.api_page_size_max)
    }

    /// Address of the REST API listener.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.api_port)
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.admin_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("telemetry-metrics").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_follow_contract() {
        let config = parse(&["--auth-disabled"]);
        assert_eq!(config.api_port, contract::API_PORT);
        assert_eq!(config.admin_port, contract::ADMIN_PORT);
        assert_eq!(config.api_page_size_default, 100);
        assert_eq!(config.api_page_size_max, 1000);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn default_page_size_above_max_rejected() {
        let config = parse(&[
            "--auth-disabled",
            "--api-page-size-default",
            "50",
            "--api-page-size-max",
            "10",
        ]);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--api-page-size-default (50)"), "{err}");
    }

    #[test]
    fn missing_tokens_file_requires_auth_disabled() {
        let err = parse(&[]).validate().unwrap_err().to_string();
        assert!(err.contains("--auth-disabled"), "{err}");
    }

    #[test]
    fn tokens_file_and_auth_disabled_conflict() {
        let config = parse(&["--auth-disabled", "--api-tokens-file", "/tmp/tokens"]);
        assert!(config.validate().is_err());
    }
}
