//! Shared set-up of the integration tests: a real MongoDB-wire server, documents in the
//! consumer's shape, and requests sent through the router.
#![allow(dead_code)]

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Client, Collection};
use prometheus_client::registry::Registry;
use serde_json::Value;
use telemetry_core::contract::{GPUS_COLLECTION, METRICS_COLLECTION};
use telemetry_core::testing::MongoServer;
use telemetry_metrics::{AppState, Auth, HttpMetrics, PageLimits, Store, TokenSet, app};
use tower::ServiceExt;

/// Returns a database name that no other test of this or a concurrent run uses, so tests can share one server
/// when `TEST_MONGODB_URI` points them at an external MongoDB.
pub fn unique_database() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("telemetry_test_{}_{sequence}", std::process::id())
}
pub const TOKEN: &str = "s3cret-grafana-token";
pub const TOKENS_FILE: &str = "# test clients\ngrafana:s3cret-grafana-token\n\nops:0ps-token\n";
pub const GPU_A: &str = "GPU-aaaaaaaa-0000-0000-0000-000000000001";
pub const GPU_B: &str = "GPU-bbbbbbbb-0000-0000-0000-000000000002";
pub const UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
pub const TEMP: &str = "DCGM_FI_DEV_GPU_TEMP";

/// Milliseconds of 2025-07-18T20:42:34Z, the first sample time of the DCGM export.
pub const T0: i64 = 1_752_871_354_000;

/// A running MongoDB-wire server, the metrics collection and the router under test.
pub struct Fixture {
    pub mongo: MongoServer,
    /// Database of this fixture, unique per test.
    pub database: String,
    pub metrics: Collection<Document>,
    pub app: Router,
}

impl Fixture {
    /// Starts MongoDB and builds the router with the test tokens and page sizes 100/1000.
    pub async fn start() -> Self {
        Self::start_with_limits(100, 1000).await
    }

    pub async fn start_with_limits(default: u32, max: u32) -> Self {
        let mongo = MongoServer::start();
        let database = unique_database();
        let client = Client::with_uri_str(&mongo.uri)
            .await
            .expect("creating the MongoDB client");
        let metrics = client
            .database(&database)
            .collection::<Document>(METRICS_COLLECTION);

        let store = Store::connect(&mongo.uri, &database)
            .await
            .expect("connecting the store");
        store.ensure_indexes().await.expect("creating the indexes");
        let tokens =
            TokenSet::parse(TOKENS_FILE, Path::new("tokens.txt")).expect("parsing the test tokens");
        let limits = PageLimits::new(default, max).expect("valid page limits");
        let http_metrics = HttpMetrics::register(&mut Registry::default());
        let app = app(AppState::new(
            store,
            Auth::Tokens(tokens),
            limits,
            http_metrics,
        ));
        Fixture {
            mongo,
            database,
            metrics,
            app,
        }
    }

    /// Inserts metrics documents and updates the `gpus` summaries as the consumer does with one
    /// batch: per GPU, the identity fields of the batch's latest sample and the latest
    /// `last_seen`.
    pub async fn insert(&self, documents: Vec<Document>) {
        self.metrics
            .insert_many(&documents)
            .await
            .expect("inserting test documents");

        let gpus: Collection<Document> = self
            .metrics
            .client()
            .database(&self.database)
            .collection(GPUS_COLLECTION);
        let mut latest: std::collections::BTreeMap<String, Document> = Default::default();
        for document in documents {
            let uuid = document
                .get_str("uuid")
                .expect("test documents have a uuid")
                .to_owned();
            let time = document
                .get_datetime("timestamp")
                .expect("test documents have a timestamp");
            let newer = latest.get(&uuid).is_none_or(|current| {
                current.get_datetime("timestamp").expect("timestamp") <= time
            });
            if newer {
                latest.insert(uuid, document);
            }
        }
        for (uuid, document) in latest {
            let mut identity = Document::new();
            for field in ["gpu_id", "device", "model_name", "hostname"] {
                identity.insert(field, document.get(field).expect("identity field").clone());
            }
            let last_seen = *document.get_datetime("timestamp").expect("timestamp");
            let update = doc! { "$set": identity, "$max": { "last_seen": last_seen } };
            gpus.update_one(doc! { "_id": &uuid }, update)
                .upsert(true)
                .await
                .expect("updating a GPU summary");
        }
    }

    /// GETs `uri` with the valid test token and returns status and JSON body.
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        send(&self.app, uri, Some(&format!("Bearer {TOKEN}")))
            .await
            .into_json()
    }

    /// GETs `uri`, expects 200 and returns the JSON body.
    pub async fn get_ok(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }
}

/// Response from the router: status, headers and body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn into_json(self) -> (StatusCode, Value) {
        let body = serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        (self.status, body)
    }
}

/// Sends a GET through the router with an optional `Authorization` header value.
pub async fn send(app: &Router, uri: &str, authorization: Option<&str>) -> Reply {
    let mut request = Request::get(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// One stored telemetry document in the consumer's shape.
pub struct Sample {
    pub id: String,
    pub uuid: String,
    pub metric_name: String,
    pub millis: i64,
    pub value: f64,
    pub hostname: String,
    pub gpu_id: i64,
}

impl Sample {
    pub fn new(id: &str, uuid: &str, millis: i64) -> Self {
        Sample {
            id: id.to_owned(),
            uuid: uuid.to_owned(),
            metric_name: UTIL.to_owned(),
            millis,
            value: 42.0,
            hostname: "mtv5-dgx1-hgpu-031".to_owned(),
            gpu_id: 0,
        }
    }

    pub fn metric(mut self, metric_name: &str) -> Self {
        self.metric_name = metric_name.to_owned();
        self
    }

    pub fn host(mut self, hostname: &str, gpu_id: i64) -> Self {
        self.hostname = hostname.to_owned();
        self.gpu_id = gpu_id;
        self
    }

    pub fn value(mut self, value: f64) -> Self {
        self.value = value;
        self
    }

    pub fn doc(self) -> Document {
        doc! {
            "_id": self.id,
            "timestamp": DateTime::from_millis(self.millis),
            "metric_name": self.metric_name,
            "gpu_id": self.gpu_id,
            "device": format!("nvidia{}", self.gpu_id),
            "uuid": self.uuid,
            "model_name": "NVIDIA H100 80GB HBM3",
            "hostname": self.hostname,
            "container": "",
            "pod": "",
            "namespace": "",
            "value": self.value,
            "labels": { "job": "dgx_dcgm_exporter", "instance": "mtv5-dgx1-hgpu-031:9400" },
        }
    }
}

/// RFC 3339 text of a millisecond timestamp, as the API formats it.
pub fn rfc3339(millis: i64) -> String {
    let time = chrono::DateTime::from_timestamp_millis(millis).expect("timestamp in range");
    telemetry_core::format_timestamp(&time)
}

pub fn values(body: &Value) -> Vec<f64> {
    body["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect()
}

pub fn next_token(body: &Value) -> Option<String> {
    body["next_page_token"].as_str().map(str::to_owned)
}
