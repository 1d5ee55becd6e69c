//! Starts the workloads in-process on loopback, each on port 0, against a real
//! MongoDB-wire server, and gives the tests small HTTP and MongoDB helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mongodb::bson::doc;
use telemetry_consumer::{ConsumerConfig, ConsumerMetrics, ConsumerMode};
use telemetry_core::contract::METRICS_COLLECTION;
use telemetry_core::testing::MongoServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound on every wait in these tests, so a broken pipeline fails instead of hanging.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// A shutdown signal shared by every component a test starts.
#[derive(Clone)]
pub struct Stop(watch::Sender<bool>);

impl Stop {
    pub fn new() -> Self {
        Stop(watch::channel(false).0)
    }

    /// Returns a future that completes once [`Stop::trigger`] was called.
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }

    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// A broker running in-process.
pub struct RunningBroker {
    pub amqp_url: String,
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<telemetry_broker::Result<()>>,
}

pub async fn start_broker(stop: &Stop) -> RunningBroker {
    let bound = telemetry_broker::Broker::bind(telemetry_broker::Config::ephemeral())
        .await
        .expect("binding the broker on loopback");
    let amqp_url = format!("amqp://guest:guest@{}/%2f", bound.local_addr());
    let admin_addr = bound.admin_addr();
    let task = tokio::spawn(bound.run(stop.signal()));
    wait_ready(admin_addr).await;
    RunningBroker { amqp_url, admin_addr, task }
}

/// A consumer running in-process.
pub struct RunningConsumer {
    pub admin_addr: SocketAddr,
    pub metrics: ConsumerMetrics,
    pub task: JoinHandle<telemetry_consumer::Result<()>>,
}

pub fn consumer_config(amqp_url: &str, mongodb_uri: &str, database: &str, mode: ConsumerMode) -> ConsumerConfig {
    ConsumerConfig {
        amqp_url: amqp_url.to_owned(),
        mongodb_uri: mongodb_uri.to_owned(),
        database: database.to_owned(),
        mode,
        batch_size: 100,
        batch_timeout: Duration::from_millis(50),
        prefetch: 200,
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ConsumerConfig::default()
    }
}

/// Starts a consumer and waits until it is consuming (`/readyz` returns 200).
pub async fn start_consumer(config: ConsumerConfig, stop: &Stop) -> RunningConsumer {
    let consumer = telemetry_consumer::Consumer::bind(config).await.expect("binding the consumer");
    let admin_addr = consumer.admin_addr();
    let metrics = consumer.metrics();
    let task = tokio::spawn(consumer.run(stop.signal()));
    wait_ready(admin_addr).await;
    RunningConsumer { admin_addr, metrics, task }
}

/// Publishes `csv` with the producer library and returns its summary, asserting it completed.
pub async fn produce(amqp_url: &str, csv: &Path) -> telemetry_producer::RunSummary {
    let config = telemetry_producer::ProducerConfig {
        amqp_url: amqp_url.to_owned(),
        csv_path: csv.to_owned(),
        ..telemetry_producer::ProducerConfig::default()
    };
    let summary = telemetry_producer::run(config, std::future::pending()).await.expect("producer run");
    assert!(summary.is_complete(), "every row confirmed: {summary:?}");
    summary
}

/// The metrics API running in-process with one bearer token.
pub struct RunningApi {
    pub base_url: String,
    pub token: String,
    _tokens: tempfile::NamedTempFile,
}

pub async fn start_api(mongodb_uri: &str, database: &str, stop: &Stop) -> RunningApi {
    use clap::Parser;
    use std::io::Write;

    let token = "e2e-token-0123456789abcdef".to_owned();
    let mut tokens = tempfile::NamedTempFile::new().expect("creating the tokens file");
    writeln!(tokens, "e2e:{token}").expect("writing the tokens file");
    let config = telemetry_metrics::Config::parse_from([
        "telemetry-metrics",
        "--bind-address",
        "127.0.0.1",
        "--api-port",
        "0",
        "--admin-port",
        "0",
        "--mongodb-uri",
        mongodb_uri,
        "--mongodb-database",
        database,
        "--api-tokens-file",
        tokens.path().to_str().expect("temporary path is UTF-8"),
    ]);
    let server = telemetry_metrics::Server::bind(&config).await.expect("binding the API");
    let base_url = format!("http://{}", server.api_addr());
    tokio::spawn(server.serve(stop.signal()));
    RunningApi { base_url, token, _tokens: tokens }
}

/// Sends a GET and returns the status and body.
pub async fn http_get(url: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = hyper::Request::get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Empty::new()).expect("building the request"))
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("reading the body").to_bytes();
    (status, body.to_vec())
}

/// GETs a JSON document from the API with its token, asserting status 200.
pub async fn api_json(api: &RunningApi, path_and_query: &str) -> serde_json::Value {
    let url = format!("{}{path_and_query}", api.base_url);
    let (status, body) = http_get(&url, Some(&api.token)).await;
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("API returns JSON")
}

/// Waits until `/readyz` at `admin` returns 200.
pub async fn wait_ready(admin: SocketAddr) {
    let url = format!("http://{admin}/readyz");
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        if let Ok(response) = client.get(url.parse().expect("valid URL")).await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} not ready within {WAIT_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Number of documents in `database.metrics`.
pub async fn stored_count(mongodb_uri: &str, database: &str) -> u64 {
    let client = mongodb::Client::with_uri_str(mongodb_uri).await.expect("MongoDB client");
    client
        .database(database)
        .collection::<mongodb::bson::Document>(METRICS_COLLECTION)
        .count_documents(doc! {})
        .await
        .expect("counting stored records")
}

/// Waits until `database.metrics` contains `expected` documents, then checks it stays there
/// for a moment, so that a duplicate arriving late is caught.
pub async fn wait_stored(mongodb_uri: &str, database: &str, expected: u64) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let count = stored_count(mongodb_uri, database).await;
        assert!(count <= expected, "{database}: stored {count}, more than the {expected} published");
        if count == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{database}: stored {count} of {expected} within {WAIT_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_count(mongodb_uri, database).await, expected, "{database}: count changed after settling");
}

/// Starts the MongoDB-wire server on a blocking thread, since it waits on the port.
pub async fn start_mongo() -> MongoServer {
    tokio::task::spawn_blocking(MongoServer::start).await.expect("starting MongoDB")
}

/// Writes a DCGM CSV with the first `rows` data rows of the sample export.
pub fn sample_subset(rows: usize) -> tempfile::NamedTempFile {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(telemetry_core::contract::SAMPLE_CSV_PATH);
    let text = std::fs::read_to_string(&sample).expect("reading the sample export");
    let lines: Vec<&str> = text.lines().take(rows + 1).collect();
    assert_eq!(lines.len(), rows + 1, "the sample has at least {rows} rows");
    let file = tempfile::NamedTempFile::new().expect("creating a CSV file");
    std::fs::write(file.path(), lines.join("\n") + "\n").expect("writing the CSV file");
    file
}

/// Path of the export the end-to-end run uses: `DCGM_CSV` when set, else the sample.
pub fn export_path() -> PathBuf {
    telemetry_core::testing::dcgm_csv_path()
}
