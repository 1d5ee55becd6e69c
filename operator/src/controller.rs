//! The reconciler: applies a pipeline's children, deletes what its spec no longer wants and
//! writes its status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::children::{self, Child, ChildKind, Removed, SecretValues};
use crate::crd::TelemetryPipeline;
use crate::metrics::Metrics;
use crate::status::{self, Observed};
use crate::{Error, FIELD_MANAGER, Result};

/// Requeue interval of a healthy pipeline; watches on the children trigger earlier reconciles.
const RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after a failed reconcile; it doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Maximum retry delay after failed reconciles.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// Publishes Events on the pipelines; it deduplicates repeated events into series.
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per `namespace/name`, for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
        Self {
            client,
            recorder,
            metrics,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn object_key(pipeline: &TelemetryPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// Reconciles one pipeline. On failure it publishes a Warning Event and marks the pipeline
/// Degraded before returning the error to [`error_policy`].
#[tracing::instrument(skip_all, fields(pipeline = %object_key(&pipeline)))]
pub async fn reconcile(pipeline: Arc<TelemetryPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = apply_pipeline(&pipeline, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());

    match result {
        Ok(observed) => {
            let status = status::compute(&pipeline, &observed, None);
            patch_status(&pipeline, &ctx, &status).await?;
            ctx.failures().remove(&object_key(&pipeline));
            Ok(Action::requeue(RESYNC))
        }
        Err(err) => {
            let message = err.to_string();
            publish(
                &ctx,
                &pipeline,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                message.clone(),
                None,
            )
            .await;
            let status = status::compute(&pipeline, &Observed::default(), Some(&message));
            if let Err(status_err) = patch_status(&pipeline, &ctx, &status).await {
                tracing::warn!(cause = %status_err, "failed to mark the pipeline Degraded");
            }
            Err(err)
        }
    }
}

/// Counts the failure and retries after 2 s, 4 s, 8 s … up to 5 minutes for this pipeline.
pub fn error_policy(pipeline: Arc<TelemetryPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_failure(error);
    let key = object_key(&pipeline);
    let attempts = {
        let mut failures = ctx.failures();
        let attempts = failures.entry(key.clone()).or_insert(0);
        *attempts = attempts.saturating_add(1);
        *attempts
    };
    let delay = backoff(attempts);
    tracing::warn!(pipeline = %key, cause = %error, attempts, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `attempts` (1-based).
pub fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

async fn apply_pipeline(pipeline: &TelemetryPipeline, ctx: &Context) -> Result<Observed> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let desired = children::desired(pipeline, &SecretValues::random())?;

    for secret in &desired.secrets {
        if create_if_absent(&ctx.client, &namespace, secret).await? {
            let note = format!(
                "created Secret {} with generated credentials",
                secret.name_any()
            );
            let related = child_reference("v1", "Secret", &namespace, &secret.name_any());
            publish(
                ctx,
                pipeline,
                EventType::Normal,
                "SecretCreated",
                "Create",
                note,
                Some(related),
            )
            .await;
        }
    }

    let mut applied = Vec::with_capacity(desired.applied.len());
    for child in &desired.applied {
        applied.push(apply_child(&ctx.client, &namespace, child).await?);
    }

    for removed in &desired.removed {
        if delete_child(&ctx.client, &namespace, removed).await? {
            let note = format!(
                "deleted {} {}: its component is disabled or external",
                removed.kind.as_str(),
                removed.name
            );
            let related = child_reference(
                removed.kind.api_version(),
                removed.kind.as_str(),
                &namespace,
                &removed.name,
            );
            publish(
                ctx,
                pipeline,
                EventType::Normal,
                "Deleted",
                "Delete",
                note,
                Some(related),
            )
            .await;
        }
    }

    let observed_generation = pipeline.status.as_ref().and_then(|s| s.observed_generation);
    if observed_generation != pipeline.metadata.generation {
        let note = format!(
            "applied {} objects for generation {}",
            desired.applied.len(),
            pipeline.metadata.generation.unwrap_or_default()
        );
        publish(
            ctx,
            pipeline,
            EventType::Normal,
            "Reconciled",
            "Apply",
            note,
            None,
        )
        .await;
    }
    Ok(Observed::from_applied(&pipeline.name_any(), applied))
}

fn child_reference(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}

/// Creates `secret` unless a Secret of that name exists; returns whether it created one.
/// An existing Secret is never changed, so generated passwords stay what clients already use.
async fn create_if_absent(client: &Client, namespace: &str, secret: &Secret) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            },
            secret,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %secret.name_any(), "created generated Secret");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("create Secret {}", secret.name_any()),
            source,
        }),
    }
}

