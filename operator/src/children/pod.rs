//! Pieces every workload pod shares: image reference, security contexts, probes, environment
//! and the HorizontalPodAutoscaler.

use k8s_openapi::DeepMerge;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use telemetry_core::contract;

use super::{Component, RenderContext};
use crate::crd::{AutoscalingSpec, CustomMetricType, PodOverrides, ProbeTuning};

/// User and group of our workload images (the distroless `nonroot` user). A numeric user lets
/// the kubelet enforce `runAsNonRoot` without reading the image's passwd file.
pub const WORKLOAD_USER: i64 = 65532;

/// Name of the admin container port (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN_PORT_NAME: &str = "admin";

/// Writable scratch directory for a container with a read-only root filesystem.
const TMP_VOLUME: &str = "tmp";

/// Image of a component: the override, or `<registry>/<image name>:<tag>`.
pub fn image(ctx: &RenderContext, image_name: &str, overrides: &PodOverrides) -> String {
    match &overrides.image {
        Some(image) => image.clone(),
        None => {
            let images = &ctx.pipeline.spec.images;
            format!(
                "{}/{image_name}:{}",
                images.registry.trim_end_matches('/'),
                images.tag
            )
        }
    }
}

/// Restricted Pod Security Standard container settings, with `overrides` merged over them.
pub fn container_security(overrides: Option<&SecurityContext>) -> SecurityContext {
    let mut security = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    };
    if let Some(overrides) = overrides {
        security.merge_from(overrides.clone());
    }
    security
}

/// Pod settings of the restricted profile for a non-root `user`, with `overrides` merged over them.
pub fn pod_security(user: i64, overrides: Option<&PodSecurityContext>) -> PodSecurityContext {
    let mut security = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    };
    if let Some(overrides) = overrides {
        security.merge_from(overrides.clone());
    }
    security
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// An HTTP GET probe on a named container port.
pub fn http_probe(path: &str, port_name: &str, tuning: &ProbeTuning) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port_name.to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(tuning.initial_delay_seconds),
        period_seconds: Some(tuning.period_seconds),
        timeout_seconds: Some(tuning.timeout_seconds),
        failure_threshold: Some(tuning.failure_threshold),
        ..Probe::default()
    }
}

/// Liveness (`/healthz`) and readiness (`/readyz`) probes on the admin port.
pub fn admin_probes(overrides: &PodOverrides) -> (Probe, Probe) {
    (
        http_probe(
            contract::HEALTH_PATH,
            ADMIN_PORT_NAME,
            &overrides.liveness_probe,
        ),
        http_probe(
            contract::READY_PATH,
            ADMIN_PORT_NAME,
            &overrides.readiness_probe,
        ),
    )
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Environment every workload gets: its admin port and JSON logs.
pub fn common_env() -> Vec<EnvVar> {
    vec![
        env(contract::env::ADMIN_PORT, contract::ADMIN_PORT.to_string()),
        env(contract::env::LOG_FORMAT, "json"),
    ]
}

pub fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: TMP_VOLUME.to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }
}

pub fn pull_secrets(ctx: &RenderContext) -> Option<Vec<LocalObjectReference>> {
    let names = &ctx.pipeline.spec.images.pull_secrets;
    (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

/// The autoscaling/v2 HorizontalPodAutoscaler of a component's Deployment.
pub fn autoscaler(
    ctx: &RenderContext,
    component: Component,
    spec: &AutoscalingSpec,
) -> HorizontalPodAutoscaler {
    let name = component.object_name(&ctx.name);
    let mut metrics = Vec::new();
    for (resource, percentage) in [
        ("cpu", spec.target_cpu_utilization_percentage),
        ("memory", spec.target_memory_utilization_percentage),
    ] {
        if let Some(percentage) = percentage {
            metrics.push(MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: resource.to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            });
        }
    }
    if let Some(custom) = &spec.custom_metric {
        let metric = MetricIdentifier {
            name: custom.name.clone(),
            selector: None,
        };
        let target = MetricTarget {
            type_: "AverageValue".to_owned(),
            average_value: Some(Quantity(custom.target_average_value.clone())),
            ..MetricTarget::default()
        };
        metrics.push(match custom.type_ {
            CustomMetricType::Pods => MetricSpec {
                type_: "Pods".to_owned(),
                pods: Some(PodsMetricSource { metric, target }),
                ..MetricSpec::default()
            },
            CustomMetricType::External => MetricSpec {
                type_: "External".to_owned(),
                external: Some(ExternalMetricSource { metric, target }),
                ..MetricSpec::default()
            },
        });
    }

    HorizontalPodAutoscaler {
        metadata: ctx.metadata(component, name.clone()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name,
            },
            min_replicas: Some(spec.min_replicas),
            max_replicas: spec.max_replicas.min(crate::crd::MAX_REPLICAS),
            metrics: (!metrics.is_empty()).then_some(metrics),
            behavior: None,
        }),
        status: None,
    }
}

/// A Deployment of one workload container with the shared pod settings. `replicas` is `None`
/// when an autoscaler owns the replica count, so server-side apply leaves it to the autoscaler.
pub fn deployment(
    ctx: &RenderContext,
    component: Component,
    overrides: &PodOverrides,
    replicas: Option<i32>,
    container: Container,
    extra_volumes: Vec<Volume>,
) -> Deployment {
    let mut volumes = vec![tmp_volume()];
    volumes.extend(extra_volumes);
    Deployment {
        metadata: ctx.metadata(component, component.object_name(&ctx.name)),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(ctx.selector_labels(component)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security(
                        WORKLOAD_USER,
                        overrides.pod_security_context.as_ref(),
                    )),
                    image_pull_secrets: pull_secrets(ctx),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The workload container of `component` with the shared settings; callers add env and ports.
pub fn container(
    ctx: &RenderContext,
    component: Component,
    image_name: &str,
    overrides: &PodOverrides,
) -> Container {
    let (liveness, readiness) = admin_probes(overrides);
    Container {
        name: component.as_str().to_owned(),
        image: Some(image(ctx, image_name, overrides)),
        image_pull_policy: Some(ctx.pipeline.spec.images.pull_policy.as_str().to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_owned()),
            container_port: i32::from(contract::ADMIN_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: overrides.resources.clone(),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
        security_context: Some(container_security(overrides.security_context.as_ref())),
        volume_mounts: Some(vec![tmp_mount()]),
        ..Container::default()
    }
}
