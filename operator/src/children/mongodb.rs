//! The managed MongoDB: headless Service and single-member StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, Service, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use telemetry_core::contract;

use super::broker::{container_port, service_port};
use super::secrets::{self, MONGODB_URI_KEY, PASSWORD_KEY, USERNAME_KEY};
use super::{Child, Component, RenderContext, pod};
use crate::crd::ManagedMongoDb;

/// User and group of the `mongodb` account in the official `mongo` images.
pub const MONGODB_USER: i64 = 999;
const PORT_NAME: &str = "mongodb";
const DATA_VOLUME: &str = "data";

pub fn children(ctx: &RenderContext, managed: &ManagedMongoDb) -> Vec<Child> {
    vec![
        Child::Service(service(ctx)),
        Child::StatefulSet(stateful_set(ctx, managed)),
    ]
}

/// The `MONGODB_URI` variable of the consumers and the API: from the generated Secret of the
/// managed MongoDB, or from the Secret that `mongodb.external.secretRef` names.
pub fn mongodb_uri_env(ctx: &RenderContext) -> EnvVar {
    let name = contract::env::MONGODB_URI;
    match &ctx.pipeline.spec.mongodb.external {
        Some(external) => {
            pod::env_from_secret(name, &external.secret_ref.name, &external.secret_ref.key)
        }
        None => pod::env_from_secret(
            name,
            &secrets::mongodb_secret_name(&ctx.name),
            MONGODB_URI_KEY,
        ),
    }
}

fn service(ctx: &RenderContext) -> Service {
    Service {
        metadata: ctx.metadata(
            Component::MongoDb,
            Component::MongoDb.object_name(&ctx.name),
        ),
        spec: Some(ServiceSpec {
            // Headless: the StatefulSet's pods get stable DNS names under it.
            cluster_ip: Some("None".to_owned()),
            selector: Some(ctx.selector_labels(Component::MongoDb)),
            ports: Some(vec![service_port(
                PORT_NAME,
                i32::from(contract::MONGODB_PORT),
                "mongodb",
            )]),
            publish_not_ready_addresses: Some(false),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn stateful_set(ctx: &RenderContext, managed: &ManagedMongoDb) -> StatefulSet {
    let secret = secrets::mongodb_secret_name(&ctx.name);
    let probe = |delay: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(PORT_NAME.to_owned()),
            host: None,
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Probe::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };

    let container = Container {
        name: Component::MongoDb.as_str().to_owned(),
        image: Some(managed.image.clone()),
        args: Some(vec!["--bind_ip_all".to_owned()]),
        ports: Some(vec![container_port(
            PORT_NAME,
            i32::from(contract::MONGODB_PORT),
        )]),
        env: Some(vec![
            pod::env_from_secret("MONGO_INITDB_ROOT_USERNAME", &secret, USERNAME_KEY),
            pod::env_from_secret("MONGO_INITDB_ROOT_PASSWORD", &secret, PASSWORD_KEY),
        ]),
        resources: managed.resources.clone(),
        liveness_probe: Some(probe(30)),
        readiness_probe: Some(probe(5)),
        security_context: Some(pod::container_security(managed.security_context.as_ref())),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, "/data/db"),
            mount("configdb", "/data/configdb"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(ctx.selector_labels(Component::MongoDb)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: managed.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(managed.storage_size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };

    StatefulSet {
        metadata: ctx.metadata(
            Component::MongoDb,
            Component::MongoDb.object_name(&ctx.name),
        ),
        spec: Some(StatefulSetSpec {
            // One member: a replica set needs member configuration this operator does not do.
            // Use `mongodb.external` for a replica set.
            replicas: Some(1),
            service_name: Some(Component::MongoDb.object_name(&ctx.name)),
            selector: LabelSelector {
                match_labels: Some(ctx.selector_labels(Component::MongoDb)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(Component::MongoDb)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("configdb"), empty_dir("tmp")]),
                    security_context: Some(pod::pod_security(
                        MONGODB_USER,
                        managed.pod_security_context.as_ref(),
                    )),
                    // mongod flushes its journal on SIGTERM; give it time to do so.
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}
