//! Names and numbers that the workloads, the operator, the Dockerfiles and the docs must agree on.
//!
//! Every workload takes its defaults from here and the operator renders Services, container
//! ports, environment and probes from the same constants, so the two cannot drift apart.

/// AMQP 0-9-1 listener port of the built-in broker (IANA-assigned AMQP port).
pub const AMQP_PORT: u16 = 5672;
/// HTTP port of every service's `/healthz`, `/readyz` and `/metrics`.
pub const ADMIN_PORT: u16 = 9090;
/// HTTP port of the REST API.
pub const API_PORT: u16 = 8080;
/// MongoDB's standard port.
pub const MONGODB_PORT: u16 = 27017;

/// Liveness probe path on the admin port.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness probe path on the admin port.
pub const READY_PATH: &str = "/readyz";
/// Prometheus text exposition path on the admin port.
pub const METRICS_PATH: &str = "/metrics";

/// Topic exchange that producers publish telemetry to, with the metric name as routing key.
pub const TELEMETRY_EXCHANGE: &str = "telemetry";
/// Durable queue that consumers share in `shared` mode.
pub const SHARED_QUEUE: &str = "telemetry.metrics";
/// Queue where the broker keeps messages that failed telemetry validation.
pub const INVALID_QUEUE: &str = "telemetry.invalid";
/// Binding key that matches every metric name on the topic exchange.
pub const ALL_METRICS_BINDING: &str = "#";

/// Default MongoDB database.
pub const DEFAULT_DATABASE: &str = "telemetry";
/// Collection that contains one document per telemetry record.
pub const METRICS_COLLECTION: &str = "metrics";
/// Collection with one summary document per GPU (`_id` = uuid, identity fields, `last_seen`),
/// which the consumer keeps current and the REST API lists.
pub const GPUS_COLLECTION: &str = "gpus";

/// Default AMQP URL of every client.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default MongoDB connection string.
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
/// Sample DCGM export, relative to the repository root.
pub const SAMPLE_CSV_PATH: &str = "data/dcgm_sample.csv";
/// Path of the sample DCGM export inside the producer image.
pub const IMAGE_SAMPLE_CSV_PATH: &str = "/usr/share/telemetry/dcgm_sample.csv";

/// Environment variable names. Each one backs the `--kebab-case` flag of the same name.
pub mod env {
    pub const AMQP_URL: &str = "AMQP_URL";
    pub const MONGODB_URI: &str = "MONGODB_URI";
    pub const MONGODB_DATABASE: &str = "MONGODB_DATABASE";
    pub const BROKER_PORT: &str = "BROKER_PORT";
    pub const BROKER_USER: &str = "BROKER_USER";
    pub const BROKER_PASSWORD: &str = "BROKER_PASSWORD";
    pub const BROKER_FRAME_MAX: &str = "BROKER_FRAME_MAX";
    pub const BROKER_HEARTBEAT: &str = "BROKER_HEARTBEAT";
    pub const BROKER_MEMORY_HIGH_WATERMARK: &str = "BROKER_MEMORY_HIGH_WATERMARK";
    pub const BROKER_BIND_ADDRESS: &str = "BROKER_BIND_ADDRESS";
    pub const BROKER_MAX_CONNECTIONS: &str = "BROKER_MAX_CONNECTIONS";
    /// `true` (the default) lets the `guest` user log in from loopback only, as RabbitMQ does.
    pub const BROKER_GUEST_LOOPBACK_ONLY: &str = "BROKER_GUEST_LOOPBACK_ONLY";
    pub const ADMIN_PORT: &str = "ADMIN_PORT";
    pub const API_PORT: &str = "API_PORT";
    pub const CSV_PATH: &str = "CSV_PATH";
    pub const PUBLISH_RATE: &str = "PUBLISH_RATE";
    /// Identifier shared by every shard of one producer run, and part of each message_id.
    pub const RUN_ID: &str = "RUN_ID";
    pub const MAX_IN_FLIGHT: &str = "MAX_IN_FLIGHT";
    pub const CONNECT_RETRIES: &str = "CONNECT_RETRIES";
    pub const RETRY_DELAY_MS: &str = "RETRY_DELAY_MS";
    pub const SHARD_INDEX: &str = "SHARD_INDEX";
    pub const SHARD_COUNT: &str = "SHARD_COUNT";
    /// Set by Kubernetes on pods of an Indexed Job.
    pub const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";
    pub const CONSUMER_MODE: &str = "CONSUMER_MODE";
    pub const CONSUMER_PREFETCH: &str = "CONSUMER_PREFETCH";
    pub const CONSUMER_BATCH_SIZE: &str = "CONSUMER_BATCH_SIZE";
    pub const CONSUMER_BATCH_TIMEOUT_MS: &str = "CONSUMER_BATCH_TIMEOUT_MS";
    pub const API_TOKENS_FILE: &str = "API_TOKENS_FILE";
    /// Serves the REST API without authentication when set; there is no default that does this.
    pub const API_AUTH_DISABLED: &str = "API_AUTH_DISABLED";
    /// IP address the REST API and its admin server listen on.
    pub const BIND_ADDRESS: &str = "BIND_ADDRESS";
    pub const API_PAGE_SIZE_DEFAULT: &str = "API_PAGE_SIZE_DEFAULT";
    pub const API_PAGE_SIZE_MAX: &str = "API_PAGE_SIZE_MAX";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
}

/// Container image names, one per component, under a configurable registry.
/// The Makefile, the Helm chart and the operator's image defaults use these names.
pub mod images {
    /// Registry used when neither the chart nor the TelemetryPipeline names one.
    pub const DEFAULT_REGISTRY: &str = "ghcr.io/gputelemetry";
    /// Tag used when none is given: the release version, which the chart's appVersion matches.
    pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");
    pub const OPERATOR: &str = "telemetry-operator";
    pub const BROKER: &str = "telemetry-broker";
    pub const PRODUCER: &str = "telemetry-producer";
    pub const CONSUMER: &str = "telemetry-consumer";
    pub const METRICS: &str = "telemetry-metrics";
}
