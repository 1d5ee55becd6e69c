//! Test-only pipelines and a scripted mock of the API server.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, Resource};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use crate::Context;
use crate::crd::{TelemetryPipeline, TelemetryPipelineSpec};
use crate::metrics::Metrics;

pub const NAMESPACE: &str = "testns";
pub const NAME: &str = "gpu";

/// A stored pipeline with defaults, as the API server returns it.
pub fn pipeline(spec: TelemetryPipelineSpec) -> TelemetryPipeline {
    let mut pipeline = TelemetryPipeline::new(NAME, spec);
    let meta = pipeline.meta_mut();
    meta.namespace = Some(NAMESPACE.to_owned());
    meta.uid = Some("6f1d0c1e-8a2b-4c3d-9e4f-5a6b7c8d9e0f".to_owned());
    meta.generation = Some(1);
    pipeline
}

/// Response of the mock to one request.
pub enum Reply {
    /// 200 with the request body, with `status` merged in when given (what apply returns).
    Echo(Option<Value>),
    /// 200 with this object.
    Object(Value),
    /// 200 with a success Status, as a DELETE returns.
    Deleted,
    /// An API error status, such as 404 or 409.
    Error(u16),
}

/// One request the reconciler must send next.
pub struct Expected {
    pub method: Method,
    pub path: String,
    pub reply: Reply,
}

impl Expected {
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            reply,
        }
    }
}

/// A request as the mock received it.
#[derive(Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

pub fn test_context() -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    (Arc::new(Context::new(client, Metrics::default())), handle)
}

/// Responds to the requests of `script` in order, asserting method and path of each request, and returns what it
/// received. A request that is not in the script fails the test.
pub fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<Expected>,
) -> tokio::task::JoinHandle<Vec<Received>> {
    tokio::spawn(async move {
        let mut received = Vec::new();
        for (step, expected) in script.into_iter().enumerate() {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "step {step}: no request for {} {}",
                            expected.method, expected.path
                        )
                    })
                    .expect("mock service dropped");
            let method = request.method().clone();
            let path = request.uri().to_string();
            assert_eq!(
                (&method, &path),
                (&expected.method, &expected.path),
                "step {step}: unexpected request"
            );
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON body")
            };

            let response = match expected.reply {
                Reply::Echo(status) => {
                    let mut object = body.clone();
                    if let (Some(status), Some(map)) = (status, object.as_object_mut()) {
                        map.insert("status".to_owned(), status);
                    }
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(serde_json::to_vec(&object).unwrap()))
                }
                Reply::Object(object) => Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(serde_json::to_vec(&object).unwrap())),
                Reply::Deleted => {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200});
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                }
                Reply::Error(code) => {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("mock answer {code}"), "reason": "Mock", "code": code,
                    });
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                }
            };
            send.send_response(response.unwrap());
            received.push(Received { method, path, body });
        }
        received
    })
}

pub fn apply_path(group_path: &str, plural: &str, name: &str) -> String {
    format!(
        "{group_path}/namespaces/{NAMESPACE}/{plural}/{name}?&force=true&fieldManager=telemetry-operator"
    )
}

pub fn delete_path(group_path: &str, plural: &str, name: &str) -> String {
    format!("{group_path}/namespaces/{NAMESPACE}/{plural}/{name}?")
}

pub fn create_path(group_path: &str, plural: &str) -> String {
    format!("{group_path}/namespaces/{NAMESPACE}/{plural}?&fieldManager=telemetry-operator")
}

pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/testns/events?";
pub const CORE: &str = "/api/v1";
pub const APPS: &str = "/apis/apps/v1";
pub const BATCH: &str = "/apis/batch/v1";
pub const AUTOSCALING: &str = "/apis/autoscaling/v2";
