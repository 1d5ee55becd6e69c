//! Publishes a DCGM CSV export to the telemetry exchange, one persistent JSON message per row.
//!
//! - [`run`]: the publish loop with publisher confirms, a bounded in-flight window, sharding,
//!   throttling and reconnects that republish unconfirmed rows under their original message id.
//! - [`ProducerConfig`] / [`RunSummary`]: what a run is told and what it reports.
//! - [`generate`]: a seeded generator of DCGM exports for tests and benchmarks.
#![deny(unsafe_code)]

pub mod amqp;
pub mod config;
pub mod error;
pub mod generate;
mod run;
mod source;
pub mod summary;

pub use config::ProducerConfig;
pub use error::{Error, Result};
pub use run::run;
pub use summary::{FailureReason, RowFailure, RunSummary};
