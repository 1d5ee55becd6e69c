//! The REST API: Service and Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    KeyToPath, SecretVolumeSource, Service, ServiceSpec, Volume, VolumeMount,
};
use telemetry_core::contract::{self, env};

use super::broker::{container_port, service_port};
use super::pod::ADMIN_PORT_NAME;
use super::secrets::{API_TOKENS_KEY, api_tokens_secret_name};
use super::{Component, RenderContext, mongodb, pod};
use crate::crd::MetricsSpec;

/// Name of the API's container and Service port.
pub const HTTP_PORT_NAME: &str = "http";
/// Directory of the mounted tokens file.
const TOKENS_DIR: &str = "/etc/telemetry/api-tokens";
const TOKENS_VOLUME: &str = "api-tokens";

pub fn service(ctx: &RenderContext, spec: &MetricsSpec) -> Service {
    Service {
        metadata: ctx.metadata(
            Component::Metrics,
            Component::Metrics.object_name(&ctx.name),
        ),
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().to_owned()),
            selector: Some(ctx.selector_labels(Component::Metrics)),
            ports: Some(vec![
                service_port(HTTP_PORT_NAME, spec.service.port, "http"),
                service_port(ADMIN_PORT_NAME, i32::from(contract::ADMIN_PORT), "http"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn deployment(ctx: &RenderContext, spec: &MetricsSpec) -> Deployment {
    let mut container = pod::container(
        ctx,
        Component::Metrics,
        contract::images::METRICS,
        &spec.pod,
    );
    let mut vars = vec![
        mongodb::mongodb_uri_env(ctx),
        pod::env(
            env::MONGODB_DATABASE,
            ctx.pipeline.spec.mongodb.database.clone(),
        ),
        pod::env(env::API_PORT, contract::API_PORT.to_string()),
        pod::env(
            env::API_TOKENS_FILE,
            format!("{TOKENS_DIR}/{API_TOKENS_KEY}"),
        ),
        pod::env(
            env::API_PAGE_SIZE_DEFAULT,
            spec.page_size_default.to_string(),
        ),
        pod::env(env::API_PAGE_SIZE_MAX, spec.page_size_max.to_string()),
    ];
    vars.extend(pod::common_env());
    container.env = Some(vars);
    if let Some(ports) = container.ports.as_mut() {
        ports.insert(
            0,
            container_port(HTTP_PORT_NAME, i32::from(contract::API_PORT)),
        );
    }
    if let Some(mounts) = container.volume_mounts.as_mut() {
        mounts.push(VolumeMount {
            name: TOKENS_VOLUME.to_owned(),
            mount_path: TOKENS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    // Whatever key the user's Secret uses, the file appears as `tokens` in the mount.
    let (secret_name, key) = match &spec.auth_secret_ref {
        Some(reference) => (reference.name.clone(), reference.key.clone()),
        None => (api_tokens_secret_name(&ctx.name), API_TOKENS_KEY.to_owned()),
    };
    let tokens = Volume {
        name: TOKENS_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name),
            items: Some(vec![KeyToPath {
                key,
                path: API_TOKENS_KEY.to_owned(),
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };

    let replicas = (!spec.autoscaling.enabled).then_some(spec.replicas);
    pod::deployment(
        ctx,
        Component::Metrics,
        &spec.pod,
        replicas,
        container,
        vec![tokens],
    )
}
