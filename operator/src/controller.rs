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
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
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
/// Longest retry delay after failed reconciles.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
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
        Self { client, recorder, metrics, failures: Mutex::default() }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn object_key(pipeline: &TelemetryPipeline) -> String {
    format!("{}/{}", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// Reconciles one pipeline. On failure it publishes a Warning Event and marks the pipeline
/// Degraded before returning the error to [`error_policy`].
#[tracing::instrument(skip_all, fields(pipeline = %object_key(&pipeline)))]
pub async fn reconcile(pipeline: Arc<TelemetryPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = apply_pipeline(&pipeline, &ctx).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());

    match result {
        Ok(observed) => {
            let status = status::compute(&pipeline, &observed, None);
            patch_status(&pipeline, &ctx, &status).await?;
            ctx.failures().remove(&object_key(&pipeline));
            Ok(Action::requeue(RESYNC))
        }
        Err(err) => {
            let message = err.to_string();
            publish(&ctx, &pipeline, EventType::Warning, "ReconcileFailed", "Reconcile", message.clone()).await;
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
    let namespace = pipeline.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let desired = children::desired(pipeline, &SecretValues::random())?;

    for secret in &desired.secrets {
        if create_if_absent(&ctx.client, &namespace, secret).await? {
            let note = format!("created Secret {} with generated credentials", secret.name_any());
            publish(ctx, pipeline, EventType::Normal, "SecretCreated", "Create", note).await;
        }
    }

    let mut applied = Vec::with_capacity(desired.applied.len());
    for child in &desired.applied {
        applied.push(apply_child(&ctx.client, &namespace, child).await?);
    }

    for removed in &desired.removed {
        if delete_child(&ctx.client, &namespace, removed).await? {
            let note = format!("deleted {} {}: its component is disabled or external", removed.kind.as_str(), removed.name);
            publish(ctx, pipeline, EventType::Normal, "Deleted", "Delete", note).await;
        }
    }

    let observed_generation = pipeline.status.as_ref().and_then(|s| s.observed_generation);
    if observed_generation != pipeline.metadata.generation {
        let note = format!(
            "applied {} objects for generation {}",
            desired.applied.len(),
            pipeline.metadata.generation.unwrap_or_default()
        );
        publish(ctx, pipeline, EventType::Normal, "Reconciled", "Apply", note).await;
    }
    Ok(Observed::from_applied(&pipeline.name_any(), applied))
}

/// Creates `secret` unless a Secret of that name exists; returns whether it created one.
/// An existing Secret is never changed, so generated passwords stay what clients already use.
async fn create_if_absent(client: &Client, namespace: &str, secret: &Secret) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() }, secret).await {
        Ok(_) => {
            tracing::info!(secret = %secret.name_any(), "created generated Secret");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube { action: format!("create Secret {}", secret.name_any()), source }),
    }
}

async fn apply_child(client: &Client, namespace: &str, child: &Child) -> Result<Child> {
    Ok(match child {
        Child::Service(o) => Child::Service(apply(client, namespace, o).await?),
        Child::PersistentVolumeClaim(o) => Child::PersistentVolumeClaim(apply(client, namespace, o).await?),
        Child::Deployment(o) => Child::Deployment(apply(client, namespace, o).await?),
        Child::StatefulSet(o) => Child::StatefulSet(apply(client, namespace, o).await?),
        Child::CronJob(o) => Child::CronJob(apply(client, namespace, o).await?),
        Child::HorizontalPodAutoscaler(o) => Child::HorizontalPodAutoscaler(apply(client, namespace, o).await?),
    })
}

/// Server-side apply under the operator's field manager. `force` takes over fields another
/// manager (such as `kubectl edit`) changed, which is how drift is repaired.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().ok_or(Error::MissingObjectKey("name"))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let action = format!("apply {} {name}", K::kind(&()));
    api.patch(&name, &params, &Patch::Apply(object)).await.map_err(Error::kube(action))
}

async fn delete_child(client: &Client, namespace: &str, removed: &Removed) -> Result<bool> {
    match removed.kind {
        ChildKind::Service => delete::<Service>(client, namespace, &removed.name).await,
        ChildKind::PersistentVolumeClaim => delete::<PersistentVolumeClaim>(client, namespace, &removed.name).await,
        ChildKind::Deployment => delete::<Deployment>(client, namespace, &removed.name).await,
        ChildKind::StatefulSet => delete::<StatefulSet>(client, namespace, &removed.name).await,
        ChildKind::CronJob => delete::<CronJob>(client, namespace, &removed.name).await,
        ChildKind::HorizontalPodAutoscaler => delete::<HorizontalPodAutoscaler>(client, namespace, &removed.name).await,
    }
}

/// Deletes `name` if it exists and returns whether it did.
// NOTE: this sends one DELETE per removed child on every reconcile, answered 404 once the
// child is gone; a cache of owned objects would save those requests.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(kind = K::kind(&()).as_ref(), name, "deleted child of a removed component");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube { action: format!("delete {} {name}", K::kind(&())), source }),
    }
}

async fn patch_status(
    pipeline: &TelemetryPipeline,
    ctx: &Context,
    status: &crate::crd::TelemetryPipelineStatus,
) -> Result<()> {
    let namespace = pipeline.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<TelemetryPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": TelemetryPipeline::api_version(&()),
        "kind": TelemetryPipeline::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&pipeline.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::kube(format!("patch status of TelemetryPipeline {}", pipeline.name_any())))?;
    Ok(())
}

/// Publishes an Event on the pipeline. A failure is logged, not returned: Events are
/// diagnostics and must not fail the reconcile.
async fn publish(ctx: &Context, pipeline: &TelemetryPipeline, type_: EventType, reason: &str, action: &str, note: String) {
    let event = Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
    if let Err(err) = ctx.recorder.publish(&event, &pipeline.object_ref(&())).await {
        tracing::warn!(cause = %err, reason, "failed to publish Event");
    }
}

/// Runs the controller until `shutdown` completes: watches pipelines and the children they own.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let pipelines: Api<TelemetryPipeline> = Api::all(client.clone());
    // Children carry this label, so the owned-object watches skip every other object.
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(pipelines, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<CronJob>::all(client.clone()), owned.clone())
        .owns(Api::<HorizontalPodAutoscaler>::all(client.clone()), owned.clone())
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
