//! The built-in broker: Service, optional data claim and Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use telemetry_core::contract;

use super::pod::{self, ADMIN_PORT_NAME};
use super::secrets::{self, AMQP_URL_KEY, PASSWORD_KEY, USERNAME_KEY};
use super::{Child, Component, RenderContext};
use crate::crd::BuiltInBroker;

/// Name of the AMQP container and Service port.
pub const AMQP_PORT_NAME: &str = "amqp";
/// Where the data volume is mounted in the broker container.
// NOTE: the contract names no data-directory variable for the broker yet, so the volume is
// mounted at this fixed path; the broker must store its queues here for persistence to help.
pub const DATA_PATH: &str = "/var/lib/telemetry-broker";
const DATA_VOLUME: &str = "data";

pub fn data_claim_name(ctx: &RenderContext) -> String {
    format!("{}-data", Component::Broker.object_name(&ctx.name))
}

pub fn children(ctx: &RenderContext, broker: &BuiltInBroker) -> Vec<Child> {
    let mut children = vec![Child::Service(service(ctx, broker))];
    if broker.persistence.enabled {
        children.push(Child::PersistentVolumeClaim(data_claim(ctx, broker)));
    }
    children.push(Child::Deployment(deployment(ctx, broker)));
    children
}

/// The `AMQP_URL` variable of the broker's clients: from the generated Secret of the built-in
/// broker, or from the Secret that `broker.external.secretRef` names.
pub fn amqp_url_env(ctx: &RenderContext) -> EnvVar {
    let broker = &ctx.pipeline.spec.broker;
    match &broker.external {
        Some(external) => pod::env_from_secret(
            contract::env::AMQP_URL,
            &external.secret_ref.name,
            &external.secret_ref.key,
        ),
        None => pod::env_from_secret(
            contract::env::AMQP_URL,
            &secrets::broker_secret_name(&ctx.name),
            AMQP_URL_KEY,
        ),
    }
}

fn service(ctx: &RenderContext, broker: &BuiltInBroker) -> Service {
    Service {
        metadata: ctx.metadata(Component::Broker, Component::Broker.object_name(&ctx.name)),
        spec: Some(ServiceSpec {
            selector: Some(ctx.selector_labels(Component::Broker)),
            ports: Some(vec![
                service_port(AMQP_PORT_NAME, broker.port, "amqp"),
                service_port(ADMIN_PORT_NAME, i32::from(contract::ADMIN_PORT), "http"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub(super) fn service_port(name: &str, port: i32, app_protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some(app_protocol.to_owned()),
        ..ServicePort::default()
    }
}

fn data_claim(ctx: &RenderContext, broker: &BuiltInBroker) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ctx.metadata(Component::Broker, data_claim_name(ctx)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(broker.persistence.size.clone()),
                )])),
                limits: None,
            }),
            storage_class_name: broker.persistence.storage_class_name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn deployment(ctx: &RenderContext, broker: &BuiltInBroker) -> Deployment {
    let secret = secrets::broker_secret_name(&ctx.name);
    let mut env = vec![
        pod::env(contract::env::BROKER_PORT, broker.port.to_string()),
        pod::env_from_secret(contract::env::BROKER_USER, &secret, USERNAME_KEY),
        pod::env_from_secret(contract::env::BROKER_PASSWORD, &secret, PASSWORD_KEY),
        pod::env(
            contract::env::BROKER_MEMORY_HIGH_WATERMARK,
            broker.memory_high_watermark.to_string(),
        ),
    ];
    env.extend(pod::common_env());

    let data_volume = Volume {
        name: DATA_VOLUME.to_owned(),
        persistent_volume_claim: broker.persistence.enabled.then(|| {
            PersistentVolumeClaimVolumeSource {
                claim_name: data_claim_name(ctx),
                read_only: None,
            }
        }),
        empty_dir: (!broker.persistence.enabled).then(Default::default),
        ..Volume::default()
    };
    let (liveness, readiness) = pod::admin_probes(&broker.pod);
    let container = Container {
        name: Component::Broker.as_str().to_owned(),
        image: Some(pod::image(ctx, contract::images::BROKER, &broker.pod)),
        image_pull_policy: Some(ctx.pipeline.spec.images.pull_policy.as_str().to_owned()),
        ports: Some(vec![
            container_port(AMQP_PORT_NAME, broker.port),
            container_port(ADMIN_PORT_NAME, i32::from(contract::ADMIN_PORT)),
        ]),
        env: Some(env),
        resources: broker.pod.resources.clone(),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
        security_context: Some(pod::container_security(
            broker.pod.security_context.as_ref(),
        )),
        volume_mounts: Some(vec![
            pod::tmp_mount(),
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: DATA_PATH.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };

    Deployment {
        metadata: ctx.metadata(Component::Broker, Component::Broker.object_name(&ctx.name)),
        spec: Some(DeploymentSpec {
            // One broker: the queues live in its memory (or on its volume), so two replicas
            // would split the stream.
            replicas: Some(1),
            // A ReadWriteOnce volume cannot be mounted by the old and new pod at once.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(ctx.selector_labels(Component::Broker)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(Component::Broker)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![pod::tmp_volume(), data_volume]),
                    security_context: Some(pod::pod_security(
                        pod::WORKLOAD_USER,
                        broker.pod.pod_security_context.as_ref(),
                    )),
                    image_pull_secrets: pod::pull_secrets(ctx),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

pub(super) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}
