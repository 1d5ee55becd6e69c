//! Kubernetes operator for `TelemetryPipeline` resources.
//!
//! - [`crd`]: the custom resource and its schema.
//! - [`children`]: the objects one pipeline needs, built from its spec without a cluster.
//! - [`controller`]: the reconciler that applies them, deletes what a spec no longer wants and
//!   writes the status.
//! - [`leader`]: leader election through a `coordination.k8s.io` Lease.
//! - [`metrics`]: the operator's Prometheus metrics.
#![deny(unsafe_code)]

pub mod children;
pub mod config;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use controller::{Context, error_policy, reconcile};
pub use crd::{TelemetryPipeline, TelemetryPipelineSpec, TelemetryPipelineStatus};

/// Name of the field manager of every server-side apply, and the controller name on Events.
pub const FIELD_MANAGER: &str = "telemetry-operator";

/// Everything that can fail while reconciling a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Kubernetes API request to {action} failed: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The pipeline object lacks a field every stored object has.
    #[error("TelemetryPipeline is missing metadata.{0}; it must come from the API server")]
    MissingObjectKey(&'static str),

    /// The spec passed schema validation but cannot be rendered.
    #[error("invalid TelemetryPipeline spec: {0}")]
    InvalidSpec(String),

    /// An object could not be encoded as JSON or YAML.
    #[error("failed to encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// Leader election failed.
    #[error("leader election failed: {0}")]
    Lease(String),
}

impl Error {
    /// Label value of the `telemetry_operator_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::MissingObjectKey(_) => "missing_object_key",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Encode { .. } => "encode",
            Self::Lease(_) => "lease",
        }
    }

    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
