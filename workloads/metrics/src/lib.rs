//! REST API over the telemetry that consumers store in MongoDB's `metrics` collection.
//!
//! - `GET /api/v1/gpus`: GPUs that have telemetry, sorted and paginated.
//! - `GET /api/v1/gpus/{uuid}/telemetry`: one GPU's samples in time order, filtered by time
//!   window and metric name, with keyset pagination.
//! - `GET /api/v1/openapi.json`, `/healthz` and `/readyz`, open without a token.
//!
//! [`Server::bind`] binds both listeners (the API and the admin server with Prometheus
//! metrics) and [`Server::serve`] runs them; [`app`] gives the router alone for tests.
#![deny(unsafe_code)]

use std::sync::Arc;

mod app_error;
pub mod auth;
mod config;
mod error;
mod http_metrics;
mod page_token;
mod params;
mod routes;
mod server;
pub mod store;

pub use app_error::AppError;
pub use auth::{Auth, TokenSet};
pub use config::{API_AUTH_DISABLED_ENV, BIND_ADDRESS_ENV, Config};
pub use error::{Error, Result};
pub use http_metrics::HttpMetrics;
pub use params::PageLimits;
pub use routes::{GPUS_PATH, OPENAPI_PATH, TELEMETRY_PATH, app};
pub use server::{Server, build_state, run};
pub use store::{Store, indexes};

/// State shared by every handler. Clones share one allocation, so cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// The `metrics` collection.
    store: Store,
    /// Accepted tokens, or none when authentication is disabled.
    auth: Auth,
    /// Default and maximum `limit`.
    page_limits: PageLimits,
    /// Request counter and latency histogram.
    http_metrics: HttpMetrics,
}

impl AppState {
    pub fn new(
        store: Store,
        auth: Auth,
        page_limits: PageLimits,
        http_metrics: HttpMetrics,
    ) -> Self {
        AppState(Arc::new(Shared {
            store,
            auth,
            page_limits,
            http_metrics,
        }))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.0.store
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.0.auth
    }

    pub(crate) fn page_limits(&self) -> PageLimits {
        self.0.page_limits
    }

    pub(crate) fn http_metrics(&self) -> &HttpMetrics {
        &self.0.http_metrics
    }
}