async fn apply_child(client: &Client, namespace: &str, child: &Child) -> Result<Child> {
    Ok(match child {
        Child::Service(o) => Child::Service(apply(client, namespace, o).await?),
        Child::PersistentVolumeClaim(o) => {
            Child::PersistentVolumeClaim(apply(client, namespace, o).await?)
        }
        Child::Deployment(o) => Child::Deployment(apply(client, namespace, o).await?),
        Child::StatefulSet(o) => Child::StatefulSet(apply(client, namespace, o).await?),
        Child::CronJob(o) => Child::CronJob(apply(client, namespace, o).await?),
        Child::HorizontalPodAutoscaler(o) => {
            Child::HorizontalPodAutoscaler(apply(client, namespace, o).await?)
        }
    })
}

/// Server-side apply under the operator's field manager. `force` takes over fields another
/// manager (such as `kubectl edit`) changed, which is how drift is repaired.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let action = format!("apply {} {name}", K::kind(&()));
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(Error::kube(action))
}

async fn delete_child(client: &Client, namespace: &str, removed: &Removed) -> Result<bool> {
    match removed.kind {
        ChildKind::Service => delete::<Service>(client, namespace, &removed.name).await,
        ChildKind::PersistentVolumeClaim => {
            delete::<PersistentVolumeClaim>(client, namespace, &removed.name).await
        }
        ChildKind::Deployment => delete::<Deployment>(client, namespace, &removed.name).await,
        ChildKind::StatefulSet => delete::<StatefulSet>(client, namespace, &removed.name).await,
        ChildKind::CronJob => delete::<CronJob>(client, namespace, &removed.name).await,
        ChildKind::HorizontalPodAutoscaler => {
            delete::<HorizontalPodAutoscaler>(client, namespace, &removed.name).await
        }
    }
}

/// Deletes `name` if it exists and returns whether it did.
// NOTE: this sends one DELETE per removed child on every reconcile, answered 404 once the
// child is gone; a cache of owned objects would save those requests.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(
                kind = K::kind(&()).as_ref(),
                name,
                "deleted child of a removed component"
            );
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("delete {} {name}", K::kind(&())),
            source,
        }),
    }
}

async fn patch_status(
    pipeline: &TelemetryPipeline,
    ctx: &Context,
    status: &crate::crd::TelemetryPipelineStatus,
) -> Result<()> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<TelemetryPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": TelemetryPipeline::api_version(&()),
        "kind": TelemetryPipeline::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&pipeline.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::kube(format!(
            "patch status of TelemetryPipeline {}",
            pipeline.name_any()
        )))?;
    Ok(())
}

/// Publishes an Event on the pipeline. A failure is logged, not returned: Events are
/// diagnostics and must not fail the reconcile.
///
/// `related` names the child the Event is about. The recorder folds Events with the same
/// reason, action and related object into one series, so Events about different children
/// need it to stay apart.
async fn publish(
    ctx: &Context,
    pipeline: &TelemetryPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: related,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        tracing::warn!(cause = %err, reason, "failed to publish Event");
    }
}

