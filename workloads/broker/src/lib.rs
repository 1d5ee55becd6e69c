//! An AMQP 0-9-1 broker with in-memory queues for the telemetry pipeline.
//!
//! It speaks the protocol subset that RabbitMQ clients use (direct, fanout and topic
//! exchanges; queues with consumers, prefetch, acknowledgements and publisher confirms) and
//! validates every message published to the telemetry exchange: records that do not decode
//! are kept in the invalid-telemetry queue and nacked to publishers in confirm mode.
//!
//! - [`server`]: binds the listeners, accepts clients and shuts down.
//! - `session` and `methods`: one client connection and the AMQP methods it sends.
//! - `connection`: buffered frame I/O with the `amq-protocol` codec.
//! - `shared`, `exchange`, `queue`, `message`: the broker state behind one mutex.
//!
//! ```no_run
//! # async fn example() -> Result<(), telemetry_broker::Error> {
//! use telemetry_broker::{Broker, Config};
//!
//! let broker = Broker::bind(Config::ephemeral()).await?;
//! let url = format!("amqp://guest:guest@{}/%2f", broker.local_addr());
//! broker.run(telemetry_core::runtime::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod channel;
pub mod config;
mod connection;
mod error;
mod exchange;
mod message;
mod methods;
mod metrics;
mod queue;
pub mod server;
mod session;
mod shared;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{BoundBroker, Broker};
