//! The objects one pipeline needs, built from its spec alone.
//!
//! Nothing here talks to the API server, so `telemetry-operator render` and the unit tests
//! see exactly what the reconciler applies.

mod api;
mod broker;
mod consumer;
mod mongodb;
mod pod;
mod producer;
mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::TelemetryPipeline;
use crate::{Error, FIELD_MANAGER, Result};

pub use secrets::SecretValues;

/// Value of `app.kubernetes.io/part-of` on every child.
pub const PART_OF: &str = "telemetry-pipeline";

/// One pipeline component; it names the child objects and their `app.kubernetes.io/component`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Broker,
    Producer,
    Consumer,
    Metrics,
    MongoDb,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Metrics => "metrics",
            Self::MongoDb => "mongodb",
        }
    }

    /// Name of the component's Deployment, StatefulSet, CronJob, Service and autoscaler.
    pub fn object_name(self, pipeline: &str) -> String {
        format!("{pipeline}-{}", self.as_str())
    }

    /// Value of `app.kubernetes.io/name`: the image name for our workloads.
    fn app_name(self) -> &'static str {
        use telemetry_core::contract::images;
        match self {
            Self::Broker => images::BROKER,
            Self::Producer => images::PRODUCER,
            Self::Consumer => images::CONSUMER,
            Self::Metrics => images::METRICS,
            Self::MongoDb => "mongodb",
        }
    }
}

/// An object the reconciler applies with server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    Service(Service),
    PersistentVolumeClaim(PersistentVolumeClaim),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    CronJob(CronJob),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
}

impl Child {
    pub fn kind(&self) -> ChildKind {
        match self {
            Self::Service(_) => ChildKind::Service,
            Self::PersistentVolumeClaim(_) => ChildKind::PersistentVolumeClaim,
            Self::Deployment(_) => ChildKind::Deployment,
            Self::StatefulSet(_) => ChildKind::StatefulSet,
            Self::CronJob(_) => ChildKind::CronJob,
            Self::HorizontalPodAutoscaler(_) => ChildKind::HorizontalPodAutoscaler,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Service(o) => o.name_any(),
            Self::PersistentVolumeClaim(o) => o.name_any(),
            Self::Deployment(o) => o.name_any(),
            Self::StatefulSet(o) => o.name_any(),
            Self::CronJob(o) => o.name_any(),
            Self::HorizontalPodAutoscaler(o) => o.name_any(),
        }
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let encoded = match self {
            Self::Service(o) => serde_json::to_value(o),
            Self::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Self::Deployment(o) => serde_json::to_value(o),
            Self::StatefulSet(o) => serde_json::to_value(o),
            Self::CronJob(o) => serde_json::to_value(o),
            Self::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
        };
        encoded.map_err(|source| Error::Encode {
            what: format!("{} {}", self.kind().as_str(), self.name()),
            source,
        })
    }
}

/// Kinds of applied children; a removed component's children are deleted by kind and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Service,
    PersistentVolumeClaim,
    Deployment,
    StatefulSet,
    CronJob,
    HorizontalPodAutoscaler,
}

impl ChildKind {
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Service | Self::PersistentVolumeClaim => "v1",
            Self::Deployment | Self::StatefulSet => "apps/v1",
            Self::CronJob => "batch/v1",
            Self::HorizontalPodAutoscaler => "autoscaling/v2",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::CronJob => "CronJob",
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }
}

/// A child that the current spec no longer wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub kind: ChildKind,
    pub name: String,
}

/// Everything one reconcile writes for a pipeline, in the order it is written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    /// Generated Secrets, created only when absent so their random values never change.
    pub secrets: Vec<Secret>,
    /// Objects applied with server-side apply; Services come before the pods that use them.
    pub applied: Vec<Child>,
    /// Objects of disabled or external components, deleted when present.
    pub removed: Vec<Removed>,
}

