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
// A pipeline has about ten children, so boxing the large variants would save nothing worth
// the indirection.
#[allow(clippy::large_enum_variant)]
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

    /// Encodes the object as JSON, with `apiVersion` and `kind`.
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

/// Pipeline fields that every builder needs.
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
        let mut owner = pipeline
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?;
        // Foreground deletion of the pipeline then waits for its children to go first.
        owner.block_owner_deletion = Some(true);
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
    use telemetry_core::contract::{self, env};

    use super::*;
    use crate::crd::TelemetryPipelineSpec;
    use crate::fixtures::pipeline;

    fn render(spec: TelemetryPipelineSpec) -> Children {
        desired(&pipeline(spec), &SecretValues::random()).expect("children render")
    }

    fn full_spec() -> TelemetryPipelineSpec {
        let manifest = include_str!("../../examples/full.yaml");
        serde_yaml::from_str::<TelemetryPipeline>(manifest)
            .expect("full example parses")
            .spec
    }

    fn deployment<'a>(children: &'a Children, name: &str) -> &'a Deployment {
        children
            .applied
            .iter()
            .find_map(|c| match c {
                Child::Deployment(d) if d.metadata.name.as_deref() == Some(name) => Some(d),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    fn pod_spec(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn cron_job(children: &Children) -> &CronJob {
        children
            .applied
            .iter()
            .find_map(|c| {
                if let Child::CronJob(c) = c {
                    Some(c)
                } else {
                    None
                }
            })
            .expect("CronJob")
    }

    fn env_var<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no env {name}"))
    }

    fn names(children: &Children) -> Vec<(ChildKind, String)> {
        children
            .applied
            .iter()
            .map(|c| (c.kind(), c.name()))
            .collect()
    }

    #[test]
    fn default_pipeline_children() {
        let children = render(TelemetryPipelineSpec::default());
        assert_eq!(
            names(&children),
            [
                (ChildKind::Service, "gpu-broker".to_owned()),
                (ChildKind::Deployment, "gpu-broker".to_owned()),
                (ChildKind::Service, "gpu-mongodb".to_owned()),
                (ChildKind::StatefulSet, "gpu-mongodb".to_owned()),
                (ChildKind::Deployment, "gpu-consumer".to_owned()),
                (ChildKind::Service, "gpu-metrics".to_owned()),
                (ChildKind::Deployment, "gpu-metrics".to_owned()),
                (ChildKind::CronJob, "gpu-producer".to_owned()),
            ]
        );
        let secrets: Vec<String> = children.secrets.iter().map(|s| s.name_any()).collect();
        assert_eq!(
            secrets,
            [
                "gpu-broker-credentials",
                "gpu-mongodb-credentials",
                "gpu-api-tokens"
            ]
        );
        assert!(children.removed.contains(&Removed {
            kind: ChildKind::HorizontalPodAutoscaler,
            name: "gpu-consumer".into()
        }));
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let children = render(full_spec());
        for child in &children.applied {
            let json = child.to_json().unwrap();
            let owner = &json["metadata"]["ownerReferences"][0];
            assert_eq!(owner["controller"], true, "{}", child.name());
            assert_eq!(owner["blockOwnerDeletion"], true, "{}", child.name());
            assert_eq!(owner["name"], "gpu", "{}", child.name());
            let labels = &json["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/instance"],
                "gpu",
                "{}",
                child.name()
            );
            assert_eq!(
                labels["app.kubernetes.io/managed-by"],
                FIELD_MANAGER,
                "{}",
                child.name()
            );
            assert_eq!(
                labels["app.kubernetes.io/part-of"],
                PART_OF,
                "{}",
                child.name()
            );
            assert!(
                labels["app.kubernetes.io/component"].is_string(),
                "{}",
                child.name()
            );
        }
        for secret in &children.secrets {
            assert_eq!(
                secret.metadata.owner_references.as_ref().unwrap()[0].controller,
                Some(true)
            );
        }
    }

    #[test]
    fn ports_env_and_probes_come_from_contract() {
        let children = render(TelemetryPipelineSpec::default());
        let broker = &pod_spec(deployment(&children, "gpu-broker")).containers[0];
        let ports: Vec<(Option<&str>, i32)> = broker
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("amqp"), i32::from(contract::AMQP_PORT)),
                (Some("admin"), i32::from(contract::ADMIN_PORT))
            ]
        );
        assert_eq!(
            env_var(broker, env::BROKER_PORT).value.as_deref(),
            Some("5672")
        );
        assert_eq!(
            env_var(broker, env::BROKER_PASSWORD)
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .key,
            "password"
        );
        let liveness = broker
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some(contract::HEALTH_PATH));
        let readiness = broker
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some(contract::READY_PATH));

        let service = children.applied.iter().find_map(|c| match c {
            Child::Service(s) if s.metadata.name.as_deref() == Some("gpu-broker") => Some(s),
            _ => None,
        });
        let ports: Vec<i32> = service
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [5672, 9090]);

        let api = &pod_spec(deployment(&children, "gpu-metrics")).containers[0];
        assert_eq!(env_var(api, env::API_PORT).value.as_deref(), Some("8080"));
        assert_eq!(
            env_var(api, env::API_TOKENS_FILE).value.as_deref(),
            Some("/etc/telemetry/api-tokens/tokens")
        );
        assert_eq!(env_var(api, env::LOG_FORMAT).value.as_deref(), Some("json"));
        let consumer = &pod_spec(deployment(&children, "gpu-consumer")).containers[0];
        assert_eq!(
            env_var(consumer, env::CONSUMER_MODE).value.as_deref(),
            Some("shared")
        );
        assert_eq!(
            consumer.image.as_deref(),
            Some(
                format!(
                    "{}/{}:{}",
                    contract::images::DEFAULT_REGISTRY,
                    contract::images::CONSUMER,
                    contract::images::DEFAULT_TAG
                )
                .as_str()
            )
        );
    }

    #[test]
    fn restricted_security_defaults() {
        let children = render(TelemetryPipelineSpec::default());
        for name in ["gpu-broker", "gpu-consumer", "gpu-metrics"] {
            let spec = pod_spec(deployment(&children, name));
            let pod = spec.security_context.as_ref().unwrap();
            assert_eq!(pod.run_as_non_root, Some(true), "{name}");
            assert_eq!(
                pod.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault",
                "{name}"
            );
            let container = spec.containers[0].security_context.as_ref().unwrap();
            assert_eq!(container.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(container.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(container.run_as_non_root, Some(true), "{name}");
            assert_eq!(
                container.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..]),
                "{name}"
            );
        }
    }

    #[test]
    fn overrides_merge_over_defaults() {
        let children = render(full_spec());
        let consumer = pod_spec(deployment(&children, "gpu-consumer"));
        let container = consumer.containers[0].security_context.as_ref().unwrap();
        assert_eq!(container.run_as_user, Some(10001));
        assert_eq!(
            container.read_only_root_filesystem,
            Some(true),
            "defaults stay under an override"
        );
        assert_eq!(
            consumer.security_context.as_ref().unwrap().fs_group,
            Some(10001)
        );
        let api = &pod_spec(deployment(&children, "gpu-metrics")).containers[0];
        let readiness = api.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (readiness.period_seconds, readiness.failure_threshold),
            (Some(5), Some(2))
        );
        assert_eq!(
            api.image.as_deref(),
            Some("registry.example.com/gputelemetry/telemetry-metrics:0.1.0")
        );
    }

    #[test]
    fn producer_is_indexed_and_sharded() {
        let children = render(full_spec());
        let cron = cron_job(&children).spec.as_ref().unwrap();
        assert_eq!(cron.schedule, "*/10 * * * *");
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Replace"));
        let job = cron.job_template.spec.as_ref().unwrap();
        assert_eq!(job.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((job.completions, job.parallelism), (Some(4), Some(4)));
        assert_eq!(job.active_deadline_seconds, Some(1800));
        let container = &job.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            env_var(container, env::SHARD_COUNT).value.as_deref(),
            Some("4")
        );
        let index = env_var(container, env::SHARD_INDEX)
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert!(
            index.field_path.contains("job-completion-index"),
            "{}",
            index.field_path
        );
        assert_eq!(
            env_var(container, env::CSV_PATH).value.as_deref(),
            Some("/var/run/telemetry/dataset/exports/dcgm_metrics.csv")
        );
        assert_eq!(
            env_var(container, env::PUBLISH_RATE).value.as_deref(),
            Some("500")
        );

        let default = render(TelemetryPipelineSpec::default());
        let job = cron_job(&default)
            .spec
            .as_ref()
            .unwrap()
            .job_template
            .spec
            .as_ref()
            .unwrap();
        let container = &job.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            env_var(container, env::CSV_PATH).value.as_deref(),
            Some(contract::IMAGE_SAMPLE_CSV_PATH)
        );
        assert_eq!(
            default
                .applied
                .iter()
                .filter(|c| c.kind() == ChildKind::CronJob)
                .count(),
            1
        );
    }

    #[test]
    fn autoscalers_cap_at_ten_and_own_replicas() {
        let children = render(full_spec());
        let hpas: Vec<&HorizontalPodAutoscaler> = children
            .applied
            .iter()
            .filter_map(|c| {
                if let Child::HorizontalPodAutoscaler(h) = c {
                    Some(h)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(hpas.len(), 2);
        let consumer = hpas[0].spec.as_ref().unwrap();
        assert_eq!(
            (consumer.min_replicas, consumer.max_replicas),
            (Some(2), 10)
        );
        let types: Vec<&str> = consumer
            .metrics
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.type_.as_str())
            .collect();
        assert_eq!(types, ["Resource", "Resource", "External"]);
        let cpu = consumer.metrics.as_ref().unwrap()[0]
            .resource
            .as_ref()
            .unwrap();
        assert_eq!(
            cpu.target.average_utilization,
            Some(70),
            "targetCPUUtilizationPercentage"
        );
        assert_eq!(consumer.scale_target_ref.name, "gpu-consumer");
        assert_eq!(
            deployment(&children, "gpu-consumer")
                .spec
                .as_ref()
                .unwrap()
                .replicas,
            None,
            "the HPA owns replicas"
        );

        let mut spec = full_spec();
        spec.consumer.autoscaling.max_replicas = 50;
        let children = render(spec);
        let capped = children.applied.iter().find_map(|c| {
            if let Child::HorizontalPodAutoscaler(h) = c {
                Some(h)
            } else {
                None
            }
        });
        assert_eq!(
            capped.unwrap().spec.as_ref().unwrap().max_replicas,
            crate::crd::MAX_REPLICAS
        );
    }

    #[test]
    fn user_tokens_secret_is_mounted() {
        let children = render(full_spec());
        assert!(
            children
                .secrets
                .iter()
                .all(|s| s.name_any() != "gpu-api-tokens"),
            "no generated tokens"
        );
        let api = pod_spec(deployment(&children, "gpu-metrics"));
        let volume = api
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "api-tokens")
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("api-tokens"));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "tokens.txt");
    }

    #[test]
    fn generated_tokens_file_is_accepted_by_the_api() {
        let children = render(TelemetryPipelineSpec::default());
        let secret = children
            .secrets
            .iter()
            .find(|s| s.name_any() == secrets::api_tokens_secret_name("gpu"))
            .expect("a generated tokens Secret");
        let file = &secret.string_data.as_ref().expect("string data")[secrets::API_TOKENS_KEY];
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.len(), 1);
        let line = telemetry_core::api_tokens::parse_line(lines[0]).expect("the API parses the line");
        assert_eq!(line.name, secrets::GENERATED_TOKEN_NAME);
    }

    #[test]
    fn generated_secrets_are_random() {
        let first = SecretValues::random();
        let second = SecretValues::random();
        assert_eq!(first.broker_password.len(), 32);
        assert_ne!(first.broker_password, second.broker_password);
        assert_ne!(first.broker_password, first.mongodb_password);
    }
}
