//! The consumer Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use telemetry_core::contract::{self, env};

use super::{Component, RenderContext, broker, mongodb, pod};
use crate::crd::ConsumerSpec;

pub fn deployment(ctx: &RenderContext, spec: &ConsumerSpec) -> Deployment {
    let mut container = pod::container(
        ctx,
        Component::Consumer,
        contract::images::CONSUMER,
        &spec.pod,
    );
    let mut vars = vec![
        broker::amqp_url_env(ctx),
        mongodb::mongodb_uri_env(ctx),
        pod::env(
            env::MONGODB_DATABASE,
            ctx.pipeline.spec.mongodb.database.clone(),
        ),
        pod::env(env::CONSUMER_MODE, spec.mode.as_str()),
        pod::env(env::CONSUMER_PREFETCH, spec.prefetch.to_string()),
        pod::env(env::CONSUMER_BATCH_SIZE, spec.batch_size.to_string()),
    ];
    vars.extend(pod::common_env());
    container.env = Some(vars);

    let replicas = (!spec.autoscaling.enabled).then_some(spec.replicas);
    pod::deployment(
        ctx,
        Component::Consumer,
        &spec.pod,
        replicas,
        container,
        Vec::new(),
    )
}