/// Runs the controller until `shutdown` completes: watches pipelines and the children they own.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let pipelines: Api<TelemetryPipeline> = Api::all(client.clone());
    // Children carry this label, so the owned-object watches skip every other object.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(pipelines, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<CronJob>::all(client.clone()), owned.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<Secret>::all(client.clone()), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(pipeline = %object, "reconciled"),
                Err(err) => tracing::warn!(cause = %err, "reconcile loop error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::crd::{
        BrokerSpec, ExternalBroker, ExternalMongoDb, MongoDbSpec, SecretKeyRef,
        TelemetryPipelineSpec, TelemetryPipelineStatus,
    };
    use crate::fixtures::*;

    const STATUS: &str = "/apis/gputelemetry.io/v1alpha1/namespaces/testns/telemetrypipelines/gpu/status?&force=true&fieldManager=telemetry-operator";

    fn ready(replicas: i64) -> Reply {
        Reply::Echo(Some(
            json!({"replicas": replicas, "readyReplicas": replicas}),
        ))
    }

    fn apply(group: &str, plural: &str, name: &str, reply: Reply) -> Expected {
        Expected::new(Method::PATCH, apply_path(group, plural, name), reply)
    }

    fn delete(group: &str, plural: &str, name: &str, reply: Reply) -> Expected {
        Expected::new(Method::DELETE, delete_path(group, plural, name), reply)
    }

    fn create_secret(reply: Reply) -> Expected {
        Expected::new(Method::POST, create_path(CORE, "secrets"), reply)
    }

    fn event() -> Expected {
        Expected::new(Method::POST, EVENTS, Reply::Echo(None))
    }

    fn status_patch(pipeline: &TelemetryPipeline) -> Expected {
        Expected::new(
            Method::PATCH,
            STATUS,
            Reply::Object(serde_json::to_value(pipeline).unwrap()),
        )
    }

    /// Runs one reconcile against `script` and returns the requests and the result.
    async fn run(
        pipeline: TelemetryPipeline,
        script: Vec<Expected>,
    ) -> (Vec<Received>, Result<Action>) {
        let (ctx, handle) = test_context();
        let server = serve(handle, script);
        let result =
            tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(pipeline), ctx))
                .await
                .expect("reconcile timed out: it sent a request the script does not list");
        let received = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("script not finished")
            .unwrap();
        (received, result)
    }

    fn body_of<'a>(received: &'a [Received], method: Method, path: &str) -> &'a Value {
        &received
            .iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("no {method} {path}"))
            .body
    }

    fn env_value<'a>(deployment: &'a Value, name: &str) -> &'a Value {
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env list");
        env.iter()
            .find(|var| var["name"] == name)
            .unwrap_or_else(|| panic!("no env var {name}"))
    }

    fn status_of(received: &[Received]) -> TelemetryPipelineStatus {
        serde_json::from_value(body_of(received, Method::PATCH, STATUS)["status"].clone())
            .expect("status body")
    }

    fn condition<'a>(status: &'a TelemetryPipelineStatus, type_: &str) -> &'a str {
        &status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
            .status
    }

    #[tokio::test]
    async fn fresh_pipeline_creates_everything() {
        let pipeline = pipeline(TelemetryPipelineSpec::default());
        let script = vec![
            create_secret(Reply::Echo(None)),
            event(),
            create_secret(Reply::Echo(None)),
            event(),
            create_secret(Reply::Echo(None)),
            event(),
            apply(CORE, "services", "gpu-broker", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-broker", ready(1)),
            apply(CORE, "services", "gpu-mongodb", Reply::Echo(None)),
            apply(APPS, "statefulsets", "gpu-mongodb", ready(1)),
            apply(
                APPS,
                "deployments",
                "gpu-consumer",
                Reply::Echo(Some(json!({"replicas": 2, "readyReplicas": 1}))),
            ),
            apply(CORE, "services", "gpu-metrics", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-metrics", ready(2)),
            apply(BATCH, "cronjobs", "gpu-producer", Reply::Echo(None)),
            delete(
                CORE,
                "persistentvolumeclaims",
                "gpu-broker-data",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-consumer",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-metrics",
                Reply::Error(404),
            ),
            event(),
            status_patch(&pipeline),
        ];
        let (received, result) = run(pipeline, script).await;
        assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));

        let secret_names: Vec<&Value> = received
            .iter()
            .filter(|r| r.method == Method::POST && r.path.contains("secrets"))
            .map(|r| &r.body["metadata"]["name"])
            .collect();
        assert_eq!(
            secret_names,
            [
                &json!("gpu-broker-credentials"),
                &json!("gpu-mongodb-credentials"),
                &json!("gpu-api-tokens")
            ]
        );
        let events: Vec<&Value> = received
            .iter()
            .filter(|r| r.path == EVENTS)
            .map(|r| &r.body["reason"])
            .collect();
        assert_eq!(
            events,
            [
                &json!("SecretCreated"),
                &json!("SecretCreated"),
                &json!("SecretCreated"),
                &json!("Reconciled")
            ]
        );

        let consumer = body_of(
            &received,
            Method::PATCH,
            &apply_path(APPS, "deployments", "gpu-consumer"),
        );
        assert_eq!(
            consumer["metadata"]["ownerReferences"][0]["controller"],
            true
        );
        assert_eq!(
            consumer["metadata"]["ownerReferences"][0]["kind"],
            "TelemetryPipeline"
        );
        assert_eq!(
            env_value(consumer, "AMQP_URL")["valueFrom"]["secretKeyRef"]["name"],
            "gpu-broker-credentials"
        );

        let status = status_of(&received);
        assert_eq!(
            status.phase,
            Some(crate::crd::Phase::Progressing),
            "one consumer pod is not ready"
        );
        assert_eq!(status.consumers.as_deref(), Some("1/2"));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(condition(&status, "ConsumerReady"), "False");
        assert_eq!(condition(&status, "BrokerReady"), "True");
        assert_eq!(condition(&status, "Ready"), "False");
        assert_eq!(condition(&status, "Degraded"), "False");
        let endpoints = status.endpoints.expect("endpoints");
        assert_eq!(
            endpoints.amqp_url.as_deref(),
            Some("amqp://gpu-broker.testns.svc:5672")
        );
        assert_eq!(
            endpoints.api_url.as_deref(),
            Some("http://gpu-metrics.testns.svc:8080")
        );
    }

    /// Existing Secrets and children: Secrets are left alone (409 on create), every child is
    /// applied again with the full desired spec, which undoes any edit made by someone else.
    #[tokio::test]
    async fn drift_is_repaired_by_apply() {
        let mut pipeline = pipeline(TelemetryPipelineSpec::default());
        pipeline.status = Some(TelemetryPipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let script = vec![
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            apply(CORE, "services", "gpu-broker", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-broker", ready(1)),
            apply(CORE, "services", "gpu-mongodb", Reply::Echo(None)),
            apply(APPS, "statefulsets", "gpu-mongodb", ready(1)),
            apply(APPS, "deployments", "gpu-consumer", ready(2)),
            apply(CORE, "services", "gpu-metrics", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-metrics", ready(2)),
            apply(BATCH, "cronjobs", "gpu-producer", Reply::Echo(None)),
            delete(
                CORE,
                "persistentvolumeclaims",
                "gpu-broker-data",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-consumer",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-metrics",
                Reply::Error(404),
            ),
            status_patch(&pipeline),
        ];
        let desired = crate::children::desired(&pipeline, &SecretValues::random()).unwrap();
        let (received, result) = run(pipeline, script).await;
        result.expect("reconcile succeeds");

        let expected = desired
            .applied
            .iter()
            .find(|c| c.name() == "gpu-consumer")
            .unwrap()
            .to_json()
            .unwrap();
        let sent = body_of(
            &received,
            Method::PATCH,
            &apply_path(APPS, "deployments", "gpu-consumer"),
        );
        assert_eq!(sent, &expected, "the whole desired Deployment is applied");
        assert_eq!(sent["spec"]["replicas"], 2);
        assert!(
            received.iter().all(|r| r.path != EVENTS),
            "no Event when nothing was created or deleted"
        );
        assert_eq!(status_of(&received).phase, Some(crate::crd::Phase::Ready));
    }

    #[tokio::test]
    async fn disabled_metrics_are_deleted() {
        let mut spec = TelemetryPipelineSpec::default();
        spec.metrics.enabled = false;
        let mut pipeline = pipeline(spec);
        pipeline.status = Some(TelemetryPipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let script = vec![
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            apply(CORE, "services", "gpu-broker", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-broker", ready(1)),
            apply(CORE, "services", "gpu-mongodb", Reply::Echo(None)),
            apply(APPS, "statefulsets", "gpu-mongodb", ready(1)),
            apply(APPS, "deployments", "gpu-consumer", ready(2)),
            apply(BATCH, "cronjobs", "gpu-producer", Reply::Echo(None)),
            delete(
                CORE,
                "persistentvolumeclaims",
                "gpu-broker-data",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-consumer",
                Reply::Error(404),
            ),
            delete(APPS, "deployments", "gpu-metrics", Reply::Deleted),
            event(),
            delete(CORE, "services", "gpu-metrics", Reply::Deleted),
            event(),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-metrics",
                Reply::Error(404),
            ),
            status_patch(&pipeline),
        ];
        let (received, result) = run(pipeline, script).await;
        result.expect("reconcile succeeds");

        let notes: Vec<&Value> = received
            .iter()
            .filter(|r| r.path == EVENTS)
            .map(|r| &r.body["note"])
            .collect();
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0]
                .as_str()
                .unwrap()
                .contains("Deployment gpu-metrics"),
            "{notes:?}"
        );
        let status = status_of(&received);
        assert_eq!(status.endpoints.as_ref().unwrap().api_url, None);
        assert_eq!(condition(&status, "MetricsReady"), "True");
    }

    #[tokio::test]
    async fn external_broker_replaces_built_in() {
        let mut spec = TelemetryPipelineSpec::default();
        let secret_ref = SecretKeyRef {
            name: "rabbitmq".to_owned(),
            key: "uri".to_owned(),
        };
        spec.broker = BrokerSpec {
            built_in: None,
            external: Some(ExternalBroker { secret_ref }),
        };
        let mut pipeline = pipeline(spec);
        pipeline.status = Some(TelemetryPipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let script = vec![
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            apply(CORE, "services", "gpu-mongodb", Reply::Echo(None)),
            apply(APPS, "statefulsets", "gpu-mongodb", ready(1)),
            apply(APPS, "deployments", "gpu-consumer", ready(2)),
            apply(CORE, "services", "gpu-metrics", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-metrics", ready(2)),
            apply(BATCH, "cronjobs", "gpu-producer", Reply::Echo(None)),
            delete(APPS, "deployments", "gpu-broker", Reply::Deleted),
            event(),
            delete(CORE, "services", "gpu-broker", Reply::Deleted),
            event(),
            delete(
                CORE,
                "persistentvolumeclaims",
                "gpu-broker-data",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-consumer",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-metrics",
                Reply::Error(404),
            ),
            status_patch(&pipeline),
        ];
        let (received, result) = run(pipeline, script).await;
        result.expect("reconcile succeeds");

        let consumer = body_of(
            &received,
            Method::PATCH,
            &apply_path(APPS, "deployments", "gpu-consumer"),
        );
        assert_eq!(
            env_value(consumer, "AMQP_URL")["valueFrom"]["secretKeyRef"],
            json!({"name": "rabbitmq", "key": "uri", "optional": false})
        );
        let producer = body_of(
            &received,
            Method::PATCH,
            &apply_path(BATCH, "cronjobs", "gpu-producer"),
        );
        let producer_env =
            &producer["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            producer_env
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["valueFrom"]["secretKeyRef"]["name"] == "rabbitmq")
        );
        let status = status_of(&received);
        assert_eq!(
            status.endpoints.as_ref().unwrap().amqp_url.as_deref(),
            Some("external")
        );
        assert_eq!(condition(&status, "BrokerReady"), "True");
    }

    #[tokio::test]
    async fn external_mongodb_keeps_data_claims() {
        let mut spec = TelemetryPipelineSpec::default();
        let secret_ref = SecretKeyRef {
            name: "mongo-rs".to_owned(),
            key: "connectionString".to_owned(),
        };
        spec.mongodb = MongoDbSpec {
            managed: None,
            external: Some(ExternalMongoDb { secret_ref }),
            database: "gpu".to_owned(),
        };
        let mut pipeline = pipeline(spec);
        pipeline.status = Some(TelemetryPipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        // No request touches the StatefulSet's claim `data-gpu-mongodb-0`: the script is exact.
        let script = vec![
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            apply(CORE, "services", "gpu-broker", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-broker", ready(1)),
            apply(APPS, "deployments", "gpu-consumer", ready(2)),
            apply(CORE, "services", "gpu-metrics", Reply::Echo(None)),
            apply(APPS, "deployments", "gpu-metrics", ready(2)),
            apply(BATCH, "cronjobs", "gpu-producer", Reply::Echo(None)),
            delete(
                CORE,
                "persistentvolumeclaims",
                "gpu-broker-data",
                Reply::Error(404),
            ),
            delete(APPS, "statefulsets", "gpu-mongodb", Reply::Deleted),
            event(),
            delete(CORE, "services", "gpu-mongodb", Reply::Error(404)),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-consumer",
                Reply::Error(404),
            ),
            delete(
                AUTOSCALING,
                "horizontalpodautoscalers",
                "gpu-metrics",
                Reply::Error(404),
            ),
            status_patch(&pipeline),
        ];
        let (received, result) = run(pipeline, script).await;
        result.expect("reconcile succeeds");

        let api = body_of(
            &received,
            Method::PATCH,
            &apply_path(APPS, "deployments", "gpu-metrics"),
        );
        assert_eq!(
            env_value(api, "MONGODB_URI")["valueFrom"]["secretKeyRef"]["name"],
            "mongo-rs"
        );
        assert_eq!(env_value(api, "MONGODB_DATABASE")["value"], "gpu");
        let secret_posts = received
            .iter()
            .filter(|r| r.path.ends_with("secrets?&fieldManager=telemetry-operator"))
            .count();
        assert_eq!(
            secret_posts, 2,
            "no MongoDB credentials for an external database"
        );
        assert_eq!(condition(&status_of(&received), "MongoDBReady"), "True");
    }

    #[tokio::test]
    async fn apply_failure_marks_degraded() {
        let mut pipeline = pipeline(TelemetryPipelineSpec::default());
        pipeline.status = Some(TelemetryPipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        let script = vec![
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            create_secret(Reply::Error(409)),
            apply(CORE, "services", "gpu-broker", Reply::Error(422)),
            event(),
            status_patch(&pipeline),
        ];
        let (received, result) = run(pipeline.clone(), script).await;
        let err = result.expect_err("a rejected apply fails the reconcile");
        assert_eq!(err.metric_label(), "kube");
        assert!(
            err.to_string().contains("apply Service gpu-broker"),
            "{err}"
        );
        let event = &received.iter().find(|r| r.path == EVENTS).unwrap().body;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ReconcileFailed");
        let status = status_of(&received);
        assert_eq!(status.phase, Some(crate::crd::Phase::Degraded));
        assert_eq!(condition(&status, "Degraded"), "True");

        let (ctx, _handle) = test_context();
        let pipeline = Arc::new(pipeline);
        let delays: Vec<Duration> = (0..3)
            .map(|_| action_delay(&error_policy(pipeline.clone(), &err, ctx.clone())))
            .collect();
        assert_eq!(
            delays,
            [
                Duration::from_secs(2),
                Duration::from_secs(4),
                Duration::from_secs(8)
            ]
        );
    }

    fn action_delay(action: &Action) -> Duration {
        // Action has no accessor for its delay, but it compares equal to the same requeue.
        [2u64, 4, 8]
            .into_iter()
            .map(Duration::from_secs)
            .find(|d| *action == Action::requeue(*d))
            .unwrap_or_else(|| panic!("unexpected action {action:?}"))
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
