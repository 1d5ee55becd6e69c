//! The router: API routes, health routes, the OpenAPI document and the middleware stack.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Serialize;
use telemetry_core::contract::{HEALTH_PATH, READY_PATH};
use telemetry_core::{TelemetryRecord, format_timestamp};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::app_error::AppError;
use crate::params::{GpuListRequest, QueryParams, TelemetryRequest};
use crate::store::{GpuKey, RecordKey, StoredGpu, StoredRecord, to_chrono};
use crate::{AppState, auth, http_metrics, page_token};

/// GPUs that have telemetry.
pub const GPUS_PATH: &str = "/api/v1/gpus";
/// Telemetry of one GPU.
pub const TELEMETRY_PATH: &str = "/api/v1/gpus/{uuid}/telemetry";
/// The OpenAPI 3 document of this API.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// Builds the API router. Health routes and the OpenAPI document are open; the `/api/v1/gpus`
/// routes require a bearer token unless authentication is disabled.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route(GPUS_PATH, get(list_gpus))
        .route(TELEMETRY_PATH, get(gpu_telemetry))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));

    Router::new()
        .route(HEALTH_PATH, get(healthz))
        .route(READY_PATH, get(readyz))
        .route(OPENAPI_PATH, get(openapi))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_metrics::record,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(log_response)
                // Failures are logged with their cause where they happen; see `AppError`.
                .on_failure(()),
        )
        .with_state(state)
}

/// Creates the span of one request. The authentication middleware fills in `caller`.
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        path = request.uri().path(),
        caller = tracing::field::Empty,
    )
}

fn log_response(response: &Response, latency: Duration, _span: &Span) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms,
        "request completed"
    );
}

/// A page of a listing with the cursor of the next page, `null` on the last page.
#[derive(Serialize)]
struct PageBody<T> {
    data: Vec<T>,
    next_page_token: Option<String>,
}

/// One GPU in `GET /api/v1/gpus`. Identity fields come from the GPU's latest sample.
#[derive(Serialize)]
struct GpuSummary {
    uuid: String,
    gpu_id: u32,
    device: String,
    model_name: String,
    hostname: String,
    /// Time of the latest sample, RFC 3339 in UTC.
    last_seen: String,
}

impl TryFrom<StoredGpu> for GpuSummary {
    type Error = crate::Error;

    fn try_from(gpu: StoredGpu) -> crate::Result<Self> {
        let last_seen = to_chrono(gpu.last_seen, &gpu.uuid)?;
        Ok(GpuSummary {
            uuid: gpu.uuid,
            gpu_id: gpu.gpu_id,
            device: gpu.device,
            model_name: gpu.model_name,
            hostname: gpu.hostname,
            last_seen: format_timestamp(&last_seen),
        })
    }
}

/// Turns the query string into parameters, or a 400 when it is not valid URL encoding.
fn query_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<QueryParams, AppError> {
    match query {
        Ok(Query(pairs)) => Ok(QueryParams::new(pairs)),
        Err(rejection) => Err(AppError::invalid_parameter(
            "query",
            format!(
                "the query string is not valid URL encoding: {}",
                rejection.body_text()
            ),
        )),
    }
}

async fn list_gpus(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<PageBody<GpuSummary>>, AppError> {
    let request = GpuListRequest::parse(query_params(query)?, state.page_limits())?;
    let fingerprint = request.fingerprint();
    let after: Option<GpuKey> = request
        .page_token
        .as_deref()
        .map(|token| page_token::decode(token, &fingerprint))
        .transpose()?;

    let page = state
        .store()
        .gpu_page(request.sort, request.order, after.as_ref(), request.limit)
        .await?;

    let next_page_token = match page.items.last() {
        Some(last) if page.has_more => {
            Some(page_token::encode(&fingerprint, &last.key(request.sort)))
        }
        _ => None,
    };
    let data = page
        .items
        .into_iter()
        .map(GpuSummary::try_from)
        .collect::<crate::Result<_>>()?;
    Ok(Json(PageBody {
        data,
        next_page_token,
    }))
}

async fn gpu_telemetry(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<PageBody<TelemetryRecord>>, AppError> {
    let request = TelemetryRequest::parse(uuid, query_params(query)?, state.page_limits())?;
    let fingerprint = request.fingerprint();
    let after: Option<RecordKey> = request
        .page_token
        .as_deref()
        .map(|token| page_token::decode(token, &fingerprint))
        .transpose()?;

    let page = state
        .store()
        .telemetry_page(&request.filter, after.as_ref(), request.limit)
        .await?;

    // An empty page is either an empty window of a known GPU (200) or an unknown GPU (404).
    let uuid = &request.filter.uuid;
    if page.items.is_empty() && !state.store().gpu_exists(uuid).await? {
        return Err(AppError::not_found(format!(
            "no telemetry is stored for GPU {uuid:?}; GET {GPUS_PATH} lists the GPUs that have telemetry"
        )));
    }

    let next_page_token = match page.items.last() {
        Some(last) if page.has_more => Some(page_token::encode(&fingerprint, &last.key())),
        _ => None,
    };
    let data = page
        .items
        .into_iter()
        .map(StoredRecord::into_record)
        .collect::<crate::Result<_>>()?;
    Ok(Json(PageBody {
        data,
        next_page_token,
    }))
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Returns 200 when MongoDB replies to a ping, else 503.
async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, AppError> {
    state.store().ping().await.map_err(AppError::unavailable)?;
    Ok(Json(Status { status: "ready" }))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT,
    )
}

async fn not_found(uri: Uri) -> AppError {
    AppError::not_found(format!(
        "no route for {}; the API is described at {OPENAPI_PATH}",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::method_not_allowed(format!(
        "{method} is not allowed on {}; use GET",
        uri.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_lists_routes() {
        let document: serde_json::Value =
            serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is valid JSON");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            GPUS_PATH,
            TELEMETRY_PATH,
            HEALTH_PATH,
            READY_PATH,
            OPENAPI_PATH,
        ] {
            assert!(
                document["paths"].get(path).is_some(),
                "{path} missing from openapi.json"
            );
        }
    }
}
