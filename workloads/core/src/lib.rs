//! The DCGM telemetry record and what every component of the pipeline shares.
//!
//! - [`record`]: one DCGM sample, its JSON wire encoding and its validation.
//! - [`labels`]: the parser for DCGM's `labels_raw` column (`key="value",…`).
//! - [`dcgm`]: the DCGM CSV reader that turns rows into records.
//! - [`contract`]: ports, environment variable names, probe paths and AMQP/MongoDB names.
//!   The operator builds its Services and containers from the same constants.
//! - [`api_tokens`]: the line format of the REST API's tokens file.
//! - [`admin`]: the `/healthz`, `/readyz` and `/metrics` HTTP server of every service.
//! - [`redact`]: connection strings with the password hidden, for logs and errors.
//! - [`runtime`]: logging set-up and the shutdown signal.
//! - `testing` (feature `testing`): real servers on loopback for integration tests.
#![deny(unsafe_code)]

pub mod admin;
pub mod api_tokens;
pub mod contract;
pub mod dcgm;
pub mod labels;
pub mod record;
pub mod redact;
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

pub use dcgm::{DcgmReader, RowError};
pub use labels::{LabelsError, parse_labels};
pub use redact::redact_url;
pub use record::{TelemetryRecord, ValidationError, format_timestamp};
