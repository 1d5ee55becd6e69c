//! Authentication and the open routes, through the router.

mod common;

use std::path::Path;

use axum::http::{StatusCode, header};
use common::*;
use prometheus_client::registry::Registry;
use serde_json::Value;
use telemetry_core::testing::free_port;
use telemetry_metrics::{AppState, Auth, HttpMetrics, PageLimits, Store, app};

const GPUS: &str = "/api/v1/gpus";

fn assert_unauthorized(reply: Reply, case: &str) {
    let challenge = reply
        .headers
        .get(header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    let (status, body) = reply.into_json();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{case}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
    let challenge = challenge.unwrap_or_else(|| panic!("{case}: no WWW-Authenticate header"));
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
}

#[tokio::test]
async fn missing_token_rejected() {
    let fixture = Fixture::start().await;
    let reply = send(&fixture.app, GPUS, None).await;
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_unauthorized(reply, "no Authorization header");
}

#[tokio::test]
async fn wrong_token_rejected() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;
    let telemetry = format!("/api/v1/gpus/{GPU_A}/telemetry");

    let cases = [
        ("Bearer not-the-token", "unknown token"),
        ("Bearer s3cret-grafana-toke", "prefix of a token"),
        ("Bearer s3cret-grafana-token0", "token with a suffix"),
        ("Basic Z3JhZmFuYTpzM2NyZXQ=", "Basic scheme"),
        ("Bearer", "scheme without token"),
        ("s3cret-grafana-token", "token without scheme"),
    ];
    for (authorization, case) in cases {
        assert_unauthorized(send(&fixture.app, GPUS, Some(authorization)).await, case);
        assert_unauthorized(
            send(&fixture.app, &telemetry, Some(authorization)).await,
            case,
        );
    }
}

#[tokio::test]
async fn valid_tokens_accepted() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    for authorization in [
        "Bearer s3cret-grafana-token",
        "bearer s3cret-grafana-token",
        "Bearer 0ps-token",
    ] {
        let (status, body) = send(&fixture.app, GPUS, Some(authorization))
            .await
            .into_json();
        assert_eq!(status, StatusCode::OK, "{authorization}: {body}");
        assert_eq!(body["data"][0]["uuid"], GPU_A);
    }
}

#[tokio::test]
async fn health_routes_open_without_token() {
    let fixture = Fixture::start().await;

    let (status, body) = send(&fixture.app, "/healthz", None).await.into_json();
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, Value::from("ok"))
    );

    let (status, body) = send(&fixture.app, "/readyz", None).await.into_json();
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, Value::from("ready")),
        "{body}"
    );

    let reply = send(&fixture.app, "/api/v1/openapi.json", None).await;
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let (status, document) = reply.into_json();
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["paths"]["/api/v1/gpus/{uuid}/telemetry"]["get"].is_object(),
        "{document}"
    );
}

#[tokio::test]
async fn unknown_route_and_method_return_json() {
    let fixture = Fixture::start().await;

    let (status, body) = send(&fixture.app, "/api/v2/gpus", None).await.into_json();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    let request = axum::http::Request::post(GPUS)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(fixture.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn disabled_auth_accepts_anonymous() {
    let fixture = Fixture::start().await;
    let store = Store::connect(&fixture.mongo.uri, &fixture.database)
        .await
        .unwrap();
    let limits = PageLimits::new(100, 1000).unwrap();
    let open = app(AppState::new(
        store,
        Auth::Disabled,
        limits,
        HttpMetrics::register(&mut Registry::default()),
    ));

    let (status, body) = send(&open, GPUS, None).await.into_json();
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn readyz_fails_without_database() {
    // Nothing listens on this port, so the ping cannot succeed.
    let uri = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500",
        free_port()
    );
    let store = Store::connect(&uri, &unique_database()).await.unwrap();
    let tokens = telemetry_metrics::TokenSet::parse(TOKENS_FILE, Path::new("tokens.txt")).unwrap();
    let limits = PageLimits::new(100, 1000).unwrap();
    let router = app(AppState::new(
        store,
        Auth::Tokens(tokens),
        limits,
        HttpMetrics::register(&mut Registry::default()),
    ));

    let reply = send(&router, "/readyz", None).await;
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    let (status, body) = reply.into_json();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    // An API request fails the same way, without leaking the driver's error text.
    let (status, body) = send(&router, GPUS, Some(&format!("Bearer {TOKEN}")))
        .await
        .into_json();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}
