//! The admin HTTP server that every service runs: liveness, readiness and Prometheus metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::contract::{HEALTH_PATH, METRICS_PATH, READY_PATH};

/// Readiness flag shared between a service and its admin server. Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (or not) to take traffic, so `/readyz` returns 200 or 503.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Builds the admin routes: `/healthz` (always 200 while the process serves HTTP), `/readyz`
/// (200 once the service is ready, 503 before and while shutting down) and `/metrics`.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .route(READY_PATH, get(ready))
        .route(METRICS_PATH, get(metrics))
        .with_state(AdminState { registry, readiness })
}

/// Serves the admin routes on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(registry, readiness)).with_graceful_shutdown(shutdown).await
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        tracing::error!(cause = %err, "failed to encode metrics");
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::new());
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get_status(app: Router, path: &str) -> (StatusCode, String) {
        let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_flag() {
        let readiness = Readiness::default();
        let app = router(Arc::new(Registry::default()), readiness.clone());
        assert_eq!(get_status(app.clone(), READY_PATH).await.0, StatusCode::SERVICE_UNAVAILABLE);
        readiness.set(true);
        assert_eq!(get_status(app.clone(), READY_PATH).await.0, StatusCode::OK);
        assert_eq!(get_status(app, HEALTH_PATH).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_exposes_registered_counter() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("test_events", "Events seen by the test", counter.clone());
        counter.inc_by(3);
        let app = router(Arc::new(registry), Readiness::default());
        let (status, body) = get_status(app, METRICS_PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("test_events_total 3"), "{body}");
    }
}