/// Builds the children of `pipeline`. `secret_values` supplies the generated credentials,
/// which only matter the first time a Secret is created.
pub fn desired(pipeline: &TelemetryPipeline, secret_values: &SecretValues) -> Result<Children> {
    let ctx = RenderContext::new(pipeline)?;
    let spec = &pipeline.spec;
    let mut children = Children::default();

    match &spec.broker.built_in {
        Some(built_in) => {
            children
                .secrets
                .push(secrets::broker_credentials(&ctx, built_in, secret_values));
            children.applied.extend(broker::children(&ctx, built_in));
            if !built_in.persistence.enabled {
                children.removed.push(ctx.removed(
                    ChildKind::PersistentVolumeClaim,
                    broker::data_claim_name(&ctx),
                ));
            }
        }
        None => {
            let name = Component::Broker.object_name(&ctx.name);
            children
                .removed
                .push(ctx.removed(ChildKind::Deployment, name.clone()));
            children.removed.push(ctx.removed(ChildKind::Service, name));
            children.removed.push(ctx.removed(
                ChildKind::PersistentVolumeClaim,
                broker::data_claim_name(&ctx),
            ));
        }
    }

    match &spec.mongodb.managed {
        Some(managed) => {
            children
                .secrets
                .push(secrets::mongodb_credentials(&ctx, secret_values));
            children.applied.extend(mongodb::children(&ctx, managed));
        }
        None => {
            // The StatefulSet's data claims are left in place: deleting a database volume is
            // the cluster admin's decision, not a side effect of a spec change.
            let name = Component::MongoDb.object_name(&ctx.name);
            children
                .removed
                .push(ctx.removed(ChildKind::StatefulSet, name.clone()));
            children.removed.push(ctx.removed(ChildKind::Service, name));
        }
    }

    children
        .applied
        .push(Child::Deployment(consumer::deployment(
            &ctx,
            &spec.consumer,
        )));
    push_autoscaler(
        &ctx,
        &mut children,
        Component::Consumer,
        &spec.consumer.autoscaling,
    );

    if spec.metrics.enabled {
        if spec.metrics.auth_secret_ref.is_none() {
            children
                .secrets
                .push(secrets::api_tokens(&ctx, secret_values));
        }
        children
            .applied
            .push(Child::Service(api::service(&ctx, &spec.metrics)));
        children
            .applied
            .push(Child::Deployment(api::deployment(&ctx, &spec.metrics)));
        push_autoscaler(
            &ctx,
            &mut children,
            Component::Metrics,
            &spec.metrics.autoscaling,
        );
    } else {
        let name = Component::Metrics.object_name(&ctx.name);
        children
            .removed
            .push(ctx.removed(ChildKind::Deployment, name.clone()));
        children
            .removed
            .push(ctx.removed(ChildKind::Service, name.clone()));
        children
            .removed
            .push(ctx.removed(ChildKind::HorizontalPodAutoscaler, name));
    }

    children
        .applied
        .push(Child::CronJob(producer::cron_job(&ctx, &spec.producer)));
    Ok(children)
}

fn push_autoscaler(
    ctx: &RenderContext,
    children: &mut Children,
    component: Component,
    autoscaling: &crate::crd::AutoscalingSpec,
) {
    if autoscaling.enabled {
        children
            .applied
            .push(Child::HorizontalPodAutoscaler(pod::autoscaler(
                ctx,
                component,
                autoscaling,
            )));
    } else {
        children.removed.push(ctx.removed(
            ChildKind::HorizontalPodAutoscaler,
            component.object_name(&ctx.name),
        ));
    }
}

/// What every builder needs from the pipeline object.
pub(crate) struct RenderContext<'a> {
    pub pipeline: &'a TelemetryPipeline,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
}

impl<'a> RenderContext<'a> {
    fn new(pipeline: &'a TelemetryPipeline) -> Result<Self> {
        let name = pipeline
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("name"))?;
        let namespace = pipeline
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingObjectKey("namespace"))?;
        let owner = pipeline
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?;
        Ok(Self {
            pipeline,
            name,
            namespace,
            owner,
        })
    }

    fn removed(&self, kind: ChildKind, name: String) -> Removed {
        Removed { kind, name }
    }

    /// Labels that select a component's pods; they never change once a Deployment exists.
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                component.app_name().to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (
                "app.kubernetes.io/component".to_owned(),
                component.as_str().to_owned(),
            ),
        ])
    }

    /// Selector labels plus the labels that describe the object.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/part-of".to_owned(), PART_OF.to_owned());
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        );
        if component != Component::MongoDb {
            labels.insert(
                "app.kubernetes.io/version".to_owned(),
                self.pipeline.spec.images.tag.clone(),
            );
        }
        labels
    }

    /// Metadata of a child: name, namespace, labels and the controller owner reference that
    /// lets the garbage collector delete it with the pipeline.
    pub fn metadata(&self, component: Component, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// In-cluster DNS name of a Service of this pipeline.
    pub fn service_host(&self, component: Component) -> String {
        format!(
            "{}.{}.svc",
            component.object_name(&self.name),
            self.namespace
        )
    }
}
