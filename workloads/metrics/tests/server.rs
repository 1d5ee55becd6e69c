//! The whole service over TCP: start-up checks, both listeners, metrics and shutdown.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use clap::Parser;
use common::*;
use telemetry_core::testing::MongoServer;
use telemetry_metrics::{Config, Error, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(mongo_uri: &str, extra: &[&str]) -> Config {
    config_in(mongo_uri, &unique_database(), extra)
}

fn config_in(mongo_uri: &str, database: &str, extra: &[&str]) -> Config {
    let args = [
        "telemetry-metrics",
        "--api-port",
        "0",
        "--admin-port",
        "0",
        "--bind-address",
        "127.0.0.1",
    ];
    let mongo = ["--mongodb-uri", mongo_uri, "--mongodb-database", database];
    Config::try_parse_from(args.iter().chain(&mongo).chain(extra)).expect("valid test arguments")
}

fn tokens_file(dir: &Path, text: &str) -> String {
    let path = dir.join("tokens.txt");
    std::fs::write(&path, text).expect("writing the tokens file");
    path.to_str().unwrap().to_owned()
}

/// Sends one HTTP/1.1 GET and returns the status code and body.
async fn http_get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the server");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

#[tokio::test]
async fn serves_api_and_admin_until_shutdown() {
    let mongo = MongoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), TOKENS_FILE);
    let server = Server::bind(&config(&mongo.uri, &["--api-tokens-file", &tokens]))
        .await
        .expect("server start-up");
    let (api, admin) = (server.api_addr(), server.admin_addr());
    assert_ne!(api.port(), 0);
    assert_ne!(admin.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    assert_eq!(http_get(api, "/healthz", None).await.0, 200);
    assert_eq!(http_get(api, "/readyz", None).await.0, 200);
    let (status, body) = http_get(api, "/api/v1/gpus", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_get(api, "/api/v1/gpus", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"data":[],"next_page_token":null}"#);

    let (status, metrics) = http_get(admin, "/metrics", None).await;
    assert_eq!(status, 200);
    let ok = r#"http_requests_total{route="/api/v1/gpus",method="GET",status="200"} 1"#;
    let unauthorized = r#"http_requests_total{route="/api/v1/gpus",method="GET",status="401"} 1"#;
    assert!(metrics.contains(ok), "{metrics}");
    assert!(metrics.contains(unauthorized), "{metrics}");
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(http_get(admin, "/healthz", None).await.0, 200);

    stop.send(()).unwrap();
    serving.await.unwrap().expect("clean shutdown");
    assert!(
        TcpStream::connect(api).await.is_err(),
        "API still accepts connections after shutdown"
    );
}

#[tokio::test]
async fn admin_readyz_turns_ready() {
    let mongo = MongoServer::start();
    let server = Server::bind(&config(&mongo.uri, &["--auth-disabled"]))
        .await
        .expect("server start-up");
    let admin = server.admin_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    // The first readiness check runs as serving starts; wait for it, bounded to 10 s.
    let mut status = 0;
    for _ in 0..100 {
        status = http_get(admin, "/readyz", None).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "admin /readyz never became ready");

    stop.send(()).unwrap();
    serving.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn startup_creates_indexes() {
    let mongo = MongoServer::start();
    let database = unique_database();
    let _server = Server::bind(&config_in(&mongo.uri, &database, &["--auth-disabled"]))
        .await
        .expect("server start-up");

    let client = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let collection = client
        .database(&database)
        .collection::<mongodb::bson::Document>("metrics");
    let names = collection.list_index_names().await.unwrap();
    assert!(
        names.iter().any(|name| name == "uuid_timestamp_id"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name == "uuid_metric_timestamp_id"),
        "{names:?}"
    );

    // A second start-up meets the existing indexes and succeeds.
    Server::bind(&config_in(&mongo.uri, &database, &["--auth-disabled"]))
        .await
        .expect("second start-up");
}

#[tokio::test]
async fn malformed_tokens_file_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(
        dir.path(),
        "# clients\ngrafana:abc123\n\nsecret-without-name\nops:def456\n",
    );
    // No MongoDB is needed: the tokens file is checked before connecting.
    let err = Server::bind(&config(
        "mongodb://127.0.0.1:1",
        &["--api-tokens-file", &tokens],
    ))
    .await
    .err()
    .expect("start-up fails");

    let message = err.to_string();
    assert!(
        matches!(err, Error::TokensLine { line: 4, .. }),
        "{message}"
    );
    assert!(message.contains("line 4"), "{message}");
    assert!(
        message.contains(&tokens),
        "message does not name the file: {message}"
    );
    assert!(
        !message.contains("secret-without-name"),
        "message contains the token: {message}"
    );
}

#[tokio::test]
async fn missing_tokens_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.txt");
    let err = Server::bind(&config(
        "mongodb://127.0.0.1:1",
        &["--api-tokens-file", path.to_str().unwrap()],
    ))
    .await
    .err()
    .expect("start-up fails");
    assert!(matches!(err, Error::TokensRead { .. }), "{err}");
}

#[tokio::test]
async fn auth_must_be_disabled_explicitly() {
    let err = Server::bind(&config("mongodb://127.0.0.1:1", &[]))
        .await
        .err()
        .expect("start-up fails");
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{message}");
    assert!(message.contains("--auth-disabled"), "{message}");
}

#[tokio::test]
async fn page_size_default_above_max_rejected() {
    let extra = [
        "--auth-disabled",
        "--api-page-size-default",
        "500",
        "--api-page-size-max",
        "100",
    ];
    let err = Server::bind(&config("mongodb://127.0.0.1:1", &extra))
        .await
        .err()
        .expect("start-up fails");
    assert!(
        err.to_string().contains("--api-page-size-max (100)"),
        "{err}"
    );
}
