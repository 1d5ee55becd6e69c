//! Consumes telemetry messages from the broker and stores each record once in MongoDB.
//!
//! - [`run`] / [`Consumer`]: the consume loop with batched, idempotent writes, acknowledgements
//!   after each write, reconnects and graceful shutdown, plus the admin server.
//! - [`ConsumerConfig`] / [`ConsumerMode`]: shared (competing consumers) or broadcast (every
//!   consumer gets every record).
//! - [`document`]: the stored document of a record and its `_id`.
//! - [`store`]: the `metrics` collection's indexes and duplicate-tolerant inserts.
#![deny(unsafe_code)]

pub mod batch;
pub mod config;
mod consumer;
pub mod document;
pub mod error;
pub mod metrics;
pub mod store;

pub use config::{ConsumerConfig, ConsumerMode};
pub use consumer::{Consumer, run};
pub use error::{Error, Result};
pub use metrics::ConsumerMetrics;
